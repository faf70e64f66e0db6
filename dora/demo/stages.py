"""The demo's stages, per seed: SFT a tiny Llama on the world's task, score the responses with the source
classifier (or, without labels, against a trusted sample) into weights, train each method from the same SFT
checkpoint, and evaluate on the held-out human split."""

from __future__ import annotations

import math
import os
from dataclasses import replace

from tqdm.auto import tqdm

from dora.demo.report import NO_LABELS, summarise
from dora.worlds import (
    SOURCES,
    WorldConfig,
    answer_of,
    as_written_now,
    build_model,
    build_tokenizer,
    make_pair,
    make_world,
    parse_answer,
)

METHODS: dict[str, dict] = {
    "DPO": {"loss_type": "sigmoid", "objective": "mean"},
    "Reweight": {"loss_type": "sigmoid", "objective": "reweight"},
    "KL-DRO": {"loss_type": "sigmoid", "objective": "kl_dro"},
    "rDPO": {"loss_type": "robust", "objective": "mean", "label_smoothing": 0.2},
    "Dr. DPO": {"loss_type": "sigmoid", "objective": "dr_dpo"},
    "DoRA": {"loss_type": "sigmoid", "objective": "dora"},
    "Human-only": {"loss_type": "sigmoid", "objective": "mean"},
    "Label reweight": {"loss_type": "sigmoid", "objective": "reweight"},
    "Oracle": {"loss_type": "sigmoid", "objective": "mean"},
    "DoRA λ=4": {"loss_type": "sigmoid", "objective": "dora", "dro_lambda": 4.0},
}
# methods run only when named in --methods (the default is the rest): DoRA with a softer tilt
OPTIONAL_METHODS = ("DoRA λ=4",)
DEFAULT_METHODS = [m for m in METHODS if m not in OPTIONAL_METHODS]
# the baselines a sceptic asks for train on other rows than the mixture as labelled (rows_for_method):
# Human-only the human rows alone (for as many optimizer steps as the others), Label reweight every row with
# the source label's weight (1/α for human rows, 1 for the rest), Oracle every row with its label set right
BASELINE_ROWS = {"Human-only": "human", "Label reweight": "label_weights", "Oracle": "oracle"}


# seeds and test pairs of `dora demo` and `--quick`; the training budget is the world's (dora.worlds.BUDGETS)
DEFAULT = {"seeds": 3, "n_test": 400}
QUICK = {"seeds": 1, "n_test": 100}
LEARNING_RATE = 2e-4  # the budget's learning rate when none is given


def sft(
    model, tokenizer, rows: list[dict], *, epochs: int, lr: float = 4e-3, batch_size: int = 64, seed: int = 0
):
    """Plain supervised fine-tuning on (prompt, completion): loss on the completion tokens and EOS only."""
    import torch

    g = torch.Generator().manual_seed(seed)
    enc = []
    for r in rows:
        p = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        c = tokenizer(r["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        enc.append((p + c, [-100] * len(p) + c))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    steps = epochs * math.ceil(len(enc) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / max(1, steps))
    bar = tqdm(total=steps, desc="SFT", leave=False)
    for _ in range(epochs):
        for idx in torch.randperm(len(enc), generator=g).split(batch_size):
            batch = [enc[i] for i in idx.tolist()]
            n = max(len(x) for x, _ in batch)
            ids = torch.tensor([x + [tokenizer.pad_token_id] * (n - len(x)) for x, _ in batch])
            labels = torch.tensor([y + [-100] * (n - len(y)) for _, y in batch])
            mask = torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x, _ in batch])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model


def generation_accuracy(model, tokenizer, prompts: list[str], *, batch_size: int = 128) -> float:
    """Share of prompts whose greedy answer starts with the correct sum."""
    import torch

    tokenizer.padding_side = "left"
    correct = 0
    model.eval()
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=20,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(parse_answer(t) == answer_of(p) for p, t in zip(chunk, texts))
    tokenizer.padding_side = "right"
    return correct / len(prompts)


def classify(train_rows: list[dict], out_dir: str, seed: int) -> tuple[list[dict], dict]:
    """Cross-fitted tfidf source classifier -> `dora_weight` per row: dQ0/dP with the target share and class
    imbalance of the data, unnormalised (its mean is about 1 when the classifier is calibrated)."""
    from datasets import Dataset

    from dora.classifier import annotate

    sources = {r["source"] for r in train_rows}
    if sources == {"human"}:  # nothing to tell apart: every weight is 1 (DoRA is then KL-DRO)
        return [dict(r, dora_weight=1.0) for r in train_rows], {"note": "single source: weights set to 1"}
    annotated, report = annotate(
        Dataset.from_list(train_rows),
        target_sources=["human"],
        backend="tfidf",
        seed=seed,
        output_dir=out_dir,
    )
    return annotated.to_list(), report


def trusted_sample(cfg: WorldConfig, k: int) -> list[dict]:
    """k human pairs drawn apart from the world (their own random stream): the trusted set of `--no-labels`."""
    import random

    rng = random.Random(f"trusted-{cfg.seed}")
    return [make_pair("human", rng, cfg) for _ in range(k)]


