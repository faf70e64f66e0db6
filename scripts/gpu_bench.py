"""The GPU check's benchmark: TRL 1.16's DPOTrainer against DoRATrainer ("mean" and "dora") on one model and batch.

    python scripts/gpu_bench.py assets FOLDER --model qwen2.5-0.5b --seq-len 1024 --rows 64
    python scripts/gpu_bench.py run FOLDER RUN_NAME [RUN_NAME ...] --steps 12 --warmup 4 --batch-size 8 [--build MODEL]

``assets`` writes a model built from a real config (random weights, float32), a word-level tokenizer of the
same vocabulary, random preference rows and ``setup.json`` (the config, the tokens per step, the FLOPs per
token). ``run`` (``--build``: the assets first, if missing) prints the setup and trains each named run (``RUNS``)
on the assets, printing one ``RESULT {json}`` line per run.
Every run: the same rows and batch, sigmoid loss, a frozen full-model reference, bf16 on CUDA, no gradient
checkpointing (the model fits), ``max_length`` = the sequence length.

Model FLOPs per token (PaLM's MFU, Chowdhury et al. 2022, appendix B), for one DPO step:

    policy forward + backward   6 N + 12 L H Q T
    reference forward           2 N +  4 L H Q T
    per token                   8 N + 16 L H Q T

N: the weights of every matrix product (the attention and MLP projections of each layer and the LM head,
counted even when tied to the embedding); L layers, H query heads of size Q, T the mean sequence length
(attention scores and their product with the values, over the whole sequence as PaLM counts them).
MFU = tokens/s x FLOPs per token / the GPU's dense bf16 peak. The same model FLOPs are credited to
every trainer, whatever work it skips (DoRATrainer applies the LM head to completion tokens only), so
MFU ratios between trainers equal their tokens/s ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import tempfile
import time

# Qwen2.5-0.5B's config.json (the architecture; weights are initialised at random)
MODELS = {
    "qwen2.5-0.5b": dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
    ),
    "qwen2.5-1.5b": dict(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
    ),
    # the dry run's: the same architecture, tiny
    "tiny": dict(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True, hidden_act="silu",
    ),
}  # fmt: skip

# name -> (trainer, objective, settings); the order is the order of importance (later runs are dropped first)
RUNS = {
    "TRL DPOTrainer": ("trl", None, {}),
    "DoRATrainer dora": ("dora", "dora", {}),
    "DoRATrainer mean": ("dora", "mean", {}),
    "TRL DPOTrainer liger": ("trl", None, {"use_liger_kernel": True}),
    # packed rows: no compute on padding, but under sdpa one attention over the whole packed row
    "DoRATrainer dora padding_free": ("dora", "dora", {"padding_free": True}),
    "DoRATrainer dora liger": ("dora", "dora", {"use_liger_kernel": True}),
    "DoRATrainer mean padding_free": ("dora", "mean", {"padding_free": True}),
    # TRL 1.16 warns that padding_free is disabled and pads: these two show that it costs the same
    "TRL DPOTrainer padding_free": ("trl", None, {"padding_free": True}),
    "TRL DPOTrainer liger padding_free": ("trl", None, {"use_liger_kernel": True, "padding_free": True}),
}

# dense bf16 peak FLOP/s by the vendors' datasheets (SXM parts); --peak-tflops overrides
BF16_PEAK = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def matmul_params(cfg: dict) -> int:
    """N: the weights of every matrix product of one token's forward (projections and the LM head)."""
    d, layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    q = d // heads
    kv = cfg["num_key_value_heads"] * q
    per_layer = d * heads * q + 2 * d * kv + heads * q * d + 3 * d * cfg["intermediate_size"]
    return layers * per_layer + d * cfg["vocab_size"]


def flops_per_token(cfg: dict, seq_len: float) -> float:
    """8 N + 16 L H Q T: policy forward and backward and the reference's forward (module docstring)."""
    q = cfg["hidden_size"] // cfg["num_attention_heads"]
    attention = cfg["num_hidden_layers"] * cfg["num_attention_heads"] * q * seq_len
    return 8 * matmul_params(cfg) + 16 * attention


def peak_flops(gpu_name: str | None) -> float | None:
    for key, value in BF16_PEAK.items():
        if gpu_name and key in gpu_name:
            return value
    return None


# --------------------------------------------------------------------------- assets


def build_assets(folder: str, model: str, seq_len: int, rows: int, seed: int = 0) -> dict:
    """Tokenizer, model, rows and setup.json in ``folder``; returns the setup."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    cfg = MODELS[model]
    words = [f"w{i}" for i in range(cfg["vocab_size"] - 4)]
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(folder)
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # initialising 0.5B weights on the CPU takes longer than the runs
        net = Qwen2ForCausalLM(Qwen2Config(**cfg, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    net.save_pretrained(folder)
    del net
    rng = random.Random(seed)
    prompt_len = seq_len // 4
    data, lengths = [], []
    for _ in range(rows):  # completions of varied length, so that padding costs what it costs in real data
        a, b = rng.randint(seq_len // 4, seq_len - prompt_len - 1), rng.randint(seq_len // 4, seq_len - prompt_len - 1)
        data.append({
            "prompt": " ".join(rng.choice(words) for _ in range(prompt_len)),
            "chosen": " ".join(rng.choice(words) for _ in range(a)),
            "rejected": " ".join(rng.choice(words) for _ in range(b)),
            "source": rng.choice(["human", "gpt"]),
            "dora_weight": rng.uniform(0.2, 2.0),
        })  # fmt: skip
        lengths += [prompt_len + a + 1, prompt_len + b + 1]  # + the end-of-sequence token both trainers append
    with open(os.path.join(folder, "rows.json"), "w") as f:
        json.dump(data, f)
    mean_len = sum(lengths) / len(lengths)
    setup = {
        "model": model,
        "config": cfg,
        "seq_len": seq_len,
        "rows": rows,
        "mean_sequence_tokens": mean_len,
        "tokens_per_pair": 2 * mean_len,
        "matmul_params": matmul_params(cfg),
        "flops_per_token": flops_per_token(cfg, mean_len),
        "flops_formula": "8 N + 16 L H Q T (policy fwd+bwd 6N+12LHQT, reference fwd 2N+4LHQT; T = mean sequence)",
    }
    with open(os.path.join(folder, "setup.json"), "w") as f:
        json.dump(setup, f, indent=1)
    return setup


# --------------------------------------------------------------------------- one run


def load_tokenizer(folder: str):
    """The word-level tokenizer as written (``AutoTokenizer`` would build Qwen2's own pre-tokenizer from the
    model's config around its vocabulary, and every word would map to nothing)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(folder, "tokenizer.json"),
        pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
    )  # fmt: skip


