"""No source labels: DoRA weights from a small trusted sample of the target distribution.

The pool P (the training data, no source column) is a mixture α·Q₀ + (1 − α)·Q_other with α unknown; the
trusted sample T is drawn from Q₀. A probabilistic classifier of trusted-vs-pool responses, cross-fitted and
calibrated as in labelled mode, gives c(x, y) = P(trusted | x, y), and Bayes' rule gives the density ratio:

- **separate** trusted sample (T drawn apart from P): c/(1 − c) = N_T q₀ / (N_P p), so
  ``w = dQ₀/dP = (N_P / N_T) · c / (1 − c)`` — docs/concepts.md's w = 1 / (s + (1 − a)(1 − c)/(γ c)) with s = 0,
  the factor (1 − a) replaced by 1 (the negatives are P itself) and γ = N_P / N_T.
- **subset** (T is a uniformly drawn part of the pool's target rows; case-control positive-unlabelled data,
  Elkan & Noto 2008): the pool copies of the trusted rows are taken out of the negatives, the classifier
  learns T against the rest U = P \\ T, and since T ∪ U = P, c = N_T q₀ / (N_P p), so
  ``w = (N_P / N_T) · c`` — the same formula with s = N_T/N_P, 1 − a = N_U/N_P, γ = N_U/N_T (so w ≤ N_P/N_T).

The target share α is estimated by mixture-proportion estimation on the out-of-fold scores (the "best bin"
of Garg et al. 2021, arXiv 2111.00980): α* = inf P(S)/Q₀(S) over the top-score sets S, with a bootstrap
interval. α* = 1 / sup dQ₀/dP is always identifiable and bounds α from above; it equals α only when some
region of response space is reached by the target alone (an anchor set, Scott 2015). Guards: the weights
are clipped at 1/α̂_low, the lower end of the share's interval (no true weight exceeds 1/α*), and
self-normalised to mean 1; with no detectable difference between trusted sample and pool every weight is 1;
the report gives the effective sample size and the pool's coverage of the trusted distribution, with
warnings (docs/howto/no-labels.md).
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
from sklearn.metrics import roc_auc_score

from dora.classifier.crossfit import fit_scores
from dora.classifier.regime import predict_regime
from dora.classifier.report import markdown_table, save_outputs, score_summary
from dora.classifier.responses import Responses, read_responses, response_columns, write_columns
from dora.classifier.share import estimate_target_share, plot_share
from dora.data import as_dataset

__all__ = ["annotate_density_ratio", "estimate_target_share", "DensityRatioWarning"]


class DensityRatioWarning(UserWarning):
    """A guard of ``annotate_density_ratio`` fired (also listed in ``report["warnings"]``)."""


ESS_FRACTION_MIN = 0.1  # warn below this share of the pool's rows
COVERAGE_MIN = 0.5  # warn when the pool covers less than half of the trusted distribution
SHIFT_Z = 1.645  # one-sided 5%: below it the classifier found no difference and every weight is 1
# With a few hundred trusted rows a weakly regularised classifier fits noise and the weights inherit it: unless C
# is given, the tfidf backend's C is chosen among these by the out-of-fold log-loss of the calibrated probabilities
C_GRID = (0.01, 0.1, 1.0)


# --------------------------------------------------------------------------- input checks


def _form(x) -> str:
    """"chat" for a list of messages, "text" for a string (the other cases are refused by ``read_responses``)."""
    return "chat" if isinstance(x, list) else "text"


def check_same_shape(pool, trusted, names) -> None:
    """The trusted sample and the pool must be the same kind of rows: a classifier would otherwise learn the
    difference in format (a prompt column, chat messages against plain strings), not in content."""
    cols_p, cols_t = set(pool.column_names), set(trusted.column_names)
    if ("prompt" in cols_p) != ("prompt" in cols_t):
        has, lacks = (names[0], names[1]) if "prompt" in cols_p else (names[1], names[0])
        raise ValueError(f"{lacks}: no 'prompt' column, {has} has one (the two inputs must have the same columns)")
    _, resp = response_columns(cols_p, names[0])
    for c in (["prompt"] if "prompt" in cols_p else []) + resp:
        a, b = _form(pool[0][c]), _form(trusted[0][c])
        if c == "responses":  # listwise: the form of the responses inside the list
            a, b = _form(pool[0][c][0]), _form(trusted[0][c][0])
        if a != b:
            word = {"chat": "chat messages", "text": "plain text"}
            raise ValueError(
                f"{names[1]}, column '{c}': {word[b]}, {names[0]} has {word[a]} (the two inputs must have the same "
                "format)"
            )


def _read_inputs(dataset, trusted, names, line_offsets) -> tuple[Responses, Responses]:
    """The responses of the pool and of the trusted sample (any source columns ignored), checked: both must be
    the same kind of rows."""
    pool = read_responses(dataset, names[0], line_offsets[0])
    tr = read_responses(trusted, names[1], line_offsets[1])
    if (pool.kind, pool.n) != (tr.kind, tr.n):
        raise ValueError(
            f"{names[1]}: {tr.kind} rows with {tr.n} response(s) each; {names[0]} has {pool.kind} rows with {pool.n}"
        )
    check_same_shape(dataset, trusted, names)
    return pool, tr


def _match_subset(pool: Responses, trusted: Responses, names) -> np.ndarray:
    """Pool row index of each trusted row (as a multiset: duplicates are matched once each)."""
    free: dict[tuple, list[int]] = {}
    for i in range(pool.n_rows):
        key = (pool.prompts[i * pool.n], *pool.texts[i * pool.n : (i + 1) * pool.n])
        free.setdefault(key, []).append(i)
    out = []
    for j in range(trusted.n_rows):
        key = (trusted.prompts[j * trusted.n], *trusted.texts[j * trusted.n : (j + 1) * trusted.n])
        if not free.get(key):
            raise ValueError(
                f"{trusted.rows[j]}: not found in {names[0]} (a trusted sample inside the pool must consist of rows "
                "of the pool)"
            )
        out.append(free[key].pop())
    return np.array(out, dtype=np.int64)


def _training_set(pool: Responses, tr: Responses, trusted_in_pool: bool, names):
    """The classifier's training set: (prompts, texts, labels (1 = trusted), each response's row, the
    positions of the pool's responses in it)."""
    n = pool.n
    row_of = np.arange(len(pool.texts)) // n
    if trusted_in_pool:  # T against U = P \ T: every pool response appears once, the trusted ones labelled 1
        matched = _match_subset(pool, tr, names)
        if len(matched) == pool.n_rows:
            raise ValueError(f"{names[1]}: every row of {names[0]} is trusted; nothing to weight")
        labels = np.isin(row_of, matched).astype(np.int64)
        return pool.prompts, pool.texts, labels, row_of, np.arange(len(pool.texts))
    labels = np.r_[np.ones(len(tr.texts), np.int64), np.zeros(len(pool.texts), np.int64)]
    rows = np.r_[np.arange(len(tr.texts)) // n, tr.n_rows + row_of]
    pool_idx = len(tr.texts) + np.arange(len(pool.texts))
    return tr.prompts + pool.prompts, tr.texts + pool.texts, labels, rows, pool_idx


def _check_settings(eps, folds, bootstrap, clip) -> None:
    if not 0.0 < float(eps) < 0.5:  # a probability of 1 would make the odds infinite
        raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
    if int(folds) < 2:
        raise ValueError(f"folds must be >= 2 without source labels (cross-fitted scores), got {folds!r}")
    if int(bootstrap) < 0:
        raise ValueError(f"bootstrap must be >= 0 (0: no interval), got {bootstrap!r}")
    if clip not in ("auto", None) and (isinstance(clip, str) or not float(clip) > 0):
        raise ValueError(f"clip must be 'auto', None or a number > 0, got {clip!r}")


# --------------------------------------------------------------------------- the whole step


def annotate_density_ratio(
    dataset,
    trusted,
    *,
    trusted_in_pool: bool = False,
    backend: str = "tfidf",
    folds: int = 5,
    calibration: str = "platt",
    clip: float | str | None = "auto",
    normalize: bool = True,
    eps: float = 1e-4,
    bootstrap: int = 200,
    seed: int = 0,
    output_dir: str | None = None,
    names: tuple[str, str] = ("dataset", "trusted"),
    line_offsets: tuple = (None, None),
    **backend_kwargs,
):
    """DoRA weights for ``dataset`` (the pool, no source column needed) from ``trusted``, a sample of the
    target distribution with the same columns and format (each a Dataset, a list of row dicts or a pandas
    DataFrame). Adds ``chosen_trusted_prob`` / ``rejected_trusted_prob``
    (pairwise), ``trusted_probs`` (listwise) or ``trusted_prob`` (single) — the calibrated
    P(trusted | x, y) — and ``dora_weight``; returns (annotated pool, report dict).

    ``trusted_in_pool``: the trusted rows are rows of the pool (each is matched to a pool row by its text)
    rather than drawn separately. ``clip``: "auto" caps each response's estimated ratio dQ₀/dP at 1/α̂_low
    (the lower end of the estimated target share's interval, see ``estimate_target_share``), a number caps it
    there, None leaves it. ``normalize`` then rescales the row weights to mean 1 over the pool, so the written
    maximum is the cap divided by the mean of the capped weights. ``folds`` >= 2 (in-sample scores of a
    small trusted set overfit, and every guard would read them). ``names`` / ``line_offsets`` name the inputs
    in error messages (``line_offsets``: per input, a line offset or a list of row labels; by default
    ``dora.data.row_labels``)."""
    _check_settings(eps, folds, bootstrap, clip)
    dataset, trusted = as_dataset(dataset, names[0]), as_dataset(trusted, names[1])
    pool, tr = _read_inputs(dataset, trusted, names, line_offsets)
    prompts, texts, labels, rows, pool_idx = _training_set(pool, tr, trusted_in_pool, names)
    grid = C_GRID if backend == "tfidf" and "C" not in backend_kwargs else None
    scores = fit_scores(  # ceiling: P(trusted | x) plateaus below 1 where the pool's text is target text
        backend, backend_kwargs, calibration, prompts, texts, labels, rows, folds, seed, grid, ceiling=True
    )
    probs = np.clip(scores.probs, eps, 1 - eps)
    c_pool, c_trusted = probs[pool_idx], probs[labels == 1]
    ratio, shift_z = _density_ratio(c_pool, labels, probs, trusted_in_pool)
    share, response_share, row_scores = _target_shares(c_trusted, c_pool, pool.n, bootstrap, seed)
    weights, clip = _row_weights(ratio, pool.n, clip, response_share, normalize)
    out = write_columns(dataset, pool.kind, c_pool.reshape(-1, pool.n), weights, "trusted")

    report = _diagnostics(probs, labels, weights, ratio, share, tr.n_rows)
    report.update(
        {
            "response_share": response_share["share"],
            "response_share_interval": response_share["interval"],
            "mode": "no_labels",
            "trusted_in_pool": trusted_in_pool,
            "backend": backend,
            "folds": folds,
            "fold_grouping": scores.grouping,
            "C": scores.C,
            "shift_detected": shift_z >= SHIFT_Z,
            "shift_z": shift_z,
            "calibration": calibration,
            "n_rows": pool.n_rows,
            "n_trusted_rows": tr.n_rows,
            "n_responses": len(c_pool),
            "n_trusted_responses": int(labels.sum()),
            "clip": clip,
            "normalize": normalize,
        }
    )
    report["regime"] = predict_regime(report)
    for message in report["warnings"]:
        warnings.warn(message, DensityRatioWarning, stacklevel=2)
    if output_dir:
        row_src = ["pool"] * pool.n_rows
        if trusted_in_pool:
            row_src = np.where(labels.reshape(-1, pool.n)[:, 0] == 1, "pool, trusted rows", "pool, other rows").tolist()
        save_outputs(output_dir, scores.classifier, report, _markdown(report), weights, row_src)
        plot_share(*row_scores, share, os.path.join(output_dir, "share.png"))
    return out, report


def _row_weights(ratio, n: int, clip, response_share: dict, normalize: bool) -> tuple[np.ndarray, float | None]:
    """Each row's ``dora_weight``: its responses' ratios capped at ``clip``, averaged, rescaled to mean 1 with
    ``normalize``; and the cap used. ``clip="auto"``: 1 / (the lower end of α*_resp = 1 / sup dQ0/dP), above
    which a ratio is estimation noise."""
    if clip == "auto":
        clip = 1.0 / max(response_share["interval"][0], 1.0 / len(ratio))
    capped = ratio if clip is None else np.minimum(ratio, float(clip))
    weights = capped.reshape(-1, n).mean(axis=1)
    if normalize:
        weights = weights / weights.mean()
    return weights, None if clip is None else float(clip)


def _target_shares(c_trusted, c_pool, n: int, bootstrap: int, seed: int):
    """The target share of the pool over rows and over responses (``estimate_target_share``), and the row scores.

    The pool's target share is a share of rows: scored by the row's summed log-odds, a pair whose two
    responses each could be human text but not both together is told apart, so the row-level bound is at
    least as tight as the response-level one. The response-level bound caps the response weights."""
    row_scores = (_row_scores(c_trusted, n), _row_scores(c_pool, n))
    share = estimate_target_share(*row_scores, bootstrap=bootstrap, seed=seed)
    if n == 1:
        return share, share, row_scores
    response_share = estimate_target_share(c_trusted, c_pool, per_row=n, bootstrap=bootstrap, seed=seed)
    return share, response_share, row_scores


def _markdown(report: dict) -> str:
    """report.md of no-labels mode."""
    return (
        "# Density-ratio report (no source labels)\n\n" + format_table(report) + "\n\n"
        + "".join(f"> **Warning:** {m}\n\n" for m in report["warnings"])
        + "![reliability](reliability.png)\n![weights](weights.png)\n![share](share.png)\n"
    )  # fmt: skip


def _density_ratio(c_pool, labels, probs, trusted_in_pool: bool) -> tuple[np.ndarray, float]:
    """Each pool response's estimated dQ₀/dP, and the z-score of the out-of-fold ROC-AUC against 0.5.

    Bayes on the classifier's training set: c/(1-c) = N_T q0 / (N_0 q_neg), the negatives being the pool
    (separate) or the pool without the trusted rows (subset, where T + U = P gives c = N_T q0 / (N_P p)). With no
    detectable difference between the trusted sample and the pool (the AUC within the one-sided 5% band of 0.5,
    Mann-Whitney normal approximation), the scores are noise and every ratio is 1."""
    n_t, n_p = int(labels.sum()), len(c_pool)
    ratio = (n_p / n_t) * (c_pool if trusted_in_pool else c_pool / (1 - c_pool))
    shift_z = _auc_z(labels, probs)
    return (ratio if shift_z >= SHIFT_Z else np.ones_like(ratio)), shift_z


def _row_scores(c: np.ndarray, n: int) -> np.ndarray:
    """A row's score: the sum of its responses' log-odds log(c / (1 - c)), responses in row order."""
    return (np.log(c) - np.log1p(-c)).reshape(-1, n).sum(axis=1)


def _auc_z(labels, scores) -> float:
    """(AUC - 0.5) / its standard error under no difference (Mann-Whitney, normal approximation)."""
    n1, n0 = int(labels.sum()), int(len(labels) - labels.sum())
    return float((roc_auc_score(labels, scores) - 0.5) / math.sqrt((n1 + n0 + 1) / (12.0 * n1 * n0)))


def _diagnostics(probs, labels, weights, ratio, share, n_trusted_rows) -> dict:
    """``score_summary``, the coverage and the target share, and the guards' warnings."""
    out = score_summary(probs, labels, weights)
    ess, auc = out["ess"], out["roc_auc"]
    coverage = float(ratio.mean())  # E_P[dQ0/dP] = Q0(support of P): 1 when the pool covers the target
    out.update(
        {
            "coverage": coverage,
            "target_share": share["share"],
            "target_share_interval": share["interval"],
            "target_share_bin_trusted_mass": share["bin_trusted_mass"],
            "warnings": [],
        }
    )
    if coverage < COVERAGE_MIN:  # a high AUC alone is no sign: a pool with a small target share gives one too
        out["warnings"].append(
            f"the trusted set is off-distribution: the pool covers {coverage:.2f} of it (1 = fully) and the "
            f"classifier tells them apart with ROC-AUC {auc:.3f}; weights estimated from so little overlap say "
            "nothing about the target. Check that the trusted sample is the same kind of data as the pool"
        )
    if ess < ESS_FRACTION_MIN * len(weights):
        out["warnings"].append(
            f"the effective sample size collapsed to {ess:.1f} of {len(weights)} rows "
            f"({100 * ess / len(weights):.1f}%): a few rows carry the objective. Consider a lower --clip or more "
            "trusted rows"
        )
    elif ess < n_trusted_rows:
        out["warnings"].append(
            f"the weighted pool's effective sample size, {ess:.1f} rows, is below the trusted sample's own "
            f"{n_trusted_rows} rows: training on the trusted sample (alone, or mixed into the pool) may do as well"
        )
    return out


def format_table(report: dict) -> str:
    lo, hi = report["target_share_interval"]
    rlo, rhi = report["response_share_interval"]
    rows = [
        ("ROC-AUC, trusted vs pool", f"{report['roc_auc']:.3f}"),
        ("Brier score", f"{report['brier']:.4f}"),
        ("expected calibration error", f"{report['ece']:.4f}"),
        ("estimated target share of the rows α̂ (upper bound)", f"{report['target_share']:.3f} [{lo:.3f}, {hi:.3f}]"),
        ("the same over responses (sets the clip)", f"{report['response_share']:.3f} [{rlo:.3f}, {rhi:.3f}]"),
        ("clip (per response)", "none" if report["clip"] is None else f"{report['clip']:.3f}"),
        ("coverage of the trusted distribution", f"{report['coverage']:.3f}"),
        (
            "weight min / median / max",
            f"{report['weight_min']:.3f} / {report['weight_median']:.3f} / {report['weight_max']:.3f}",
        ),
        ("effective sample size", f"{report['ess']:.1f} of {report['n_rows']} ({100 * report['ess_fraction']:.1f}%)"),
    ]
    regime = f"\n\n**Prediction:** {report['regime']['sentence']}" if "regime" in report else ""
    return markdown_table(rows) + regime
