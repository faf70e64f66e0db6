"""TRL 1.16 DPOConfig training features against TRL's own code on the same inputs.

Part 1 feeds one set of per-token log-probs to TRL's ``DPOTrainer._compute_loss`` (its loss code, called
unbound on a stand-in trainer whose model returns those log-probs) and to dora's losses. Part 2 runs the first
steps of TRL's ``DPOTrainer`` and ``DoRATrainer`` (objective "mean") on one tiny model and compares the logs.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from conftest import pair_rows
from datasets import Dataset

from dora import DoRAConfig, DoRATrainer
from dora.logprobs import TokenLogps
from dora.losses import pairwise_loss

# ----------------------------------------------------------------------------- part 1: the loss code

B, T = 6, 14


def _token_batch(seed=0):
    """Right-padded pairs (chosen rows, then rejected rows) with prompts and completions of varied lengths."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(2, 5, (B,), generator=g).repeat(2)
    completion = torch.randint(2, T - 5, (2 * B,), generator=g)
    pos = torch.arange(T)
    attention = (pos < (prompt + completion).unsqueeze(1)).long()
    comp = ((pos >= prompt.unsqueeze(1)) & (attention == 1)).long()
    shift = comp[:, 1:].float()

    def per_token(scale):
        return -scale * torch.rand(2 * B, T - 1, generator=g) * shift

    policy, ref = per_token(3.0), per_token(3.0)
    log_sum_sq = -2.0 * torch.rand(2 * B, T - 1, generator=g) * shift
    ids = torch.randint(0, 50, (2 * B, T), generator=g)
    return dict(input_ids=ids, attention_mask=attention, completion_mask=comp), policy, ref, log_sum_sq


