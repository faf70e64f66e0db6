"""DoRATrainer: a ``transformers.Trainer`` that wires the data, the log-probs, the per-sample losses and the
robust objective together. Each piece lives in its own module; this file only connects them:

    rows -> dora.data (tokens + weights) -> dora.logprobs (sequence log-probs of policy and reference)
         -> dora.losses (one loss per sample) -> dora.objectives (a scalar over the global batch)

The reference is, in order: the given ``ref_model``; for a PEFT model, the base with adapters disabled;
none for reference-free losses (SimPO, RRHF, LIRE) or precomputed reference log-probs; otherwise a frozen
copy of the policy.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections import defaultdict

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, set_seed

from dora.config import DoRAConfig
from dora.data import (
    PreferenceCollator,
    add_implicit_prompt,
    check_loss_fits_data,
    check_weight_columns,
    prepare_dataset,
    validate_rows,
)
from dora.logprobs import (
    PADDING_FREE_ATTENTION,
    TokenLogps,
    add_logprob_head,
    completion_token_logps,
    length_desensitized_logps,
    unwrap_causal_lm,
    wpo_weights,
)
from dora.losses import listwise_loss, loss_spec, pairwise_loss
from dora.objectives import (
    GroupDROState,
    ObjectiveOutput,
    evaluate_objective,
    gather_batch,
    objective_gradients,
    surrogate_loss,
)
from dora.ratio import effective_sample_size

logger = logging.getLogger(__name__)

__all__ = ["DoRATrainer"]

STATE_FILE = "dora_state.json"


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def _disable_dropout(model) -> None:
    """Every dropout of the model, a PEFT adapter's ``lora_dropout`` included, set to p = 0."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0


def _add_reference_adapter(model) -> None:
    """A frozen copy of a PeftModel's trained "default" adapter under the name "ref" (TRL 1.16's reference for a
    model passed with its adapter): the reference is then the model as given, not the bare base."""
    if "ref" in model.peft_config:
        return
    model.add_adapter("ref", model.peft_config["default"])
    for name, param in model.named_parameters():
        if ".default." in name:
            ref = model.get_parameter(name.replace(".default.", ".ref."))
            ref.data.copy_(param.data)
            ref.requires_grad_(False)


@contextlib.contextmanager
def _reference_adapter(model):
    """Inside: the PEFT model computes the reference, with its "ref" adapter, or with adapters disabled."""
    if "ref" not in model.peft_config:
        with model.disable_adapter():
            yield
        return
    previous = model.active_adapter
    model.set_adapter("ref")
    try:
        yield
    finally:
        model.set_adapter(previous)
        for name, param in model.named_parameters():  # set_adapter marks the active adapter trainable
            if ".ref." in name:
                param.requires_grad_(False)


def _check_data(args, train_dataset, eval_dataset) -> None:
    """Every row of every dataset, and whether the loss fits the data, checked before a model loads."""
    named = [("train", train_dataset)]
    if isinstance(eval_dataset, dict):
        named += [(f"eval ({k})", v) for k, v in eval_dataset.items()]
    else:
        named.append(("eval", eval_dataset))
    group = args.group_column if args.objective == "group_dro" else None
    for name, ds in named:
        if ds is None or not hasattr(ds, "column_names"):
            continue
        ds = add_implicit_prompt(ds)
        validate_rows(ds, weight_column=args.weight_column, name=name, group_column=group)
        check_weight_columns(ds.column_names, args.weight_column, name)
        check_loss_fits_data(ds, args.loss_type, args.listwise, f"{name} dataset")


def _ranked(scores: torch.Tensor, *columns):
    """``columns`` ([B, n] or None) reordered best score first (stable: ties keep their order)."""
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    return tuple(None if c is None else torch.gather(c, 1, order) for c in columns)


def _set_pad_token(tokenizer, pad_token: str | None) -> None:
    """``pad_token`` (TRL's field) as the tokenizer's padding token; it must be in the vocabulary."""
    if pad_token is None:
        return
    if pad_token not in tokenizer.get_vocab():
        raise ValueError(
            f"pad_token {pad_token!r} is not in the vocabulary of {type(tokenizer).__name__}: pick a token it has"
        )
    tokenizer.pad_token = pad_token


