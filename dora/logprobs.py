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
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

__all__ = [
    "add_logprob_head",
    "completion_logps",
    "completion_token_logps",
    "length_desensitized_logps",
    "logit_scale_and_softcap",
    "unwrap_causal_lm",
    "wpo_weights",
    "TokenLogps",
]


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


def _chunk_logps(hidden: Tensor, labels: Tensor, head, transform, sum_sq: bool = False) -> Tensor:
    logits = transform(head(hidden).float())
    log_z = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - log_z
    if not sum_sq:
        return logp
    # log sum_v p_v^2 (WPO's alignment term), without gradient
    log_sum_sq = torch.logsumexp(2 * (logits - log_z.unsqueeze(-1)), dim=-1).detach()
    return torch.stack([logp, log_sum_sq], dim=-1)


def _router_aux_loss(model, router_logits, attention_mask) -> Tensor:
    """The MoE load-balancing loss of the model's own forward (Mixtral's function, which every MoE family in
    transformers shares, as TRL 1.16 calls it), from the backbone's router logits."""
    text = model.config.get_text_config()
    return load_balancing_loss_func(router_logits, text.num_experts, text.num_experts_per_tok, attention_mask)


def add_logprob_head(model, chunk_tokens: int = 2048):
    """Patch ``model.forward`` (an HF causal LM, before any PEFT wrapping) to accept ``dora_labels``."""
    model = unwrap_causal_lm(model)
    if getattr(model.forward, "_dora_model", None) is model:
        return model
    # the class's forward, bound to this instance: a deep copy of a patched model shares the old closure
    original = type(model).forward.__get__(model)
    transform = _logit_transform(model.config)

    @functools.wraps(type(model).forward)
    def forward(*args, dora_labels: Tensor | None = None, dora_outputs: tuple[str, ...] = (), **kwargs):
        if dora_labels is None:
            return original(*args, **kwargs)
        kwargs["use_cache"] = False
        kwargs.pop("labels", None)
        if "aux_loss" in dora_outputs:
            kwargs["output_router_logits"] = True
        backbone = model.base_model(*args, **kwargs)
        hidden = backbone.last_hidden_state[:, :-1]
        labels = dora_labels[:, 1:]
        mask = labels != -100
        sum_sq = "log_sum_sq_probs" in dora_outputs
        out = torch.zeros((*labels.shape, 2) if sum_sq else labels.shape, dtype=torch.float32, device=hidden.device)
        h, y = hidden[mask], labels[mask]
        head = model.get_output_embeddings()
        parts = []
        for i in range(0, h.shape[0], chunk_tokens):
            hc, yc = h[i : i + chunk_tokens], y[i : i + chunk_tokens]
            if torch.is_grad_enabled() and hc.requires_grad:
                parts.append(checkpoint(_chunk_logps, hc, yc, head, transform, sum_sq, use_reentrant=False))
            else:
                parts.append(_chunk_logps(hc, yc, head, transform, sum_sq))
        if parts:
            out = out.masked_scatter(mask.unsqueeze(-1).expand_as(out) if sum_sq else mask, torch.cat(parts))
        elif hidden.requires_grad:  # no completion token left (a vision batch cut at max_length): a zero gradient
            out = out + 0.0 * hidden.sum()
        if not dora_outputs:
            return out
        result = {"log_probs": out[..., 0] if sum_sq else out}
        if sum_sq:
            result["log_sum_sq_probs"] = out[..., 1].detach()
        if "aux_loss" in dora_outputs:
            result["aux_loss"] = _router_aux_loss(model, backbone.router_logits, kwargs.get("attention_mask"))
        return result

    forward._dora_model = model
    model.forward = forward
    return model


def completion_logps(model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor):
    """Summed log-probs of the completion tokens and their count, per sequence ([N], [N]).

    ``model`` must have been patched with ``add_logprob_head`` (directly or before PEFT/DDP wrapping)."""
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    per_token = model(input_ids=input_ids, attention_mask=attention_mask, dora_labels=labels)
    return per_token.sum(dim=-1), completion_mask[:, 1:].sum(dim=-1).float()


# --------------------------------------------------------------------------- per-token outputs