def _trl_loss(loss_type, loss_weights, inputs, policy, ref, log_sum_sq, **cfg):
    """TRL 1.16's DPOTrainer._compute_loss on a stand-in trainer: its model returns ``policy`` per-token log-probs,
    its reference model ``ref``."""
    from trl import DPOTrainer

    def outputs(log_probs):
        zeros = torch.zeros_like(log_probs)
        return SimpleNamespace(
            log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool(),
            log_sum_sq_probs=log_sum_sq, aux_loss=None,
        )  # fmt: skip

    policy_model = torch.nn.Module()  # what TRL inspects (training mode, PEFT, checkpointing); not called
    policy_model.is_gradient_checkpointing = False
    fake = SimpleNamespace(
        model=policy_model,
        ref_model=lambda **kw: outputs(ref),
        accelerator=SimpleNamespace(
            device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x, unwrap_model=lambda m: m
        ),
        args=SimpleNamespace(gradient_checkpointing_kwargs=None, discopop_tau=cfg.get("discopop_tau", 0.05)),
        aux_loss_enabled=False,
        precompute_ref_logps=False,
        ld_alpha=cfg.get("ld_alpha"),
        f_divergence_type=cfg.get("f_divergence_type", "reverse_kl"),
        f_alpha_divergence_coef=cfg.get("f_alpha_divergence_coef", 0.5),
        loss_types=loss_type,
        loss_weights=loss_weights,
        beta=cfg.get("beta", 0.1),
        label_smoothing=cfg.get("label_smoothing", 0.0),
        use_weighting=cfg.get("use_weighting", False),
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    return DPOTrainer._compute_loss(fake, lambda **kw: outputs(policy), inputs, return_outputs=False)


def _dora_loss(loss_type, loss_weights, inputs, policy, ref, log_sum_sq, **cfg):
    """DoRATrainer's own per-sample path on the same log-probs (its forward's LD-DPO and WPO, its reference's
    sequence log-probs, every loss through ``_per_sample_losses``), averaged as objective "mean" does. The trainer
    is built without a model: its ``_token_logps`` returns the given per-token log-probs."""
    args = DoRAConfig(output_dir="unused", report_to=[], loss_type=loss_type, loss_weights=loss_weights,
                      objective="mean", **cfg)  # fmt: skip
    mask = inputs["completion_mask"][:, 1:]
    trainer = DoRATrainer.__new__(DoRATrainer)  # no model, no data: only what the per-sample path reads
    trainer.args, trainer.aux_loss_enabled = args, False
    trainer.accelerator = SimpleNamespace(num_processes=1)
    trainer._token_logps = lambda model, batch, outputs=(): TokenLogps(policy, mask, log_sum_sq)
    batch = dict(inputs, weight=torch.ones(B), scores=torch.tensor([[1.0, 0.0]] * B))  # pairs: chosen first
    out = trainer._forward(None, batch)
    refs = trainer._sequence_logps(TokenLogps(ref, mask), B).view(-1, B).T  # as ReferenceMixin shapes it
    return trainer._per_sample_losses(out, refs, batch).mean()


TRL_LOSSES = [
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
]  # fmt: skip

CASES = [
    *[dict(loss_type=[n]) for n in TRL_LOSSES],
    dict(loss_type=["exo_pair"], label_smoothing=1e-3),
    dict(loss_type=["robust"], label_smoothing=0.2),
    dict(loss_type=["aot"], label_smoothing=0.1),
    dict(loss_type=["aot_unpaired"], label_smoothing=0.1),
    dict(loss_type=["discopop"], discopop_tau=0.5, beta=0.5),
    dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.3]),  # RPO
    dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0]),  # MPO
    dict(loss_type=["sigmoid"], use_weighting=True),
    dict(loss_type=["ipo", "nca_pair"], loss_weights=[1.0, 0.5], use_weighting=True),  # (TRL fails with "sft")
    dict(loss_type=["sigmoid"], ld_alpha=0.3),
    dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5], ld_alpha=0.0),
    dict(loss_type=["apo_zero"], ld_alpha=0.7),
    *[
        dict(loss_type=[n], f_divergence_type=f, f_alpha_divergence_coef=a)
        for n in ("sigmoid", "ipo", "hinge", "discopop", "sigmoid_norm", "robust")
        for f, a in (("forward_kl", 0.5), ("js_divergence", 0.5), ("alpha_divergence", 0.3))
    ],
    dict(loss_type=["sigmoid"], f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1.0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_loss_equals_trl_loss_code(case):
    case = dict(case)
    loss_type = case.pop("loss_type")
    weights = case.pop("loss_weights", [1.0] * len(loss_type))
    if "exo_pair" in loss_type:
        case.setdefault("label_smoothing", 1e-3)  # TRL refuses 0; dora reads 0 as the paper's 1e-3
    if "robust" in loss_type:
        case.setdefault("label_smoothing", 0.1)
    data = _token_batch(seed=len(loss_type))
    trl = _trl_loss(loss_type, weights, *data, **case)
    ours = _dora_loss(loss_type, weights, *data, **case)
    assert torch.isfinite(trl)
    torch.testing.assert_close(ours, trl, rtol=1e-5, atol=1e-6)


def test_sft_is_trl_token_mean_and_splits_by_tokens():
    """sft per pair: -B logp(y_w) / sum |y_w|, whose mean is TRL's NLL per chosen token."""
    logps = torch.tensor([-3.0, -10.0, -1.0], dtype=torch.float64)
    lengths = torch.tensor([2.0, 5.0, 1.0], dtype=torch.float64)
    out = pairwise_loss("sft", logps, logps - 1, chosen_lengths=lengths, rejected_lengths=lengths)
    expected = [3.0 * 3 / 8, 10.0 * 3 / 8, 1.0 * 3 / 8]
    assert out.tolist() == pytest.approx(expected, rel=1e-12)
    assert out.mean().item() == pytest.approx(14.0 / 8, rel=1e-12)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_logps_equal_padded(tiny_model_dir, attn):
    """One packed row with restarting position_ids gives the padded batch's per-token outputs; the same row
    without position_ids (attention across sequences) does not, so the check can fail."""
    from transformers import AutoModelForCausalLM

    from dora.logprobs import add_logprob_head, completion_token_logps

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn)
    add_logprob_head(model, chunk_tokens=7)
    inputs, *_ = _token_batch(seed=3)
    args = (inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"])
    outputs = ("log_sum_sq_probs",)
    padded = completion_token_logps(model, *args, outputs=outputs)
    packed = completion_token_logps(model, *args, padding_free=True, outputs=outputs)
    torch.testing.assert_close(packed.log_probs, padded.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.log_sum_sq_probs, padded.log_sum_sq_probs, rtol=1e-5, atol=1e-5)
    keep = inputs["attention_mask"].bool()
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    leaky = model(input_ids=inputs["input_ids"][keep][None], attention_mask=None, dora_labels=labels[keep][None])
    assert abs(leaky.sum().item() - padded.log_probs.sum().item()) > 1e-3


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(loss_type="nca_pair", f_divergence_type="forward_kl"), "f_divergence_type='forward_kl' applies only"),
        (dict(loss_type="aot", use_weighting=True), "use_weighting"),
        (dict(ld_alpha=1.5), "ld_alpha"),
        (dict(truncation_mode="middle"), "truncation_mode"),
        (dict(sync_ref_model=True, precompute_ref_log_probs=True), "precompute_ref_log_probs=False"),
    ],
    ids=["f_divergence", "use_weighting", "ld_alpha", "truncation_mode", "sync_ref_model"],
)
def test_config_refusals(kw, match):
    with pytest.raises(ValueError, match=match):
        DoRAConfig(output_dir="unused", report_to=[], **kw)


