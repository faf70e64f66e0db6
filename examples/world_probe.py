"""Probe a variant of a demo world on development seeds before committing it (and its prediction) as a world.

Builds the named world with WorldConfig fields overridden (``--set``, JSON), and for each development seed runs
what `dora demo` runs for a seed (SFT, the tfidf weights, each method from the SFT model, scored on the world's
held-out human pairs), at the budget given. Prints the per-seed preference accuracy, each method's mean
difference from DPO, and the weights each source got. Seeds 100 and up are kept apart from the 0-9 of the
ten-seed comparisons. A rerun into the same folder with the same settings reuses what it finished.
docs/results.md ("Designs tried on development seeds") reports the runs.

    OMP_NUM_THREADS=1 python examples/world_probe.py --world larger-marked-half \\
        --set '{"max_operand": 5}' --output demo_out/probe/max5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace

from dora.demo.stages import DEFAULT_METHODS, METHODS, run_seed
from dora.worlds import BUDGETS, WORLDS, WorldConfig, get_world


def _one_thread(kwargs: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    return run_seed(**kwargs)


def parse_overrides(text: str) -> dict:
    """``--set``: a JSON object of WorldConfig fields; an unknown field is an error naming it."""
    try:
        over = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"world_probe: --set is not JSON ({e})") from None
    if not isinstance(over, dict):
        raise SystemExit("world_probe: --set must be a JSON object of WorldConfig fields")
    known = {f.name for f in fields(WorldConfig)} - {"seed"}
    unknown = sorted(set(over) - known)
    if unknown:
        raise SystemExit(f"world_probe: --set has unknown WorldConfig field(s) {unknown}; known: {sorted(known)}")
    return over


def report(results: list[dict], seeds: list[int], methods: list[str]) -> str:
    acc = {m: [100 * r[m]["preference_accuracy"] for r in results] for m in methods}
    lines = ["seed\t" + "\t".join(methods)]
    lines += [f"{s}\t" + "\t".join(f"{acc[m][i]:.1f}" for m in methods) for i, s in enumerate(seeds)]
    lines.append("mean\t" + "\t".join(f"{statistics.mean(acc[m]):.1f}" for m in methods))
    if "DPO" in methods and len(seeds) > 1:
        for m in methods:
            if m != "DPO":
                d = [x - y for x, y in zip(acc[m], acc["DPO"])]
                lines.append(f"{m} - DPO: mean {statistics.mean(d):+.1f}, sd {statistics.stdev(d):.1f} points")
    for i, s in enumerate(seeds):
        w = {k: round(statistics.mean(v), 4) for k, v in results[i]["weights"].items()}
        lines.append(f"seed {s}: mean weight per source {w}, ROC-AUC {results[i]['classifier'].get('roc_auc')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default="larger-marked-half", choices=sorted(WORLDS))
    p.add_argument("--set", default="{}", help="JSON object of WorldConfig fields to override")
    p.add_argument("--seeds", default="100,101,102,103", help="comma-separated development seeds")
    p.add_argument("--methods", default="DPO,DoRA,Human-only,Oracle")
    p.add_argument("--epochs", type=int, default=None, help="preference epochs (default: the world's budget)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the world's budget)")
    p.add_argument("--n-train", type=int, default=None, help="training pairs (default: the world's budget)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--output", required=True)
    a = p.parse_args(argv)
    over = parse_overrides(a.set)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"world_probe: unknown method(s) {bad}; choose from {DEFAULT_METHODS + ['DoRA λ=4']}")
    seeds = [int(s) for s in a.seeds.split(",")]
    budget = BUDGETS[a.world]["full"]
    try:
        cfg = get_world(a.world, n_train=a.n_train or budget["n_train"], n_test=400, **over)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"world_probe: --set: {e}") from None
    calls = [dict(cfg=replace(cfg, seed=s),
                  methods=methods, out_dir=os.path.join(a.output, f"seed{s}"), sft_epochs=budget["sft_epochs"],
                  epochs=a.epochs or budget["epochs"], generate=False, lr=a.lr or budget["lr"])
             for s in seeds]  # fmt: skip
    with ProcessPoolExecutor(max(1, min(a.jobs, len(seeds))), mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_one_thread, calls))
    print(f"{a.world} with {over}; {calls[0]['epochs']} epochs at lr {calls[0]['lr']}")
    print(report(results, seeds, methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
