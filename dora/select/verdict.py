"""Which candidate to use: paired bootstrap intervals on the held-out pairs, and the verdict.

Every candidate is scored on the same held-out pairs, so differences are paired: one bootstrap resample
draws n pair indices (``rng.integers(0, n, n)``, ``rng = numpy.random.default_rng(seed)``), the same for
every candidate, and the difference of two candidates is their difference of means on it. The interval is
the percentile interval of those differences at level ``1 − (1 − confidence) / k``, where k is the number of
candidates compared with the baseline (Bonferroni: all k intervals hold together with probability
``confidence``, so nine candidates do not make a chance winner likely).

The verdict: candidates whose interval against the baseline lies above 0 are better than it; none ->
"keep DPO"; otherwise the most accurate of them, with its gain and interval, and the candidates whose
interval against it contains 0 (tied with it). When a candidate leads the baseline without an interval above 0,
the verdict says about how many held-out pairs would resolve a lead of that size: the n at which the normal
approximation of the interval, z·s/√n (s the standard deviation of the per-pair differences, z the normal
quantile at the simultaneous level), equals the lead.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["bootstrap_indices", "paired_interval", "pairs_to_resolve", "verdict"]


def bootstrap_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """[samples, n] resampled pair indices, shared by every comparison."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, n) for _ in range(samples)]) if samples else np.zeros((0, n), int)


def paired_interval(a, b, idx: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of mean(a) − mean(b) over the resamples ``idx`` (paired: the same rows for both)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(idx) == 0:
        return (float("nan"), float("nan"))
    boots = d[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _excludes_zero(ci: tuple[float, float]) -> bool:
    return ci[0] > 0 or ci[1] < 0


def verdict(
    correct: dict[str, np.ndarray],
    margins: dict[str, np.ndarray] | None = None,
    *,
    baseline: str = "DPO",
    samples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """From per-pair correctness (0/1, the same held-out pairs for every candidate) and optionally reward
    margins: per-candidate accuracy, intervals against the baseline and against the best, and the choice."""
    if baseline not in correct:
        raise ValueError(f"the baseline {baseline!r} has no scores")
    names = list(correct)
    n = len(correct[baseline])
    if any(len(v) != n for v in correct.values()):
        raise ValueError("every candidate must be scored on the same held-out pairs")
    acc = {k: float(np.mean(v)) for k, v in correct.items()}
    k = max(1, len(names) - 1)
    level = 1 - (1 - confidence) / k
    idx = bootstrap_indices(n, samples, seed)
    best = max(names, key=lambda m: (acc[m], m == baseline))  # a tie at the top goes to the baseline
    rows = {}
    for m in names:
        rows[m] = {
            "accuracy": acc[m],
            "vs_baseline": acc[m] - acc[baseline],
            "vs_baseline_ci": paired_interval(correct[m], correct[baseline], idx, level) if m != baseline else None,
            "vs_best": acc[m] - acc[best],
            "vs_best_ci": paired_interval(correct[m], correct[best], idx, level) if m != best else None,
        }
        if margins is not None:
            rows[m]["margin"] = float(np.mean(margins[m]))
            rows[m]["margin_vs_baseline_ci"] = (
                paired_interval(margins[m], margins[baseline], idx, level) if m != baseline else None
            )
    better = [m for m in names if m != baseline and rows[m]["vs_baseline_ci"][0] > 0]
    choice = max(better, key=lambda m: acc[m]) if better else baseline
    tied = [m for m in names if m != choice and not _excludes_zero(paired_interval(correct[m], correct[choice], idx,
                                                                                      level))]
    need = pairs_to_resolve(correct[best], correct[baseline], level) if choice == baseline != best else None
    return {
        "n": n, "baseline": baseline, "confidence": confidence, "level": level, "samples": samples, "seed": seed,
        "best": best, "choice": choice, "better_than_baseline": better, "tied_with_choice": tied, "candidates": rows,
        "pairs_to_resolve": need, "text": _text(rows, baseline, choice, best, tied, n, confidence, need),
    }  # fmt: skip


def pairs_to_resolve(a, b, level: float) -> int | None:
    """Held-out pairs at which a lead of mean(a − b) would have a normal-approximation interval z·s/√n as wide as
    itself (s: the sample standard deviation of the per-pair differences); None without a lead."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    lead = float(d.mean())
    if not lead > 0 or len(d) < 2:
        return None
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    return math.ceil((z * float(d.std(ddof=1)) / lead) ** 2)


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _text(rows: dict, baseline: str, choice: str, best: str, tied: list[str], n: int, confidence: float,
          need: int | None = None) -> str:  # fmt: skip
    if choice == baseline:
        if best == baseline:
            return f"keep {baseline}: no candidate scored above it on the {n} held-out pairs."
        b = rows[best]
        more = f"; a lead this size needs about {need} held-out pairs to resolve" if need and need > n else ""
        return (
            f"keep {baseline}: no candidate is distinguishable from it on the {n} held-out pairs (the best, {best}, "
            f"{_pts(b['vs_baseline'])} points [{_pts(b['vs_baseline_ci'][0])}, {_pts(b['vs_baseline_ci'][1])}], "
            f"{100 * confidence:.0f}% simultaneous{more})."
        )
    c = rows[choice]
    also = f"; tied with it: {', '.join(tied)}" if tied else ""
    return (
        f"use {choice}: {_pts(c['vs_baseline'])} points of held-out preference accuracy over {baseline} "
        f"[{_pts(c['vs_baseline_ci'][0])}, {_pts(c['vs_baseline_ci'][1])}], {100 * confidence:.0f}% simultaneous, "
        f"on {n} pairs{also}."
    )
