"""DoRATrainer: the ``transformers.Trainer`` that wires the data, the log-probs, the per-sample losses and the
robust objective together; the reference, the metrics, the checks, the callbacks and the start-up summary live in
the modules beside this one.

    rows -> dora.data (tokens + weights) -> dora.logprobs (sequence log-probs of policy and reference)
         -> dora.losses (one loss per sample) -> dora.objectives (a scalar over the global batch)
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, set_seed

from dora.config import DoRAConfig
from dora.data import PreferenceCollator, as_dataset, prepare_dataset
from dora.logprobs import (
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
from dora.trainer.callbacks import HISTOGRAM_TRACKERS, SyncReferenceCallback, WeightHistogramCallback
from dora.trainer.checks import (
    check_data,
    check_padding_free,
    check_sorting_losses,
    router_aux_loss,
    set_pad_token,
    vocab,
)
from dora.trainer.metrics import MetricsMixin, ranked
from dora.trainer.reference import (
    ReferenceMixin,
    add_reference_adapter,
    disable_dropout,
    initial_policy_copy,
    is_peft,
)
from dora.trainer.summary import startup_summary

logger = logging.getLogger("dora.trainer")

__all__ = ["DoRATrainer"]

STATE_FILE = "dora_state.json"


class DoRATrainer(ReferenceMixin, MetricsMixin, Trainer):
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
        self._model_init_kwargs = model_init_kwargs  # a reference loaded again under ZeRO-3 is loaded as the policy
        train_dataset, eval_dataset = check_data(args, train_dataset, eval_dataset)  # before any model loads
        if isinstance(model, str):
            model = AutoModelForCausalLM.from_pretrained(model, **model_init_kwargs)
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(
                unwrap_causal_lm(model).config._name_or_path, trust_remote_code=args.trust_remote_code
            )
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        set_pad_token(processing_class, args.pad_token)
        self.router_aux_loss_coef, self.aux_loss_enabled = router_aux_loss(model, args.router_aux_loss_coef)
        if args.padding_free:
            check_padding_free(model)
        if peft_config is not None and is_peft(model):
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
            is_peft(model) or peft_config is not None or args.reference_free or args.precompute_ref_log_probs
        ):
            ref_model = initial_policy_copy(model, model_init_kwargs)
        if ref_model is not None:
            add_logprob_head(ref_model, args.logprob_chunk_tokens)  # a deep copy must not share the closure
            ref_model.eval().requires_grad_(False)
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        elif is_peft(model) and ref_model is None and not args.reference_free:
            add_reference_adapter(model)  # a trained adapter is its own reference, as TRL
        if args.disable_dropout:  # after PEFT wrapping, so the adapter's dropout is off too
            disable_dropout(model)
        if args.gradient_checkpointing and is_peft(model):
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
        self.source_vocab = vocab(datasets_, (args.source_column, "chosen_source", "rejected_source", "sources"))
        self.group_vocab = vocab(datasets_, (args.group_column,)) if args.group_column else {}
        self._prep = prep = dict(  # every dataset reaching prepare_dataset went through check_data
            validated=True,
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
        check_sorting_losses(args, [train_dataset, *(eval_dataset.values() if isinstance(eval_dataset, dict)
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
        return startup_summary(self)

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
                lp, rp, ln, fp = ranked(scores, logps, ref, lengths, full)
                extra = {"sft_scale": self._sft_scale(ln[:, 0])} if name == "sft" else {}
                loss = pairwise_loss(
                    name, lp[:, 0], lp[:, 1],
                    None if rp is None else rp[:, 0], None if rp is None else rp[:, 1],
                    chosen_lengths=ln[:, 0], rejected_lengths=ln[:, 1], beta=args.beta,
                    chosen_full=None if fp is None else fp[:, 0], **hyper, **extra,
                )  # fmt: skip
            total = total + w * loss
        return total

    def _sft_scale(self, chosen_lengths: torch.Tensor) -> float | None:
        """B / sum |y_w| over the global batch (every process's rows): the "sft" term's token mean over the batch
        the objective sees, so that two processes with B rows equal one with 2B. None on one process."""
        if self.accelerator.num_processes == 1:
            return None
        counts = [float(chosen_lengths.numel()), float(chosen_lengths.sum())]
        counts = self.accelerator.reduce(
            torch.tensor(counts, dtype=torch.float64, device=self.accelerator.device), reduction="sum"
        )
        return float(counts[0] / counts[1].clamp(min=1))

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
        self._micro_batches_left = len(batches)  # for the metrics' gather (MetricsMixin._gather)
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
        if mode == "train":
            self._micro_batches_left = getattr(self, "_micro_batches_left", 1) - 1
        losses, logps, ref, lengths = self._batch_losses(model, inputs)
        out = self._objective(losses, inputs, mode)
        self._record(mode, inputs, losses, logps, ref, lengths, out)
        loss = out.loss
        if self.aux_loss_enabled:  # the MoE load-balancing loss, added to the objective as TRL adds it
            aux = self._extras["aux_loss"]
            loss = loss + self.router_aux_loss_coef * aux
            self._metrics[mode]["aux_loss"].append((self._gather(aux.reshape(1)).mean().item(), 1))
        return (loss, {"losses": losses.detach()}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """As TRL's: rows passed here (a dataset or a dict of them) are checked, tokenised and, with
        ``precompute_ref_log_probs``, given their reference column, as an ``eval_dataset`` given to ``__init__``."""
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare_eval(v, k) for k, v in eval_dataset.items()}
        elif eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = self._prepare_eval(eval_dataset)
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def _prepare_eval(self, dataset, key: str | None = None):
        args = self.args
        name = "eval" if key is None else f"eval ({key})"
        if not hasattr(dataset, "column_names"):  # a list of row dicts or a DataFrame
            dataset = as_dataset(dataset, name)
        if "completion_ids" not in dataset.column_names:  # rows, not yet tokenised
            _, checked = check_data(args, None, dataset if key is None else {key: dataset})
            dataset = checked if key is None else checked[key]
            for source in vocab([dataset], (args.source_column, "chosen_source", "rejected_source", "sources")):
                self.source_vocab.setdefault(source, len(self.source_vocab))  # the collator's vocabulary too
            dataset = prepare_dataset(dataset, self.processing_class, desc=name, **self._prep)
        if args.precompute_ref_log_probs and not args.reference_free and "ref_logps" not in dataset.column_names:
            if self.ref_model is None and not is_peft(self.model) and self.state.global_step > 0:
                raise ValueError(
                    f"{name} dataset passed to evaluate() after training started, with precompute_ref_log_probs=True "
                    "and no ref_model: the reference (the initial policy) is gone. Pass it as eval_dataset when the "
                    "trainer is built, pass a ref_model, or set precompute_ref_log_probs=False"
                )
            dataset = self._precompute_ref(dataset, name)
        return dataset

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
