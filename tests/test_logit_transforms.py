"""Models that post-process their LM-head logits (Granite, Cohere, Gemma 2, Falcon-H1, ...): the chunked
log-prob head gives the log-probs of the model's own forward, and those of TRL 1.16's fused head."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from dora.logprobs import add_logprob_head, completion_logps

VOCAB = 61
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip

CASES = {
    "granite": ("GraniteConfig", "GraniteForCausalLM", dict(logits_scaling=4.0)),
    "cohere": ("CohereConfig", "CohereForCausalLM", dict(logit_scale=0.3)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(final_logit_softcapping=0.7, head_dim=8)),
    "falcon_h1": (
        "FalconH1Config",
        "FalconH1ForCausalLM",
        dict(lm_head_multiplier=0.37, mamba_d_ssm=32, mamba_n_heads=4, mamba_d_head=8, mamba_d_state=8,
             mamba_n_groups=1, mamba_chunk_size=8, head_dim=8),
    ),  # fmt: skip
}


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 12), generator=g)
    attention = torch.ones_like(ids)
    attention[2, 9:] = 0  # right padding on one row
    completion = torch.zeros_like(ids)
    completion[:, 5:] = 1
    completion = completion * attention
    return ids, attention, completion


def _own_forward_logps(model, ids, attention, completion) -> torch.Tensor:
    """float64 log-softmax of the logits the model's own forward returns, summed over completion tokens."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits.double()
    lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (lp * completion[:, 1:]).sum(-1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunked_head_equals_the_models_own_forward(name, one_thread):
    config_cls, model_cls, extra = CASES[name]
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**SMALL, **extra)
    model = getattr(transformers, model_cls)(config).eval()
    ids, attention, completion = _batch()
    expected = _own_forward_logps(model, ids, attention, completion)
    post = ("logits_scaling", "logit_scale", "lm_head_multiplier", "final_logit_softcapping")
    neutral = {k: (None if k == "final_logit_softcapping" else 1.0) for k in extra if k in post}
    neutral_config = getattr(transformers, config_cls)(**SMALL, **{**extra, **neutral})
    untransformed = getattr(transformers, model_cls)(neutral_config)
    untransformed.load_state_dict(model.state_dict())  # the same weights, the post-processing switched off
    assert not torch.allclose(expected, _own_forward_logps(untransformed, ids, attention, completion), atol=1e-3)

    add_logprob_head(model, chunk_tokens=7)  # chunks that split the completion tokens unevenly
    with torch.no_grad():
        got, lengths = completion_logps(model, ids, attention, completion)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=2e-5)
    assert lengths.tolist() == completion[:, 1:].sum(-1).float().tolist()


@pytest.mark.parametrize(
    "extra",
    [dict(output_multiplier=0.25), dict(model_type_override="hyperclovax", logits_scaling=3.0),
     dict(logits_scaling=3.0), dict(logit_scale=0.5, final_logit_softcapping=0.9)],
)  # fmt: skip
def test_chunked_head_equals_trls_fused_head(extra, one_thread):
    """Attributes no model in transformers applies itself (``output_multiplier``, HyperCLOVA X's
    multiplying ``logits_scaling``) are checked against TRL's own fused LM head on the same weights."""
    from trl.trainer.utils import add_fused_lm_head

    extra = dict(extra)
    model_type = extra.pop("model_type_override", None)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL)).eval()
    for k, v in extra.items():
        setattr(model.config, k, v)
    if model_type is not None:
        model.config.model_type = model_type
    ids, attention, completion = _batch(1)
    trl_model = copy.deepcopy(model)
    add_fused_lm_head(trl_model)
    labels = ids.masked_fill(completion == 0, -100)
    with torch.no_grad():
        out = trl_model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True)
    trl_logps = out.log_probs[:, -(ids.shape[1] - 1) :]
    expected = (trl_logps.double() * completion[:, 1:]).sum(-1)

    plain = _own_forward_logps(model, ids, attention, completion)  # Llama itself ignores these attributes
    assert not torch.allclose(expected, plain, atol=1e-3)
    add_logprob_head(model)
    with torch.no_grad():
        got, _ = completion_logps(model, ids, attention, completion)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=2e-5)