def _router_aux_loss(model, coef: float | None) -> tuple[float, bool]:
    """(coefficient, enabled) of the MoE load-balancing loss, as TRL 1.16: ``router_aux_loss_coef``, else the
    model config's; on for any model whose config has ``output_router_logits``, unless the coefficient is 0."""
    text = unwrap_causal_lm(model).config.get_text_config()
    moe = hasattr(text, "output_router_logits")
    if coef and not moe:
        raise ValueError(
            f"router_aux_loss_coef={coef}, but {type(unwrap_causal_lm(model)).__name__} is not a Mixture-of-Experts "
            "model returning router logits: leave router_aux_loss_coef unset"
        )
    coef = getattr(text, "router_aux_loss_coef", 0.0) if coef is None else coef
    return float(coef or 0.0), moe and coef != 0.0


def _check_padding_free(model) -> None:
    impl = getattr(unwrap_causal_lm(model).config, "_attn_implementation", None)
    if impl not in PADDING_FREE_ATTENTION:
        raise ValueError(
            f"padding_free=True packs a batch into one row, which needs attention that follows position_ids "
            f"({', '.join(PADDING_FREE_ATTENTION)}); this model uses {impl!r}: load it with "
            "attn_implementation='sdpa' (or flash_attention_2), or set padding_free=False"
        )


SORTING_LOSSES = ("aot", "aot_unpaired")
SAMPLE_WEIGHTED_OBJECTIVES = ("reweight", "dora", "cvar", "group_dro")


def _check_sorting_losses(args, datasets_) -> None:
    """AOT sorts the batch, so its i-th loss is not pair i's: a per-sample weight or group cannot follow it."""
    sorting = [n for n in args.loss_type if n in SORTING_LOSSES]
    if not sorting or args.objective not in SAMPLE_WEIGHTED_OBJECTIVES:
        return
    weighted = args.objective == "group_dro" or any(
        ds is not None and len(set(ds["weight"])) > 1 for ds in datasets_
    )
    if weighted:
        raise ValueError(
            f"loss {sorting} sorts the batch, so a per-sample weight cannot follow its pair under objective "
            f"{args.objective!r}: use objective 'mean' or 'kl_dro' (what 'dora' computes without weights)"
        )


class SyncReferenceCallback(TrainerCallback):
    """TR-DPO (Gorbatovski et al. 2024, arXiv 2404.09656, Eq. 4), as TRL's ``sync_ref_model``: every
    ``ref_model_sync_steps`` optimizer steps, ref <- alpha * policy + (1 - alpha) * ref (soft update)."""

    def __init__(self, trainer: DoRATrainer):
        self.trainer = trainer

    @torch.no_grad()
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.ref_model_sync_steps:
            return
        policy = unwrap_causal_lm(self.trainer.accelerator.unwrap_model(self.trainer.model))
        ref = unwrap_causal_lm(self.trainer.ref_model)
        for r, p in zip(ref.parameters(), policy.parameters(), strict=True):
            r.data.mul_(1.0 - args.ref_model_mixup_alpha).add_(p.data, alpha=args.ref_model_mixup_alpha)


def _vocab(datasets_, columns: tuple[str, ...]) -> dict[str, int]:
    """Sorted names found in ``columns`` (a column may hold one name per row or a list, as ``sources``)."""
    names = set()
    for ds in datasets_:
        if ds is None:
            continue
        for c in columns:
            if c in ds.column_names:
                for x in ds[c]:
                    names.update(str(v) for v in (x if isinstance(x, list) else [x]) if v is not None)
    return {name: i for i, name in enumerate(sorted(names))}


HISTOGRAM_TRACKERS = ("tensorboard", "wandb", "trackio")
MAX_WEIGHTS_KEPT = 65536


class WeightHistogramCallback(TrainerCallback):
    """The calibration weights of the training rows seen since the last log, written at each log as the histogram
    ``train/dora/weights`` to tensorboard, wandb and trackio (the trackers in ``report_to``), by rank 0 only.
    The trainer hands the weights over only while this callback is on; at most ``MAX_WEIGHTS_KEPT`` (the most
    recent) are kept per logging window."""

    def __init__(self, trainer: DoRATrainer, max_kept: int = MAX_WEIGHTS_KEPT):
        self.trainer = trainer
        self.max_kept = max_kept
        self.window: list[torch.Tensor] = []
        self.kept = 0

    def add(self, weights: torch.Tensor) -> None:
        self.window.append(weights.detach().float().cpu().flatten())
        self.kept += self.window[-1].numel()
        while self.kept - self.window[0].numel() >= self.max_kept:
            self.kept -= self.window.pop(0).numel()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.window or not state.is_world_process_zero:
            return
        values = torch.cat(self.window)[-self.max_kept :]
        self.window, self.kept = [], 0
        tag, step = "train/dora/weights", state.global_step
        if "tensorboard" in args.report_to:
            for cb in self.trainer.callback_handler.callbacks:
                writer = getattr(cb, "tb_writer", None)
                if writer is not None:
                    writer.add_histogram(tag, values, step)
        if "wandb" in args.report_to:
            import wandb

            if wandb.run is not None:  # a row of its own at this step ("train/global_step" is wandb's x-axis)
                wandb.log({tag: wandb.Histogram(values.numpy()), "train/global_step": step})
        if "trackio" in args.report_to:
            import trackio

            trackio.log({tag: trackio.Histogram(values.numpy()), "train/global_step": step})


