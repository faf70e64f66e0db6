"""Does a short `dora select` pilot pick what the full comparison picks? ``python -m dora.select.experiment``.

Per world and seed: the world, the tiny model and its SFT, and the tfidf weights exactly as `dora demo` makes them
for that seed (``dora.demo.stages``); the full comparison, each method trained as `dora demo` trains it
(``train_method``, at the world's budget, ``dora.worlds.BUDGETS``) and scored on the world's test split; a held-out
split of human pairs drawn apart from the world (its own random stream, not the test split; like the test split, its
pairs can repeat a training row's text, and the pilot keeps such rows: ``keep_heldout_duplicates``); then
`dora select` with the demo's recipe (β 0.1, the budget's lr and epochs, batch 32, full fine-tuning) for ``--steps``
steps per candidate (default: a quarter of the full run's), on the full run's learning-rate schedule unless
``--schedule pilot``. The pilot's choice is compared with the
full comparison's winner (the highest mean preference accuracy over the seeds) and the methods statistically tied
with it (a paired Student-t interval over the seeds, method − winner, containing 0). Every piece is kept and read
back on a rerun. docs/results.md reports the runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import time

from dora.select.pilot import SCHEDULES, plan, run_plan
from dora.worlds import BUDGETS, as_written_now

# `dora demo`'s method names -> `dora select`'s candidates (the same keys and rows)
DEMO_NAMES = {"DPO": "DPO", "Human-only": "DPO (target)", "Label reweight": "Label reweight", "Reweight": "Reweight",
              "KL-DRO": "KL-DRO", "rDPO": "rDPO", "DoRA": "DoRA λ=1", "DoRA λ=4": "DoRA λ=4"}  # fmt: skip
RECIPE = {"beta": 0.1, "learning_rate": 1e-4, "lr_scheduler_type": "linear", "per_device_train_batch_size": 32,
          "per_device_eval_batch_size": 128, "save_strategy": "no", "report_to": [], "disable_tqdm": True,
          "logging_steps": 10, "use_peft": False}  # fmt: skip


def _world(name: str, seed: int, n_train: int):
    from dora import worlds

    return worlds.get_world(name, seed=seed, n_train=n_train), worlds


def prepare_seed(
    world: str, seed: int, out: str, n_train: int, n_heldout: int, sft_epochs: int, sft_dir: str | None = None
) -> dict:
    """The seed's SFT model and data files, as `dora demo` makes them (same seed, same stages; an SFT model already
    in ``out``/sft is kept; with ``sft_dir``, that `dora demo` run's SFT model is used)."""
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
    model_dir = sft_dir or os.path.join(out, "sft")
    if not os.path.isfile(os.path.join(model_dir, "model.safetensors")):
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


def full_seed(
    world: str, seed: int, files: dict, methods: list[str], out: str, n_train: int, epochs: int, lr: float
) -> dict:
    """The full comparison for one seed, as `dora demo` trains it (``dora.demo.stages.train_method``: the same
    SFT model, weights and steps), one method at a time, each result kept in ``out``/<method>.json."""
    from dora.demo.stages import train_method

    cfg, w = _world(world, seed, n_train)
    test = w.make_world(cfg)["test"]
    with open(files["train"]) as f:
        rows = [json.loads(line) for line in f]
    results = {}
    for m in methods:
        path = os.path.join(out, f"{m.replace(' ', '_')}.json")
        if not os.path.isfile(path):
            res = train_method(
                m, files["model"], rows, test, os.path.join(out, m.replace(" ", "_")), seed, epochs, True, lr
            )
            with open(path, "w") as f:
                json.dump(res, f)
        with open(path) as f:
            results[m] = json.load(f)
    return results


def demo_comparison(root: str, world: str, n_train: int, methods: list[str], seeds: int) -> list[dict]:
    """The full comparison as a finished `dora demo --world WORLD` run in ``root``/WORLD wrote it (results.json),
    checked to be that world at this budget, with every method and seed."""
    from dora import worlds

    with open(os.path.join(root, world, "results.json")) as f:
        result = json.load(f)
    want = worlds.get_world(world, n_train=n_train, n_test=result["config"]["n_test"]).to_dict()
    if as_written_now(result["config"], want) != want:
        raise SystemExit(f"{root}/{world}/results.json is not `dora demo --world {world}` at the budget's size")
    per_seed = result["per_seed"][:seeds]
    missing = [m for m in methods if any(m not in r for r in per_seed)]
    if len(per_seed) < seeds or missing:
        raise SystemExit(f"{root}/{world}: {len(per_seed)} seeds, methods missing {missing}; run the demo first")
    return per_seed