def test_rpo_alpha_adds_the_sft_loss():
    cfg = DoRAConfig(loss_type="sigmoid", rpo_alpha=0.4, output_dir="unused", report_to=[])
    assert (cfg.loss_type, cfg.loss_weights) == (["sigmoid", "sft"], [1.0, 0.4])


# ----------------------------------------------------------------------------- part 2: first steps of the trainers


COMMON = dict(
    per_device_train_batch_size=8, logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True,
    learning_rate=1e-3, seed=0, beta=0.1,
)  # fmt: skip


def _trl_logs(tmp_path, model_dir, ref_dir, rows, **kw):
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    ref = AutoModelForCausalLM.from_pretrained(ref_dir) if ref_dir else None
    args = DPOConfig(output_dir=str(tmp_path / "trl"), bf16=False, gradient_checkpointing=False, **{**COMMON, **kw})
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    trainer = DPOTrainer(model=model_dir, ref_model=ref, args=args, train_dataset=data)
    trainer.train()
    return trainer.state.log_history


def _dora_logs(tmp_path, model_dir, ref_dir, rows, **kw):
    args = DoRAConfig(output_dir=str(tmp_path / "dora"), objective="mean", **{**COMMON, **kw})
    trainer = DoRATrainer(model=model_dir, ref_model=ref_dir, args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    return trainer.state.log_history


KEYS = ("loss", "rewards/chosen", "rewards/margins", "rewards/accuracies", "logps/chosen", "grad_norm")

# (DPOConfig fields, DoRAConfig fields when they differ, steps: the logged step compared)
FEATURES = {
    "rpo": (dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5]), None, 1),
    "rpo_alpha": (dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5]), dict(rpo_alpha=0.5), 1),
    "discopop": (dict(loss_type=["discopop"], discopop_tau=0.2), None, 1),
    "aot": (dict(loss_type=["aot"], label_smoothing=0.1), None, 1),
    "aot_unpaired": (dict(loss_type=["aot_unpaired"]), None, 1),
    "use_weighting": (dict(use_weighting=True), None, 1),
    "ld_alpha": (dict(ld_alpha=0.3), None, 1),
    "f_divergence": (
        dict(loss_type=["ipo"], f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.3), None, 1
    ),
    "keep_end": (dict(truncation_mode="keep_end", max_length=14), None, 1),
    "keep_start": (dict(truncation_mode="keep_start", max_length=14), None, 1),
    "keep_end_long_prompts": (dict(truncation_mode="keep_end", max_length=8), None, 1),  # prompts fill max_length
    "precompute_ref_batch_size": (dict(precompute_ref_log_probs=True, precompute_ref_batch_size=3), None, 1),
    "sync_ref_model": (
        dict(sync_ref_model=True, ref_model_sync_steps=1, ref_model_mixup_alpha=0.5, max_steps=2), None, 2
    ),
    "padding_free": (dict(), dict(padding_free=True), 1),
}  # fmt: skip


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_first_steps_equal_trl(tmp_path, tiny_model_dir, ref_dir, one_thread, feature):
    trl_kw, ours_kw, step = FEATURES[feature]
    trl_kw = {"max_steps": step, **trl_kw}
    ours_kw = {**trl_kw, **(ours_kw or {})}
    if "rpo_alpha" in ours_kw:
        del ours_kw["loss_type"], ours_kw["loss_weights"]
    rows = pair_rows(8)
    a = _trl_logs(tmp_path, tiny_model_dir, ref_dir, rows, **trl_kw)[step - 1]
    b = _dora_logs(tmp_path, tiny_model_dir, ref_dir, rows, **ours_kw)[step - 1]
    assert a["step"] == b["step"] == step
    for key in KEYS:
        assert b[key] == pytest.approx(a[key], abs=1e-5, rel=1e-5), key