class DoRATrainer(Trainer):
    """Preference training with a robust objective over the global batch (DoRA, Zhu et al. 2025)."""

    def __init__(
        self,
        model,
        ref_model=None,
        args: DoRAConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        peft_config=None,
        data_collator=None,
        callbacks=None,
        optimizers=(None, None),
        model_init_kwargs: dict | None = None,
    ):
        args = args or DoRAConfig(output_dir="dora_output")
        if not isinstance(args, DoRAConfig):
            raise TypeError("args must be a DoRAConfig")
        model_init_kwargs = {**(args.model_init_kwargs or {}), **(model_init_kwargs or {})}
        if args.trust_remote_code:
            model_init_kwargs["trust_remote_code"] = True
        self._ref_given = ref_model is not None  # for the start-up summary
        _check_data(args, train_dataset, eval_dataset)  # before any model loads
        if isinstance(model, str):
            model = AutoModelForCausalLM.from_pretrained(model, **model_init_kwargs)
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(
                unwrap_causal_lm(model).config._name_or_path, trust_remote_code=args.trust_remote_code
            )
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        _set_pad_token(processing_class, args.pad_token)
        self.router_aux_loss_coef, self.aux_loss_enabled = _router_aux_loss(model, args.router_aux_loss_coef)
        if args.padding_free:
            _check_padding_free(model)
        if peft_config is not None and _is_peft(model):
            raise ValueError(
                "model is already a PeftModel and peft_config was given too: pass one of them (to train a new "
                "adapter on a model with a trained one, merge it first: model.merge_and_unload())"
            )
        set_seed(args.seed)  # before any adapter is initialised, so that one seed gives one run
        add_logprob_head(model, args.logprob_chunk_tokens)

        # the reference, decided before any PEFT wrapping so a frozen copy is of the base model
        if ref_model is not None:
            if isinstance(ref_model, str):
                ref_model = AutoModelForCausalLM.from_pretrained(ref_model, **model_init_kwargs)
        elif not (
            _is_peft(model) or peft_config is not None or args.reference_free or args.precompute_ref_log_probs
        ):
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            add_logprob_head(ref_model, args.logprob_chunk_tokens)  # a deep copy must not share the closure
            ref_model.eval().requires_grad_(False)
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        elif _is_peft(model) and ref_model is None and not args.reference_free:
            _add_reference_adapter(model)  # a trained adapter is its own reference, as TRL
        if args.disable_dropout:  # after PEFT wrapping, so the adapter's dropout is off too
            _disable_dropout(model)
        if args.gradient_checkpointing and _is_peft(model):
            model.enable_input_require_grads()
        self.ref_model = ref_model
        if args.sync_ref_model and ref_model is None:
            raise ValueError(
                "sync_ref_model=True mixes the policy into a separate reference model, and there is none: with "
                "PEFT the reference is the model with its adapter disabled. Use full fine-tuning, or "
                "sync_ref_model=False"
            )

        datasets_ = [
            train_dataset,
            *(eval_dataset.values() if isinstance(eval_dataset, dict) else [eval_dataset]),
        ]
        if args.objective == "group_dro":
            for ds in (d for d in datasets_ if d is not None):
                if args.group_column not in ds.column_names:
                    raise ValueError(f"objective 'group_dro' needs a '{args.group_column}' column (group_column)")
                missing = [i for i, g in enumerate(ds[args.group_column]) if g is None or str(g) == ""]
                if missing:
                    raise ValueError(f"row {missing[0]}, column '{args.group_column}': no group (for group_dro)")
        self.source_vocab = _vocab(datasets_, (args.source_column, "chosen_source", "rejected_source", "sources"))
        self.group_vocab = _vocab(datasets_, (args.group_column,)) if args.group_column else {}
        prep = dict(
            weight_column=args.weight_column,
            source_column=args.source_column,
            group_column=args.group_column,
            max_length=args.max_length,
            max_prompt_length=args.max_prompt_length,
            num_proc=args.dataset_num_proc,
            truncation_mode=args.truncation_mode,
        )
        if train_dataset is not None:
            train_dataset = prepare_dataset(train_dataset, processing_class, desc="train", **prep)
        if isinstance(eval_dataset, dict):
            eval_dataset = {
                k: prepare_dataset(v, processing_class, desc=k, **prep) for k, v in eval_dataset.items()
            }
        elif eval_dataset is not None:
            eval_dataset = prepare_dataset(eval_dataset, processing_class, desc="eval", **prep)
        collator = data_collator or PreferenceCollator(
            processing_class.pad_token_id, args.max_length, self.source_vocab, self.group_vocab, args.truncation_mode
        )
        _check_sorting_losses(args, [train_dataset, *(eval_dataset.values() if isinstance(eval_dataset, dict)
                                                      else [eval_dataset])])  # fmt: skip
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        # compute_loss returns one micro-batch's objective; the Trainer divides it by the accumulation steps
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        if self.ref_model is not None:
            self.ref_model = self._place_reference(self.ref_model)
        self.group_state = None
        if args.objective == "group_dro":
            names = sorted(self.group_vocab, key=self.group_vocab.get) or ["all"]
            self.group_state = GroupDROState(len(names), args.group_dro_eta, names)
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._per_source = {
            "train": defaultdict(lambda: [0.0, 0.0, 0]),
            "eval": defaultdict(lambda: [0.0, 0.0, 0]),
        }
        self._plan: list | None = None
        self._weight_histogram = None  # kept on rank 0, and only when a tracker draws the histogram
        if self.is_world_process_zero() and any(r in HISTOGRAM_TRACKERS for r in args.report_to or []):
            self._weight_histogram = WeightHistogramCallback(self)
            self.add_callback(self._weight_histogram)
        if args.sync_ref_model:
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:
                raise ValueError(
                    "sync_ref_model=True mixes full parameters, which DeepSpeed and FSDP shard: use DDP, or "
                    "sync_ref_model=False"
                )
            self.add_callback(SyncReferenceCallback(self))
        if args.precompute_ref_log_probs and not args.reference_free:
            if self.train_dataset is not None:
                self.train_dataset = self._precompute_ref(self.train_dataset, "train")
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {k: self._precompute_ref(v, k) for k, v in self.eval_dataset.items()}
            elif self.eval_dataset is not None:
                self.eval_dataset = self._precompute_ref(self.eval_dataset, "eval")

    # ------------------------------------------------------------------ start-up summary

    def train(self, *args, **kwargs):
        if self.is_world_process_zero():  # printed beside the progress bars; scripted runs without them log it
            if self.args.disable_tqdm:
                logger.info(self.startup_summary())
            else:
                print(self.startup_summary(), flush=True)
        return super().train(*args, **kwargs)

    def startup_summary(self) -> str:
        """Model, reference (and how it was chosen), loss, objective and what it reduces to for this data,
        the batch the robust objective sees (a warning below 8 rows), weight statistics, trackers."""
        args, model = self.args, self.model
        base = unwrap_causal_lm(model)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        peft = _is_peft(unwrap_peft(model))
        def count(n: int) -> str:
            return next((f"{n / u:.3g}{s}" for u, s in ((1e9, "B"), (1e6, "M"), (1e3, "k")) if n >= u), str(n))

        lines = [f"model        {base.config._name_or_path} ({type(base).__name__}, {count(total)} parameters, "
                 f"{count(trainable)} trainable{', LoRA adapter' if peft else ''})"]  # fmt: skip
        columns = getattr(self.train_dataset, "column_names", None) or []
        if args.reference_free:
            ref = f"none: loss_type {args.loss_type} needs no reference"
        elif "ref_logps" in columns:
            ref = "log-probs of the initial policy, precomputed (precompute_ref_log_probs)"
        elif self._ref_given:
            ref = f"{unwrap_causal_lm(self.ref_model).config._name_or_path} (ref_model, as given)"
        elif peft and "ref" in unwrap_peft(model).peft_config:
            ref = "the given adapter, frozen as a copy (a PEFT model was passed with its adapter)"
        elif peft:
            ref = "the base model: the policy with its LoRA adapter disabled (no second copy)"
        else:
            ref = "a frozen copy of the initial policy (no ref_model given)"
        if getattr(args, "sync_ref_model", False):
            ref += f"; synced every {args.ref_model_sync_steps} steps (mixup α {args.ref_model_mixup_alpha})"
        lines.append(f"reference    {ref}")
        lines.append(f"loss         {' + '.join(args.loss_type)} (β {args.beta})")
        weights = None
        if "weight" in columns:
            weights = torch.as_tensor(list(self.train_dataset["weight"]), dtype=torch.float64)
        uniform = weights is None or bool((weights == weights[0]).all())
        ones = weights is None or bool((weights == 1).all())
        base_loss = "DPO" if args.loss_type in (["sigmoid"], ["dpo"]) else f"plain {' + '.join(args.loss_type)}"
        wc = args.weight_column
        reduces = {
            "dora": f"KL-DRO (objective kl_dro): every weight is 1, no '{wc}' column or all 1" if ones
            else "KL-DRO on a constant multiple of the losses: every weight is equal" if uniform
            else "DoRA: KL-DRO over the calibrated losses",
            "reweight": f"{base_loss} (objective mean): every weight is equal" if uniform
            else "importance-weighted mean of the losses",
            "mean": f"{base_loss} (ERM)" + ("" if uniform else f"; the '{wc}' weights are not used"),
            "kl_dro": "KL-DRO" + ("" if uniform else f"; the '{wc}' weights are not used (objective dora uses them)"),
            "cvar": f"{base_loss} (ERM): cvar_alpha 1 keeps every sample" if args.cvar_alpha >= 1 else "CVaR",
            "group_dro": f"{base_loss} (ERM): one group" if len(self.group_vocab) <= 1 else "group DRO",
        }.get(args.objective, args.objective)  # fmt: skip
        lines.append(f"objective    {args.objective} -> {reduces}")
        batch = args.per_device_train_batch_size * args.world_size
        how = f"{args.per_device_train_batch_size} per device x {args.world_size} process(es)"
        if args.dro_accumulation == "full":
            batch *= args.gradient_accumulation_steps
            how += f" x {args.gradient_accumulation_steps} accumulation steps (dro_accumulation full)"
        elif args.gradient_accumulation_steps > 1:
            how += f"; not the {args.gradient_accumulation_steps} accumulation steps (dro_accumulation micro_batch)"
        lines.append(f"robust batch {batch} rows ({how})")
        if batch < 8 and args.objective not in ("mean", "reweight"):
            logger.warning(
                "objective %s sees %d row(s) per step (%s): below 8 the log-mean-exp is nearly a mean over a tiny "
                "batch (1 row: the plain weighted loss); raise per_device_train_batch_size or set "
                "dro_accumulation='full'", args.objective, batch, how,
            )  # fmt: skip
        if weights is not None and not ones:
            ess = float(weights.sum() ** 2 / (weights.numel() * (weights**2).sum()))
            lines.append(
                f"weights      '{wc}' over {weights.numel()} rows: mean {weights.mean():.4g}, min {weights.min():.4g}, "
                f"max {weights.max():.4g}, effective sample size {ess:.0%}"
            )
        else:
            lines.append(f"weights      none: every weight is 1 (no '{wc}' column, or all 1)")
        lines.append(f"trackers     {', '.join(args.report_to) if args.report_to else 'none'}")
        return "DoRA run\n" + "\n".join("  " + line for line in lines)

    # ------------------------------------------------------------------ log-probs

    def _token_logps(self, model, inputs, outputs: tuple[str, ...] = ()) -> TokenLogps:
        return completion_token_logps(
            model, inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"],
            padding_free=self.args.padding_free, outputs=outputs,
        )  # fmt: skip

    def _sequence_logps(self, tok: TokenLogps, b: int) -> torch.Tensor:
        """Summed log-probs [N]; LD-DPO weighted with ``ld_alpha``."""
        if self.args.ld_alpha is None:
            return tok.sums()
        return length_desensitized_logps(tok, tok.log_probs.shape[0] // b, self.args.ld_alpha)

    def _logps(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy log-probs and completion lengths, [B, n] each (column j = response j). Also kept for the loss:
        ``_extras`` (log-probs over every token, WPO weights [B], the MoE auxiliary loss)."""
        b = inputs["weights"].shape[0]
        outputs = ("log_sum_sq_probs",) if self.args.use_weighting else ()
        if self.aux_loss_enabled:
            outputs += ("aux_loss",)
        tok = self._token_logps(model, inputs, outputs)
        logps = self._sequence_logps(tok, b)
        self._extras = {
            "full": tok.sums().view(-1, b).T,
            "wpo": wpo_weights(tok).view(-1, b).prod(dim=0) if self.args.use_weighting else None,
            "aux_loss": tok.aux_loss,
        }
        return logps.view(-1, b).T, tok.lengths().view(-1, b).T

    @torch.no_grad()
    def _reference_from_model(self, inputs) -> torch.Tensor:
        b = inputs["weights"].shape[0]
        if self.ref_model is not None:
            tok = self._token_logps(self.ref_model, inputs)
        elif _is_peft(self.model):
            with _reference_adapter(unwrap_peft(self.model)):
                tok = self._token_logps(self.model, inputs)
        else:  # precompute from the policy before any step
            tok = self._token_logps(self.model, inputs)
        return self._sequence_logps(tok, b).view(-1, b).T.float()

    def _reference(self, inputs) -> torch.Tensor | None:
        if self.args.reference_free:
            return None
        if "ref_logps" in inputs:
            return inputs["ref_logps"]
        if self.ref_model is None and not _is_peft(self.model):
            raise ValueError("no reference: pass ref_model, or precompute_ref_log_probs=True before training")
        return self._reference_from_model(inputs)

    def _precompute_ref(self, dataset, name: str):
        """Reference log-probs of every row, once, stored as the column ``ref_logps``; batches of
        ``precompute_ref_batch_size``, else the train / eval batch size (as TRL). Several processes split the rows
        in equal contiguous shares (the last row repeats to even them out), compute theirs, and gather them."""
        default = self.args.per_device_train_batch_size if name == "train" else self.args.per_device_eval_batch_size
        n, world, rank = len(dataset), self.accelerator.num_processes, self.accelerator.process_index
        share = -(-n // world)
        mine = dataset
        if world > 1 and n:
            mine = dataset.select([min(i, n - 1) for i in range(rank * share, (rank + 1) * share)])
        loader = DataLoader(
            mine, batch_size=self.args.precompute_ref_batch_size or default, collate_fn=self.data_collator
        )
        rows = []
        was_training = self.model.training
        self.model.eval()
        for batch in tqdm(
            loader, desc=f"Reference log-probs ({name})", disable=not self.is_local_process_zero()
        ):
            batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
            rows.extend(self._reference_from_model(batch).cpu().tolist())
        self.model.train(was_training)
        if world > 1:
            from accelerate.utils import gather_object

            rows = gather_object(rows)[:n]
        return dataset.add_column("ref_logps", rows)

    def _place_reference(self, ref_model):
        """The frozen reference on the device; under FSDP2, sharded with the policy's plugin (its blocks wrapped as
        the policy's), so that no process holds a whole copy."""
        if not self.is_fsdp_enabled:
            return ref_model.to(self.accelerator.device)
        if self.accelerator.state.fsdp_plugin.fsdp_version != 2:
            raise ValueError(
                "a frozen reference copy under FSDP1 would stay unsharded on every process: use fsdp_version: 2, "
                "LoRA (peft_config / the recipe's lora), or precompute_ref_log_probs=True"
            )
        from accelerate.utils import fsdp2_prepare_model

        return fsdp2_prepare_model(self.accelerator, ref_model).eval()

    def create_accelerator_and_postprocess(self):
        """accelerate 1.15 drops the FSDP plugin when the processes run on CPU (``use_cpu``: plain DDP over gloo);
        with FSDP asked for (``distributed_type: FSDP``, as ``fsdp_cpu2.yaml``) it is applied there too."""
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        state = PartialState()
        cpu_fsdp = (
            state.distributed_type == DistributedType.MULTI_CPU
            and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        )
        if cpu_fsdp:  # a type for which AcceleratorState applies the plugin (it then sets FSDP, as on GPUs)
            state.distributed_type = DistributedType.MULTI_GPU
        super().create_accelerator_and_postprocess()

    # ------------------------------------------------------------------ losses and objective

    def _per_sample_losses(self, logps, ref, lengths, scores, padded_length=None, full=None) -> torch.Tensor:
        args = self.args
        hyper = args.loss_hyper()
        if padded_length is not None:
            hyper["padded_length"] = padded_length  # RRHF's rrhf_sft="authors" divides by it
        total = 0.0
        for name, w in zip(args.loss_type, args.loss_weights):
            if loss_spec(name).listwise or logps.shape[1] != 2:
                loss = listwise_loss(
                    name, logps, ref, scores=scores, lengths=lengths, full_logps=full, beta=args.beta, **hyper
                )
            else:  # two responses, ranked by their scores (pairwise rows: [1, 0], chosen first)
                lp, rp, ln, fp = _ranked(scores, logps, ref, lengths, full)
                loss = pairwise_loss(
                    name, lp[:, 0], lp[:, 1],
                    None if rp is None else rp[:, 0], None if rp is None else rp[:, 1],
                    chosen_lengths=ln[:, 0], rejected_lengths=ln[:, 1], beta=args.beta,
                    chosen_full=None if fp is None else fp[:, 0], **hyper,
                )  # fmt: skip
            total = total + w * loss
        return total

    def _batch_losses(self, model, inputs):
        logps, lengths = self._logps(model, inputs)
        ref = self._reference(inputs)
        losses = self._per_sample_losses(
            logps, ref, lengths, inputs["scores"], inputs["input_ids"].shape[1], self._extras["full"]
        )
        if self._extras["wpo"] is not None:  # WPO: each pair weighs w(y_w) w(y_l), as TRL
            losses = losses * self._extras["wpo"]
        return losses, logps, ref, lengths

    def _objective(self, losses, inputs, mode: str):
        args = self.args
        if mode == "train" and self._plan:
            value, grads, weights, ess, scale = self._plan.pop(0)
            return ObjectiveOutput(surrogate_loss(losses, grads, value, scale), weights, ess, float(value))
        return evaluate_objective(
            args.objective,
            losses,
            weights=inputs["weights"],
            groups=inputs["group_ids"] if args.objective == "group_dro" else None,
            dro_lambda=args.dro_lambda,
            process_group=self.accelerator,
            group_dro_state=self.group_state,
            update=mode == "train",
            **args.objective_hyper(),
        )

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """With ``dro_accumulation="full"``, one no-grad pass over the accumulated micro-batches fixes the
        objective's weights over the whole global batch before the micro-batches' backward passes."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._plan = None
        if self.args.dro_accumulation == "full" and len(batches) > 1:
            self._plan = self._accumulation_plan(batches)
        return batches, num_items

    @torch.no_grad()
    def _accumulation_plan(self, batches) -> list:
        args = self.args
        losses, weights, groups, sizes = [], [], [], []
        for batch in batches:
            batch = self._prepare_inputs(batch)
            loss, *_ = self._batch_losses(self.model, batch)
            losses.append(loss.float())
            weights.append(batch["weights"].float())
            groups.append(batch["group_ids"])
            sizes.append(loss.numel())
        l, h, g, offset, world = gather_batch(torch.cat(losses), torch.cat(weights), torch.cat(groups),
                                              self.accelerator)
        value, grad = objective_gradients(
            args.objective, l, h, g if args.objective == "group_dro" else None, dro_lambda=args.dro_lambda,
            group_dro_state=self.group_state, update=True, **args.objective_hyper(),
        )  # fmt: skip
        ess = effective_sample_size(grad)
        plan, start = [], offset
        for k in sizes:
            gk = grad[start : start + k]
            plan.append((value, gk, gk * l.numel(), ess, world * len(batches)))
            start += k
        return plan

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        losses, logps, ref, lengths = self._batch_losses(model, inputs)
        out = self._objective(losses, inputs, mode)
        self._record(mode, inputs, losses, logps, ref, lengths, out)
        loss = out.loss
        if self.aux_loss_enabled:  # the MoE load-balancing loss, added to the objective as TRL adds it
            aux = self._extras["aux_loss"]
            loss = loss + self.router_aux_loss_coef * aux
            self._metrics[mode]["aux_loss"].append((self._gather(aux.reshape(1)).mean().item(), 1))
        return (loss, {"losses": losses.detach()}) if return_outputs else loss

    # ------------------------------------------------------------------ metrics

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        return self.accelerator.gather_for_metrics(t.detach().contiguous())

    def _record(self, mode, inputs, losses, logps, ref, lengths, out) -> None:
        args = self.args
        if ref is not None:
            rewards = args.beta * (logps.detach() - ref)
        else:
            rewards = args.beta * logps.detach() / lengths.clamp(min=1)
        order = torch.argsort(inputs["scores"], dim=-1, descending=True, stable=True)
        best = torch.gather(rewards, 1, order[:, :1]).squeeze(1)
        worst = torch.gather(rewards, 1, order[:, -1:]).squeeze(1)
        chosen_lp = torch.gather(logps.detach(), 1, order[:, :1]).squeeze(1)
        rejected_lp = torch.gather(logps.detach(), 1, order[:, -1:]).squeeze(1)
        g = self._gather(
            torch.stack(
                [
                    best,
                    worst,
                    (best > worst).float(),
                    best - worst,
                    chosen_lp,
                    rejected_lp,
                    losses.detach().float(),
                    inputs["weights"].float(),
                    out.sample_weights.float(),
                ],
                dim=1,
            )
        )
        m = self._metrics[mode]  # (sum, count) per batch, so the logged value is a per-sample mean
        n = g.shape[0]
        for k, name in enumerate(
            (
                "rewards/chosen",
                "rewards/rejected",
                "rewards/accuracies",
                "rewards/margins",
                "logps/chosen",
                "logps/rejected",
                "dora/loss_mean",
                "dora/weight_mean",
            )
        ):
            m[name].append((g[:, k].sum().item(), n))  # columns 0-7 of g, in this order
        m["dora/weight_max"].append((g[:, 7].max().item(), 1))
        m["dora/objective_weight_max"].append((g[:, 8].max().item(), 1))
        m["dora/ess"].append((out.ess, 1))
        if mode == "train" and self._weight_histogram is not None:
            self._weight_histogram.add(g[:, 7])
        if self.source_vocab:
            self._record_sources(mode, inputs, g[:, 6], g[:, 2])

    def _record_sources(self, mode, inputs, losses, correct) -> None:
        """Per-source loss and accuracy: each response counts under its own source (a pair of a human and a
        synthetic response counts once under each); pairs whose two sources differ also count under
        ``chosen_vs_rejected``. ``losses`` / ``correct`` are the gathered per-sample values."""
        ids, scores = self._gather(inputs["source_ids"]), self._gather(inputs["scores"])
        if ids.dim() == 1:
            ids = ids.unsqueeze(1)
        (ids,) = _ranked(scores, ids)  # best response first
        names = {i: s for s, i in self.source_vocab.items()}
        buckets = self._per_source[mode]
        for sid in ids.unique().tolist():
            if sid < 0:  # a response without a source name
                continue
            per_row = (ids == sid).sum(dim=1).to(losses.dtype)  # responses of this source in each row
            acc = buckets[names[sid]]
            acc[0] += (per_row * losses).sum().item()
            acc[1] += (per_row * correct).sum().item()
            acc[2] += int(per_row.sum().item())
        if ids.shape[1] == 2:
            for a, b in ids[ids[:, 0] != ids[:, 1]].unique(dim=0).tolist():
                if a < 0 or b < 0:
                    continue
                sel = (ids[:, 0] == a) & (ids[:, 1] == b)
                acc = buckets[(names[a], names[b])]
                acc[0] += losses[sel].sum().item()
                acc[1] += correct[sel].sum().item()
                acc[2] += int(sel.sum().item())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {
            k: sum(x for x, _ in v) / sum(c for _, c in v) for k, v in self._metrics[mode].items() if v
        }
        for k in ("dora/weight_max", "dora/objective_weight_max"):
            if self._metrics[mode].get(k):
                metrics[k] = max(x for x, _ in self._metrics[mode][k])
        for name, (loss_sum, acc_sum, count) in self._per_source[mode].items():
            if count:
                key = f"source_pair/{name[0]}_vs_{name[1]}" if isinstance(name, tuple) else f"source/{name}"
                metrics[f"{key}/loss"] = loss_sum / count
                metrics[f"{key}/accuracy"] = acc_sum / count
        if mode == "eval":
            metrics = {f"eval_{k}": v for k, v in metrics.items()}
        logs.update(metrics)
        super().log(logs, start_time)
        self._metrics[mode].clear()
        self._per_source[mode].clear()

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.group_state is not None and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump({"group_dro": self.group_state.state_dict()}, f)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if self.group_state is not None and os.path.exists(path):
            with open(path) as f:
                self.group_state.load_state_dict(json.load(f)["group_dro"])


def unwrap_peft(model):
    """The PEFT model inside a DDP / compile wrapper."""
    while not _is_peft(model) and hasattr(model, "module"):
        model = model.module
    return model
