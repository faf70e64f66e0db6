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

import numpy as np

from dora.classifier.backends import make_classifier
from dora.classifier.crossfit import fit_scores
from dora.classifier.regime import predict_regime
from dora.classifier.report import diagnostics, report_markdown, save_outputs
from dora.classifier.responses import Responses, read_responses, response_columns, row_sources, write_columns
from dora.data import as_dataset
from dora.ratio import calibration_weights

__all__ = ["annotate", "make_classifier", "Responses", "extract_responses", "response_columns"]


def extract_responses(
    dataset, source_column: str = "source", name: str | None = None, line_offset: int | list[str] | None = None
) -> Responses:
    """The responses and their sources, checked. Errors name row k (``dora.data.row_labels``), with ``name`` the
    input too; ``line_offset``: each row's own label (a list) or line i + ``line_offset`` (an int)."""
    return read_responses(dataset, name, line_offset, source_column=source_column)


def _labels(resp: Responses, target_sources) -> tuple[np.ndarray, list[str], list[str]]:
    """(1 for a target response else 0, the dataset's sources, the target sources), checked."""
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
    return labels, known, targets


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
    ``target_prob`` (single), and ``dora_weight`` (docs/concepts.md's w = 1 / (s + (1 - a)(1 - c)/(gamma c)), averaged
    over a row's responses). a = ``target_share`` (default: the dataset's share of target responses),
    gamma = N_other / N_target of the classifier's training set (this dataset), s = ``stabilizer`` (default
    a); ``preset="authors"`` gives w = n c instead. Returns (annotated dataset, report dict), plus the final
    classifier with ``return_classifier``. With ``output_dir``, also saves the classifier (fit on all rows),
    report.json / report.md and two plots. ``name`` / ``line_offset`` name the input in errors
    (``extract_responses``)."""
    if preset is not None and (target_share is not None or stabilizer is not None):
        raise ValueError("preset 'authors' fixes the constants: do not give target_share or stabilizer with it")
    if target_share is not None and not 0.0 < float(target_share) <= 1.0:
        raise ValueError(f"target_share must be in (0, 1], got {target_share!r}")
    dataset = as_dataset(dataset, name)
    resp = extract_responses(dataset, source_column, name, line_offset)
    labels, known, targets = _labels(resp, target_sources)
    rows = np.arange(len(resp.texts)) // resp.n
    scores = fit_scores(backend, backend_kwargs, calibration, resp.prompts, resp.texts, labels, rows, folds, seed)

    n_target, n_other = int(labels.sum()), int((1 - labels).sum())
    gamma = n_other / n_target
    alpha = n_target / len(labels) if target_share is None else float(target_share)
    probs = scores.probs.reshape(-1, resp.n)
    constants = dict(preset=preset) if preset else dict(target_share=alpha, imbalance=gamma, stabilizer=stabilizer)
    weights = calibration_weights(probs, clip=clip, normalize=normalize, eps=eps, **constants).double().numpy()
    out = write_columns(dataset, resp.kind, probs, weights, "target")

    row_src = row_sources(resp.sources, resp.n)
    report = diagnostics(scores.probs, labels, weights, row_src, resp.sources, known)
    report.update(
        {
            "backend": backend,
            "folds": folds,
            "fold_grouping": scores.grouping,
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
    report["regime"] = predict_regime(report)
    if output_dir:
        save_outputs(output_dir, scores.classifier, report, report_markdown(report), weights, row_src)
    return (out, report, scores.classifier) if return_classifier else (out, report)
