"""Calibration weights: classifier probabilities -> likelihood-ratio estimates dQ0/dP.

For response j with classifier probability c_j = P(target | x, y_j) (DoRA, Zhu et al. 2025, arXiv 2504.05831;
docs/concepts.md, "Calibration weights"), the data the weights are for being P = a*Q0 + (1 - a)*Q_other:

    w_j = 1 / ( s + (1 - a) * (1 - c_j) / (gamma * c_j) )

a is the target share of that data, gamma = N_other / N_target the class imbalance of the classifier's
training set (Bayes: Q_other/Q0 = (1 - c)/(gamma c)) and s a stabiliser, s = a by default, when w_j is
dQ0/dP exactly (<= 1/a). The weight depends on the response's text through c_j only, never on its source
label. A sample's weight h is the mean of its responses' weights. ``preset="authors"`` is the released
code's constants (s and the factor (1 - a) both 1/n, gamma = 1, n responses per sample): w_j = n * c_j.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["calibration_weights", "response_weights", "effective_sample_size", "check_probabilities"]

PRESETS = ("authors",)


def check_probabilities(probs: Tensor, name: str = "target_prob") -> None:
    """Raise a ValueError naming the first row (and response) whose probability is NaN, infinite or
    outside [0, 1]."""
    bad = ~torch.isfinite(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        idx = torch.nonzero(bad)[0].tolist()
        row = idx[0]
        where = f"row {row}" + (f", response {idx[1]}" if len(idx) > 1 else "")
        raise ValueError(
            f"{where}: {name} = {probs[tuple(idx)].item()!r} is not a probability "
            "(must be a finite number in [0, 1])"
        )


def _constants(n: int, target_share, imbalance, stabilizer, preset) -> tuple[float, float, float]:
    """(s, 1 - a, gamma) for the formula, checked."""
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {list(PRESETS)} or None, got {preset!r}")
        if target_share is not None or stabilizer is not None or imbalance != 1.0:
            raise ValueError(
                "preset='authors' fixes s = 1 - target_share = 1/n and imbalance = 1: "
                "do not pass target_share, stabilizer or imbalance with it"
            )
        return 1.0 / n, 1.0 / n, 1.0
    if target_share is None:
        raise ValueError(
            "calibration_weights needs target_share (the share a of target responses in the data the weights "
            "are for, e.g. 0.2), or preset='authors' for the released code's w = n*c"
        )
    a = float(target_share)
    if not (0.0 < a <= 1.0) or not math.isfinite(a):
        raise ValueError(f"target_share must be in (0, 1], got {target_share!r}")
    gamma = float(imbalance)
    if not (gamma > 0.0) or not math.isfinite(gamma):
        raise ValueError(f"imbalance must be finite and > 0, got {imbalance!r}")
    s = a if stabilizer is None else float(stabilizer)
    if not (s >= 0.0) or not math.isfinite(s) or (s == 0.0 and a == 1.0):
        raise ValueError(f"stabilizer must be finite and >= 0 (> 0 when target_share = 1), got {stabilizer!r}")
    return s, 1.0 - a, gamma


def _weights64(probs, target_share, imbalance, stabilizer, preset, clip, eps) -> Tensor:
    p = torch.as_tensor(probs, dtype=torch.float64)
    if p.dim() not in (1, 2):
        raise ValueError(f"probs must have shape [B] or [B, n], got {tuple(p.shape)}")
    if p.numel() == 0:
        raise ValueError("probs is empty: no probabilities to weigh")
    check_probabilities(p)
    if not 0.0 <= float(eps) < 0.5:
        raise ValueError(f"eps must be in [0, 0.5), got {eps!r}")
    n = 1 if p.dim() == 1 else p.shape[-1]
    s, other, gamma = _constants(n, target_share, imbalance, stabilizer, preset)
    c = p.clamp(eps, 1.0 - eps)
    w = 1.0 / (s + other * (1.0 - c) / (gamma * c))
    if clip is not None:
        if not (float(clip) > 0.0):
            raise ValueError(f"clip must be > 0, got {clip!r}")
        w = w.clamp(max=float(clip))
    return w


def response_weights(
    probs,
    *,
    target_share: float | None = None,
    imbalance: float = 1.0,
    stabilizer: float | None = None,
    preset: str | None = None,
    clip: float | None = None,
    eps: float = 1e-4,
) -> Tensor:
    """Per-response weights w_j, same shape as ``probs`` ([B] or [B, n]), float32 (computed in float64)."""
    return _weights64(probs, target_share, imbalance, stabilizer, preset, clip, eps).float()


def calibration_weights(
    probs,
    *,
    target_share: float | None = None,
    imbalance: float = 1.0,
    stabilizer: float | None = None,
    preset: str | None = None,
    clip: float | None = None,
    normalize: bool = False,
    eps: float = 1e-4,
) -> Tensor:
    """Per-sample calibration weights h [B]: the mean over a sample's responses of ``response_weights``.

    ``probs``: [B] or [B, n] classifier probabilities P(target | x, y). ``target_share`` (a) is required
    unless ``preset="authors"``; ``imbalance`` is gamma = N_other / N_target of the classifier's training
    set; ``stabilizer`` is s (default a). ``clip`` caps each response weight; ``normalize`` rescales h to
    mean 1 over the given samples (after clipping).
    """
    w = _weights64(probs, target_share, imbalance, stabilizer, preset, clip, eps)
    h = w if w.dim() == 1 else w.mean(dim=-1)
    if normalize:
        if not h.mean() > 0:  # every weight 0 (probabilities 0 with eps=0): there is no mean to scale to
            raise ValueError("normalize=True: every weight is 0 (the probabilities are 0; use eps > 0), cannot scale")
        h = h / h.mean()
    return h.float()


def effective_sample_size(weights: Tensor) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2; equals len(w) for uniform weights."""
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    denom = (w * w).sum()
    return float((w.sum() ** 2 / denom).item()) if denom > 0 else 0.0
