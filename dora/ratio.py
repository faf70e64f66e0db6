"""Calibration weights: classifier probabilities -> likelihood-ratio estimates dQ0/dP.

For response j with classifier probability c_j = P(target | x, y_j) (DoRA, Zhu et al. 2025, arXiv 2504.05831):

    w_j = 1 / ( s + pi_j * (1 - c_j) / (gamma_j * c_j) )

pi_j is the mixture share of y_j's source, gamma_j the class-imbalance ratio of the classifier's
training set (N_other / N_target) and s a stabiliser that bounds w_j by 1/s. A sample's weight h is
the mean of its responses' weights. n is the number of responses per sample (the last dimension of
``probs``; 1 for a 1-D input); with the released code's constants s = pi = 1/n and gamma = 1 the
formula reduces to w_j = n * c_j.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["calibration_weights", "response_weights", "effective_sample_size", "check_probabilities"]


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


def _as_float64(x, like: Tensor, what: str) -> Tensor:
    t = torch.as_tensor(x, dtype=torch.float64, device=like.device)
    if not torch.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"{what} must be finite and > 0, got {x!r}")
    return torch.broadcast_to(t, like.shape) if t.dim() <= like.dim() else t


def response_weights(
    probs,
    *,
    mixture_shares=None,
    imbalance=1.0,
    stabilizer: float | None = None,
    clip: float | None = None,
    eps: float = 1e-4,
) -> Tensor:
    """Per-response weights w_j, same shape as ``probs`` ([B] or [B, n]), float32."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    if p.dim() not in (1, 2):
        raise ValueError(f"probs must have shape [B] or [B, n], got {tuple(p.shape)}")
    check_probabilities(p)
    n = 1 if p.dim() == 1 else p.shape[-1]
    s = 1.0 / n if stabilizer is None else float(stabilizer)
    if s < 0 or not math.isfinite(s):
        raise ValueError(f"stabilizer must be finite and >= 0, got {stabilizer!r}")
    pi = _as_float64(1.0 / n if mixture_shares is None else mixture_shares, p, "mixture_shares")
    gamma = _as_float64(imbalance, p, "imbalance")
    c = p.clamp(eps, 1.0 - eps)
    w = 1.0 / (s + pi * (1.0 - c) / (gamma * c))
    if clip is not None:
        w = w.clamp(max=float(clip))
    return w.float()


def calibration_weights(
    probs,
    *,
    mixture_shares=None,
    imbalance=1.0,
    stabilizer: float | None = None,
    clip: float | None = None,
    normalize: bool = False,
    eps: float = 1e-4,
) -> Tensor:
    """Per-sample calibration weights h [B]: the mean over a sample's responses of ``response_weights``.

    ``probs``: [B] or [B, n] classifier probabilities P(target | x, y). ``mixture_shares`` and
    ``imbalance`` broadcast against ``probs``. ``clip`` caps each response weight; ``normalize``
    rescales h to mean 1 over the given samples (after clipping).
    """
    w = response_weights(
        probs, mixture_shares=mixture_shares, imbalance=imbalance, stabilizer=stabilizer, clip=clip, eps=eps
    )
    h = w if w.dim() == 1 else w.double().mean(dim=-1).float()
    if normalize:
        h = (h.double() / h.double().mean()).float()
    return h


def effective_sample_size(weights: Tensor) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2; equals len(w) for uniform weights."""
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    denom = (w * w).sum()
    return float((w.sum() ** 2 / denom).item()) if denom > 0 else 0.0
