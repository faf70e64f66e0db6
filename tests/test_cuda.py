"""On a CUDA device (scripts/gpu_check.py runs these with ``pytest -m cuda``; skipped where there is none): bf16
autocast against float32, the chunked log-prob head against full logits in float64, the objectives' float32 path
under bf16 against their formulas, the LoRA reference (the disabled adapter) and the precomputed reference against
a separately loaded base model, gradient checkpointing with PEFT against none, and the global-batch objective
of an accumulated step against one big batch."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import pair_rows
from datasets import Dataset

from dora import DoRAConfig, DoRATrainer
from dora.logprobs import add_logprob_head, completion_token_logps
from dora.objectives import evaluate_objective, objective_gradients, surrogate_loss

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, max_steps=1, logging_steps=1,
                report_to=[], save_strategy="no", disable_tqdm=True, learning_rate=1e-3, seed=0)  # fmt: skip
    base.update(kw)
    return DoRAConfig(**base)


def model_and_batch(tiny_model_dir, n=6):
    """The tiny model on the GPU (float32) and n right-padded prompt + completion rows with their completion masks."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).cuda().eval()
    seqs, masks = [], []
    for r in pair_rows(n):
        p, c = tok(r["prompt"])["input_ids"], tok(r["chosen"] + " and more text")["input_ids"]
        seqs.append(p + c)
        masks.append([0] * len(p) + [1] * len(c))
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs], device="cuda")
    attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device="cuda")
    cmask = torch.tensor([m + [0] * (width - len(m)) for m in masks], device="cuda")
    return model, ids, attn, cmask


def full_logits_logps(model, ids, attn, cmask, autocast=False) -> torch.Tensor:
    """Per-token completion log-probs [N, T-1] from the model's own logits, log-softmax in float64."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    logp = torch.log_softmax(logits.double(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logp * cmask[:, 1:]


def test_chunked_head_matches_full_logits(tiny_model_dir):
    """Chunks of 5 tokens (many chunks per batch), padded and padding-free, values and gradients."""
    model, ids, attn, cmask = model_and_batch(tiny_model_dir)
    expected = full_logits_logps(model, ids, attn, cmask)
    expected.sum().backward()
    want = model.get_output_embeddings().weight.grad.clone()
    model.zero_grad()
    add_logprob_head(model, chunk_tokens=5)
    got = completion_token_logps(model, ids, attn, cmask)
    assert got.log_probs.dtype == torch.float32 and got.log_probs.device.type == "cuda"
    torch.testing.assert_close(got.log_probs.double(), expected, rtol=1e-4, atol=1e-4)
    got.log_probs.sum().backward()
    torch.testing.assert_close(model.get_output_embeddings().weight.grad, want.float(), rtol=1e-3, atol=1e-5)
    packed = completion_token_logps(model, ids, attn, cmask, padding_free=True)  # packed rows, sdpa on CUDA
    torch.testing.assert_close(packed.log_probs.double(), expected, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_close_to_float32(tiny_model_dir):
    """The head under bf16 autocast: float32 log-probs, within bf16's error of the float32 forward, and not
    identical to it (the autocast did run in bf16)."""
    model, ids, attn, cmask = model_and_batch(tiny_model_dir)
    add_logprob_head(model, chunk_tokens=7)
    with torch.no_grad():
        fp32 = completion_token_logps(model, ids, attn, cmask).sums()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = completion_token_logps(model, ids, attn, cmask).sums()
        independent = full_logits_logps(model, ids, attn, cmask, autocast=True).sum(dim=1)
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().max() > 0
    torch.testing.assert_close(bf16, fp32, rtol=2e-2, atol=0.3)
    torch.testing.assert_close(bf16.double(), independent, rtol=1e-3, atol=0.05)


@pytest.mark.parametrize("name", ["dora", "kl_dro", "mean"])
def test_objectives_float32_path_under_bf16(name):
    """bf16 per-sample losses (as a bf16 model gives them): the objective is float32, its value and gradient those
    of the formula in float64, finite at losses of 3e4 where exp overflows float32."""
    lam = 0.5
    h64 = torch.tensor([0.5, 1.0, 1.5, 2.0, 0.25, 1.25], dtype=torch.float64, device="cuda")
    for scale in (1.0, 3e4):
        l = (torch.tensor([0.7, 0.2, 1.9, 0.4, 3.0, 1.1], device="cuda") * scale).bfloat16().requires_grad_(True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = evaluate_objective(name, l, weights=h64.float(), dro_lambda=lam)
        assert out.loss.dtype == torch.float32 and math.isfinite(out.value)
        out.loss.backward()
        x = l.detach().double()
        if name == "mean":
            value, grad = x.mean(), torch.full_like(x, 1 / 6)
        else:
            z = (h64 * x if name == "dora" else x) / lam
            value = lam * (torch.logsumexp(z, 0) - math.log(6))
            grad = torch.softmax(z, 0) * (h64 if name == "dora" else 1.0)
        assert out.value == pytest.approx(float(value), rel=1e-6)
        torch.testing.assert_close(l.grad.double(), grad, rtol=1e-2, atol=1e-3)  # a bf16 gradient


def first_batch(t: DoRATrainer) -> dict:
    return t._prepare_inputs(next(iter(t.get_train_dataloader())))


def base_logps(tiny_model_dir, inputs) -> torch.Tensor:
    """Summed completion log-probs [B, n] of a freshly loaded base model, under bf16 autocast, full logits."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).cuda().eval()
    with torch.no_grad():
        logps = full_logits_logps(base, inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"], True)
    b = inputs["weight"].shape[0]
    return logps.sum(dim=1).view(-1, b).T  # rows are response-major


def test_lora_reference_is_the_disabled_adapter(tmp_path, tiny_model_dir):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    rows = Dataset.from_list(pair_rows(8))
    t = DoRATrainer(model=tiny_model_dir, args=config(tmp_path, bf16=True), train_dataset=rows, peft_config=lora)
    assert t.ref_model is None and next(t.model.parameters()).device.type == "cuda"
    with torch.no_grad():  # a trained-looking adapter, so that policy and reference differ
        for n, p in t.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    inputs = first_batch(t)
    with torch.no_grad():
        ref = t._reference(inputs)
        with t.accelerator.autocast():
            policy = t._forward(t.model, inputs).logps
    torch.testing.assert_close(ref.double(), base_logps(tiny_model_dir, inputs), rtol=1e-3, atol=0.05)
    assert (policy - ref).abs().max() > 0.5


def test_precompute_ref_log_probs_on_cuda(tmp_path, tiny_model_dir):
    from torch.utils.data import DataLoader

    args = config(tmp_path, bf16=True, precompute_ref_log_probs=True, objective="mean")
    t = DoRATrainer(model=tiny_model_dir, args=args, train_dataset=Dataset.from_list(pair_rows(8)))
    column = torch.tensor(t.train_dataset["ref_logps"], dtype=torch.float64, device="cuda")
    loader = DataLoader(t.train_dataset, batch_size=8, shuffle=False, collate_fn=t.data_collator)
    inputs = {k: v.cuda() for k, v in next(iter(loader)).items()}
    torch.testing.assert_close(column, base_logps(tiny_model_dir, inputs), rtol=1e-3, atol=0.05)
    t.train()  # training on the column: policy == reference at step 1, so the loss is log 2
    assert t.state.log_history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_gradient_checkpointing_with_peft(tmp_path, tiny_model_dir):
    """One SGD step of LoRA with and without gradient checkpointing: the same adapter after it, and it moved."""
    from peft import LoraConfig

    def step(checkpointing):
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
        t = DoRATrainer(model=tiny_model_dir, train_dataset=Dataset.from_list(pair_rows(8)), peft_config=lora,
                        args=config(tmp_path, bf16=True, optim="sgd", learning_rate=1.0, lr_scheduler_type="constant",
                                    gradient_checkpointing=checkpointing))  # fmt: skip
        before = {n: p.detach().clone() for n, p in t.model.named_parameters() if p.requires_grad}
        t.train()
        inner = t.model.get_base_model()
        assert inner.is_activation_checkpointing == checkpointing
        return before, {n: p.detach().clone() for n, p in t.model.named_parameters() if n in before}

    before, plain = step(False)
    _, checkpointed = step(True)
    assert max(float((plain[n] - before[n]).abs().max()) for n in before) > 1e-3
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], rtol=1e-3, atol=1e-5, msg=n)


