"""`dora demo`: the command line (the table, the synthetic-share sweep, --no-labels, --iterate)."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

from dora.demo.report import (
    comparison_table,
    markdown_table,
    no_labels_table,
    paired_differences,
    paired_table,
    per_seed_table,
    plot,
)
from dora.demo.stages import DEFAULT, DEFAULT_METHODS, METHODS, NO_LABELS, QUICK, run_demo
from dora.worlds import BUDGETS, DEFAULT_WORLD, WORLDS, WorldConfig, get_world

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quick", action="store_true", help="one seed, a small world: every stage in under 2 minutes"
    )
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; 1 with --quick)")
    p.add_argument("--jobs", type=int, default=1,
                   help="seeds run in this many worker processes at once (one thread each; 2 on a 2-core machine)")
    p.add_argument("--no-task-accuracy", action="store_true",
                   help="skip the greedy generations of each trained model (the task-accuracy column)")
    p.add_argument("--output", default="demo_out", help="folder for the table, JSON, plot and checkpoints")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated subset of {list(METHODS)} (default: {', '.join(DEFAULT_METHODS)})")
    p.add_argument("--world", default=None, choices=sorted(WORLDS),
                   help=f"the named world (docs/demo.md; default {DEFAULT_WORLD}, classic with --iterate)")
    p.add_argument("--synthetic-share", type=float, default=None,
                   help="share of synthetic pairs in training (default: the world's)")
    p.add_argument("--judge-bias", type=float, default=None,
                   help="how often the chatty judge follows its bias (default: the world's)")
    p.add_argument("--noise", type=float, default=None,
                   help="label-flip rate of the terse_bot judge (default: the world's)")
    p.add_argument("--style-overlap", type=float, default=None,
                   help="how often synthetic text looks human (default: the world's)")
    p.add_argument(
        "--n-train", type=int, default=None, help="training pairs (default: the world's budget, docs/demo.md)"
    )
    p.add_argument("--epochs", type=int, default=None,
                   help="preference-training epochs of the full mixture (default: the world's budget)")
    p.add_argument("--iterate", action="store_true",
                   help="iterative DPO vs iterative DoRA over rounds of generate, judge, train (dora.demo.iterate)")
    p.add_argument("--rounds", type=int, default=None, help="rounds of --iterate (default 3; 2 with --quick)")
    p.add_argument("--no-labels", action="store_true",
                   help=f"add '{NO_LABELS}': the source labels hidden, weights from a trusted sample")
    p.add_argument("--trusted-size", type=int, default=200,
                   help="--no-labels: human pairs in the trusted sample, drawn apart from the training data")
    p.add_argument("--sweep", default=None, metavar="SHARES",
                   help="instead of the table: DPO vs DoRA at these synthetic shares, e.g. 0,0.5,0.8,0.95")


def run_sweep(args, cfg: WorldConfig, seeds: int, base: dict, t0: float) -> int:
    """DPO vs DoRA (or --methods) across synthetic shares: where does DoRA help, and where not?"""
    methods = [m for m in args.methods.split(",") if m in METHODS] if args.methods != ",".join(DEFAULT_METHODS) else [
        "DPO", "DoRA"]
    if getattr(args, "no_labels", False):
        methods.append(NO_LABELS)
    shares = [float(x) for x in args.sweep.split(",")]
    rows, out = [], {}
    for share in shares:
        res = run_demo(replace(cfg, synthetic_share=share), seeds=seeds, methods=methods,
                       out_dir=os.path.join(args.output, f"share{share:g}"), sft_epochs=base["sft_epochs"],
                       epochs=args.epochs or base["epochs"], trusted_size=getattr(args, "trusted_size", 200),
                       jobs=args.jobs, lr=base["lr"])
        out[share] = res["summary"]
        for name in methods:
            st = res["summary"][name]
            rows.append(f"| {100 * share:.0f}% | {name} | {100 * st['preference_accuracy'][0]:.1f} ± "
                        f"{100 * st['preference_accuracy'][1]:.1f} | {st['reward_margin'][0]:.3f} | "
                        f"{100 * st['task_accuracy'][0]:.1f} ± {100 * st['task_accuracy'][1]:.1f} |")
    table = "\n".join(["| synthetic share | method | preference accuracy (%) | reward margin | task accuracy (%) |",
                       "|---|---|---|---|---|", *rows])
    table += f"\n\nMean ± standard deviation over {seeds} seed(s); held-out human split."
    with open(os.path.join(args.output, "sweep.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.output, "sweep.json"), "w") as f:
        json.dump({str(k): v for k, v in out.items()}, f, indent=1)
    print(table)
    print(f"\nwrote {args.output}/sweep.md, sweep.json in {time.time() - t0:.0f} s")
    return 0


KNOBS = ("synthetic_share", "judge_bias", "noise", "style_overlap")


def world_name(args) -> str:
    return args.world or ("classic" if getattr(args, "iterate", False) else DEFAULT_WORLD)


def budget(args) -> dict:
    """Seeds, test pairs and the world's training budget (n_train, sft_epochs, epochs, lr), full or --quick."""
    quick = bool(getattr(args, "quick", False))
    return {**(QUICK if quick else DEFAULT), **BUDGETS[world_name(args)]["quick" if quick else "full"]}