def full_ranking(per_seed: list[dict], methods: list[str]) -> dict:
    """The mean preference accuracy per method over the seeds, the winner, and the methods whose paired difference
    from the winner has a 95% Student-t interval over the seeds containing 0 (tied with it)."""
    from scipy.stats import t

    acc = {m: [r[m]["preference_accuracy"] for r in per_seed] for m in methods}
    mean = {m: statistics.fmean(v) for m, v in acc.items()}
    winner = max(mean, key=mean.get)
    tied, intervals = [], {}
    for m in methods:
        if m == winner or len(per_seed) < 2:
            continue
        d = [a - b for a, b in zip(acc[m], acc[winner])]
        half = t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
        intervals[m] = (statistics.fmean(d) - half, statistics.fmean(d) + half)
        if intervals[m][0] <= 0 <= intervals[m][1]:
            tied.append(m)
    return {"seeds": len(per_seed), "accuracy": acc, "mean": mean, "winner": winner, "tied": tied,
            "intervals": intervals}  # fmt: skip


def pilot_seed(files: dict, seed: int, out: str, steps: int, methods: list[str], b: dict, schedule: str) -> dict:
    """`dora select` on one seed's data: the demo's recipe at the budget ``b`` (its epochs are the full run's, whose
    learning-rate schedule the pilot follows with ``schedule="full"``), ``steps`` per candidate, the drawn-apart
    held-out split."""
    recipe = {**RECIPE, "learning_rate": b["lr"], "num_train_epochs": b["epochs"], "model_name_or_path": files["model"],
              "dataset": files["train"]}  # fmt: skip
    p = plan(None, {**recipe, "seed": seed},
             output=out, steps=steps, heldout=files["heldout"], candidates=[DEMO_NAMES[m] for m in methods],
             keep_heldout_duplicates=True, schedule=schedule)  # held-out draws repeat a small world's text
    report = run_plan(p)
    v = report["verdict"]
    ranked = sorted(v["candidates"], key=lambda m: -v["candidates"][m]["accuracy"])
    return {"seed": seed, "choice": v["choice"], "top": ranked[0], "text": v["text"],
            "accuracy": {m: v["candidates"][m]["accuracy"] for m in ranked},
            "vs_dpo": {m: (v["candidates"][m]["vs_baseline"], v["candidates"][m]["vs_baseline_ci"]) for m in ranked},
            "seconds": sum(r["seconds"] for r in report["results"].values())}  # fmt: skip


def summarise(world: str, full: list[dict], pilots: list[dict], methods: list[str], steps: int, schedule: str = "full",
              heldout: int | None = None) -> dict:
    ranking = full_ranking(full, methods) if full else None
    good = {DEMO_NAMES[m] for m in [ranking["winner"], *ranking["tied"]]} if ranking else set()
    for r in pilots:
        r["agrees"], r["top_agrees"] = r["choice"] in good, r["top"] in good
    return {"world": world, "steps": steps, "schedule": schedule, "heldout": heldout, "full": ranking,
            "acceptable": sorted(good), "pilots": pilots,
            "agree": sum(r["agrees"] for r in pilots), "top_agree": sum(r["top_agrees"] for r in pilots)}  # fmt: skip


