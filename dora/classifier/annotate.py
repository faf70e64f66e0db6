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

import os
from dataclasses import dataclass

import numpy as np

from dora.classifier.base import SourceClassifier
from dora.classifier.crossfit import cross_calibrate, cross_fit, make_folds
from dora.classifier.report import diagnostics, plot_diagnostics, write_report
from dora.data import as_dataset
from dora.ratio import calibration_weights

__all__ = ["annotate", "make_classifier", "Responses", "extract_responses", "response_columns"]


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


def bad_response(x) -> str | None:
    """Why ``x`` is not a response (a string, or a list of chat messages with string contents), or None."""
    if isinstance(x, str):
        return None
    if isinstance(x, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in x):
        return None
    return f"a response is a string or a list of chat messages, got {type(x).__name__} {str(x)[:40]!r}"


def response_columns(cols, name: str | None = None) -> tuple[str, list[str]]:
    """(kind, the columns holding the responses) of a dataset: listwise ``responses``, pairwise
    ``chosen``/``rejected`` (both needed), or one ``response`` / ``completion`` per row."""
    file = f"{name}: " if name else ""
    if "responses" in cols:
        kind, resp = "listwise", ["responses"]
    elif "chosen" in cols or "rejected" in cols:
        kind, resp = "pairwise", ["chosen", "rejected"]
    elif "response" in cols or "completion" in cols:
        kind, resp = "single", ["response" if "response" in cols else "completion"]
    else:
        raise ValueError(
            f"{file}no response columns (expected chosen/rejected, responses, or response); has {sorted(cols)}"
        )
    for c in resp:
        if c not in cols:
            raise ValueError(f"{file}missing column '{c}'; the dataset has {sorted(cols)}")
    return kind, resp


def extract_responses(
    dataset, source_column: str = "source", name: str | None = None, line_offset: int | list[str] | None = None
) -> Responses:
    """The responses and their sources. Errors name row k (1-based, as ``dora.data`` does), with ``name`` the
    file too, or, with ``line_offset``, line i + ``line_offset`` of a text file (jsonl: 1) or, a list, each row's
    own label (``dora.data.row_labels``)."""
    cols = set(dataset.column_names)
    file = f"{name}: " if name else ""

    def where(i: int) -> str:
        if isinstance(line_offset, (list, tuple)):  # each row's own label (dora.data.row_labels)
            at = line_offset[i]
        else:
            at = f"line {i + line_offset}" if line_offset is not None else f"row {i + 1}"
        return (f"{name}, " if name else "") + at

    kind, resp_cols = response_columns(cols, name)
    has_own = {"chosen_source", "rejected_source"} <= cols or "sources" in cols
    if source_column not in cols and not has_own:
        raise ValueError(
            f"{file}missing column '{source_column}' (the source of each row); the dataset has {sorted(cols)}"
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
            if not isinstance(items, list) or not items:  # a string would be read one character a response
                raise ValueError(f"{where(i)}, column 'responses': needs a non-empty list of responses")
            own = data.get("sources", none)[i] or [row_source] * len(items)
            names = [f"responses[{k}]" for k in range(len(items))]
            if len(own) != len(items):
                raise ValueError(f"{where(i)}, column 'sources': {len(own)} sources for {len(items)} responses")
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
            raise ValueError(f"{where(i)}, column 'responses': {len(items)} responses, the first row has {n}")
        for item, src, col in zip(items, own, names):
            text = _text(item)
            if not text.strip():
                raise ValueError(f"{where(i)}, column '{col}': empty response")
            if bad_response(item):
                raise ValueError(f"{where(i)}, column '{col}': {bad_response(item)}")
            if src is None or str(src) == "":
                raise ValueError(f"{where(i)}, column '{source_column}': no source for response '{col}'")
            prompts.append(_text(prompt_col[i]))
            texts.append(text)
            sources.append(str(src))
    return Responses(kind, n or 1, prompts, texts, sources)


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
    name: str | None = None,
    line_offset: int | list[str] | None = None,
    **backend_kwargs,
):
    """Score every response with a cross-fitted, calibrated source classifier and add the columns
    ``chosen_target_prob`` / ``rejected_target_prob`` (pairwise), ``target_probs`` (listwise) or
    ``target_prob`` (single), and ``dora_weight`` (DESIGN's w = 1 / (s + (1 - a)(1 - c)/(gamma c)), averaged
    over a row's responses). a = ``target_share`` (default: the dataset's share of target responses),
    gamma = N_other / N_target of the classifier's training set (this dataset), s = ``stabilizer`` (default
    a); ``preset="authors"`` gives w = n c instead. Returns (annotated dataset, report dict), plus the final
    classifier with ``return_classifier``. With ``output_dir``, also saves the classifier (fit on all rows),
    report.json / report.md and two plots. ``name`` / ``line_offset`` name the input in errors
    (``extract_responses``)."""
    dataset = as_dataset(dataset, name)
    resp = extract_responses(dataset, source_column, name, line_offset)
    known = sorted(set(resp.sources))
    targets = list(target_sources)
    if not targets:
        raise ValueError(f"no target source given; the dataset's sources are {known}")
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
