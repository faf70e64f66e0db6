"""Distances between answer distributions, and bootstrap intervals.

- total variation distance TVD(p, q) = 0.5 * ||p - q||_1 (Meister et al. 2025, the benchmark's metric);
- 1 - Jensen-Shannon distance (base 2, so it lies in [0, 1]);
- the ordinal Wasserstein representativeness of OpinionQA (Santurkar et al. 2023): 1 - W1(p, q) / (max - min)
  with the options at their ordinal positions (0..n-1 by default; OpinionQA's ``info.csv`` gives others,
  e.g. ``[1, 2, 3, 4, 2.5]``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["normalize", "tvd", "js_similarity", "wasserstein_representativeness", "bootstrap_ci"]


def normalize(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or len(p) == 0 or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"not a distribution: {p!r}")
    return p / p.sum()


def tvd(p, q) -> float:
    return 0.5 * float(np.abs(normalize(p) - normalize(q)).sum())


def js_similarity(p, q) -> float:
    """1 - sqrt(JSD_2(p, q)), the Jensen-Shannon distance with base-2 logarithms."""
    p, q = normalize(p), normalize(q)
    m = 0.5 * (p + q)

    def kl(a, b):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return 1.0 - float(np.sqrt(max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m))))


def wasserstein_representativeness(p, q, positions=None) -> float:
    """1 - W1(p, q) / (max - min position), the options at ``positions`` (default 0, ..., n - 1)."""
    p, q = normalize(p), normalize(q)
    x = np.arange(len(p), dtype=np.float64) if positions is None else np.asarray(positions, dtype=np.float64)
    if len(p) < 2 or x.max() == x.min():
        return 1.0
    order = np.argsort(x, kind="stable")
    x, p, q = x[order], p[order], q[order]
    w1 = float(np.sum(np.abs(np.cumsum(p) - np.cumsum(q))[:-1] * np.diff(x)))
    return 1.0 - w1 / float(x[-1] - x[0])


def bootstrap_ci(
    values, *, samples: int = 1000, seed: int = 0, level: float = 0.95, statistic=np.mean
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (resampled with replacement)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0 or samples <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(x[rng.integers(0, len(x), len(x))]) for _ in range(samples)])
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
