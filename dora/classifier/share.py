"""The target share of the pool: the largest share α* of the pool the trusted distribution can make up.

α* = inf over x of p(x)/q₀(x) = 1 / sup dQ₀/dP, estimated from classifier scores of trusted and pool items
(whole rows, or single responses) by mixture-proportion estimation over the top-score sets (the "best bin"
estimator of Garg et al. 2021, arXiv 2111.00980), with a percentile-bootstrap interval. α* bounds the pool's
true target share from above and equals it when the target has an anchor set: a region no other source
reaches (Blanchard et al. 2010; Scott 2015). Otherwise the true share is not identifiable from any data.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["estimate_target_share", "plot_share"]


def top_set_masses(trusted: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each threshold t (the distinct trusted scores): the trusted mass Q(S_t) and the pool mass P(S_t)
    of the top-score set S_t = {score >= t}."""
    t_sorted, p_sorted = np.sort(trusted), np.sort(pool)
    thresholds = np.unique(t_sorted)
    q_t = 1.0 - np.searchsorted(t_sorted, thresholds, side="left") / len(t_sorted)
    q_p = 1.0 - np.searchsorted(p_sorted, thresholds, side="left") / len(p_sorted)
    return thresholds, q_t, q_p


def _best_bin(trusted: np.ndarray, pool: np.ndarray, delta: float = 0.1, gamma: float = 0.01):
    """Best-bin mixture-proportion estimate (Garg et al. 2021): over the top-score sets S_t, minimise
    P(S_t)/Q(S_t) plus its confidence width, and return (P(S_t)/Q(S_t), Q(S_t), t)."""
    thresholds, q_t, q_p = top_set_masses(trusted, pool)
    width = math.sqrt(math.log(4 / delta) / (2 * len(trusted))) + math.sqrt(math.log(4 / delta) / (2 * len(pool)))
    k = int(np.argmin(q_p / q_t + (1 + gamma) * width / q_t))
    return float(min(1.0, q_p[k] / q_t[k])), float(q_t[k]), float(thresholds[k])


def estimate_target_share(
    trusted_scores, pool_scores, *, per_row: int = 1, bootstrap: int = 200, level: float = 0.95, seed: int = 0
) -> dict:
    """The largest share α* of the pool that the trusted distribution can make up (= 1 / sup dQ₀/dP), from
    out-of-fold classifier scores of trusted and pool items, with a percentile-bootstrap interval
    (rows resampled, the classifier held fixed). ``per_row``: responses per row, the scores in row order
    (row r's responses at r·per_row ...), so a row's responses are resampled together. α* bounds the true
    share from above and equals it when the target has an anchor set (a region the other sources never reach)."""
    t = np.asarray(trusted_scores, dtype=np.float64)
    p = np.asarray(pool_scores, dtype=np.float64)
    if len(t) % per_row or len(p) % per_row:
        raise ValueError(f"per_row={per_row} does not divide the {len(t)} trusted and {len(p)} pool scores")
    share, mass, threshold = _best_bin(t, p)
    rows_t, rows_p = t.reshape(-1, per_row), p.reshape(-1, per_row)
    rng = np.random.default_rng(seed)

    def resample(rows: np.ndarray) -> np.ndarray:
        return rows[rng.integers(0, len(rows), len(rows))].ravel()

    boots = [_best_bin(resample(rows_t), resample(rows_p))[0] for _ in range(bootstrap)]
    lo, hi = (np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]).tolist() if boots else (share, share))
    return {"share": share, "interval": [lo, hi], "level": level, "bin_trusted_mass": mass, "threshold": threshold}


def plot_share(trusted_scores, pool_scores, share: dict, path: str) -> None:
    """P(S_t)/Q(S_t) against the trusted mass Q(S_t) of the top-score sets of rows: its minimum is α̂."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, q_t, q_p = top_set_masses(np.asarray(trusted_scores), np.asarray(pool_scores))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(q_t, q_p / q_t, "-", color="#36c", label="P(S) / Q₀(S), top-score sets S of rows")
    ax.axhline(share["share"], color="#c33", ls="--", label=f"α̂ = {share['share']:.3f}")
    ax.axhspan(*share["interval"], color="#c33", alpha=0.15, label=f"{100 * share['level']:.0f}% interval")
    ax.set_xlabel("trusted mass Q₀(S)")
    ax.set_ylabel("pool / trusted mass")
    ax.set_ylim(0, 1.05)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
