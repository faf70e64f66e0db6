"""DoRAConfig: ``transformers.TrainingArguments`` plus the preference-loss and robust-objective fields.

Field names follow TRL's DPOConfig where TRL has the field, so a TRL user moves over by renaming a class.
Device-aware defaults: ``bf16`` and ``gradient_checkpointing`` left unset (None) become True on a CUDA
machine (bf16 where supported) and False on a CPU; several processes on a machine with no accelerator
(``accelerate launch`` with recipes/accelerate_configs/cpu2.yaml) run on the CPU with gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from dora.losses import loss_spec
from dora.objectives import OBJECTIVES

__all__ = ["DoRAConfig"]

# TRL DPOConfig fields that DoRATrainer accepts only at the values given: field -> (values, what to do instead)
REFUSED = {
    "pad_to_multiple_of": (("auto", None), "batches are padded to their longest sequence; leave it 'auto'"),
    "activation_offloading": ((False,), "use gradient_checkpointing=True to save activation memory"),
}

# report_to name -> (modules, any of which makes it importable; the pip package)
TRACKERS = {
    "wandb": (("wandb",), "wandb"),
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "trackio": (("trackio",), "trackio"),
    "mlflow": (("mlflow",), "mlflow"),
    "comet_ml": (("comet_ml",), "comet-ml"),
    "clearml": (("clearml",), "clearml"),
    "swanlab": (("swanlab",), "swanlab"),
    "dvclive": (("dvclive",), "dvclive"),
    "neptune": (("neptune",), "neptune"),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "azure_ml": (("azureml",), "azureml-core"),
    "dagshub": (("dagshub",), "dagshub"),
    "flyte": (("flytekit",), "flytekit"),
}


def check_trackers(report_to) -> None:
    """A ValueError with the ``pip install`` line for the first tracker in ``report_to`` that is not installed."""
    import importlib.util

    for name in report_to or []:
        modules, package = TRACKERS.get(name, ((), ""))
        if modules and not any(importlib.util.find_spec(m) for m in modules):
            extra = f" (or pip install 'dora-align[{name}]')" if name in ("wandb", "tensorboard", "trackio") else ""
            raise ValueError(
                f"report_to names '{name}', which is not installed: pip install {package}{extra}, "
                f"or drop it from report_to"
            )



@dataclass
class DoRAConfig(TrainingArguments):
    """Training arguments for ``DoRATrainer``. See docs/training.md for every field."""

    # the per-sample loss
    beta: float | None = field(default=None, metadata={"help": "β; 0.1, or 2.0 for SimPO, when unset."})
    loss_type: str | list[str] = field(
        default="sigmoid", metadata={"help": "Per-sample loss(es): sigmoid, ipo, robust, simpo, dpo_pl, ..."}
    )
    loss_weights: list[float] | None = field(
        default=None, metadata={"help": "Weights when loss_type is a list."}
    )
    label_smoothing: float = field(default=0.0, metadata={"help": "ε of cdpo / robust / exo_pair / simpo."})
    simpo_gamma: float = field(default=0.5, metadata={"help": "SimPO's absolute margin γ (as TRL's CPO)."})
    rdpo_alpha: float = field(default=0.01, metadata={"help": "R-DPO's length penalty α."})
    rrhf_sft_weight: float = field(default=1.0, metadata={"help": "Weight of RRHF's SFT term."})
    lire_temperature: float = field(default=2.0, metadata={"help": "LIRE's temperature T."})
    # the robust objective
    objective: str = field(
        default="dora",
        metadata={"help": "mean | reweight | kl_dro | dora | dr_dpo | kldpo | cvar | group_dro"},
    )
    dro_lambda: float = field(default=1.0, metadata={"help": "λ of the KL-DRO objectives."})
    dora_placement: str = field(default="inside", metadata={"help": "inside: λ log mean exp(hℓ/λ); outside."})
    dr_dpo_beta: float = field(default=1.0, metadata={"help": "β′ of Dr. DPO."})
    kldpo_tau: float = field(default=1.0, metadata={"help": "τ of KLDPO."})
    cvar_alpha: float = field(default=0.2, metadata={"help": "Tail fraction of CVaR."})
    group_dro_eta: float = field(default=0.01, metadata={"help": "Mirror-ascent step of group DRO."})
    dro_accumulation: str = field(
        default="micro_batch",
        metadata={"help": "micro_batch: each micro-batch is a DRO batch; full: the whole accumulated batch."},
    )
    # data
    weight_column: str = field(default="dora_weight", metadata={"help": "Column of calibration weights h."})
    source_column: str = field(default="source", metadata={"help": "Column naming each row's source."})
    group_column: str = field(default="group", metadata={"help": "Column of group labels (group_dro)."})
    max_length: int | None = field(default=1024, metadata={"help": "Truncate prompt + completion to this."})
    max_prompt_length: int | None = field(default=None, metadata={"help": "Drop rows with longer prompts."})
    precompute_ref_log_probs: bool = field(
        default=False, metadata={"help": "Reference log-probs once, upfront."}
    )
    disable_dropout: bool = field(default=True, metadata={"help": "Turn dropout off in the policy (as TRL)."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenisation."})
    logprob_chunk_tokens: int = field(default=2048, metadata={"help": "Tokens per LM-head chunk."})
    # device-aware defaults and TRL-style overrides of TrainingArguments
    learning_rate: float = field(default=1e-6, metadata={"help": "The initial learning rate for AdamW (TRL's 1e-6)."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16; default: on CUDA where supported."})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Default: on CUDA only."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the trainer needs them."}
    )
    # ---- TRL DPOConfig fields for model loading, and those accepted only at TRL's default (REFUSED below)
    model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments of AutoModelForCausalLM.from_pretrained when model is a string."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow models and tokenizers that ship custom code (from_pretrained)."}
    )
    pad_to_multiple_of: int | str | None = field(
        default="auto", metadata={"help": "Only 'auto' / None: batches pad to their longest sequence."}
    )
    activation_offloading: bool = field(
        default=False, metadata={"help": "Refused: use gradient_checkpointing to save activation memory."}
    )

    def __post_init__(self):
        for name, (allowed, instead) in REFUSED.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported by DoRATrainer: {instead}")
        self.pad_to_multiple_of = None  # 'auto' pads to a multiple only on Neuron devices (TRL)
        if isinstance(self.model_init_kwargs, str):
            import json

            self.model_init_kwargs = json.loads(self.model_init_kwargs)
        if isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]
        self.loss_type = list(self.loss_type)
        for name in self.loss_type:
            loss_spec(name)  # a clear error for an unknown name
        if self.loss_weights is None:
            self.loss_weights = [1.0] * len(self.loss_type)
        if len(self.loss_weights) != len(self.loss_type):
            raise ValueError(
                f"loss_weights has {len(self.loss_weights)} entries for {len(self.loss_type)} losses"
            )
        listwise = [loss_spec(n).listwise for n in self.loss_type]
        if any(listwise) and not all(listwise) and len(self.loss_type) > 1:
            raise ValueError("do not mix listwise and pairwise losses in one run")
        if self.beta is None:
            self.beta = 2.0 if self.loss_type == ["simpo"] else 0.1
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; known: {', '.join(sorted(OBJECTIVES))}")
        if self.dora_placement not in ("inside", "outside"):
            raise ValueError(f"dora_placement must be 'inside' or 'outside', got {self.dora_placement!r}")
        if self.dro_accumulation not in ("micro_batch", "full"):
            raise ValueError(
                f"dro_accumulation must be 'micro_batch' or 'full', got {self.dro_accumulation!r}"
            )
        if self.dro_lambda <= 0:
            raise ValueError(f"dro_lambda must be > 0, got {self.dro_lambda}")
        if not torch.accelerator.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            self.use_cpu = True  # several processes on a CPU-only machine: gloo (MULTI_CPU)
        cuda = torch.cuda.is_available() and not self.use_cpu
        if self.bf16 is None:
            self.bf16 = bool(cuda and torch.cuda.is_bf16_supported()) and not self.fp16
        if self.gradient_checkpointing is None:
            self.gradient_checkpointing = cuda
        super().__post_init__()
        check_trackers(self.report_to)

    @property
    def reference_free(self) -> bool:
        return not any(loss_spec(n).needs_ref for n in self.loss_type)

    @property
    def listwise(self) -> bool:
        return loss_spec(self.loss_type[0]).listwise

    def loss_hyper(self) -> dict:
        return {
            "label_smoothing": self.label_smoothing,
            "simpo_gamma": self.simpo_gamma,
            "rdpo_alpha": self.rdpo_alpha,
            "rrhf_sft_weight": self.rrhf_sft_weight,
            "lire_temperature": self.lire_temperature,
        }

    def objective_hyper(self) -> dict:
        return {
            "dora_placement": self.dora_placement,
            "dr_dpo_beta": self.dr_dpo_beta,
            "kldpo_tau": self.kldpo_tau,
            "cvar_alpha": self.cvar_alpha,
        }
