"""Does a short `dora select` pilot pick what the full comparison picks? ``python -m dora.select.experiment``.

For each seed of a demo world: the world, the tiny model and its SFT, and the tfidf weights exactly as
`dora demo` makes them for that seed (``dora.demo.stages``); a held-out split of human pairs drawn apart from the
world (its own random stream; not the world's test split, which scores the full comparison); then `dora select` with
the demo's recipe (β 0.1, lr 1e-4, batch 32, full fine-tuning) for ``--steps`` steps per candidate. The pilot's
choice is compared with the full comparison (`dora demo ... --seeds 10`, its results.json): its winner (the
highest mean preference accuracy) and the methods statistically tied with it (a paired Student-t interval over the
seeds, method − winner, containing 0). docs/results.md reports the runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics

from dora.select.pilot import plan, run_plan

# `dora demo`'s method names -> `dora select`'s candidates (the same keys and rows)
DEMO_NAMES = {"DPO": "DPO", "Human-only": "DPO (target)", "Label reweight": "Label reweight", "Reweight": "Reweight",
              "KL-DRO": "KL-DRO", "rDPO": "rDPO", "DoRA": "DoRA λ=1"}  # fmt: skip
RECIPE = {"beta": 0.1, "learning_rate": 1e-4, "lr_scheduler_type": "linear", "per_device_train_batch_size": 32,
          "per_device_eval_batch_size": 128, "save_strategy": "no", "report_to": [], "disable_tqdm": True,
          "logging_steps": 10, "use_peft": False}  # fmt: skip


def _world(name: str, seed: int, n_train: int):
    from dora import worlds

    return worlds.get_world(name, seed=seed, n_train=n_train), worlds


def prepare_seed(world: str, seed: int, out: str, n_train: int, n_heldout: int, sft_epochs: int,
                 demo_dir: str | None = None) -> dict:  # fmt: skip
    """The seed's SFT model and data files, as `dora demo` makes them (same seed, same stages); the SFT model of
    the full comparison's own run (``demo_dir``/seed<k>/sft) when it is there."""
    import torch

    from dora.demo.stages import classify, sft

    done = os.path.join(out, "prepared.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    cfg, w = _world(world, seed, n_train)
    torch.manual_seed(cfg.seed)
    os.makedirs(out, exist_ok=True)
    data = w.make_world(cfg)
    model_dir = os.path.join(demo_dir or "", f"seed{seed}", "sft")
    if not (demo_dir and os.path.isfile(os.path.join(model_dir, "config.json"))):
        model_dir = os.path.join(out, "sft")
        tokenizer = w.build_tokenizer(os.path.join(out, "base"))
        model = w.build_model(os.path.join(out, "base"), tokenizer, seed=cfg.seed)
        sft(model, tokenizer, data["sft"], epochs=sft_epochs, seed=cfg.seed)
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    rows, _ = classify(data["train"], os.path.join(out, "classifier"), cfg.seed)
    cols = ("prompt", "chosen", "rejected", "source", "dora_weight")
    rng = random.Random(f"select-heldout-{seed}")
    heldout = [w.make_pair("human", rng, cfg) for _ in range(n_heldout)]
    files = {"model": model_dir, "train": os.path.join(out, "train.jsonl"),
             "heldout": os.path.join(out, "heldout.jsonl")}  # fmt: skip
    for key, part in (("train", rows), ("heldout", heldout)):
        with open(files[key], "w") as f:
            f.writelines(json.dumps({k: r[k] for k in cols if k in r}) + "\n" for r in part)
    with open(done, "w") as f:
        json.dump(files, f)
    return files


def full_ranking(path: str, methods: list[str]) -> dict:
    """From `dora demo`'s results.json: the mean preference accuracy per method, the winner, and the methods whose
    paired difference from the winner has a 95% Student-t interval over the seeds containing 0."""
    from scipy.stats import t

    with open(path) as f:
        per_seed = json.load(f)["per_seed"]
    acc = {m: [r[m]["preference_accuracy"] for r in per_seed] for m in methods}
    mean = {m: statistics.fmean(v) for m, v in acc.items()}
    winner = max(mean, key=mean.get)
    tied, intervals = [], {}
    for m in methods:
        if m == winner:
            continue
        d = [a - b for a, b in zip(acc[m], acc[winner])]
        half = t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
        intervals[m] = (statistics.fmean(d) - half, statistics.fmean(d) + half)
        if intervals[m][0] <= 0 <= intervals[m][1]:
            tied.append(m)
    return {"seeds": len(per_seed), "mean": mean, "winner": winner, "tied": tied, "intervals": intervals}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dora.select.experiment", description=__doc__.split("\n")[0])
    p.add_argument("--world", required=True, help="a world of `dora demo --world`")
    p.add_argument("--full", default=None, help="results.json of `dora demo --world NAME --seeds 10 --methods ...`")
    p.add_argument("--methods", default="DPO,DoRA,Human-only,Label reweight", help="demo names, compared both ways")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=25, help="per candidate (the demo's full run: 100)")
    p.add_argument("--n-train", type=int, default=1600)
    p.add_argument("--heldout-size", type=int, default=400)
    p.add_argument("--sft-epochs", type=int, default=6)
    p.add_argument("--output", required=True)
    p.add_argument("--demo-output", default=None, help="the full comparison's --output: its SFT models are reused")
    a = p.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",")]
    full = full_ranking(a.full, methods) if a.full else {"winner": None, "tied": []}
    good = {DEMO_NAMES[m] for m in [full["winner"], *full["tied"]] if m}
    rows = []
    for seed in range(a.seeds):
        files = prepare_seed(a.world, seed, os.path.join(a.output, f"seed{seed}"), a.n_train, a.heldout_size,
                             a.sft_epochs, a.demo_output or (os.path.dirname(a.full) if a.full else None))  # fmt: skip
        pl = plan(None, {**RECIPE, "model_name_or_path": files["model"], "dataset": files["train"], "seed": seed},
                  output=os.path.join(a.output, f"seed{seed}", "select"), steps=a.steps, heldout=files["heldout"],
                  candidates=[DEMO_NAMES[m] for m in methods])  # fmt: skip
        report = run_plan(pl)
        v = report["verdict"]
        ranked = sorted(v["candidates"], key=lambda m: -v["candidates"][m]["accuracy"])
        rows.append({"seed": seed, "choice": v["choice"], "top": ranked[0], "ok": v["choice"] in good,
                     "top_ok": ranked[0] in good, "text": v["text"],
                     "accuracy": {m: v["candidates"][m]["accuracy"] for m in ranked},
                     "seconds": sum(r["seconds"] for r in report["results"].values())})  # fmt: skip
        print(f"seed {seed}: choice {v['choice']} ({'agrees' if rows[-1]['ok'] else 'disagrees'}); {v['text']}",
              flush=True)  # fmt: skip
    summary = {"world": a.world, "steps": a.steps, "full": full, "acceptable": sorted(good), "seeds": rows,
               "agree": sum(r["ok"] for r in rows), "top_agree": sum(r["top_ok"] for r in rows)}  # fmt: skip
    with open(os.path.join(a.output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"{a.world}: the pilot's choice is the full winner ({full['winner']}) or tied with it in "
          f"{summary['agree']}/{a.seeds} seeds (its top accuracy: {summary['top_agree']}/{a.seeds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
