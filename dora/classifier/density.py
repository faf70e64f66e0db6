"""No source labels: DoRA weights from a small trusted sample of the target distribution.

The pool P (the training data, no source column) is a mixture α·Q₀ + (1 − α)·Q_other with α unknown; the
trusted sample T is drawn from Q₀. A probabilistic classifier of trusted-vs-pool responses, cross-fitted and
calibrated as in labelled mode, gives c(x, y) = P(trusted | x, y), and Bayes' rule gives the density ratio:

- **separate** trusted sample (T drawn apart from P): c/(1 − c) = N_T q₀ / (N_P p), so
  ``w = dQ₀/dP = (N_P / N_T) · c / (1 − c)`` — DESIGN's w = 1 / (s + (1 − a)(1 − c)/(γ c)) with s = 0,
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

import json
import math
import os
import warnings

import numpy as np

from dora.classifier.annotate import (
    bad_response,
    extract_responses,
    make_classifier,
    response_columns,
)
from dora.classifier.crossfit import (
    cross_calibrate,
    cross_fit,
    expected_calibration_error,
    make_folds,
    reliability_bins,
)
from dora.classifier.report import plot_diagnostics
from dora.classifier.share import estimate_target_share, plot_share
from dora.data import as_dataset
from dora.ratio import effective_sample_size

__all__ = ["annotate_density_ratio", "estimate_target_share", "check_rows", "DensityRatioWarning"]

class DensityRatioWarning(UserWarning):
    """A guard of ``annotate_density_ratio`` fired (also listed in ``report["warnings"]``)."""


ESS_FRACTION_MIN = 0.1  # warn below this share of the pool's rows
COVERAGE_MIN = 0.5  # warn when the pool covers less than half of the trusted distribution
SHIFT_Z = 1.645  # one-sided 5%: below it the classifier found no difference and every weight is 1
C_GRID = (0.01, 0.1, 1.0)  # tfidf regularisation strengths tried (out-of-fold log-loss)


# --------------------------------------------------------------------------- input checks


def _empty(x) -> bool:
    if x is None:
        return True
    if isinstance(x, list):
        return len(x) == 0 or all(_empty(m.get("content") if isinstance(m, dict) else m) for m in x)
    return not str(x).strip()


def _where(name: str, line_offset, i: int) -> str:
    """``name, row i + 1`` (1-based, as ``dora.data``); for text files ``name, line i + offset`` (``line_offset``
    an int) or the row's own label (``line_offset`` a list, as ``dora.data.row_labels``: jsonl files with blank
    lines)."""
    if isinstance(line_offset, (list, tuple)):
        return f"{name}, {line_offset[i]}"
    return f"{name}, " + (f"line {i + line_offset}" if line_offset is not None else f"row {i + 1}")


def _form(x) -> str:
    """"chat" for a list of messages, "text" for a string (the other cases are refused by ``check_rows``)."""
    return "chat" if isinstance(x, list) else "text"



def check_rows(dataset, name: str, line_offset: int | None = None) -> str:
    """Raise a one-line ValueError naming ``name``, the row and the column of the first bad row; return the
    format ("pairwise", "listwise" or "single"). ``line_offset`` turns row i into "line i + offset" (files)."""

    def where(i: int) -> str:
        return _where(name, line_offset, i)

    if len(dataset) == 0:
        raise ValueError(f"{name}: empty, no rows")
    cols = set(dataset.column_names)
    kind, resp = response_columns(cols, name)  # the prompt is optional, as in labelled mode
    data = dataset.select_columns(resp).to_dict()
    width = None
    for i in range(len(dataset)):
        for c in resp:
            v = data[c][i]
            items = v if kind == "listwise" and isinstance(v, list) else [v]
            if kind == "listwise" and (not isinstance(v, list) or not v):
                raise ValueError(f"{where(i)}, column '{c}': needs a non-empty list of responses")
            if any(_empty(x) for x in items):
                raise ValueError(f"{where(i)}, column '{c}': missing or empty response")
            bad = next((b for b in map(bad_response, items) if b), None)
            if bad:
                raise ValueError(f"{where(i)}, column '{c}': {bad}")
            if width is None:
                width = len(items)
            elif kind == "listwise" and len(items) != width:
                raise ValueError(f"{where(i)}, column '{c}': {len(items)} responses, the first row has {width}")
    return kind


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


def _responses(dataset):
    """Flattened responses of a checked dataset; any source columns are ignored."""
    labels = [c for c in ("sources", "chosen_source", "rejected_source") if c in dataset.column_names]
    plain = dataset.remove_columns(labels)  # extract_responses would read (and check) them
    return extract_responses(plain.add_column("__dora_pool__", ["pool"] * len(dataset)), "__dora_pool__")


def _match_subset(pool, trusted, names, line_offset) -> np.ndarray:
    """Pool row index of each trusted row (as a multiset: duplicates are matched once each)."""
    free: dict[tuple, list[int]] = {}
    for i in range(len(pool.texts) // pool.n):
        key = (pool.prompts[i * pool.n], *pool.texts[i * pool.n : (i + 1) * pool.n])
        free.setdefault(key, []).append(i)
    out = []
    for j in range(len(trusted.texts) // trusted.n):
        key = (trusted.prompts[j * trusted.n], *trusted.texts[j * trusted.n : (j + 1) * trusted.n])
        if not free.get(key):
            raise ValueError(
                f"{_where(names[1], line_offset, j)}: not found in {names[0]} "
                "(a trusted sample inside the pool must consist of rows of the pool)"
            )
        out.append(free[key].pop())
    return np.array(out, dtype=np.int64)


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
    in error messages (``line_offsets``: per input, a line offset or a list of row labels)."""
    if not 0.0 < float(eps) < 0.5:  # a probability of 1 would make the odds infinite
        raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
    if int(folds) < 2:
        raise ValueError(f"folds must be >= 2 without source labels (cross-fitted scores), got {folds!r}")
    if int(bootstrap) < 0:
        raise ValueError(f"bootstrap must be >= 0 (0: no interval), got {bootstrap!r}")
    dataset, trusted = as_dataset(dataset, names[0]), as_dataset(trusted, names[1])
    kind = check_rows(dataset, names[0], line_offsets[0])
    kind_t = check_rows(trusted, names[1], line_offsets[1])
    pool, tr = _responses(dataset), _responses(trusted)
    if (kind, pool.n) != (kind_t, tr.n):
        raise ValueError(
            f"{names[1]}: {kind_t} rows with {tr.n} response(s) each; {names[0]} has {kind} rows with {pool.n}"
        )
    check_same_shape(dataset, trusted, names)
    n = pool.n
    n_rows = len(pool.texts) // n
    row_of = np.arange(len(pool.texts)) // n

    if trusted_in_pool:  # T against U = P \ T: every pool response appears once, the trusted ones labelled 1
        matched = _match_subset(pool, tr, names, line_offsets[1])
        if len(matched) == n_rows:
            raise ValueError(f"{names[1]}: every row of {names[0]} is trusted; nothing to weight")
        labels = np.isin(row_of, matched).astype(np.int64)
        prompts, texts, rows = pool.prompts, pool.texts, row_of
        pool_idx = np.arange(len(pool.texts))
    else:
        labels = np.r_[np.ones(len(tr.texts), np.int64), np.zeros(len(pool.texts), np.int64)]
        prompts, texts = tr.prompts + pool.prompts, tr.texts + pool.texts
        rows = np.r_[np.arange(len(tr.texts)) // n, len(tr.texts) // n + row_of]
        pool_idx = len(tr.texts) + np.arange(len(pool.texts))

    probs, final, chosen_c, grouping = _fit_scores(
        prompts, texts, labels, rows, backend, calibration, folds, seed, backend_kwargs
    )
    probs = np.clip(probs, eps, 1 - eps)
    c_pool, c_trusted = probs[pool_idx], probs[labels == 1]

    # Bayes on the classifier's training set: c/(1-c) = N_T q0 / (N_0 q_neg), the negatives being the pool
    # (separate) or the pool without the trusted rows (subset, where T + U = P gives c = N_T q0 / (N_P p))
    n_t, n_p = int(labels.sum()), len(pool.texts)
    raw_w = (n_p / n_t) * (c_pool if trusted_in_pool else c_pool / (1 - c_pool))
    # No detectable difference between the trusted sample and the pool (out-of-fold ROC-AUC within the
    # one-sided 5% band of 0.5, Mann-Whitney normal approximation): the scores are noise, every weight is 1.
    shift_z = _auc_z(labels, probs)
    shift = shift_z >= SHIFT_Z

    # The pool's target share is a share of rows: scored by the row's summed log-odds, a pair whose two
    # responses each could be human text but not both together is told apart, so the row-level bound is at
    # least as tight as the response-level one. The response-level bound caps the response weights.
    row_scores = (_row_scores(c_trusted, n), _row_scores(c_pool, n))
    share = estimate_target_share(*row_scores, bootstrap=bootstrap, seed=seed)
    response_share = share if n == 1 else estimate_target_share(
        c_trusted, c_pool, per_row=n, bootstrap=bootstrap, seed=seed
    )  # fmt: skip
    if not shift:
        raw_w = np.ones_like(raw_w)
    if clip == "auto":  # 1 / (the lower end of α*_resp = 1 / sup dQ0/dP): above it a weight is estimation noise
        clip_value = 1.0 / max(response_share["interval"][0], 1.0 / n_p)
    elif clip is None:
        clip_value = None
    else:
        clip_value = float(clip)
        if not clip_value > 0:
            raise ValueError(f"clip must be 'auto', None or a number > 0, got {clip!r}")
    w = raw_w if clip_value is None else np.minimum(raw_w, clip_value)
    h = w.reshape(-1, n).mean(axis=1)
    if normalize:
        h = h / h.mean()

    c2 = c_pool.reshape(-1, n)
    written = ["chosen_trusted_prob", "rejected_trusted_prob", "trusted_probs", "trusted_prob", "dora_weight"]
    dataset = dataset.remove_columns([c for c in written if c in dataset.column_names])  # a re-run replaces them
    if kind == "pairwise":
        out = dataset.add_column("chosen_trusted_prob", c2[:, 0].tolist())
        out = out.add_column("rejected_trusted_prob", c2[:, 1].tolist())
    elif kind == "listwise":
        out = dataset.add_column("trusted_probs", c2.tolist())
    else:
        out = dataset.add_column("trusted_prob", c2[:, 0].tolist())
    out = out.add_column("dora_weight", h.astype(float).tolist())

    report = _diagnostics(probs, labels, h, raw_w, share, len(tr.texts) // n)
    report.update(
        {
            "response_share": response_share["share"],
            "response_share_interval": response_share["interval"],
            "mode": "no_labels",
            "trusted_in_pool": trusted_in_pool,
            "backend": backend,
            "folds": folds,
            "fold_grouping": grouping,
            "C": chosen_c,
            "shift_detected": shift,
            "shift_z": shift_z,
            "calibration": calibration,
            "n_rows": n_rows,
            "n_trusted_rows": len(tr.texts) // n,
            "n_responses": n_p,
            "n_trusted_responses": n_t,
            "clip": clip_value,
            "normalize": normalize,
        }
    )
    for message in report["warnings"]:
        warnings.warn(message, DensityRatioWarning, stacklevel=2)
    if output_dir:
        row_src = ["pool"] * n_rows
        if trusted_in_pool:
            row_src = np.where(labels.reshape(-1, n)[:, 0] == 1, "pool, trusted rows", "pool, other rows").tolist()
        _write_outputs(output_dir, final, report, h, row_src, *row_scores, share)
    return out, report


def _row_scores(c: np.ndarray, n: int) -> np.ndarray:
    """A row's score: the sum of its responses' log-odds log(c / (1 - c)), responses in row order."""
    return (np.log(c) - np.log1p(-c)).reshape(-1, n).sum(axis=1)


def _fit_scores(prompts, texts, labels, rows, backend, calibration, folds, seed, backend_kwargs):
    """Cross-fitted, calibrated P(trusted | x, y) as in labelled mode; returns (probabilities, the classifier
    fit on all rows, the chosen C, the fold grouping). With a few hundred trusted rows a weakly regularised
    classifier fits noise and the weights inherit it: the tfidf backend's C is chosen by out-of-fold
    log-loss unless given."""
    grid = C_GRID if backend == "tfidf" and "C" not in backend_kwargs else [backend_kwargs.get("C")]
    fold, groups, grouping = make_folds(prompts, texts, rows, folds, seed)
    best = None
    for C in grid:
        kw = dict(backend_kwargs, **({} if C is None else {"C": C}))

        def make(kw=kw):
            return make_classifier(backend, calibration=calibration, seed=seed, **kw)

        raw, final = cross_fit(make, prompts, texts, labels, folds, seed, fold=fold)
        loss = _log_loss(labels, raw)
        if best is None or loss < best[0]:
            best = (loss, C, raw, final)
    _, chosen_c, raw, final = best
    final.calibrate(raw, labels)  # the saved classifier's calibrator: fitted on all out-of-fold scores
    probs = cross_calibrate(calibration, raw, labels, fold, groups, seed)  # no calibrator saw the scores it maps
    return probs, final, chosen_c, grouping


def _write_outputs(output_dir, final, report, h, row_src, trusted_scores, pool_scores, share) -> None:
    """classifier/, report.json, report.md and the three plots."""
    os.makedirs(output_dir, exist_ok=True)
    final.save_pretrained(os.path.join(output_dir, "classifier"))
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(output_dir, "report.md"), "w") as f:
        f.write(
            "# Density-ratio report (no source labels)\n\n" + format_table(report) + "\n\n"
            + "".join(f"> **Warning:** {m}\n\n" for m in report["warnings"])
            + "![reliability](reliability.png)\n![weights](weights.png)\n![share](share.png)\n"
        )
    plot_diagnostics(report, h, row_src, output_dir)
    plot_share(trusted_scores, pool_scores, share, os.path.join(output_dir, "share.png"))


def _auc_z(labels, scores) -> float:
    """(AUC - 0.5) / its standard error under no difference (Mann-Whitney, normal approximation)."""
    from sklearn.metrics import roc_auc_score

    n1, n0 = int(labels.sum()), int(len(labels) - labels.sum())
    return float((roc_auc_score(labels, scores) - 0.5) / math.sqrt((n1 + n0 + 1) / (12.0 * n1 * n0)))


def _log_loss(labels, p) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))


