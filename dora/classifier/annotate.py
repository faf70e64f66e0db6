"""From a dataset with known sources to DoRA weights: labels, cross-fitting, cross-fitted calibration,
``dora.ratio.calibration_weights``, and the diagnostics that say whether to trust them.

Every response gets a label: 1 when its source is one of ``target_sources``, else 0. Pairwise rows label
``chosen`` and ``rejected`` by ``chosen_source`` / ``rejected_source`` (default: the row's source);
listwise rows label ``responses`` by ``sources``; single-response rows (``response`` or ``completion``) by
the row's source. The label trains the classifier and nothing else: a response's weight depends on its
text through the classifier's probability c only. Folds are grouped by prompt and by response text, so no
response is scored (or calibrated) by a model that saw it or an identical copy; the reported ECE and
reliability curve are therefore on probabilities the calibrator never saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from dora.classifier.base import Calibrator, SourceClassifier
from dora.ratio import calibration_weights, effective_sample_size

__all__ = [
    "annotate",
    "make_classifier",
    "Responses",
    "extract_responses",
    "make_folds",
    "cross_fit",
    "cross_calibrate",
]


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


def _components(n: int, keys: list[np.ndarray]) -> np.ndarray:
    """Connected components of the responses, two being linked when they share a value of any key."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    src, dst, offset = [], [], n
    for key in keys:
        _, ids = np.unique(key, return_inverse=True)
        src.append(np.arange(n))
        dst.append(offset + ids)
        offset += int(ids.max()) + 1
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(offset, offset))
    return connected_components(graph, directed=False)[1][:n]


def _assign(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Shuffle the groups, then cut the sequence into k runs of about equal size: a part id per item."""
    _, comp = np.unique(groups, return_inverse=True)
    sizes = np.bincount(comp)
    order = np.random.default_rng(seed).permutation(len(sizes))
    start = np.cumsum(sizes[order]) - sizes[order]
    part = np.empty(len(sizes), dtype=np.int64)
    part[order] = np.minimum((start * k) // len(comp), k - 1)
    return part[comp]


def make_folds(
    prompts: list[str], texts: list[str], rows: np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """A fold id and a group id per response, and the grouping used. A group (its responses share a fold)
    holds the responses of a row and those with the same prompt or the same text (hashed); the finest
    grouping that leaves no group above half a fold is used, strongest first: prompt and text, text,
    prompt, identical (prompt, text) pairs, rows alone (a warning: identical copies may then straddle
    folds)."""
    n = len(texts)
    rows = np.asarray(rows)
    text = np.array([hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts])
    prompt = np.array([hashlib.sha1(p.encode("utf-8")).hexdigest() for p in prompts])
    levels = [
        ("prompt and response text", [rows, prompt, text]),
        ("response text", [rows, text]),
        ("prompt", [rows, prompt]),
        ("identical (prompt, response) pairs", [rows, np.char.add(prompt, text)]),
    ]
    for level, keys in levels:
        groups = _components(n, keys)
        sizes = np.bincount(groups)
        if len(sizes) >= k and sizes.max() <= n / (2 * k):
            name = level
            break
    else:
        name, groups = "row", np.unique(rows, return_inverse=True)[1]
        warnings.warn(
            "cross-fitting: identical (prompt, response) copies are too many to keep in one fold; "
            "folds are grouped by row only",
            stacklevel=2,
        )
    return _assign(groups, k, seed), groups, name


def cross_fit(
    make, prompts, texts, labels, folds: int, seed: int, rows: np.ndarray | None = None, fold=None
) -> tuple[np.ndarray, SourceClassifier]:
    """Out-of-fold raw probabilities (folds >= 2), or in-sample ones (folds = 1, not recommended), and the
    classifier fit on all rows (for scoring new data). ``fold``: precomputed fold ids (``make_folds``)."""
    if folds < 2:
        final = make().fit(prompts, texts, labels)
        return final.predict_raw(prompts, texts), final
    if fold is None:
        fold = make_folds(prompts, texts, np.arange(len(texts)) if rows is None else rows, folds, seed)[0]
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


def cross_calibrate(
    method: str, raw: np.ndarray, labels: np.ndarray, fold: np.ndarray, groups: np.ndarray, seed: int = 0, k: int = 5
) -> np.ndarray:
    """Calibrated probabilities that no calibrator saw. Each fold's scores come from their own model, on
    their own scale, so each fold is calibrated on itself, cross-fitted: split into k parts along the
    groups, each part mapped by a calibrator fitted on the fold's other parts (on all other responses
    when those hold one class only)."""
    if method == "none":
        return raw.copy()
    out = np.zeros(len(raw))
    for f in np.unique(fold):
        idx = np.nonzero(fold == f)[0]
        part = _assign(groups[idx], min(k, len(np.unique(groups[idx]))), seed + int(f))
        for j in np.unique(part):
            test = idx[part == j]
            train = idx[part != j]
            if len(np.unique(labels[train])) < 2:
                train = np.setdiff1d(np.arange(len(raw)), test)
            out[test] = Calibrator(method).fit(raw[train], labels[train])(raw[test])
    return out


def reliability_bins(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width bins of predicted P(target): count, mean prediction and observed share of target."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        out.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(m.sum()),
                "mean_predicted": float(p[m].mean()) if m.any() else None,
                "share_target": float(y[m].mean()) if m.any() else None,
            }
        )
    return out


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Sum over equal-width bins of |mean prediction - share of target| times the bin's share of responses."""
    return float(
        sum(
            abs(b["mean_predicted"] - b["share_target"]) * b["count"] / len(p)
            for b in reliability_bins(p, y, bins)
            if b["count"]
        )
    )


