"""Sequence log-probabilities of completions without the [batch, length, vocab] logits in memory at once.

``add_logprob_head(model)`` patches a causal LM's forward so that ``model(input_ids=..., attention_mask=...,
dora_labels=labels)`` returns per-token log-probs [N, T-1] (0 where the label is -100) instead of logits. It
runs the backbone, then the LM head and log-softmax in chunks over the completion tokens only, each chunk
recomputed in backward (activation checkpointing), so the float32 logits of one chunk at most live at a time.
Going through the model's own ``forward`` keeps DDP, FSDP and PEFT hooks in the path. Without
``dora_labels`` the forward is the original one (generation is unchanged).

``completion_logps(model, input_ids, attention_mask, completion_mask)`` -> (summed log-probs, lengths).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = ["add_logprob_head", "completion_logps", "logit_scale_and_softcap", "unwrap_causal_lm"]


def unwrap_causal_lm(model):
    """The Hugging Face causal LM inside a PEFT / DDP / compiled wrapper."""
    while True:
        if hasattr(model, "module"):  # DDP
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and hasattr(model, "peft_config"):  # PEFT
            model = model.get_base_model()
        else:
            return model


def logit_scale_and_softcap(config) -> tuple[float, float | None]:
    """The model's own post-processing of LM-head logits, read as TRL 1.16 reads it: a scale (Cohere
    ``logit_scale``; ``output_multiplier``; Falcon-H1 ``lm_head_multiplier``; Granite / MiniCPM3 divide by
    ``logits_scaling``, HyperCLOVA X multiplies by it), then Gemma-style ``final_logit_softcapping``."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    softcap = getattr(text, "final_logit_softcapping", None)
    scale = getattr(text, "logit_scale", None)  # None on models that do not scale (MPT); a real 0.0 is kept
    if scale is None:
        scale = getattr(text, "output_multiplier", None)
    if scale is None:
        scale = getattr(text, "lm_head_multiplier", None)
    if scale is None and getattr(text, "logits_scaling", None) is not None:
        scale = text.logits_scaling if getattr(text, "model_type", None) == "hyperclovax" else 1 / text.logits_scaling
    return (1.0 if scale is None else float(scale)), softcap


def _logit_transform(config):
    scale, softcap = logit_scale_and_softcap(config)

    def transform(logits: Tensor) -> Tensor:
        if scale != 1.0:
            logits = logits * scale
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    return transform


def _chunk_logps(hidden: Tensor, labels: Tensor, head, transform) -> Tensor:
    logits = transform(head(hidden).float())
    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def add_logprob_head(model, chunk_tokens: int = 2048):
    """Patch ``model.forward`` (an HF causal LM, before any PEFT wrapping) to accept ``dora_labels``."""
    model = unwrap_causal_lm(model)
    if getattr(model.forward, "_dora_model", None) is model:
        return model
    # the class's forward, bound to this instance: a deep copy of a patched model shares the old closure
    original = type(model).forward.__get__(model)
    transform = _logit_transform(model.config)

    @functools.wraps(type(model).forward)
    def forward(*args, dora_labels: Tensor | None = None, **kwargs):
        if dora_labels is None:
            return original(*args, **kwargs)
        kwargs["use_cache"] = False
        kwargs.pop("labels", None)
        hidden = model.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        labels = dora_labels[:, 1:]
        mask = labels != -100
        out = torch.zeros(labels.shape, dtype=torch.float32, device=hidden.device)
        h, y = hidden[mask], labels[mask]
        head = model.get_output_embeddings()
        parts = []
        for i in range(0, h.shape[0], chunk_tokens):
            hc, yc = h[i : i + chunk_tokens], y[i : i + chunk_tokens]
            if torch.is_grad_enabled() and hc.requires_grad:
                parts.append(checkpoint(_chunk_logps, hc, yc, head, transform, use_reentrant=False))
            else:
                parts.append(_chunk_logps(hc, yc, head, transform))
        if parts:
            out = out.masked_scatter(mask, torch.cat(parts))
        return out

    forward._dora_model = model
    model.forward = forward
    return model


def completion_logps(model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor):
    """Summed log-probs of the completion tokens and their count, per sequence ([N], [N]).

    ``model`` must have been patched with ``add_logprob_head`` (directly or before PEFT/DDP wrapping)."""
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    per_token = model(input_ids=input_ids, attention_mask=attention_mask, dora_labels=labels)
    return per_token.sum(dim=-1), completion_mask[:, 1:].sum(dim=-1).float()
