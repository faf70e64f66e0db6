"""The reference policy: a trained PEFT adapter as its own frozen reference, the reference log-probs (from a
separate model, the adapter-disabled or "ref"-adapter policy, or a column computed once), and the reference's
placement under FSDP2."""

from __future__ import annotations

import contextlib
import copy
import gc

import torch
from accelerate.utils import fsdp2_prepare_model, gather_object
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM
from transformers.integrations import is_deepspeed_zero3_enabled

from dora.logprobs import add_logprob_head

__all__ = [
    "is_peft",
    "unwrap_peft",
    "disable_dropout",
    "add_reference_adapter",
    "reference_adapter",
    "frozen_reference_copy",
    "initial_policy_copy",
    "ReferenceMixin",
]


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def unwrap_peft(model):
    """The PEFT model inside a DDP / compile wrapper."""
    while not is_peft(model) and hasattr(model, "module"):
        model = model.module
    return model


def disable_dropout(model) -> None:
    """Every dropout of the model, a PEFT adapter's ``lora_dropout`` included, set to p = 0."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0


def add_reference_adapter(model) -> None:
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
def reference_adapter(model):
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


def is_sharded(model) -> bool:
    """Whether FSDP2 has sharded the model's parameters (DTensors)."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def frozen_reference_copy(model):
    """A frozen copy of what the policy scores as its reference before any step: the model itself, or for a PeftModel
    its base with the "ref" adapter merged in (or no adapter at all)."""
    ref = copy.deepcopy(unwrap_peft(model))
    if is_peft(ref):
        if "ref" in ref.peft_config:
            ref.set_adapter("ref")
            ref = ref.merge_and_unload(adapter_names=["ref"])
        else:
            ref = ref.unload()
    return ref.eval().requires_grad_(False)


def initial_policy_copy(model, model_init_kwargs: dict):
    """A frozen copy of the initial policy (the reference when none is given). Under DeepSpeed ZeRO-3 the loaded
    policy's parameters are already partitioned, so a deep copy would hold empty shards: the copy is loaded
    again from the policy's path, as TRL does."""
    if not is_deepspeed_zero3_enabled():
        return copy.deepcopy(model)
    path = getattr(getattr(model, "config", None), "_name_or_path", "")
    if not path:
        raise ValueError(
            "under DeepSpeed ZeRO-3 the frozen reference is loaded again from the policy's path, and this model "
            "has none (config._name_or_path): pass ref_model, use LoRA (peft_config), or "
            "precompute_ref_log_probs=True"
        )
    return AutoModelForCausalLM.from_pretrained(path, **{"dtype": model.dtype, **model_init_kwargs})


class ReferenceMixin:
    """DoRATrainer's reference log-probs (``self._token_logps`` / ``self._sequence_logps`` come from the trainer)."""

    @torch.no_grad()
    def _reference_from_model(self, inputs) -> torch.Tensor:
        """Under the policy's mixed precision (accelerate's autocast, as TRL prepares its reference): with bf16 the
        frozen copy, the sharded copy and the precomputed column score exactly as the unchanged policy does."""
        b = inputs["weight"].shape[0]
        with self.accelerator.autocast():
            if self.ref_model is not None:
                tok = self._token_logps(self.ref_model, inputs)
            elif is_peft(self.model):
                with reference_adapter(unwrap_peft(self.model)):
                    tok = self._token_logps(self.model, inputs)
            else:  # precompute from the policy before any step
                tok = self._token_logps(self.model, inputs)
        return self._sequence_logps(tok, b).view(-1, b).T.float()

    def _reference(self, inputs) -> torch.Tensor | None:
        if self.args.reference_free:
            return None
        if "ref_logps" in inputs:
            return inputs["ref_logps"]
        if self.ref_model is None and not is_peft(self.model):
            raise ValueError("no reference: pass ref_model, or precompute_ref_log_probs=True before training")
        return self._reference_from_model(inputs)

    def _precompute_ref(self, dataset, name: str):
        """Reference log-probs of every row, once, stored as the column ``ref_logps``; batches of
        ``precompute_ref_batch_size``, else the train / eval batch size (as TRL). Several processes split the rows
        in equal contiguous shares (the last row repeats to even them out), compute theirs, and gather them. Under
        FSDP or DeepSpeed with no ``ref_model`` the policy is neither placed nor sharded before ``train()``: a frozen
        copy, placed as a reference is (sharded under FSDP2 and ZeRO-3), scores the rows and is freed."""
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
        kept_ref = self.ref_model
        if kept_ref is None and not self._policy_placed():
            self.ref_model = self._place_reference(self._initial_reference())
        try:
            for batch in tqdm(
                loader, desc=f"Reference log-probs ({name})", disable=not self.is_local_process_zero()
            ):
                batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                rows.extend(self._reference_from_model(batch).cpu().tolist())
        finally:
            temporary = self.ref_model is not kept_ref
            self.ref_model = kept_ref
            self.model.train(was_training)
            if temporary:  # a sharded module holds reference cycles (hooks): free it now, while its group lives
                gc.collect()
        if world > 1:
            rows = gather_object(rows)[:n]
        return dataset.add_column("ref_logps", rows)

    def _policy_placed(self) -> bool:
        """Whether the policy can score rows as it is: before ``train()`` FSDP has not sharded it (nor moved it to
        the device) and DeepSpeed has not wrapped it in its engine."""
        if self.is_fsdp_enabled:
            return is_sharded(self.model)
        if self.is_deepspeed_enabled:
            return self.model_wrapped is not self.model
        return True

    def _initial_reference(self):
        """A separate frozen copy of the reference the policy stands for before any step (the initial policy; with
        PEFT its base, with a trained adapter's "ref" copy merged in). Under ZeRO-3 the loaded policy is already
        partitioned, so the copy is loaded again from its path."""
        if self.is_deepspeed_enabled and is_deepspeed_zero3_enabled():
            inner = unwrap_peft(self.model)
            if is_peft(inner) and "ref" in inner.peft_config:
                raise ValueError(
                    "precompute_ref_log_probs under DeepSpeed ZeRO-3 with a trained adapter as its own reference: the "
                    "partitioned adapter cannot be copied before training. Pass ref_model, or "
                    "precompute_ref_log_probs=False"
                )
            base = inner.get_base_model() if is_peft(inner) else inner
            ref = initial_policy_copy(base, self._model_init_kwargs)
        else:
            ref = frozen_reference_copy(self.model)
        add_logprob_head(ref, self.args.logprob_chunk_tokens)  # the copy must not call the policy's forward
        return ref.eval().requires_grad_(False)

    def _place_reference(self, ref_model):
        """The frozen reference on the device; under FSDP2, sharded with the policy's plugin (its blocks wrapped as
        the policy's), so that no process holds a whole copy; under DeepSpeed, an inference engine built by TRL's
        ``prepare_deepspeed`` (sharded under ZeRO-3, a whole copy per process under ZeRO-1/2)."""
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed  # DeepSpeed only: TRL's helper imports deepspeed

            return prepare_deepspeed(ref_model, self.accelerator)
        if not self.is_fsdp_enabled:
            return ref_model.to(self.accelerator.device)
        if self.accelerator.state.fsdp_plugin.fsdp_version != 2:
            raise ValueError(
                "a frozen reference copy under FSDP1 would stay unsharded on every process: use fsdp_version: 2, "
                "LoRA (peft_config / the recipe's lora), or precompute_ref_log_probs=True"
            )
        return fsdp2_prepare_model(self.accelerator, ref_model).eval()