@dataclass
class TokenLogps:
    """Per-token outputs of one forward, in the padded layout [N, T-1] (position t scores token t+1)."""

    log_probs: Tensor
    mask: Tensor  # 1 on completion tokens
    log_sum_sq_probs: Tensor | None = None  # log sum_v p_v^2, for WPO
    aux_loss: Tensor | None = None  # MoE load-balancing loss

    def sums(self) -> Tensor:
        return self.log_probs.sum(dim=-1)

    def lengths(self) -> Tensor:
        return self.mask.sum(dim=-1).float()


PADDING_FREE_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


def completion_token_logps(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    *,
    padding_free: bool = False,
    outputs: tuple[str, ...] = (),
    model_inputs: dict | None = None,
) -> TokenLogps:
    """Per-token completion log-probs of right-padded sequences, and the ``outputs`` asked for
    ("log_sum_sq_probs", "aux_loss"). With ``padding_free`` the model sees one row holding every sequence
    back to back, with ``position_ids`` restarting at 0 for each and no attention mask: transformers then
    attends within each sequence only (its packed-sequence detection), and no compute goes to padding.
    ``model_inputs``: more inputs of the forward (a vision-language model's ``pixel_values`` and the like)."""
    labels = input_ids.masked_fill(completion_mask == 0, -100)
    if model_inputs and padding_free:
        raise ValueError("padding_free=True packs text only: a vision batch's pixel inputs cannot follow the packing")
    if not padding_free:
        res = model(input_ids=input_ids, attention_mask=attention_mask, dora_labels=labels, dora_outputs=outputs,
                    **(model_inputs or {}))  # fmt: skip
    else:
        keep = attention_mask.bool()
        lengths = keep.sum(dim=1)
        starts = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)[keep]
        packed_labels = labels[keep].masked_fill(positions == 0, -100)  # a first token is never predicted
        res = model(
            input_ids=input_ids[keep].unsqueeze(0),
            position_ids=positions.unsqueeze(0),
            attention_mask=None,
            dora_labels=packed_labels.unsqueeze(0),
            dora_outputs=outputs,
        )
        # back to the padded layout: position t of sequence k is packed position starts[k] + t
        valid = keep[:, 1:]
        index = (starts.unsqueeze(1) + torch.arange(valid.shape[1], device=valid.device))[valid]

        def unpack(t: Tensor) -> Tensor:
            return t.new_zeros(valid.shape).masked_scatter(valid, t[0, index])

        res = {k: (unpack(v) if k != "aux_loss" else v) for k, v in res.items()} if outputs else unpack(res)
    if not outputs:
        res = {"log_probs": res}
    return TokenLogps(
        res["log_probs"], completion_mask[:, 1:], res.get("log_sum_sq_probs"), res.get("aux_loss")
    )


def length_desensitized_logps(tok: TokenLogps, n_responses: int, ld_alpha: float) -> Tensor:
    """LD-DPO (Liu et al. 2024, arXiv 2409.06411, Eq. 8), as TRL 1.16: tokens up to the shortest length of the
    row's responses count fully, the rest weigh ``ld_alpha``. Rows are response-major (sequence j*B + i is
    response j of row i). Returns [N]."""
    position = tok.mask.cumsum(dim=1)
    lengths = tok.mask.sum(dim=1).long().view(n_responses, -1)
    shared = lengths.min(dim=0).values.repeat(n_responses).unsqueeze(1)
    shared_mask = (position > 0) & (position <= shared)
    tail_mask = position > shared
    return (tok.log_probs * shared_mask).sum(dim=1) + ld_alpha * (tok.log_probs * tail_mask).sum(dim=1)


def wpo_weights(tok: TokenLogps) -> Tensor:
    """WPO (Zhou et al. 2024, arXiv 2406.11827, Eq. 2), as TRL 1.16: per response, the exp of the mean over
    its tokens of log p(y_t) - log sum_v p_v^2; no gradient. Returns [N]."""
    with torch.no_grad():
        aligned = (tok.log_probs - tok.log_sum_sq_probs) * tok.mask
        return torch.exp(aligned.sum(dim=1) / tok.mask.sum(dim=1).clamp(min=1))