def test_global_batch_objective_on_one_process(tmp_path, tiny_model_dir, ref_dir):
    """On the GPU: "dora" over 2 accumulated micro-batches of 4 with dro_accumulation="full" equals one batch
    of 8 (the log-mean-exp over the whole global batch); and the surrogate of two halves, averaged as two ranks'
    gradients are, has the whole batch's gradient."""
    rows = Dataset.from_list(pair_rows(8))

    def train(**kw):
        t = DoRATrainer(model=tiny_model_dir, ref_model=ref_dir, train_dataset=rows,
                        args=config(tmp_path, objective="dora", optim="sgd", learning_rate=0.5,
                                    lr_scheduler_type="constant", **kw))  # fmt: skip
        t.train()
        return {k: v.detach().clone() for k, v in t.model.state_dict().items()}, t.state.log_history[0]["loss"]

    big, big_loss = train(per_device_train_batch_size=8)
    acc, acc_loss = train(per_device_train_batch_size=4, gradient_accumulation_steps=2, dro_accumulation="full")
    assert acc_loss == pytest.approx(big_loss, rel=1e-5)
    for k in big:
        torch.testing.assert_close(acc[k], big[k], rtol=1e-4, atol=1e-6, msg=k)

    l = torch.tensor([0.3, 1.2, 0.8, 2.5, 0.1, 0.9, 1.7, 0.6], device="cuda", requires_grad=True)
    h = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.8, 1.1, 0.3, 1.9], device="cuda")
    value, grad = objective_gradients("dora", l.detach(), h, dro_lambda=1.0)
    halves = sum(surrogate_loss(l[i : i + 4], grad[i : i + 4], value, world_size=2) for i in (0, 4)) / 2
    (g,) = torch.autograd.grad(halves, l)
    z = h.double() * l.detach().double()
    torch.testing.assert_close(g.double(), h.double() * torch.softmax(z, 0), rtol=1e-5, atol=1e-7)
