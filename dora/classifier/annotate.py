"""From a dataset with known sources to calibrated DoRA weights: labels, cross-fitting, calibration, the
prior correction, ``dora.ratio.calibration_weights``, and the diagnostics that say whether to trust them.

Every response gets a label: 1 when its source is one of ``target_sources``, else 0. Pairwise rows label
``chosen`` and ``rejected`` by ``chosen_source`` / ``rejected_source`` (default: the row's source);
listwise rows label ``responses`` by ``sources``; single-response rows (``response`` or ``completion``) by
the row's source. With k-fold cross-fitting (folds grouped by prompt), no response is scored by a model that
saw it, so a classifier that memorises its data cannot hand its training set extreme weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from dora.classifier.base import SourceClassifier
from dora.ratio import calibration_weights, effective_sample_size, response_weights

__all__ = ["annotate", "make_classifier", "Responses", "extract_responses"]


def make_classifier(backend: str = "tfidf", **kwargs) -> SourceClassifier:
    from dora.classifier import embedding, tfidf, transformer  # noqa: F401  (register the backends)

    cls = SourceClassifier.registry.get(backend)
    if cls is None:
        raise ValueError(f"unknown backend {backend!r}; choose from {sorted(SourceClassifier.registry)}")
    return cls(**kwargs)


@dataclass
class Responses:
    """The responses of a dataset, flattened: row r's k-th response is entry r * n + k."""

    kind: str  # "pairwise" | "listwise" | "single"
    n: int
    prompts: list[str]
    texts: list[str]
    sources: list[str]


def _text(x) -> str:
    if isinstance(x, list):  # chat messages
        return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in x if isinstance(m, dict))
    return "" if x is None else str(x)


def extract_responses(dataset, source_column: str = "source") -> Responses:
    cols = set(dataset.column_names)
    if "responses" in cols:
        kind, resp_cols = "listwise", ["responses"]
    elif {"chosen", "rejected"} <= cols:
        kind, resp_cols = "pairwise", ["chosen", "rejected"]
    elif "response" in cols or "completion" in cols:
        kind, resp_cols = "single", ["response" if "response" in cols else "completion"]
    else:
        raise ValueError(
            f"no response columns: expected chosen/rejected, responses, or response; got {sorted(cols)}"
        )
    has_own = {"chosen_source", "rejected_source"} <= cols or "sources" in cols
    if source_column not in cols and not has_own:
        raise ValueError(
            f"missing column '{source_column}' (the source of each row); the dataset has {sorted(cols)}"
        )
    # plain Python lists, read once: indexing a dataset column row by row goes through Arrow each time
    keep = {*resp_cols, "prompt", source_column, "chosen_source", "rejected_source", "sources"}
    data = dataset.select_columns(sorted(keep & cols)).to_dict()
    none = [None] * len(dataset)
    prompt_col = data.get("prompt", [""] * len(dataset))
    prompts, texts, sources = [], [], []
    n = None
    for i in range(len(dataset)):
        row_source = data.get(source_column, none)[i]
        if kind == "listwise":
            items = data["responses"][i]
            own = data.get("sources", none)[i] or [row_source] * len(items)
            names = [f"responses[{k}]" for k in range(len(items))]
            if len(own) != len(items):
                raise ValueError(f"row {i}, column 'sources': {len(own)} sources for {len(items)} responses")
        elif kind == "pairwise":
            items = [data["chosen"][i], data["rejected"][i]]
            own = [
                data.get("chosen_source", none)[i] or row_source,
                data.get("rejected_source", none)[i] or row_source,
            ]
            names = ["chosen", "rejected"]
        else:
            items, own, names = [data[resp_cols[0]][i]], [row_source], [resp_cols[0]]
        if n is None:
            n = len(items)
        elif len(items) != n:
            raise ValueError(f"row {i}, column 'responses': {len(items)} responses, the first row has {n}")
        for item, src, name in zip(items, own, names):
            text = _text(item)
            if not text.strip():
                raise ValueError(f"row {i}, column '{name}': empty response")
            if src is None or str(src) == "":
                raise ValueError(f"row {i}, column '{source_column}': no source for response '{name}'")
            prompts.append(_text(prompt_col[i]))
            texts.append(text)
            sources.append(str(src))
    return Responses(kind, n or 1, prompts, texts, sources)