def row_sources(sources: list[str], n: int) -> list[str]:
    """A row's source: its responses' source, or ``a+b`` (sorted) when they differ."""
    out = []
    for i in range(0, len(sources), n):
        names = sorted(set(sources[i : i + n]))
        out.append("+".join(names))
    return out


def annotate(
    dataset,
    *,
    target_sources: list[str],
    source_column: str = "source",
    backend: str = "tfidf",
    folds: int = 5,
    calibration: str = "platt",
    target_share: float | None = None,
    stabilizer: float | None = None,
    preset: str | None = None,
    clip: float | None = None,
    normalize: bool = False,
    eps: float = 1e-4,
    seed: int = 0,
    output_dir: str | None = None,
    return_classifier: bool = False,
    **backend_kwargs,
):
    """Score every response with a cross-fitted, calibrated source classifier and add the columns
    ``chosen_target_prob`` / ``rejected_target_prob`` (pairwise), ``target_probs`` (listwise) or
    ``target_prob`` (single), and ``dora_weight`` (DESIGN's w = 1 / (s + (1 - a)(1 - c)/(gamma c)), averaged
    over a row's responses). a = ``target_share`` (default: the dataset's share of target responses),
    gamma = N_other / N_target of the classifier's training set (this dataset), s = ``stabilizer`` (default
    a); ``preset="authors"`` gives w = n c instead. Returns (annotated dataset, report dict), plus the final
    classifier with ``return_classifier``. With ``output_dir``, also saves the classifier (fit on all rows),
    report.json / report.md and two plots."""
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
    if preset is not None and (target_share is not None or stabilizer is not None):
        raise ValueError("preset 'authors' fixes the constants: do not give target_share or stabilizer with it")
    if target_share is not None and not 0.0 < float(target_share) <= 1.0:
        raise ValueError(f"target_share must be in (0, 1], got {target_share!r}")

    def make():
        return make_classifier(backend, calibration=calibration, seed=seed, **backend_kwargs)

    rows = np.arange(len(resp.texts)) // resp.n
    if folds >= 2:
        fold, groups, grouping = make_folds(resp.prompts, resp.texts, rows, folds, seed)
        raw, final = cross_fit(make, resp.prompts, resp.texts, labels, folds, seed, fold=fold)
        probs = cross_calibrate(calibration, raw, labels, fold, groups, seed)
    else:
        grouping = "none (in-sample)"
        raw, final = cross_fit(make, resp.prompts, resp.texts, labels, folds, seed)
    final.calibrate(raw, labels)  # the saved classifier's calibrator: fitted on all out-of-fold scores
    if folds < 2:
        probs = final.calibrator(raw)

    n_target, n_other = int(labels.sum()), int((1 - labels).sum())
    gamma = n_other / n_target
    alpha = n_target / len(labels) if target_share is None else float(target_share)
    p2 = probs.reshape(-1, resp.n)
    if preset is not None:
        kw = dict(preset=preset)
    else:
        kw = dict(target_share=alpha, imbalance=gamma, stabilizer=stabilizer)
    h = calibration_weights(p2, clip=clip, normalize=normalize, eps=eps, **kw).double().numpy()

    written = ["chosen_target_prob", "rejected_target_prob", "target_probs", "target_prob", "dora_weight"]
    dataset = dataset.remove_columns([c for c in written if c in dataset.column_names])  # a re-run replaces them
    if resp.kind == "pairwise":
        out = dataset.add_column("chosen_target_prob", p2[:, 0].tolist())
        out = out.add_column("rejected_target_prob", p2[:, 1].tolist())
    elif resp.kind == "listwise":
        out = dataset.add_column("target_probs", p2.tolist())
    else:
        out = dataset.add_column("target_prob", p2[:, 0].tolist())
    out = out.add_column("dora_weight", h.astype(float).tolist())

    row_src = row_sources(resp.sources, resp.n)
    report = diagnostics(probs, labels, h, row_src, resp.sources, known)
    report.update(
        {
            "backend": backend,
            "folds": folds,
            "fold_grouping": grouping,
            "calibration": calibration,
            "target_sources": targets,
            "n_rows": len(dataset),
            "n_responses": len(resp.texts),
            "n_target": n_target,
            "n_other": n_other,
            "preset": preset,
            "target_share": None if preset else alpha,
            "gamma": None if preset else gamma,
            "stabilizer": 1.0 / resp.n if preset else (alpha if stabilizer is None else stabilizer),
            "clip": clip,
            "normalize": normalize,
        }
    )
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        final.save_pretrained(os.path.join(output_dir, "classifier"))
        write_report(report, output_dir)
        plot_diagnostics(report, h, row_src, output_dir)
    return (out, report, final) if return_classifier else (out, report)


