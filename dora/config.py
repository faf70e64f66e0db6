"""DoRAConfig: ``transformers.TrainingArguments`` plus the preference-loss and robust-objective fields.

Field names follow TRL's DPOConfig where TRL has the field, so a TRL user moves over by renaming a class.
Device-aware defaults: ``bf16`` and ``gradient_checkpointing`` left unset (None) become True on a CUDA
machine (bf16 where supported) and False on a CPU (checkpointing set through transformers' current name,
``activation_checkpointing``); with no accelerator the dataloaders do not pin memory; several processes on a
machine with no accelerator (``accelerate launch`` with recipes/accelerate_configs/cpu2.yaml) run on the CPU
with gloo.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from dora.losses import check_loss_settings, loss_spec
from dora.objectives import check_objective_settings, objective_spec

__all__ = ["DoRAConfig"]

# TRL DPOConfig fields that DoRATrainer accepts only at the values given: field -> (values, what to do instead)
REFUSED = {
    "pad_to_multiple_of": (("auto", None), "batches are padded to their longest sequence; leave it 'auto'"),
    "activation_offloading": ((False,), "use gradient_checkpointing=True to save activation memory"),
}

# float settings that must be finite (NaN or inf would train to NaN parameters, or log a loss of 0)
FINITE = ("beta", "label_smoothing", "simpo_gamma", "rdpo_alpha", "rrhf_sft_weight", "lire_temperature", "dro_lambda",
          "dr_dpo_beta", "kldpo_tau", "cvar_alpha", "group_dro_eta", "rpo_alpha", "discopop_tau", "ld_alpha",
          "f_alpha_divergence_coef", "ref_model_mixup_alpha", "router_aux_loss_coef", "learning_rate",
          "weight_decay", "warmup_ratio", "adam_beta1", "adam_beta2", "adam_epsilon")  # fmt: skip

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
    """A ValueError naming a tracker in ``report_to`` that does not exist (with the nearest name), or with the
    ``pip install`` line for the first that is not installed."""
    import difflib
    import importlib.util

    for name in report_to or []:
        if name not in TRACKERS and name not in ("all", "none", "kubeflow"):
            near = difflib.get_close_matches(str(name), sorted(TRACKERS), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ValueError(f"report_to: unknown tracker {name!r}{hint}; known: {', '.join(sorted(TRACKERS))}, none")
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
    loss_type: list[str] = field(  # a list default, as TRL's: HfArgumentParser reads `--loss_type a b` into it
        default_factory=lambda: ["sigmoid"],
        metadata={"help": "Per-sample loss(es), a name or a list: sigmoid, ipo, robust, simpo, dpo_pl, ..."},
    )
    loss_weights: list[float] | None = field(
        default=None, metadata={"help": "Weights when loss_type is a list."}
    )
    label_smoothing: float = field(default=0.0, metadata={"help": "ε of cdpo / robust / exo_pair / simpo."})
    simpo_gamma: float = field(default=0.5, metadata={"help": "SimPO's absolute margin γ (as TRL's CPO)."})
    rdpo_alpha: float = field(default=0.01, metadata={"help": "R-DPO's length penalty α."})
    rrhf_sft_weight: float = field(default=1.0, metadata={"help": "Weight of RRHF's SFT term."})
    rrhf_sft: str = field(
        default="best",
        metadata={"help": "RRHF's SFT term: best (best-scored response, per token) | authors (index -2, padded)."},
    )
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
    # ---- TRL 1.16 DPOConfig training features, with TRL's defaults and meaning (docs/training.md)
    rpo_alpha: float | None = field(
        default=None,
        metadata={"help": "RPO: adds the 'sft' loss (chosen NLL) with this weight, as loss_type=[..., 'sft']."},
    )
    discopop_tau: float = field(default=0.05, metadata={"help": "τ of the 'discopop' loss (the paper's 0.05)."})
    use_weighting: bool = field(
        default=False, metadata={"help": "WPO: weigh each pair by its responses' length-normalised probabilities."}
    )
    ld_alpha: float | None = field(
        default=None,
        metadata={"help": "LD-DPO α in [0, 1]: weight of the tokens past the shorter response's length."},
    )
    f_divergence_type: str = field(
        default="reverse_kl",
        metadata={
            "help": "f-DPO divergence: reverse_kl | forward_kl | js_divergence | alpha_divergence "
            "(non-default only with the delta-based losses)."
        },
    )
    f_alpha_divergence_coef: float = field(
        default=0.5, metadata={"help": "α of f_divergence_type='alpha_divergence'."}
    )
    sync_ref_model: bool = field(
        default=False,
        metadata={"help": "TR-DPO: every ref_model_sync_steps, ref <- α·policy + (1-α)·ref."},
    )
    ref_model_mixup_alpha: float = field(default=0.6, metadata={"help": "TR-DPO's α."})
    ref_model_sync_steps: int = field(default=512, metadata={"help": "TR-DPO's τ: steps between syncs."})
    precompute_ref_batch_size: int | None = field(
        default=None,
        metadata={"help": "Batch size of precompute_ref_log_probs; default: the train / eval batch size."},
    )
    truncation_mode: str = field(
        default="keep_start",
        metadata={"help": "Past max_length keep the start or the end.", "choices": ["keep_start", "keep_end"]},
    )
    padding_free: bool = field(
        default=False,
        metadata={"help": "Pack each batch into one row with position_ids: no compute on padding."},
    )
    pad_token: str | None = field(
        default=None, metadata={"help": "Padding token; default: the tokenizer's pad token, else its EOS."}
    )
    router_aux_loss_coef: float | None = field(
        default=None,
        metadata={"help": "MoE load-balancing loss weight; default: the model config's; 0 disables it."},
    )
    # device-aware defaults and TRL-style overrides of TrainingArguments
    learning_rate: float = field(default=1e-6, metadata={"help": "The initial learning rate for AdamW (TRL's 1e-6)."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16; default: on CUDA where supported."})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Default: on CUDA only."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps."})
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
        if self.rpo_alpha is not None and "sft" not in self.loss_type:
            n = len(self.loss_type)
            self.loss_weights = [*(self.loss_weights if self.loss_weights is not None else [1.0] * n), self.rpo_alpha]
            self.loss_type.append("sft")
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
        self._check_trl_features()
        if self.beta is None:
            self.beta = 2.0 if self.loss_type == ["simpo"] else 0.1
        objective_spec(self.objective)  # a clear error for an unknown name
        if self.dro_accumulation not in ("micro_batch", "full"):
            raise ValueError(
                f"dro_accumulation must be 'micro_batch' or 'full', got {self.dro_accumulation!r}"
            )
        if not (0 < self.beta < math.inf):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta}")
        self._check_ranges()
        # the losses' and objectives' own rules (dora.losses / dora.objectives), applied once, here
        check_loss_settings(self.loss_type, label_smoothing=self.label_smoothing, rrhf_sft=self.rrhf_sft,
                            lire_temperature=self.lire_temperature, f_divergence_type=self.f_divergence_type)
        check_objective_settings(dro_lambda=self.dro_lambda, dora_placement=self.dora_placement,
                                 dr_dpo_beta=self.dr_dpo_beta, kldpo_tau=self.kldpo_tau, cvar_alpha=self.cvar_alpha)
        if not torch.accelerator.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            self.use_cpu = True  # several processes on a CPU-only machine: gloo (MULTI_CPU)
        cuda = torch.cuda.is_available() and not self.use_cpu
        if self.bf16 is None:
            self.bf16 = bool(cuda and torch.cuda.is_bf16_supported()) and not self.fp16
        if not torch.accelerator.is_available():
            self.dataloader_pin_memory = False  # nothing to pin for; torch warns at every dataloader otherwise
        if self.gradient_checkpointing is None and self.activation_checkpointing is None:
            self.activation_checkpointing = cuda  # transformers' current name: its deprecated alias would warn
        super().__post_init__()
        check_trackers(self.report_to)

    def _check_training_values(self) -> None:
        """TrainingArguments' values that would fail after the model loads, or train nothing."""
        for f in dataclasses.fields(self):  # NaN in any float setting (num_train_epochs, max_grad_norm, ...)
            value = getattr(self, f.name, None)
            if isinstance(value, float) and math.isnan(value):
                raise ValueError(f"{f.name} must be a number, got nan")
        if self.max_steps <= 0 and not 0 < self.num_train_epochs < math.inf:
            raise ValueError(f"num_train_epochs must be > 0 and finite (or max_steps >= 1): {self.num_train_epochs}")
        if self.max_steps < -1 or self.max_steps == 0:
            raise ValueError(f"max_steps must be >= 1, or -1 (train num_train_epochs), got {self.max_steps}")
        for name in ("seed", "dataloader_num_workers"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("logprob_chunk_tokens", "dataset_num_proc"):
            if getattr(self, name) is not None and not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, strategy in (("save_steps", self.save_strategy), ("eval_steps", self.eval_strategy)):
            value = getattr(self, name)
            if str(getattr(strategy, "value", strategy)) == "steps" and value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 with {name.split('_')[0]}_strategy 'steps', got {value}")

    def _check_ranges(self) -> None:
        """Values that would otherwise fail at the first step, after the model loads, or give NaN losses."""
        for name in FINITE:
            value = getattr(self, name, None)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        self._check_training_values()
        if not self.learning_rate >= 0:
            raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate}")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_length", "max_prompt_length"):
            if getattr(self, name) is not None and not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be >= 1 (or None: no limit), got {getattr(self, name)}")

    def _check_trl_features(self) -> None:
        if self.truncation_mode not in ("keep_start", "keep_end"):
            raise ValueError(f"truncation_mode must be 'keep_start' or 'keep_end', got {self.truncation_mode!r}")
        if self.truncation_mode == "keep_end":  # as TRL 1.16's DPOConfig warns
            msg = "truncation_mode='keep_end' is deprecated in TRL (to be removed in TRL 2.0)"
            warnings.warn(msg, FutureWarning, stacklevel=3)
        if self.ld_alpha is not None and not 0.0 <= self.ld_alpha <= 1.0:
            raise ValueError(f"ld_alpha must be in [0, 1], got {self.ld_alpha}")
        if self.use_weighting:
            bad = [n for n in self.loss_type if n in ("aot", "aot_unpaired") or loss_spec(n).listwise]
            if bad:
                raise ValueError(
                    f"use_weighting (WPO) weighs pairs, which {bad} do not keep (aot sorts the batch; listwise "
                    "losses rank n responses): drop use_weighting or use a pairwise loss"
                )
        if self.sync_ref_model:
            if self.precompute_ref_log_probs:
                raise ValueError(
                    "sync_ref_model=True updates the reference during training, so precomputed reference "
                    "log-probs would be stale: set precompute_ref_log_probs=False"
                )
            if not any(loss_spec(n).needs_ref for n in self.loss_type):
                raise ValueError(f"sync_ref_model=True needs a reference, and {self.loss_type} use none")
            if not 0.0 <= self.ref_model_mixup_alpha <= 1.0 or self.ref_model_sync_steps < 1:
                raise ValueError("sync_ref_model needs 0 <= ref_model_mixup_alpha <= 1 and ref_model_sync_steps >= 1")
        if self.precompute_ref_batch_size is not None and self.precompute_ref_batch_size < 1:
            raise ValueError(f"precompute_ref_batch_size must be >= 1, got {self.precompute_ref_batch_size}")

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
            "rrhf_sft": self.rrhf_sft,
            "lire_temperature": self.lire_temperature,
            "discopop_tau": self.discopop_tau,
            "f_divergence_type": self.f_divergence_type,
            "f_alpha_divergence_coef": self.f_alpha_divergence_coef,
        }

    def objective_hyper(self) -> dict:
        return {
            "dora_placement": self.dora_placement,
            "dr_dpo_beta": self.dr_dpo_beta,
            "kldpo_tau": self.kldpo_tau,
            "cvar_alpha": self.cvar_alpha,
        }