def _diagnostics(probs, labels, h, raw_w, share, n_trusted_rows) -> dict:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    auc = float(roc_auc_score(labels, probs))
    ess = effective_sample_size(h)
    coverage = float(raw_w.mean())  # E_P[dQ0/dP] = Q0(support of P): 1 when the pool covers the target
    out = {
        "roc_auc": auc,
        "brier": float(brier_score_loss(labels, probs)),
        "ece": expected_calibration_error(probs, labels),
        "reliability": reliability_bins(probs, labels),
        "weight_min": float(h.min()),
        "weight_median": float(np.median(h)),
        "weight_max": float(h.max()),
        "weight_mean": float(h.mean()),
        "ess": ess,
        "ess_fraction": ess / len(h),
        "coverage": coverage,
        "target_share": share["share"],
        "target_share_interval": share["interval"],
        "target_share_bin_trusted_mass": share["bin_trusted_mass"],
        "warnings": [],
    }
    if coverage < COVERAGE_MIN:  # a high AUC alone is no sign: a pool with a small target share gives one too
        out["warnings"].append(
            f"the trusted set is off-distribution: the pool covers {coverage:.2f} of it (1 = fully) and the "
            f"classifier tells them apart with ROC-AUC {auc:.3f}; weights estimated from so little overlap say "
            "nothing about the target. Check that the trusted sample is the same kind of data as the pool"
        )
    if ess < ESS_FRACTION_MIN * len(h):
        out["warnings"].append(
            f"the effective sample size collapsed to {ess:.1f} of {len(h)} rows ({100 * ess / len(h):.1f}%): a "
            "few rows carry the objective. Consider a lower --clip or more trusted rows"
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
    width = max(len(k) for k, _ in rows)
    return "\n".join(
        f"| {k.ljust(width)} | {v} |" for k, v in [("metric", "value"), ("-" * width, "---"), *rows]
    )