def test_sync_ref_model_moves_the_reference(tmp_path, tiny_model_dir, ref_dir, one_thread):
    """After one synced step the reference is 0.5 policy + 0.5 old reference, parameter by parameter."""
    from transformers import AutoModelForCausalLM

    args = DoRAConfig(output_dir=str(tmp_path / "d"), objective="mean", max_steps=1, sync_ref_model=True,
                      ref_model_sync_steps=1, ref_model_mixup_alpha=0.5, **COMMON)  # fmt: skip
    t = DoRATrainer(model=tiny_model_dir, ref_model=ref_dir, args=args, train_dataset=Dataset.from_list(pair_rows(8)))
    t.train()
    old = dict(AutoModelForCausalLM.from_pretrained(ref_dir).named_parameters())
    policy = dict(t.model.named_parameters())
    for name, p in t.ref_model.named_parameters():
        torch.testing.assert_close(p, 0.5 * policy[name].detach() + 0.5 * old[name].detach())


def test_moe_router_aux_loss_equals_trl(tmp_path, tiny_model_dir, one_thread):
    """A tiny Mixtral: the logged aux_loss and the loss (objective + coef * aux) equal TRL's."""
    from transformers import AutoTokenizer, MixtralConfig, MixtralForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    path = str(tmp_path / "moe")
    torch.manual_seed(0)
    cfg = MixtralConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
    )  # fmt: skip
    MixtralForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    rows = pair_rows(8)
    a = _trl_logs(tmp_path, path, None, rows, max_steps=1, router_aux_loss_coef=0.5)[0]
    b = _dora_logs(tmp_path, path, None, rows, max_steps=1, router_aux_loss_coef=0.5)[0]
    assert a["aux_loss"] > 0.5  # about 1 for a balanced router: the term is there
    for key in ("aux_loss", *KEYS):
        assert b[key] == pytest.approx(a[key], abs=1e-5, rel=1e-5), key


def test_trainer_refusals(tmp_path, tiny_model_dir):
    rows = Dataset.from_list(pair_rows(4))
    with pytest.raises(ValueError, match="pad_token '<nope>' is not in the vocabulary"):
        DoRATrainer(model=tiny_model_dir, args=DoRAConfig(output_dir=str(tmp_path), report_to=[], pad_token="<nope>"),
                    train_dataset=rows)  # fmt: skip
    with pytest.raises(ValueError, match="router_aux_loss_coef=0.1, but LlamaForCausalLM"):
        DoRATrainer(model=tiny_model_dir, args=DoRAConfig(output_dir=str(tmp_path), report_to=[],
                    router_aux_loss_coef=0.1), train_dataset=rows)  # fmt: skip
    with pytest.raises(ValueError, match="sorts the batch"):
        DoRATrainer(model=tiny_model_dir, args=DoRAConfig(output_dir=str(tmp_path), report_to=[], loss_type="aot",
                    objective="dora"), train_dataset=rows)  # fmt: skip
    from peft import LoraConfig

    with pytest.raises(ValueError, match="sync_ref_model=True mixes"):
        DoRATrainer(model=tiny_model_dir, args=DoRAConfig(output_dir=str(tmp_path), report_to=[], sync_ref_model=True),
                    train_dataset=rows, peft_config=LoraConfig(r=2, target_modules=["q_proj"]))  # fmt: skip


def test_precompute_ref_batch_size_and_pad_token(tmp_path, tiny_model_dir, ref_dir, monkeypatch):
    from transformers import AutoTokenizer

    sizes = []
    original = DoRATrainer._reference_from_model

    def spy(self, inputs):
        sizes.append(inputs["weight"].shape[0])
        return original(self, inputs)

    monkeypatch.setattr(DoRATrainer, "_reference_from_model", spy)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pad = next(t for t in tok.get_vocab() if t not in (tok.pad_token, tok.eos_token))
    args = DoRAConfig(output_dir=str(tmp_path), report_to=[], precompute_ref_log_probs=True,
                      precompute_ref_batch_size=3, pad_token=pad)  # fmt: skip
    t = DoRATrainer(model=tiny_model_dir, ref_model=ref_dir, args=args, train_dataset=Dataset.from_list(pair_rows(8)))
    assert sizes == [3, 3, 2]
    assert t.data_collator.pad_token_id == tok.convert_tokens_to_ids(pad) == t.processing_class.pad_token_id