def world_config(args, **fields) -> WorldConfig:
    """The world named by --world with the flags given on the command line applied (each checked once, here)."""
    name = world_name(args)
    over = {k: getattr(args, k) for k in KNOBS if getattr(args, k, None) is not None}
    try:
        return get_world(name, **over, **fields)
    except ValueError as e:
        raise SystemExit(f"dora demo: {str(e).replace('WorldConfig.', '--').replace('_', '-')}") from None


def run(args) -> int:
    if getattr(args, "iterate", False):
        from dora.demo.iterate import run_iterate

        cfg = world_config(args)
        for k in KNOBS:  # the iterate demo reads the resolved knobs from args
            setattr(args, k, getattr(cfg, k))
        return run_iterate(args)
    base = budget(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if getattr(args, "no_labels", False):
        if args.trusted_size < 2:
            raise SystemExit(f"--trusted-size must be at least 2, got {args.trusted_size}")
        methods.append(NO_LABELS)
    cfg = world_config(args, n_train=args.n_train or base["n_train"], n_test=base["n_test"])
    seeds = args.seeds or base["seeds"]
    if args.jobs < 1 or seeds < 1:
        raise SystemExit(f"dora demo: --jobs and --seeds must be at least 1, got {args.jobs} and {seeds}")
    os.makedirs(args.output, exist_ok=True)
    t0 = time.time()
    if args.sweep:
        return run_sweep(args, cfg, seeds, base, t0)
    result = run_demo(
        cfg,
        seeds=seeds,
        methods=methods,
        out_dir=args.output,
        sft_epochs=base["sft_epochs"],
        epochs=args.epochs or base["epochs"],
        trusted_size=getattr(args, "trusted_size", 200),
        jobs=args.jobs,
        generate=not args.no_task_accuracy,
        lr=base["lr"],
    )
    table = markdown_table(result["summary"], seeds)
    if "DPO" in methods and len(methods) > 1:
        result["paired"] = paired_differences(result["per_seed"], methods)
        table += "\n\n" + paired_table(result["paired"], seeds)
    if "DoRA" in methods and len(methods) > 1:
        table += "\n\nPreference accuracy per seed (%):\n\n" + per_seed_table(result["per_seed"], methods)
        table += "\n\n" + comparison_table(result["per_seed"])
    if NO_LABELS in methods:
        table += "\n\n" + no_labels_table(result["per_seed"])
    with open(os.path.join(args.output, "results.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(result["summary"], result["per_seed"], os.path.join(args.output, "results.png"))
    print(table)
    print(f"\nwrote {args.output}/results.md, results.json, results.png in {time.time() - t0:.0f} s")
    return 0