def diagnostics(probs, labels, h, row_src, sources, known) -> dict:
    """Scores of the out-of-fold probabilities, and statistics of the written per-row weights h."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    src, rsrc = np.array(sources), np.array(row_src)
    bins = reliability_bins(probs, labels)
    return {
        "roc_auc": float(roc_auc_score(labels, probs)),
        "brier": float(brier_score_loss(labels, probs)),
        "ece": expected_calibration_error(probs, labels),
        "reliability": bins,
        "weight_min": float(h.min()),
        "weight_median": float(np.median(h)),
        "weight_max": float(h.max()),
        "weight_mean": float(h.mean()),
        "ess": effective_sample_size(h),
        "ess_fraction": effective_sample_size(h) / len(h),
        "mean_weight_by_source": {s: float(h[rsrc == s].mean()) for s in sorted(set(row_src))},
        "rows_by_source": {s: int((rsrc == s).sum()) for s in sorted(set(row_src))},
        "mean_target_prob_by_source": {s: float(probs[src == s].mean()) for s in known},
    }


def _scale(report: dict) -> str:
    return "normalised to mean 1" if report.get("normalize") else "unnormalised"


def format_table(report: dict) -> str:
    rows = [
        ("ROC-AUC", f"{report['roc_auc']:.3f}"),
        ("Brier score", f"{report['brier']:.4f}"),
        ("expected calibration error", f"{report['ece']:.4f}"),
    ]
    if report.get("preset"):
        rows.append(("weight formula", f"preset {report['preset']} (w = n·c)"))
    else:
        rows.append(
            (
                "target share α / imbalance γ / stabiliser s",
                f"{report['target_share']:.4g} / {report['gamma']:.4g} / {report['stabilizer']:.4g}",
            )
        )
    rows += [
        (
            "weight min / median / max",
            f"{report['weight_min']:.3f} / {report['weight_median']:.3f} / {report['weight_max']:.3f}",
        ),
        ("weight mean", f"{report['weight_mean']:.3f}"),
        (
            "effective sample size",
            f"{report['ess']:.1f} of {report['n_rows']} ({100 * report['ess_fraction']:.1f}%)",
        ),
    ]
    counts = report.get("rows_by_source", {})
    rows += [
        (f"mean weight, {s} ({counts.get(s, '?')} rows)", f"{w:.3f}")
        for s, w in report["mean_weight_by_source"].items()
    ]
    width = max(len(k) for k, _ in rows)
    table = "\n".join(
        f"| {k.ljust(width)} | {v} |" for k, v in [("metric", "value"), ("-" * width, "---"), *rows]
    )
    return table + (
        f"\n\nWeights: the written per-row `dora_weight`, {_scale(report)}. Probabilities, ROC-AUC, Brier and "
        "ECE: out of fold (classifier and calibrator)."
    )


def write_report(report: dict, output_dir: str) -> None:
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(output_dir, "report.md"), "w") as f:
        f.write(
            "# Source classifier report\n\n" + format_table(report) + "\n\n![reliability](reliability.png)\n"
            "![weights](weights.png)\n"
        )


def plot_diagnostics(report: dict, h, row_src, output_dir: str) -> None:
    """reliability.png (out-of-fold, with the count of responses per bin) and weights.png (the written
    per-row weights, per row source: the scale of report.md)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = [b for b in report["reliability"] if b["count"]]
    fig, (ax, axn) = plt.subplots(
        2, 1, figsize=(4.8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], "--", color="#999", label="perfect calibration")
    xs, ys = [b["mean_predicted"] for b in bins], [b["share_target"] for b in bins]
    ax.plot(xs, ys, "o-", color="#c33", label="classifier (out of fold)")
    for b in bins:
        ax.annotate(str(b["count"]), (b["mean_predicted"], b["share_target"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=7, color="#555")
    ax.set_ylabel("observed share of target")
    ax.set_title(f"ECE {report['ece']:.3f} (out of fold)", fontsize=9)
    ax.legend(fontsize=8)
    axn.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["count"] for b in bins], width=0.09, color="#777")
    axn.set_xlabel("predicted P(target)")
    axn.set_ylabel("responses")
    axn.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "reliability.png"), dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    src = np.array(row_src)
    edges = np.linspace(0.0, float(h.max()) if h.max() > 0 else 1.0, 41)
    for s in sorted(set(row_src)):
        ax.hist(h[src == s], bins=edges, alpha=0.6, label=s)
    ax.set_xlabel(f"dora_weight per row (as written, {_scale(report)})")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "weights.png"), dpi=110)
    plt.close(fig)
