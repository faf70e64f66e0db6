"""dora-align: distribution-aware robust preference alignment (DoRA, Zhu et al. 2025).

Not PEFT's DoRA (weight-decomposed LoRA). Names are imported lazily so that ``import dora`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    # core
    "pairwise_loss": "dora.losses",
    "listwise_loss": "dora.losses",
    "implicit_rewards": "dora.losses",
    "DoRAConfig": "dora.config",
    "DoRATrainer": "dora.trainer",
    "register_pairwise": "dora.losses",
    "register_listwise": "dora.losses",
    "robust_objective": "dora.objectives",
    "evaluate_objective": "dora.objectives",
    "GroupDROState": "dora.objectives",
    "calibration_weights": "dora.ratio",
    "response_weights": "dora.ratio",
    "effective_sample_size": "dora.ratio",
    # iterative DoRA (the loop itself: dora.iterate.iterate)
    "IterateConfig": "dora.iterate",
    # no source labels: weights from a trusted sample of the target
    "annotate_density_ratio": "dora.classifier.density",
    "estimate_target_share": "dora.classifier.density",
    "select": "dora.select",  # the pilot of `dora select` (docs/howto/select.md)
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'dora' has no attribute {name!r}")


def __dir__():
    return __all__
