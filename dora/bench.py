"""`dora bench`: DoRATrainer ("mean" and "dora") against TRL's DPOTrainer on the same model, data and batch.

Each trainer runs in a fresh process (so peak memory is its own): the same randomly initialised Llama
(built from its config), the same rows, the same batch size, sigmoid loss, bf16 and gradient checkpointing
off on a CPU (TRL's DPOConfig turns both on by default). Reported: optimizer steps per second after warm-up,
peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: peak resident set size above the level
after loading), and both as ratios to TRL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

RUNS = [("TRL DPOTrainer", "trl", "mean"), ("DoRATrainer mean", "dora", "mean"), ("DoRATrainer dora", "dora", "dora")]


def build_assets(folder: str, vocab: int, hidden: int, layers: int, rows: int, seq_len: int, seed: int = 0):
    """A word-level tokenizer of ``vocab`` words, a Llama from its config, and random preference rows."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab - 4)]
    tok = Tokenizer(
        models.WordLevel({w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}, unk_token="<unk>")
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 4 // 1,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=4 * seq_len,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    rng = random.Random(seed)
    third = seq_len // 3

    def text(n):
        return " ".join(rng.choice(words) for _ in range(n))

    data = [
        {
            "prompt": text(third),
            "chosen": text(rng.randint(third // 2, third)),
            "rejected": text(rng.randint(third // 2, third)),
            "source": rng.choice(["human", "gpt"]),
            "dora_weight": rng.uniform(0.2, 2.0),
        }
        for _ in range(rows)
    ]
    with open(os.path.join(folder, "rows.json"), "w") as f:
        json.dump(data, f)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(folder: str, kind: str, objective: str, steps: int, batch: int, warmup: int) -> dict:
    """One trainer, in this process: returns steps/s after warm-up and peak memory in MB."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()
    with open(os.path.join(folder, "rows.json")) as f:
        rows = json.load(f)
    common = dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=batch,
        max_steps=steps,
        report_to=[],
        save_strategy="no",
        logging_steps=steps,
        disable_tqdm=True,
        learning_rate=1e-5,
        bf16=cuda,
        gradient_checkpointing=False,
        seed=0,
        dataloader_num_workers=0,
    )
    if kind == "trl":
        from trl import DPOConfig, DPOTrainer

        ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
        trainer = DPOTrainer(model=folder, args=DPOConfig(loss_type="sigmoid", beta=0.1, **common), train_dataset=ds)
    else:
        from dora import DoRAConfig, DoRATrainer

        trainer = DoRATrainer(
            model=folder,
            args=DoRAConfig(loss_type="sigmoid", objective=objective, beta=0.1, **common),
            train_dataset=Dataset.from_list(rows),
        )
    stamps = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    trainer.add_callback(Clock())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _peak_rss_mb()
    trainer.train()
    peak = (torch.cuda.max_memory_allocated() / 2**20 - base) if cuda else (_peak_rss_mb() - base)
    timed = stamps[warmup:]
    return {
        "steps_per_s": (len(timed) - 1) / (timed[-1] - timed[0]),
        "peak_mb": peak,
        "device": "cuda" if cuda else "cpu",
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per trainer")
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    p.add_argument("--seq-len", type=int, default=192, help="prompt + completion tokens, about")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1, help="run the three trainers this many times, interleaved")
    p.add_argument("--output", default=None, help="write results.json and results.md here")
    p.add_argument("--worker", nargs=3, metavar=("FOLDER", "KIND", "OBJECTIVE"), help=argparse.SUPPRESS)


def run(args) -> int:
    if args.worker:
        folder, kind, objective = args.worker
        print("RESULT " + json.dumps(worker(folder, kind, objective, args.steps, args.batch_size, args.warmup)))
        return 0
    folder = tempfile.mkdtemp(prefix="dora_bench_")
    rows = args.batch_size * (args.steps + 1)
    build_assets(folder, args.vocab, args.hidden, args.layers, rows, args.seq_len)
    results: dict[str, list[dict]] = {name: [] for name, _, _ in RUNS}
    for _ in range(args.repeats):
        for name, kind, objective in RUNS:
            cmd = [
                sys.executable,
                "-m",
                "dora",
                "bench",
                "--worker",
                folder,
                kind,
                objective,
                "--steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
                "--warmup",
                str(args.warmup),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if out.returncode != 0 or line is None:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            results[name].append(json.loads(line[7:]))
    summary = {}
    for name, rs in results.items():
        summary[name] = {
            "steps_per_s": max(r["steps_per_s"] for r in rs),
            "peak_mb": min(r["peak_mb"] for r in rs),
            "device": rs[0]["device"],
        }
    ref = summary["TRL DPOTrainer"]
    lines = ["| trainer | steps/s | speed vs TRL | peak memory (MB) | memory vs TRL |", "|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['steps_per_s']:.3f} | {s['steps_per_s'] / ref['steps_per_s']:.2f}x "
            f"| {s['peak_mb']:.0f} | {s['peak_mb'] / ref['peak_mb']:.2f}x |"
        )
    dora_vs_mean = summary["DoRATrainer dora"]["steps_per_s"] / summary["DoRATrainer mean"]["steps_per_s"]
    setup = (
        f"device {ref['device']}, Llama vocab {args.vocab}, hidden {args.hidden}, {args.layers} layers, "
        f"batch {args.batch_size} pairs, ~{args.seq_len} tokens, {args.steps} steps ({args.warmup} warm-up), "
        f"best of {args.repeats}"
    )
    table = "\n".join(lines) + f'\n\n"dora" / "mean" speed: {dora_vs_mean:.3f}. {setup}.'
    print(table)
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        with open(os.path.join(args.output, "results.json"), "w") as f:
            json.dump({"summary": summary, "runs": results, "setup": setup}, f, indent=1)
        with open(os.path.join(args.output, "results.md"), "w") as f:
            f.write(table + "\n")
    return 0
