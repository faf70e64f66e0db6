"""Cross-fitting: folds grouped by prompt and by response text (so no response is scored or calibrated by a
model that saw it or an identical copy), out-of-fold classifier scores, calibration fitted within each fold,
and the reliability measures computed on those out-of-fold probabilities. ``fit_scores`` is the whole step,
shared by the labelled and the no-labels pipelines."""

from __future__ import annotations

import functools
import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from dora.classifier.backends import make_classifier
from dora.classifier.base import Calibrator, SourceClassifier

__all__ = [
    "Scores",
    "fit_scores",
    "make_folds",
    "cross_fit",
    "cross_calibrate",
    "reliability_bins",
    "expected_calibration_error",
]


@dataclass
class Scores:
    """What ``fit_scores`` returns."""

    probs: np.ndarray  # calibrated P(positive), out of fold (in sample with folds = 1), float64 [N]
    classifier: SourceClassifier  # fit on all rows, its calibrator fit on all out-of-fold scores
    grouping: str  # how the folds were grouped (``make_folds``)
    C: float | None  # the tfidf regularisation strength used (chosen from ``c_grid``), None when not given


def fit_scores(
    backend: str,
    backend_kwargs: dict,
    calibration: str,
    prompts: list[str],
    texts: list[str],
    labels: np.ndarray,
    rows: np.ndarray,
    folds: int,
    seed: int,
    c_grid: tuple[float, ...] | None = None,
    ceiling: bool = False,
) -> Scores:
    """Cross-fitted, cross-calibrated probabilities of the positive class (``labels`` 1) and the classifier fit
    on all rows. ``rows``: each response's row (a row's responses share a fold). ``c_grid``: regularisation
    strengths to try (the one whose calibrated probabilities have the lowest out-of-fold log-loss is kept); by
    default the backend's own.
    ``ceiling``: the Platt map gets a fitted maximum (``Calibrator``), for a positive class that never reaches 1."""
    grid = list(c_grid) if c_grid else [backend_kwargs.get("C")]
    if folds >= 2:
        fold, groups, grouping = make_folds(prompts, texts, rows, folds, seed)
    else:
        fold, groups, grouping = None, None, "none (in-sample)"
    best = None
    for C in grid:
        kw = dict(backend_kwargs, **({} if C is None else {"C": C}))
        make = functools.partial(make_classifier, backend, calibration=calibration, seed=seed, **kw)
        raw, final = cross_fit(make, prompts, texts, labels, folds, seed, fold=fold)
        final.calibrator.ceiling = ceiling
        final.calibrate(raw, labels)  # the saved classifier's calibrator: fitted on all out-of-fold scores
        if fold is None:
            probs = final.calibrator(raw)
        else:  # no calibrator saw the scores it maps
            probs = cross_calibrate(calibration, raw, labels, fold, groups, seed, ceiling=ceiling)
        # C is judged by the probabilities the weights use (calibrated, out of fold), not by the raw scores
        loss = log_loss(labels, probs) if len(grid) > 1 else 0.0
        if best is None or loss < best[0]:
            best = (loss, C, probs, final)
    _, chosen, probs, final = best
    return Scores(probs, final, grouping, chosen)


def log_loss(labels: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))


def _components(n: int, keys: list[np.ndarray]) -> np.ndarray:
    """Connected components of the responses, two being linked when they share a value of any key."""
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
    method: str,
    raw: np.ndarray,
    labels: np.ndarray,
    fold: np.ndarray,
    groups: np.ndarray,
    seed: int = 0,
    k: int = 5,
    ceiling: bool = False,
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
            out[test] = Calibrator(method, ceiling).fit(raw[train], labels[train])(raw[test])
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