def make_trainer(folder: str, name: str, steps: int, batch: int, seq_len: int):
    """The trainer of run ``name`` on the assets in ``folder``."""
    import torch
    from datasets import Dataset

    kind, objective, settings = RUNS[name]
    cuda = torch.cuda.is_available()
    with open(os.path.join(folder, "rows.json")) as f:
        rows = json.load(f)
    common = dict(
        output_dir=tempfile.mkdtemp(prefix="out_", dir=folder), per_device_train_batch_size=batch, max_steps=steps,
        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, learning_rate=1e-6, bf16=cuda,
        gradient_checkpointing=False, seed=0, dataloader_num_workers=0, max_length=seq_len, beta=0.1,
        loss_type="sigmoid", padding_free=settings.get("padding_free", False),
        use_liger_kernel=settings.get("use_liger_kernel", False),
    )  # fmt: skip
    if common["use_liger_kernel"]:  # both trainers patch the LM head: liger's fused cross-entropy would replace it
        common["liger_kernel_config"] = {"fused_linear_cross_entropy": False}
    tok = load_tokenizer(folder)
    if kind == "trl":
        from trl import DPOConfig, DPOTrainer

        ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
        return DPOTrainer(model=folder, args=DPOConfig(**common), train_dataset=ds, processing_class=tok)
    from dora import DoRAConfig, DoRATrainer

    args = DoRAConfig(objective=objective, **common)
    return DoRATrainer(model=folder, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)


def run_one(folder: str, name: str, steps: int, warmup: int, batch: int) -> dict:
    """Train run ``name``; returns tokens/s and steps/s after the warm-up, peak memory and the first loss."""
    import torch
    from transformers import TrainerCallback

    with open(os.path.join(folder, "setup.json")) as f:
        setup = json.load(f)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = make_trainer(folder, name, steps, batch, setup["seq_len"])
    stamps = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    trainer.add_callback(Clock())
    loaded = torch.cuda.memory_allocated() / 2**20 if cuda else _rss_mib()
    trainer.train()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mib()
    timed = stamps[warmup:]
    steps_per_s = (len(timed) - 1) / (timed[-1] - timed[0])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = {
        "steps_per_s": steps_per_s,
        "tokens_per_s": steps_per_s * batch * setup["tokens_per_pair"],
        "peak_mib": peak,
        "peak_above_load_mib": peak - loaded,
        "first_loss": losses[0] if losses else None,
        "device": "cuda" if cuda else "cpu",
        "settings": RUNS[name][2],
        "timed_steps": len(timed) - 1,
    }
    del trainer
    return result


def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("assets")
    a.add_argument("folder")
    a.add_argument("--model", choices=sorted(MODELS), default="qwen2.5-0.5b")
    a.add_argument("--seq-len", type=int, default=1024)
    a.add_argument("--rows", type=int, default=64)
    r = sub.add_parser("run")
    r.add_argument("folder")
    r.add_argument("names", nargs="+", choices=sorted(RUNS))
    r.add_argument("--steps", type=int, default=12)
    r.add_argument("--warmup", type=int, default=4)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--build", choices=sorted(MODELS), help="build the assets of this model first, if missing")
    r.add_argument("--seq-len", type=int, default=1024, help="with --build")
    r.add_argument("--rows", type=int, default=64, help="with --build")
    args = p.parse_args(argv)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if args.cmd == "assets":
        print("SETUP " + json.dumps(build_assets(args.folder, args.model, args.seq_len, args.rows)), flush=True)
        return 0
    setup_file = os.path.join(args.folder, "setup.json")
    if args.build and not os.path.exists(setup_file):  # in the first run's process: one interpreter start less
        build_assets(args.folder, args.build, args.seq_len, args.rows)
    with open(setup_file) as f:
        print("SETUP " + f.read().replace("\n", ""), flush=True)
    for name in args.names:  # one failed run is reported, and the next one still runs
        if RUNS[name][2].get("use_liger_kernel") and importlib.util.find_spec("liger_kernel") is None:
            print("RESULT " + json.dumps({"name": name, "status": "skipped", "reason": "liger-kernel not installed"}))
            continue
        try:
            res = {"status": "ok", **run_one(args.folder, name, args.steps, args.warmup, args.batch_size)}
        except Exception as e:  # noqa: BLE001  reported in the results, not raised: the other runs go on
            res = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000]}
        print("RESULT " + json.dumps({"name": name, **res}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
