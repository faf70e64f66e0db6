"""DoRATrainer: the ``transformers.Trainer`` that wires the data, the log-probs, the per-sample losses and the
robust objective together; the reference, the metrics, the checks, the callbacks and the start-up summary live in
the modules beside this one.

    rows -> dora.data (tokens + weights) -> dora.logprobs (sequence log-probs of policy and reference)
         -> dora.losses (one loss per sample) -> dora.objectives (a scalar over the global batch)
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType
from peft import get_peft_model
from transformers import AutoProcessor, AutoTokenizer, ProcessorMixin, Trainer, set_seed

from dora.config import DoRAConfig
from dora.data import PreferenceCollator, as_dataset, prepare_dataset
from dora.data.streaming import is_stream, stream_columns
from dora.data.validation import check_no_images
from dora.data.vision import VisionPreferenceCollator, is_vision_data, model_inputs, vision_columns
from dora.logprobs import (
    TokenLogps,
    add_logprob_head,
    completion_token_logps,
    length_desensitized_logps,
    unwrap_causal_lm,
    wpo_weights,
)
from dora.losses import listwise_loss, loss_kwargs, ranked
from dora.objectives import (
    GroupDROState,
    ObjectiveOutput,
    evaluate_objective,
    gather_batch,
    objective_gradients,
    objective_spec,
    surrogate_loss,
)
from dora.ratio import effective_sample_size
from dora.trainer.callbacks import HISTOGRAM_TRACKERS, SyncReferenceCallback, WeightHistogramCallback
from dora.trainer.checkpoint import CheckpointMixin  # complete checkpoints, or ignored ones
from dora.trainer.loading import check_quantization, is_quantized, load_causal_lm, model_kwargs
from dora.trainer.metrics import MetricsMixin
from dora.trainer.model_card import TAG_NAMES, card_model_name, create_model_card
from dora.trainer.preflight import (
    check_data,
    check_padding_free,
    check_sorting_losses,
    router_aux_loss,
    set_pad_token,
    source_columns,
    vocab,
)
from dora.trainer.reference import (
    ReferenceMixin,
    add_reference_adapter,
    disable_dropout,
    initial_policy_copy,
    is_peft,
)
from dora.trainer.summary import startup_summary

logger = logging.getLogger("dora.trainer")

__all__ = ["DoRATrainer", "PolicyOutput"]


@dataclass
class PolicyOutput:
    """What one forward of the policy gives the loss; [B, n] per response (column j = response j) unless said."""

    logps: torch.Tensor  # summed completion log-probs (LD-DPO weighted with ld_alpha)
    lengths: torch.Tensor  # completion token counts
    full_logps: torch.Tensor  # summed over every completion token (differs from logps under LD-DPO)
    wpo_weights: torch.Tensor | None = None  # [B], WPO's w(y_w) w(y_l) (use_weighting)
    aux_loss: torch.Tensor | None = None  # the MoE load-balancing loss (a scalar)


class DoRATrainer(CheckpointMixin, ReferenceMixin, MetricsMixin, Trainer):
    """Preference training with a robust objective over the global batch (DoRA, Zhu et al. 2025)."""

    def __init__(  # TRL 1.16's DPOTrainer signature, in its order; then model_init_kwargs (keyword)
        self,
        model,
        ref_model=None,
        args: DoRAConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
        *,
        model_init_kwargs: dict | None = None,
    ):
        args = args or DoRAConfig(output_dir="dora_output")
        if not isinstance(args, DoRAConfig):
            raise TypeError("args must be a DoRAConfig")
        if train_dataset is None:
            raise ValueError("`train_dataset` is required (as TRL's DPOTrainer): pass the preference rows to train on")
        if is_stream(train_dataset):  # accelerate's dispatch would concatenate the processes' batches (as TRL)
            args.accelerator_config.dispatch_batches = False
        train_dataset, eval_dataset = check_data(args, train_dataset, eval_dataset)  # before any model loads
        model, processing_class = self._setup_model(
            model, processing_class, peft_config, args, model_init_kwargs, quantization_config
        )
        model, self.ref_model = self._setup_reference(model, ref_model, peft_config, args)
        train_dataset, eval_dataset, collator = self._setup_data(
            train_dataset, eval_dataset, processing_class, data_collator, args
        )
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self._setup_state()
        self._setup_callbacks()
        self.model.add_model_tags(TAG_NAMES)  # trl, dpo (as TRL) and dora: on the Hub card and in push_to_hub
        if args.precompute_ref_log_probs and not args.reference_free:
            self._precompute_references()

    # ------------------------------------------------------------------ set-up, in the order __init__ runs it

    def _setup_model(self, model, processing_class, peft_config, args, model_init_kwargs, quantization_config=None):
        """The policy (loaded from a path as TRL 1.16 loads it: dtype float32 unless set, k-bit with a
        ``quantization_config``), its tokenizer and padding token, the MoE auxiliary loss, and the LM head that
        returns log-probs. PEFT wrapping waits for the reference, so that a frozen copy is of the base model."""
        model_init_kwargs = {**(args.model_init_kwargs or {}), **(model_init_kwargs or {})}
        if args.trust_remote_code:
            model_init_kwargs["trust_remote_code"] = True
        self._model_init_kwargs = model_init_kwargs  # a reference loaded again under ZeRO-3 is loaded as the policy
        if isinstance(model, str):
            kwargs = model_kwargs(model_init_kwargs, quantization_config)
            check_quantization(kwargs, peft_config)
            model = load_causal_lm(model, kwargs)
        elif quantization_config is not None:
            raise ValueError(
                "quantization_config applies when the model is loaded by name, and this model is loaded already: "
                "pass its name or path, or load it quantised yourself"
            )
        processing_class = self._setup_processing_class(model, processing_class, args)
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
        return model, processing_class

    def _setup_processing_class(self, model, processing_class, args):
        """The tokenizer, or for a vision-language model its processor (``AutoProcessor``, as TRL 1.16), with the
        padding token set; ``self._tokenizer`` is the tokenizer itself (a processor's own)."""
        config = unwrap_causal_lm(model).config
        if processing_class is None:
            auto = AutoProcessor if getattr(config, "vision_config", None) is not None else AutoTokenizer
            processing_class = auto.from_pretrained(config._name_or_path, trust_remote_code=args.trust_remote_code)
        self._is_vlm = isinstance(processing_class, ProcessorMixin)
        self._tokenizer = processing_class.tokenizer if self._is_vlm else processing_class
        reentrant = (args.gradient_checkpointing_kwargs or {}).get("use_reentrant")
        if self._is_vlm and args.ddp_find_unused_parameters is None and not reentrant:
            args.ddp_find_unused_parameters = True  # a text-only batch leaves the vision tower unused (as TRL)
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        set_pad_token(self._tokenizer, args.pad_token)
        return processing_class

    def _setup_reference(self, model, ref_model, peft_config, args):
        """The reference, chosen before any PEFT wrapping (see dora.trainer's docstring for the order), then the
        policy's PEFT adapter and dropout. Returns (policy, reference or None)."""
        self._ref_given = ref_model is not None  # for the start-up summary
        if isinstance(ref_model, str) and args.reference_free:  # it would be loaded and never used
            logger.warning("ref_model %r not loaded: loss_type %s uses no reference", ref_model, args.loss_type)
            ref_model = None
        if isinstance(ref_model, str):
            ref_model = load_causal_lm(ref_model, model_kwargs(self._model_init_kwargs))
        elif ref_model is None and not (
            is_peft(model) or peft_config is not None or args.reference_free or args.precompute_ref_log_probs
        ):
            ref_model = initial_policy_copy(model, self._model_init_kwargs)
        if ref_model is not None:
            add_logprob_head(ref_model, args.logprob_chunk_tokens)  # a deep copy must not share the closure
            ref_model.eval().requires_grad_(False)
        if peft_config is not None:
            model = get_peft_model(model, peft_config)
            if is_quantized(model):  # QLoRA: the adapter in bf16 (its DoRA magnitudes kept in float32), as TRL 1.16
                for name, param in model.named_parameters():
                    if param.requires_grad and "lora_magnitude_vector" not in name:
                        param.data = param.data.to(torch.bfloat16)
        elif is_peft(model) and ref_model is None and not args.reference_free:
            add_reference_adapter(model)  # a trained adapter is its own reference, as TRL
        if args.disable_dropout:  # after PEFT wrapping, so the adapter's dropout is off too
            disable_dropout(model)
        if args.gradient_checkpointing and is_peft(model):
            model.enable_input_require_grads()
        if args.sync_ref_model and ref_model is None:
            raise ValueError(
                "sync_ref_model=True mixes the policy into a separate reference model, and there is none: with "
                "PEFT the reference is the model with its adapter disabled. Use full fine-tuning, or "
                "sync_ref_model=False"
            )
        return model, ref_model

    def _setup_data(self, train_dataset, eval_dataset, processing_class, data_collator, args):
        """The source and group vocabularies, the tokenised datasets and the collator. Returns (train, eval,
        collator); ``self._prep`` keeps the tokenisation settings for datasets passed to ``evaluate()``."""
        evals = list(eval_dataset.values()) if isinstance(eval_dataset, dict) else [eval_dataset]
        self._is_vision = self._check_vision_rows([train_dataset, *evals])
        self.source_vocab = vocab([train_dataset, *evals], source_columns(args))
        self.group_vocab = vocab([train_dataset, *evals], (args.group_column,)) if args.group_column else {}
        self._prep = dict(  # every dataset reaching prepare_dataset went through check_data
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
            train_dataset = self._tokenize(train_dataset, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._tokenize(v, k) for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._tokenize(eval_dataset, "eval")
        collator = data_collator or self._default_collator(processing_class, args)
        evals = list(eval_dataset.values()) if isinstance(eval_dataset, dict) else [eval_dataset]
        check_sorting_losses(args, [train_dataset, *evals])
        return train_dataset, eval_dataset, collator

    def _check_vision_rows(self, datasets_, name: str = "train") -> bool:
        """Whether the rows carry images (TRL's test, on the train rows); images on a text-only model are refused,
        as TRL, and so are a mix of image and text-only datasets (one collator serves them all)."""
        columns = [stream_columns(d) if is_stream(d) else d.column_names for d in datasets_ if hasattr(d, "map")]
        vision = [is_vision_data(c) for c in columns]
        if vision and vision[0] and not self._is_vlm:
            check_no_images(columns[0], f"{name} dataset")
        if any(vision) and not all(vision):
            raise ValueError("the train and eval datasets mix rows with images and text-only ones: give each an "
                             "'images' column (an empty list for a text-only row)")  # fmt: skip
        return bool(vision and vision[0])

    def _tokenize(self, dataset, desc: str):
        """Text rows tokenised ahead (``dora.data.prepare_dataset``); vision rows go to the collator as they are."""
        if self._is_vision:
            return dataset
        return prepare_dataset(dataset, self._tokenizer, desc=desc, **self._prep)

    def _default_collator(self, processing_class, args):
        if self._is_vision:
            return VisionPreferenceCollator(processing_class, args.max_length, self.source_vocab, self.group_vocab,
                                            args.weight_column, args.source_column, args.group_column)  # fmt: skip
        return PreferenceCollator(self._tokenizer.pad_token_id, args.max_length, self.source_vocab,
                                  self.group_vocab, args.truncation_mode)  # fmt: skip

    def _setup_state(self) -> None:
        """After ``Trainer.__init__``: the reference placed on the device, group DRO's weights, the metric windows."""
        # compute_loss returns one micro-batch's objective; the Trainer divides it by the accumulation steps
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        if self.ref_model is not None:
            self.ref_model = self._place_reference(self.ref_model)
        self.group_state = None
        if self.args.objective == "group_dro":
            names = sorted(self.group_vocab, key=self.group_vocab.get) or ["all"]
            self.group_state = GroupDROState(len(names), self.args.group_dro_eta, names)
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._per_source = {
            "train": defaultdict(lambda: [0.0, 0.0, 0]),
            "eval": defaultdict(lambda: [0.0, 0.0, 0]),
        }
        self._plan: list | None = None

    def _setup_callbacks(self) -> None:
        """The weight histogram (kept on rank 0, and only when a tracker draws it) and TR-DPO's reference sync."""
        args = self.args
        self._weight_histogram = None
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

    def _precompute_references(self) -> None:
        """``precompute_ref_log_probs``: the reference log-probs of every train and eval row, as a column."""
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
            model_inputs=model_inputs(inputs) if self._is_vision else None,
        )  # fmt: skip

    def _sequence_logps(self, tok: TokenLogps, b: int) -> torch.Tensor:
        """Summed log-probs [N]; LD-DPO weighted with ``ld_alpha``."""
        if self.args.ld_alpha is None:
            return tok.sums()
        return length_desensitized_logps(tok, tok.log_probs.shape[0] // b, self.args.ld_alpha)

    def _forward(self, model, inputs) -> PolicyOutput:
        """The policy's log-probs and what the loss needs besides them, in one forward."""
        b = inputs["weight"].shape[0]
        outputs = ("log_sum_sq_probs",) if self.args.use_weighting else ()
        if self.aux_loss_enabled:
            outputs += ("aux_loss",)
        tok = self._token_logps(model, inputs, outputs)
        per_response = lambda t: t.view(-1, b).T  # noqa: E731  rows are response-major: [n * B] -> [B, n]
        return PolicyOutput(
            logps=per_response(self._sequence_logps(tok, b)),
            lengths=per_response(tok.lengths()),
            full_logps=per_response(tok.sums()),
            wpo_weights=wpo_weights(tok).view(-1, b).prod(dim=0) if self.args.use_weighting else None,
            aux_loss=tok.aux_loss,
        )

    def create_accelerator_and_postprocess(self):
        """accelerate 1.15 drops the FSDP plugin when the processes run on CPU (``use_cpu``: plain DDP over gloo);
        with FSDP asked for (``distributed_type: FSDP``, as ``fsdp_cpu2.yaml``) it is applied there too."""
        state = PartialState()
        cpu_fsdp = (
            state.distributed_type == DistributedType.MULTI_CPU
            and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        )
        if cpu_fsdp:  # a type for which AcceleratorState applies the plugin (it then sets FSDP, as on GPUs)
            state.distributed_type = DistributedType.MULTI_GPU
        super().create_accelerator_and_postprocess()

    # ------------------------------------------------------------------ losses and objective

    def _per_sample_losses(self, policy: PolicyOutput, ref, inputs) -> torch.Tensor:
        """The weighted sum of the run's losses, one value per row [B], each through ``losses.listwise_loss`` (which
        ranks a pair by its scores); WPO then weighs each pair by w(y_w) w(y_l), as TRL."""
        args = self.args
        values = self._loss_values(policy, inputs)
        total = 0.0
        for name, w in zip(args.loss_type, args.loss_weights):
            loss = listwise_loss(
                name, policy.logps, ref, scores=inputs["scores"], lengths=policy.lengths,
                full_logps=policy.full_logps, beta=args.beta, **loss_kwargs(name, values),
            )  # fmt: skip
            total = total + w * loss
        if policy.wpo_weights is not None:
            total = total * policy.wpo_weights
        return total

    def _loss_values(self, policy: PolicyOutput, inputs) -> dict:
        """Every loss hyper-parameter of this run by name (each loss takes its own, ``losses.loss_kwargs``): the
        config's, the batch's padded length (RRHF's rrhf_sft="authors"), and the "sft" term's global-batch scale."""
        values = {**self.args.loss_hyper(), "padded_length": inputs["input_ids"].shape[1]}
        if "sft" in self.args.loss_type:
            (chosen_lengths,) = ranked(inputs["scores"], policy.lengths)
            values["sft_scale"] = self._sft_scale(chosen_lengths[:, 0])
        return values

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

    def _batch_losses(self, model, inputs) -> tuple[torch.Tensor, PolicyOutput, torch.Tensor | None]:
        """(per-row losses [B], the policy's forward, the reference log-probs [B, n] or None)."""
        policy = self._forward(model, inputs)
        ref = self._reference(inputs)
        return self._per_sample_losses(policy, ref, inputs), policy, ref

    def _objective_kwargs(self, update: bool) -> dict:
        """The objective's keyword arguments, for one micro-batch and for a whole accumulation alike."""
        return dict(
            dro_lambda=self.args.dro_lambda,
            group_dro_state=self.group_state,
            update=update,
            **self.args.objective_hyper(),
        )

    def _groups(self, group_ids):
        """The batch's group ids, for an objective that reads them (the registry says which)."""
        return group_ids if objective_spec(self.args.objective).needs_groups else None

    def _objective(self, losses, inputs, mode: str):
        if mode == "train" and self._plan:
            value, grads, weights, ess, scale = self._plan.pop(0)
            return ObjectiveOutput(surrogate_loss(losses, grads, value, scale), weights, ess, float(value))
        return evaluate_objective(
            self.args.objective,
            losses,
            weights=inputs["weight"],
            groups=self._groups(inputs["group_ids"]),
            process_group=self.accelerator,
            **self._objective_kwargs(update=mode == "train"),
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
        losses, weights, groups, sizes = [], [], [], []
        for batch in batches:
            batch = self._prepare_inputs(batch)
            loss, *_ = self._batch_losses(self.model, batch)
            losses.append(loss.float())
            weights.append(batch["weight"].float())
            groups.append(batch["group_ids"])
            sizes.append(loss.numel())
        l, h, g, offset, world = gather_batch(torch.cat(losses), torch.cat(weights), torch.cat(groups),
                                              self.accelerator)
        value, grad = objective_gradients(self.args.objective, l, h, self._groups(g), **self._objective_kwargs(True))
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
        losses, policy, ref = self._batch_losses(model, inputs)
        out = self._objective(losses, inputs, mode)
        self._record(mode, inputs, losses, policy, ref, out)
        loss = out.loss
        if self.aux_loss_enabled:  # the MoE load-balancing loss, added to the objective as TRL adds it
            loss = loss + self.router_aux_loss_coef * policy.aux_loss
            self._metrics[mode]["aux_loss"].append((self._gather(policy.aux_loss.reshape(1)).mean().item(), 1))
        return (loss, {"losses": losses.detach()}) if return_outputs else loss

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None):
        """README.md in the output folder, from TRL's template (``dataset_name`` as TRL's script passes it, also
        through ``push_to_hub(dataset_name=...)``)."""
        create_model_card(self, model_name, dataset_name, tags)

    def _save_checkpoint(self, model, trial):
        self.create_model_card(model_name=card_model_name(self.args))  # a card beside every checkpoint, as TRL
        super()._save_checkpoint(model, trial)

    def _set_signature_columns_if_needed(self):
        """With ``remove_unused_columns`` (True by default, as TRL) the Trainer keeps these columns: what the collator
        reads, not the model's forward arguments."""
        if self._signature_columns is None and self._is_vision:  # rows as they are: the collator reads them
            self._signature_columns = vision_columns(self.args.weight_column, self.args.source_column,
                                                     self.args.group_column)  # fmt: skip
        if self._signature_columns is None:
            self._signature_columns = ["prompt_ids", "completion_ids", "scores", "weight", "source", "sources", "group",
                                       "ref_logps"]  # fmt: skip

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The objective; with a ``compute_metrics`` also the policy's logits (an extra forward, as TRL 1.16) and the
        input ids as labels."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
            if prediction_loss_only or self.compute_metrics is None:
                return loss.detach(), None, None
            extra = model_inputs(inputs) if self._is_vision else {}
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **extra).logits
        return loss.detach(), logits, inputs["input_ids"]

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
        if "completion_ids" not in (stream_columns(dataset) if is_stream(dataset) else dataset.column_names):
            _, checked = check_data(args, None, dataset if key is None else {key: dataset})
            dataset = checked if key is None else checked[key]
            if self._check_vision_rows([dataset], name) != self._is_vision:  # one collator serves train and eval
                raise ValueError(f"the {name} dataset: rows with images and text-only rows mix with the train rows")
            for source in vocab([dataset], source_columns(args)):
                self.source_vocab.setdefault(source, len(self.source_vocab))  # the collator's vocabulary too
            dataset = self._tokenize(dataset, name)
        if args.precompute_ref_log_probs and not args.reference_free and "ref_logps" not in dataset.column_names:
            if self.ref_model is None and not is_peft(self.model) and self.state.global_step > 0:
                raise ValueError(
                    f"Cannot compute reference log-probs for a dataset passed to evaluate() (the {name} dataset) "
                    "after training started, with precompute_ref_log_probs=True "
                    "and no ref_model: the reference (the initial policy) is gone. Pass it as eval_dataset when the "
                    "trainer is built, pass a ref_model, or set precompute_ref_log_probs=False"
                )
            dataset = self._precompute_ref(dataset, name)
        return dataset