def classify_no_labels(train_rows: list[dict], cfg: WorldConfig, k: int, out_dir: str) -> tuple[list[dict], dict]:
    """The source labels hidden: `dora_weight` from k separately drawn human pairs against the pool; and the
    target-share estimate when the trusted set is instead k of the pool's own human rows (its truth known)."""
    import random

    from datasets import Dataset

    from dora.classifier import annotate_density_ratio

    def strip(rows):
        return Dataset.from_list([{c: r[c] for c in ("prompt", "chosen", "rejected")} for r in rows])

    pool = strip(train_rows)
    annotated, report = annotate_density_ratio(
        pool, strip(trusted_sample(cfg, k)), seed=cfg.seed, output_dir=out_dir
    )
    rows = [dict(r, dora_weight=w) for r, w in zip(train_rows, annotated["dora_weight"])]
    human = [r for r in train_rows if r["source"] == "human"]
    subset = random.Random(f"subset-{cfg.seed}").sample(human, min(k, len(human)))
    _, sub = annotate_density_ratio(pool, strip(subset), trusted_in_pool=True, seed=cfg.seed)
    report["subset_share"] = {
        "estimate": sub["target_share"],
        "interval": sub["target_share_interval"],
        "response_estimate": sub["response_share"],
        "truth": len(human) / len(train_rows),
    }
    return rows, report


def rows_for_method(name: str, rows: list[dict]) -> list[dict]:
    """The training rows a method sees: the mixture, or a baseline's rows (BASELINE_ROWS)."""
    kind = BASELINE_ROWS.get(name)
    if kind == "human":
        return [r for r in rows if r["source"] == "human"]
    if kind == "label_weights":  # the label-reweighting baseline: w = 1/α on the target rows, 1 elsewhere
        alpha = sum(r["source"] == "human" for r in rows) / len(rows)
        return [dict(r, dora_weight=1.0 / alpha if r["source"] == "human" else 1.0) for r in rows]
    if kind == "oracle":  # the same prompts and responses, every label the human's (right answer chosen)
        return [r if r["label_correct"] else dict(r, chosen=r["rejected"], rejected=r["chosen"], label_correct=True)
                for r in rows]  # fmt: skip
    return rows


def train_method(
    name: str, sft_dir: str, train_rows, test_rows, out_dir: str, seed: int, epochs: int, generate: bool = True,
    lr: float = LEARNING_RATE,
):
    from datasets import Dataset

    from dora import DoRAConfig, DoRATrainer

    cols = ("prompt", "chosen", "rejected", "source", "dora_weight")
    steps = epochs * math.ceil(len(train_rows) / 32)  # every method takes as many optimizer steps
    train_rows = rows_for_method(name, train_rows)
    args = DoRAConfig(
        output_dir=out_dir,
        beta=0.1,
        learning_rate=lr,
        lr_scheduler_type="linear",
        num_train_epochs=epochs,
        max_steps=steps,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=seed,
        disable_tqdm=True,
        **METHODS["DoRA" if name == NO_LABELS else name],
    )
    trainer = DoRATrainer(
        model=sft_dir,
        args=args,
        train_dataset=Dataset.from_list([{k: r[k] for k in cols} for r in train_rows]),
        eval_dataset=Dataset.from_list([{k: r[k] for k in cols if k in r} for r in test_rows]),
    )
    trainer.train()
    metrics = trainer.evaluate()
    out = {"preference_accuracy": metrics["eval_rewards/accuracies"], "reward_margin": metrics["eval_rewards/margins"]}
    if generate:  # greedy answers' task accuracy (the regime map skips it)
        prompts = [r["prompt"] for r in test_rows]
        out["task_accuracy"] = generation_accuracy(trainer.model, trainer.processing_class, prompts)
    return out


def _finished(path: str, key: dict) -> dict | None:
    """The result a run with the same settings (``key``) left at ``path``, or None; a result left by other
    settings is an error, never silently reused nor overwritten."""
    import json

    if not os.path.isfile(path):
        return None
    with open(path) as f:
        done = json.load(f)
    earlier, key = done.get("key") or {}, json.loads(json.dumps(key))
    if isinstance(earlier.get("world"), dict) and isinstance(key.get("world"), dict):
        earlier = {**earlier, "world": as_written_now(earlier["world"], key["world"])}
    if earlier != key:
        raise SystemExit(f"dora demo: {path} was written by a run with other settings; use another --output")
    return done["result"]


def _record(path: str, key: dict, result: dict) -> dict:
    import json

    with open(path, "w") as f:
        json.dump({"key": key, "result": result}, f)
    return result