def markdown(summary: dict) -> str:
    """docs/results.md's tables from summary.json: per world, the full comparison per seed with its winner and ties,
    then the pilot per seed (held-out accuracy per candidate, its choice, and whether it agrees)."""
    out = []
    for w, s in summary.items():
        if not s["full"]:
            continue
        full, methods = s["full"], list(s["full"]["mean"])
        out += [f"**{w}**, full comparison ({full['seeds']} seeds, the world's test split, preference accuracy %):", "",
                "| seed | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        out += [f"| {i} | " + " | ".join(f"{100 * full['accuracy'][m][i]:.1f}" for m in methods) + " |"
                for i in range(full["seeds"])]
        out += ["| mean | " + " | ".join(f"{100 * full['mean'][m]:.1f}" for m in methods) + " |", ""]
        diffs = "; ".join(f"{m} − {full['winner']} {100 * (full['mean'][m] - full['mean'][full['winner']]):+.1f} "
                          f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" for m, ci in full["intervals"].items())
        out += [f"Winner: {full['winner']}; {diffs} (95% Student-t over the seeds); statistically tied with it: "
                f"{', '.join(full['tied']) or 'none'}.", ""]
        names = [DEMO_NAMES[m] for m in methods]  # the full comparison's order
        how = {"full": "on the full run's learning-rate schedule", "pilot": "on a schedule of its own"}
        out += [f"**{w}**, `dora select` pilot ({s['steps']} steps per candidate {how[s.get('schedule', 'pilot')]}; "
                f"{s.get('heldout') or 'the'} held-out pairs drawn apart; held-out accuracy %):", "",
                "| seed | " + " | ".join(names) + " | verdict | agrees |", "|---" * (len(names) + 3) + "|"]
        for r in s["pilots"]:
            out.append(f"| {r['seed']} | " + " | ".join(f"{100 * r['accuracy'][m]:.1f}" for m in names)
                       + f" | {r['choice']} | {'yes' if r['agrees'] else 'no'} |")
        out += ["", f"The pilot's choice is the full winner or tied with it in {s['agree']} of {len(s['pilots'])} "
                f"seeds (its most accurate candidate: {s['top_agree']} of {len(s['pilots'])}).", ""]
    return "\n".join(out)


def budget(world: str, a) -> dict:
    """The world's budget (``dora.worlds.BUDGETS``), the flags given applied; pilot steps: a quarter of the full."""
    b = dict(BUDGETS[world]["full"])
    b.update({k: getattr(a, k) for k in ("n_train", "epochs", "sft_epochs") if getattr(a, k) is not None})
    b["steps"] = a.steps or b["epochs"] * math.ceil(b["n_train"] / 32) // 4
    return b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dora.select.experiment", description=__doc__.split("\n")[0])
    p.add_argument("--worlds", default="larger-separable,larger-hidden", help="worlds of `dora demo --world`")
    p.add_argument("--methods", default="DPO,DoRA,Human-only", help="`dora demo` names, in both comparisons")
    p.add_argument("--full-seeds", type=int, default=10, help="seeds of the full comparison")
    p.add_argument("--pilot-seeds", type=int, default=5, help="seeds of the pilot (the first of the full's)")
    p.add_argument("--steps", type=int, default=None, help="per candidate (default: a quarter of the full run's)")
    p.add_argument("--epochs", type=int, default=None, help="the full run's epochs (default: the world's budget)")
    p.add_argument("--n-train", type=int, default=None, help="default: the world's budget")
    p.add_argument("--heldout-size", type=int, default=400)
    p.add_argument("--schedule", default="full", choices=SCHEDULES, help="the pilot's learning-rate schedule "
                   "(`dora select --schedule`): the full run's, stopped after --steps, or its own over --steps")
    p.add_argument("--select-folder", default="select", help="each seed's pilot folder (a new one per pilot setting)")
    p.add_argument("--sft-epochs", type=int, default=None, help="default: the world's budget")
    p.add_argument("--stop-after", default=None, help="UTC time HH:MM: start no new seed after it")
    p.add_argument("--from-demo", default=None, metavar="ROOT",
                   help="the full comparison and SFT models from finished `dora demo --world W --output ROOT/W` runs")
    p.add_argument("--output", required=True)
    p.add_argument("--markdown", action="store_true", help="print the tables of the finished runs' summary.json")
    a = p.parse_args(argv)
    if a.markdown:
        with open(os.path.join(a.output, "summary.json")) as f:
            print(markdown(json.load(f)))
        return 0
    worlds, methods = a.worlds.split(","), [m.strip() for m in a.methods.split(",")]
    budgets = {w: budget(w, a) for w in worlds}
    full, pilots = {w: [] for w in worlds}, {w: [] for w in worlds}
    if a.from_demo:
        full = {w: demo_comparison(a.from_demo, w, budgets[w]["n_train"], methods, a.full_seeds) for w in worlds}
    for seed in range(a.pilot_seeds if a.from_demo else max(a.full_seeds, a.pilot_seeds)):
        if a.stop_after and time.strftime("%H:%M", time.gmtime()) >= a.stop_after:
            print(f"stopped before seed {seed} ({a.stop_after} UTC)", flush=True)
            break
        for w in worlds:
            out = os.path.join(a.output, w, f"seed{seed}")
            b = budgets[w]
            sft_dir = os.path.join(a.from_demo, w, f"seed{seed}", "sft") if a.from_demo else None
            files = prepare_seed(w, seed, out, b["n_train"], a.heldout_size, b["sft_epochs"], sft_dir)
            if seed < a.full_seeds and not a.from_demo:
                full[w].append(
                    full_seed(w, seed, files, methods, os.path.join(out, "full"), b["n_train"], b["epochs"], b["lr"])
                )
                print(f"{w} seed {seed} full: " + ", ".join(
                    f"{m} {100 * full[w][-1][m]['preference_accuracy']:.1f}" for m in methods), flush=True)
            if seed < a.pilot_seeds:
                pilots[w].append(pilot_seed(files, seed, os.path.join(out, a.select_folder), b["steps"], methods, b,
                                            a.schedule))
                print(f"{w} seed {seed} pilot: {pilots[w][-1]['text']}", flush=True)
            summary = {x: summarise(x, full[x], pilots[x], methods, budgets[x]["steps"], a.schedule, a.heldout_size)
                       for x in worlds}
            with open(os.path.join(a.output, "summary.json"), "w") as f:
                json.dump(summary, f, indent=1)
    for w, s in summary.items():
        ranking = s["full"] or {"winner": "-", "tied": "-"}
        print(f"{w}: full winner {ranking['winner']} (tied: {ranking['tied']}); the pilot's choice agrees in "
              f"{s['agree']}/{len(s['pilots'])} seeds, its top accuracy in "
              f"{s['top_agree']}/{len(s['pilots'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
