"""DoRATrainer and its parts, one stage per module:

- ``trainer``: the Trainer subclass, wiring data -> log-probs -> per-sample losses -> robust objective;
- ``reference``: the reference policy (separate model, PEFT adapter disabled or frozen "ref" copy, precomputed);
- ``metrics``: TRL-named and DoRA metrics, per source, gathered across processes;
- ``preflight``: what is checked and set up before a model loads or a step runs;
- ``callbacks``: TR-DPO's reference sync and the weight histogram for trackers;
- ``summary``: the start-up summary.

The reference is, in order: the given ``ref_model``; for a model wrapped with ``peft_config``, the base with
adapters disabled; for a PeftModel passed with a trained adapter, a frozen copy of that adapter; none for
reference-free losses (SimPO, RRHF, LIRE) or precomputed reference log-probs; otherwise a frozen copy of the
policy.
"""

from dora.trainer.callbacks import SyncReferenceCallback, WeightHistogramCallback
from dora.trainer.reference import unwrap_peft
from dora.trainer.trainer import DoRATrainer

__all__ = ["DoRATrainer", "WeightHistogramCallback", "SyncReferenceCallback", "unwrap_peft"]
