"""The start-up summary printed when training starts: what will run, and what the objective reduces to."""

from __future__ import annotations

import logging

import torch

from dora.logprobs import unwrap_causal_lm
from dora.objectives import describe_objective
from dora.ratio import effective_sample_size
from dora.trainer.reference import is_peft, unwrap_peft

logger = logging.getLogger("dora.trainer")

__all__ = ["startup_summary"]


def startup_summary(trainer) -> str:
    """Model, reference (and how it was chosen), loss, objective and what it reduces to for this data,
    the batch the robust objective sees (a warning below 8 rows), weight statistics, trackers."""
    args, model = trainer.args, trainer.model
    base = unwrap_causal_lm(model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    peft = is_peft(unwrap_peft(model))
    def count(n: int) -> str:
        return next((f"{n / u:.3g}{s}" for u, s in ((1e9, "B"), (1e6, "M"), (1e3, "k")) if n >= u), str(n))

    lines = [f"model        {base.config._name_or_path} ({type(base).__name__}, {count(total)} parameters, "
             f"{count(trainable)} trainable{', LoRA adapter' if peft else ''})"]  # fmt: skip
    columns = getattr(trainer.train_dataset, "column_names", None) or []
    if args.reference_free:
        ref = f"none: loss_type {args.loss_type} needs no reference"
    elif "ref_logps" in columns:
        src = f"{unwrap_causal_lm(trainer.ref_model).config._name_or_path} (ref_model)" if trainer._ref_given \
            else "the initial policy"
        ref = f"log-probs of {src}, precomputed (precompute_ref_log_probs)"
    elif trainer._ref_given:
        ref = f"{unwrap_causal_lm(trainer.ref_model).config._name_or_path} (ref_model, as given)"
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
        weights = torch.as_tensor(list(trainer.train_dataset["weight"]), dtype=torch.float64)
    ones = weights is None or bool((weights == 1).all())
    state = "ones" if ones else "equal" if bool((weights == weights[0]).all()) else "differ"
    base_loss = "DPO" if args.loss_type in (["sigmoid"], ["dpo"]) else f"plain {' + '.join(args.loss_type)}"
    wc = args.weight_column
    reduces = describe_objective(args.objective, state, num_groups=len(trainer.group_vocab),
                                 cvar_alpha=args.cvar_alpha, loss=base_loss, column=wc)  # fmt: skip
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
            "batch (1 row: the plain weighted loss); %s", args.objective, batch, how, _bigger_batch(args),
        )  # fmt: skip
    if weights is not None and not ones:
        ess = effective_sample_size(weights) / weights.numel()
        lines.append(
            f"weights      '{wc}' over {weights.numel()} rows: mean {weights.mean():.4g}, min {weights.min():.4g}, "
            f"max {weights.max():.4g}, effective sample size {ess:.0%}"
        )
    else:
        lines.append(f"weights      none: every weight is 1 (no '{wc}' column, or all 1)")
    lines.append(f"trackers     {', '.join(args.report_to) if args.report_to else 'none'}")
    return "DoRA run\n" + "\n".join("  " + line for line in lines)


def _bigger_batch(args) -> str:
    if args.dro_accumulation == "full":  # already the whole accumulated batch
        return "raise per_device_train_batch_size or gradient_accumulation_steps"
    return "raise per_device_train_batch_size or set dro_accumulation='full'"


def robust_batch(args) -> int:
    """The rows the robust objective sees per step."""
    full = args.gradient_accumulation_steps if args.dro_accumulation == "full" else 1
    return args.per_device_train_batch_size * args.world_size * full


def ess_warning(args, ess: float) -> str | None:
    """A warning when the objective's logged effective sample size is under 40% of its batch: a few rows carry
    each step (docs/howto/weight-diagnostics.md calls the tilt too sharp)."""
    batch = robust_batch(args)
    if args.objective in ("mean", "reweight") or batch < 2 or ess >= 0.4 * batch:
        return None
    return (
        f"dora/ess {ess:.1f} of {batch} rows: a few rows carry each step (the DRO tilt is sharp); raise "
        f"dro_lambda (now {args.dro_lambda}), or {_bigger_batch(args)}"
    )