def sft_stage(cfg: WorldConfig, out_dir: str, sft_epochs: int) -> tuple[str, float]:
    """A tiny Llama and its tokenizer built locally, SFT'd on the world's SFT rows and saved under
    ``out_dir/sft``; returns that folder and the SFT model's task accuracy on the test prompts. A finished
    SFT stage of the same settings is kept (a rerun into the same folder resumes)."""
    import torch

    key = {"world": cfg.to_dict(), "sft_epochs": sft_epochs}
    done = _finished(os.path.join(out_dir, "sft_result.json"), key)
    if done is not None:
        return done["sft_dir"], done["task_accuracy"]
    torch.manual_seed(cfg.seed)
    os.makedirs(out_dir, exist_ok=True)
    world = make_world(cfg)
    tok_dir = os.path.join(out_dir, "base")
    tokenizer = build_tokenizer(tok_dir)
    model = build_model(tok_dir, tokenizer, seed=cfg.seed)
    sft(model, tokenizer, world["sft"], epochs=sft_epochs, seed=cfg.seed)
    sft_dir = os.path.join(out_dir, "sft")
    model.save_pretrained(sft_dir)
    tokenizer.save_pretrained(sft_dir)
    acc = generation_accuracy(model, tokenizer, [r["prompt"] for r in world["test"]])
    _record(os.path.join(out_dir, "sft_result.json"), key, {"sft_dir": sft_dir, "task_accuracy": acc})
    return sft_dir, acc


def run_seed(
    cfg: WorldConfig,
    methods: list[str],
    out_dir: str,
    sft_epochs: int,
    epochs: int,
    trusted_size: int = 200,
    sft_dir: str | None = None,
    generate: bool = True,
    lr: float = LEARNING_RATE,
) -> dict:
    """Every stage for one seed; returns {method: metrics} plus the SFT baseline and weight summaries.
    With ``sft_dir`` the SFT stage is skipped and that checkpoint is every method's start (the regime map)."""
    world = make_world(cfg)
    if sft_dir is None:
        sft_dir, sft_accuracy = sft_stage(cfg, out_dir, sft_epochs)
        results = {"SFT": {"task_accuracy": sft_accuracy}}
    else:
        os.makedirs(out_dir, exist_ok=True)
        results = {"SFT": {}}
    train_rows, report = classify(world["train"], os.path.join(out_dir, "classifier"), cfg.seed)
    by_source = {s: [r["dora_weight"] for r in train_rows if r["source"] == s] for s in SOURCES}
    results["weights"] = {s: w for s, w in by_source.items() if w}
    results["classifier"] = {k: v for k, v in report.items() if isinstance(v, (int, float, str))}
    rows_for = {}
    if NO_LABELS in methods:
        rows_for[NO_LABELS], nl = classify_no_labels(
            world["train"], cfg, trusted_size, os.path.join(out_dir, "classifier_no_labels")
        )
        results["weights_no_labels"] = {
            s: [r["dora_weight"] for r in rows_for[NO_LABELS] if r["source"] == s] for s in results["weights"]
        }
        keep = ("roc_auc", "ess_fraction", "coverage", "target_share", "target_share_interval", "response_share",
                "response_share_interval", "clip", "C", "shift_detected", "warnings", "subset_share")  # fmt: skip
        results["classifier_no_labels"] = {k: nl[k] for k in keep}
    for name in tqdm(methods, desc=f"methods (seed {cfg.seed})", leave=False):
        method_dir = os.path.join(out_dir, name.replace(" ", "_"))
        key = {"world": cfg.to_dict(), "sft_dir": sft_dir, "epochs": epochs, "lr": lr, "generate": generate,
               "trusted_size": trusted_size if name == NO_LABELS else None}  # fmt: skip
        results[name] = _finished(os.path.join(method_dir, "result.json"), key)
        if results[name] is None:  # not run yet (a finished method of the same settings is kept)
            rows = rows_for.get(name, train_rows)
            results[name] = train_method(name, sft_dir, rows, world["test"], method_dir, cfg.seed, epochs, generate, lr)
            _record(os.path.join(method_dir, "result.json"), key, results[name])
    return results


def _run_seed_alone(kwargs: dict) -> dict:
    """One seed in a worker process of its own: one thread, so that --jobs workers share the cores evenly."""
    import torch

    torch.set_num_threads(1)
    return run_seed(**kwargs)


def run_demo(
    cfg: WorldConfig,
    *,
    seeds: int,
    methods: list[str],
    out_dir: str,
    sft_epochs: int,
    epochs: int,
    trusted_size: int = 200,
    jobs: int = 1,
    generate: bool = True,
    lr: float = LEARNING_RATE,
) -> dict:
    """Every seed (0 .. seeds-1), one after another or in ``jobs`` worker processes (the same numbers)."""
    calls = [
        dict(cfg=replace(cfg, seed=seed), methods=methods, out_dir=os.path.join(out_dir, f"seed{seed}"),
             sft_epochs=sft_epochs, epochs=epochs, trusted_size=trusted_size, generate=generate, lr=lr)
        for seed in range(seeds)
    ]  # fmt: skip
    if jobs > 1 and seeds > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(jobs, seeds), mp_context=multiprocessing.get_context("spawn")) as pool:
            per_seed = list(tqdm(pool.map(_run_seed_alone, calls), total=seeds, desc="seeds"))
    else:
        per_seed = [run_seed(**c) for c in tqdm(calls, desc="seeds")]
    summary = summarise(per_seed, methods)
    return {"config": cfg.to_dict(), "per_seed": per_seed, "summary": summary}
