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
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback

from dora.config import DoRAConfig
from dora.data import PreferenceCollator, prepare_dataset
from dora.logprobs import add_logprob_head, completion_logps, unwrap_causal_lm
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
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


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


class WeightHistogramCallback(TrainerCallback):
    """Logs the calibration weights of the last logging window as a histogram to wandb / tensorboard."""

    def __init__(self, trainer: DoRATrainer):
        self.trainer = trainer

    def on_log(self, args, state, control, logs=None, **kwargs):
        weights = self.trainer._weights_seen
        if not weights or not state.is_world_process_zero:
            return
        values = torch.cat(weights).float().cpu()
        self.trainer._weights_seen = []
        if "wandb" in args.report_to:
            with contextlib.suppress(ImportError):
                import wandb

                if wandb.run is not None:
                    wandb.log({"dora/weights": wandb.Histogram(values.numpy())}, commit=False)
        if "tensorboard" in args.report_to:
            for cb in self.trainer.callback_handler.callbacks:
                writer = getattr(cb, "tb_writer", None)
                if writer is not None:
                    writer.add_histogram("dora/weights", values, state.global_step)


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
        if isinstance(model, str):
            model = AutoModelForCausalLM.from_pretrained(model, **model_init_kwargs)
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(
                unwrap_causal_lm(model).config._name_or_path, trust_remote_code=args.trust_remote_code
            )
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        if args.disable_dropout:
            _disable_dropout(model)
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
        if args.gradient_checkpointing and _is_peft(model):
            model.enable_input_require_grads()
        self.ref_model = ref_model

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
            processing_class.pad_token_id, args.max_length, self.source_vocab, self.group_vocab
        )
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
            self.ref_model = self.ref_model.to(self.accelerator.device)
        self.group_state = None
        if args.objective == "group_dro":
            names = sorted(self.group_vocab, key=self.group_vocab.get) or ["all"]
            self.group_state = GroupDROState(len(names), args.group_dro_eta, names)
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._per_source = {
            "train": defaultdict(lambda: [0.0, 0.0, 0]),
            "eval": defaultdict(lambda: [0.0, 0.0, 0]),
        }
        self._weights_seen: list[torch.Tensor] = []
        self._plan: list | None = None
        if args.report_to and any(r in args.report_to for r in ("wandb", "tensorboard")):
            self.add_callback(WeightHistogramCallback(self))
        if args.precompute_ref_log_probs and not args.reference_free:
            if self.train_dataset is not None:
                self.train_dataset = self._precompute_ref(self.train_dataset, "train")
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {k: self._precompute_ref(v, k) for k, v in self.eval_dataset.items()}
            elif self.eval_dataset is not None:
                self.eval_dataset = self._precompute_ref(self.eval_dataset, "eval")

    # ------------------------------------------------------------------ start-up summary

    def train(self, *args, **kwargs):
        if self.is_world_process_zero():
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
        lines = [f"model        {base.config._name_or_path} ({type(base).__name__}, {total / 1e6:.2f}M parameters, "
                 f"{trainable / 1e6:.2f}M trainable{', LoRA adapter' if peft else ''})"]  # fmt: skip
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

    def _logps(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy log-probs and completion lengths, [B, n] each (column j = response j)."""
        b = inputs["weights"].shape[0]
        logps, lengths = completion_logps(
            model, inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
        )
        return logps.view(-1, b).T, lengths.view(-1, b).T

    @torch.no_grad()
    def _reference_from_model(self, inputs) -> torch.Tensor:
        b = inputs["weights"].shape[0]
        args = (inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"])
        if self.ref_model is not None:
            logps, _ = completion_logps(self.ref_model, *args)
        elif _is_peft(self.model):
            with unwrap_peft(self.model).disable_adapter():
                logps, _ = completion_logps(self.model, *args)
        else:  # precompute from the policy before any step
            logps, _ = completion_logps(self.model, *args)
        return logps.view(-1, b).T.float()

    def _reference(self, inputs) -> torch.Tensor | None:
        if self.args.reference_free:
            return None
        if "ref_logps" in inputs:
            return inputs["ref_logps"]
        if self.ref_model is None and not _is_peft(self.model):
            raise ValueError("no reference: pass ref_model, or precompute_ref_log_probs=True before training")
        return self._reference_from_model(inputs)

    def _precompute_ref(self, dataset, name: str):
        """Reference log-probs of every row, once, stored as the column ``ref_logps``."""
        loader = DataLoader(
            dataset, batch_size=self.args.per_device_eval_batch_size, collate_fn=self.data_collator
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
        return dataset.add_column("ref_logps", rows)

    # ------------------------------------------------------------------ losses and objective

    def _per_sample_losses(self, logps, ref, lengths, scores) -> torch.Tensor:
        args = self.args
        hyper = args.loss_hyper()
        total = 0.0
        for name, w in zip(args.loss_type, args.loss_weights):
            if loss_spec(name).listwise or logps.shape[1] != 2:
                loss = listwise_loss(
                    name, logps, ref, scores=scores, lengths=lengths, beta=args.beta, **hyper
                )
            else:  # pairwise rows: column 0 is chosen, column 1 rejected
                loss = pairwise_loss(
                    name, logps[:, 0], logps[:, 1],
                    None if ref is None else ref[:, 0], None if ref is None else ref[:, 1],
                    chosen_lengths=lengths[:, 0], rejected_lengths=lengths[:, 1], beta=args.beta, **hyper,
                )  # fmt: skip
            total = total + w * loss
        return total

    def _batch_losses(self, model, inputs):
        logps, lengths = self._logps(model, inputs)
        ref = self._reference(inputs)
        losses = self._per_sample_losses(logps, ref, lengths, inputs["scores"])
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
        return (out.loss, {"losses": losses.detach()}) if return_outputs else out.loss

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
        if mode == "train":
            self._weights_seen.append(g[:, 7].cpu())
        if self.source_vocab:
            ids = self._gather(inputs["source_ids"])
            names = {i: s for s, i in self.source_vocab.items()}
            for sid in ids.unique().tolist():
                sel = ids == sid
                acc = self._per_source[mode][names.get(sid, "unknown")]
                acc[0] += g[sel, 6].sum().item()
                acc[1] += g[sel, 2].sum().item()
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
                metrics[f"source/{name}/loss"] = loss_sum / count
                metrics[f"source/{name}/accuracy"] = acc_sum / count
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