def _folds(prompts: list[str], rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold id per response: the responses of a row share a fold, and so do rows that share a prompt
    when there are enough distinct prompts to fill the folds."""
    keys = prompts if len(set(prompts)) >= 4 * k else rows.tolist()
    uniq = {p: i for i, p in enumerate(dict.fromkeys(keys))}
    perm = np.random.default_rng(seed).permutation(len(uniq))
    return perm[np.array([uniq[p] for p in keys])] % k


def cross_fit(
    make, prompts, texts, labels, folds: int, seed: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, SourceClassifier]:
    """Out-of-fold raw probabilities (folds >= 2), or in-sample ones (folds = 1, not recommended), and the
    classifier fit on all rows (for scoring new data)."""
    if folds < 2:
        final = make().fit(prompts, texts, labels)
        return final.predict_raw(prompts, texts), final
    fold = _folds(prompts, np.arange(len(texts)) if rows is None else rows, folds, seed)
    out = np.zeros(len(texts))
    # Backends whose features use no labels (TF-IDF vocabulary and idf, a frozen encoder) featurise once;
    # each fold then fits only the supervised part on its own training rows.
    shared = make()
    x = shared.featurize(prompts, texts, fit=True) if hasattr(shared, "featurize") else None
    for f in tqdm(range(folds), desc="Cross-fitting", leave=False):
        train, test = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
        if len(test) == 0:
            continue
        if len(set(labels[train].tolist())) < 2:
            raise ValueError(f"fold {f}: its training part has one class only; use fewer folds or more data")
        if x is not None:
            out[test] = make().fit_matrix(x[train], labels[train]).scores_matrix(x[test])
            continue
        clf = make().fit([prompts[i] for i in train], [texts[i] for i in train], labels[train])
        out[test] = clf.predict_raw([prompts[i] for i in test], [texts[i] for i in test])
    # the shared features were fit on all rows already: the final model reuses them
    final = shared.fit_matrix(x, labels) if x is not None else make().fit(prompts, texts, labels)
    return out, final


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    return float(
        sum(
            abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).mean()
            for b in range(bins)
            if (idx == b).any()
        )
    )


def annotate(
    dataset,
    *,
    target_sources: list[str],
    source_column: str = "source",
    backend: str = "tfidf",
    folds: int = 5,
    calibration: str = "platt",
    mixture_shares: dict[str, float] | None = None,
    stabilizer: float | None = None,
    clip: float | None = None,
    normalize: bool = False,
    eps: float = 1e-4,
    seed: int = 0,
    output_dir: str | None = None,
    **backend_kwargs,
):
    """Score every response with a cross-fitted, calibrated source classifier and add the columns
    ``chosen_target_prob`` / ``rejected_target_prob`` (pairwise), ``target_probs`` (listwise) or
    ``target_prob`` (single), and ``dora_weight``. Returns (annotated dataset, report dict). With
    ``output_dir``, also saves the classifier (fit on all rows), report.json / report.md and two plots."""
    resp = extract_responses(dataset, source_column)
    known = sorted(set(resp.sources))
    targets = list(target_sources)
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise ValueError(f"unknown target source(s) {unknown}; the dataset's sources are {known}")
    if len(known) < 2:
        raise ValueError(f"the dataset has one source only ({known}): a source classifier needs two or more")
    labels = np.array([s in targets for s in resp.sources], dtype=np.int64)
    if labels.all():
        raise ValueError(f"every response is from a target source {targets}: nothing to tell apart")

    def make():
        return make_classifier(backend, calibration=calibration, seed=seed, **backend_kwargs)

    raw, final = cross_fit(make, resp.prompts, resp.texts, labels, folds, seed, np.arange(len(resp.texts)) // resp.n)
    final.calibrate(raw, labels)
    probs = final.calibrator(raw)

    n_target, n_other = int(labels.sum()), int((1 - labels).sum())
    gamma = n_other / n_target
    counts = {s: resp.sources.count(s) for s in known}
    shares = mixture_shares or {s: c / len(resp.sources) for s, c in counts.items()}
    missing = [s for s in known if s not in shares]
    if missing:
        raise ValueError(f"mixture_shares has no share for source(s) {missing}")
    pi = np.array([shares[s] for s in resp.sources]).reshape(-1, resp.n)
    p2 = probs.reshape(-1, resp.n)
    kw = dict(mixture_shares=pi, imbalance=gamma, stabilizer=stabilizer, clip=clip, eps=eps)
    per_response = response_weights(p2, **kw).numpy().reshape(-1)
    h = calibration_weights(p2, normalize=normalize, **kw).numpy()

    if resp.kind == "pairwise":
        out = dataset.add_column("chosen_target_prob", p2[:, 0].tolist())
        out = out.add_column("rejected_target_prob", p2[:, 1].tolist())
    elif resp.kind == "listwise":
        out = dataset.add_column("target_probs", p2.tolist())
    else:
        out = dataset.add_column("target_prob", p2[:, 0].tolist())
    if "dora_weight" in out.column_names:
        out = out.remove_columns("dora_weight")
    out = out.add_column("dora_weight", h.astype(float).tolist())

    report = diagnostics(probs, labels, h, per_response, resp.sources, known)
    report.update(
        {
            "backend": backend,
            "folds": folds,
            "calibration": calibration,
            "target_sources": targets,
            "n_rows": len(dataset),
            "n_responses": len(resp.texts),
            "n_target": n_target,
            "n_other": n_other,
            "gamma": gamma,
            "mixture_shares": shares,
            "normalize": normalize,
            "stabilizer": stabilizer if stabilizer is not None else 1.0 / resp.n,
            "clip": clip,
        }
    )
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        final.save_pretrained(os.path.join(output_dir, "classifier"))
        write_report(report, output_dir)
        plot_diagnostics(probs, labels, per_response, resp.sources, output_dir)
    return out, report


def diagnostics(probs, labels, h, per_response, sources, known) -> dict:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    src = np.array(sources)
    return {
        "roc_auc": float(roc_auc_score(labels, probs)),
        "brier": float(brier_score_loss(labels, probs)),
        "ece": expected_calibration_error(probs, labels),
        "weight_min": float(h.min()),
        "weight_median": float(np.median(h)),
        "weight_max": float(h.max()),
        "weight_mean": float(h.mean()),
        "ess": effective_sample_size(h),
        "ess_fraction": effective_sample_size(h) / len(h),
        "mean_response_weight_by_source": {s: float(per_response[src == s].mean()) for s in known},
        "mean_target_prob_by_source": {s: float(probs[src == s].mean()) for s in known},
    }


def format_table(report: dict) -> str:
    rows = [
        ("ROC-AUC", f"{report['roc_auc']:.3f}"),
        ("Brier score", f"{report['brier']:.4f}"),
        ("expected calibration error", f"{report['ece']:.4f}"),
        (
            "weight min / median / max",
            f"{report['weight_min']:.3f} / {report['weight_median']:.3f} / {report['weight_max']:.3f}",
        ),
        (
            "effective sample size",
            f"{report['ess']:.1f} of {report['n_rows']} ({100 * report['ess_fraction']:.1f}%)",
        ),
    ]
    rows += [(f"mean weight, {s}", f"{w:.3f}") for s, w in report["mean_response_weight_by_source"].items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(
        f"| {k.ljust(width)} | {v} |" for k, v in [("metric", "value"), ("-" * width, "---"), *rows]
    )


def write_report(report: dict, output_dir: str) -> None:
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(output_dir, "report.md"), "w") as f:
        f.write(
            "# Source classifier report\n\n" + format_table(report) + "\n\n![reliability](reliability.png)\n"
            "![weights](weights.png)\n"
        )


def plot_diagnostics(probs, labels, per_response, sources, output_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(probs, edges[1:-1]), 0, 9)
    xs = [probs[idx == b].mean() for b in range(10) if (idx == b).any()]
    ys = [labels[idx == b].mean() for b in range(10) if (idx == b).any()]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="#999", label="perfect calibration")
    ax.plot(xs, ys, "o-", color="#c33", label="classifier (out of fold)")
    ax.set_xlabel("predicted P(target)")
    ax.set_ylabel("observed share of target")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "reliability.png"), dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    src = np.array(sources)
    for s in sorted(set(sources)):
        ax.hist(per_response[src == s], bins=40, alpha=0.6, label=s)
    ax.set_xlabel("response weight w")
    ax.set_ylabel("responses")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "weights.png"), dpi=110)
    plt.close(fig)
