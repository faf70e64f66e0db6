"""When does DoRA pay? A regime map over a world's synthetic share x style overlap.

For each cell (share, overlap) of the grid and each seed: the world (``--world``, default the demo's default
world) with that share and overlap (everything else, and the training budget, as the world defines it), its
tfidf source classifier and dQ0/dP weights, and
DPO, DoRA and Human-only trained from one SFT checkpoint per seed (shared by every cell, so that a cell's
differences come from its data, not from its start). Per cell: DoRA - DPO and DoRA - Human-only in points
of preference accuracy on the held-out human pairs, their mean and 95% Student-t interval over the seeds.
Writes regime_map.json, regime_map.md and regime_map.png (cells whose interval excludes 0 outlined).

    OMP_NUM_THREADS=1 python examples/regime_map.py --output demo_out/regime_map --jobs 2
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from dora.classifier.regime import predict_regime
from dora.demo.stages import run_seed, sft_stage
from dora.worlds import BUDGETS, DEFAULT_WORLD, WORLDS, get_world

METHODS = ["DPO", "DoRA", "Human-only"]
COMPARISONS = [("DoRA", "DPO"), ("DoRA", "Human-only")]


def _alone(fn, kwargs):
    import torch

    torch.set_num_threads(1)
    return fn(**kwargs)


def run_all(fn, calls: list[dict], jobs: int) -> list:
    if jobs <= 1:
        return [fn(**c) for c in calls]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_alone, [fn] * len(calls), calls))


def interval(d: list[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of per-seed differences."""
    from scipy.stats import t

    m = statistics.fmean(d)
    half = t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return m, m - half, m + half


def plot(cells: dict, shares: list[float], overlaps: list[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COMPARISONS), figsize=(5.2 * len(COMPARISONS), 4.2))
    for ax, (a, b) in zip(axes, COMPARISONS):
        key = f"{a} - {b}"
        grid = [[100 * cells[(s, o)][key][0] for o in overlaps] for s in shares]
        lim = max(5.0, max(abs(v) for row in grid for v in row))
        im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, origin="lower", aspect="auto")
        for i, s in enumerate(shares):
            for j, o in enumerate(overlaps):
                m, lo, hi = (100 * x for x in cells[(s, o)][key])
                sure = lo > 0 or hi < 0
                ax.text(j, i, f"{m:+.1f}\n[{lo:+.1f}, {hi:+.1f}]", ha="center", va="center", fontsize=8,
                        fontweight="bold" if sure else "normal")  # fmt: skip
                if sure:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec="black"))
        ax.set_xticks(range(len(overlaps)), [f"{o:g}" for o in overlaps])
        ax.set_yticks(range(len(shares)), [f"{100 * s:.0f}%" for s in shares])
        ax.set_xlabel("style overlap (how often synthetic text reads as human)")
        ax.set_ylabel("synthetic share")
        ax.set_title(f"{key} (points); outlined: 95% interval excludes 0")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="demo_out/regime_map")
    p.add_argument("--world", default=DEFAULT_WORLD, choices=sorted(WORLDS))
    p.add_argument("--shares", default="0.5,0.8,0.95")
    p.add_argument("--overlaps", default="0,0.3,0.6")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-train", type=int, default=800)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--epochs", type=int, default=None, help="default: the world's budget")
    p.add_argument("--sft-epochs", type=int, default=None, help="default: the world's budget")
    p.add_argument("--jobs", type=int, default=1)
    a = p.parse_args(argv)
    shares = [float(x) for x in a.shares.split(",")]
    overlaps = [float(x) for x in a.overlaps.split(",")]
    if a.seeds < 2:
        p.error("--seeds must be at least 2 (an interval needs two seeds)")
    budget = BUDGETS[a.world]["full"]
    a.epochs = a.epochs or budget["epochs"]
    a.sft_epochs = a.sft_epochs or budget["sft_epochs"]
    base = get_world(a.world, n_train=a.n_train, n_test=a.n_test)
    t0 = time.time()
    sfts = run_all(sft_stage, [dict(cfg=replace(base, seed=k), out_dir=os.path.join(a.output, f"sft{k}"),
                                    sft_epochs=a.sft_epochs) for k in range(a.seeds)], a.jobs)  # fmt: skip
    grid = [(s, o, k) for s in shares for o in overlaps for k in range(a.seeds)]
    calls = [dict(cfg=replace(base, synthetic_share=s, style_overlap=o, seed=k), methods=METHODS,
                  out_dir=os.path.join(a.output, f"share{s:g}_overlap{o:g}", f"seed{k}"), sft_epochs=a.sft_epochs,
                  epochs=a.epochs, sft_dir=sfts[k][0], generate=False, lr=budget["lr"])
             for s, o, k in grid]  # fmt: skip
    runs = run_all(run_seed, calls, a.jobs)
    cells = {}
    for s in shares:
        for o in overlaps:
            per = [r for (s2, o2, _), r in zip(grid, runs) if (s2, o2) == (s, o)]
            acc = {m: [r[m]["preference_accuracy"] for r in per] for m in METHODS}
            cells[(s, o)] = {f"{x} - {y}": interval([u - v for u, v in zip(acc[x], acc[y])]) for x, y in COMPARISONS}
            cells[(s, o)]["accuracy"] = acc
            ess = statistics.fmean(r["classifier"]["ess_fraction"] for r in per)
            cells[(s, o)]["ess_fraction"] = ess  # what `dora classify` reports, and the regime it predicts from it
            cells[(s, o)]["regime"] = predict_regime({"ess_fraction": ess})["regime"]
    os.makedirs(a.output, exist_ok=True)
    lines = ["| synthetic share | style overlap | DPO (%) | DoRA (%) | Human-only (%) | DoRA − DPO [95% CI] "
             "| DoRA − Human-only [95% CI] | ESS (% of rows) | classify's regime |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (s, o), c in cells.items():
        means = " | ".join(f"{100 * statistics.fmean(c['accuracy'][m]):.1f}" for m in METHODS)
        diffs = " | ".join("{:+.1f} [{:+.1f}, {:+.1f}]".format(*(100 * v for v in c[f"{x} - {y}"]))
                           for x, y in COMPARISONS)  # fmt: skip
        lines.append(f"| {100 * s:.0f}% | {o:g} | {means} | {diffs} | {100 * c['ess_fraction']:.0f} | {c['regime']} |")
    lines.append(f"\n{a.world}; {a.seeds} seeds per cell; {a.n_train} training pairs, {a.epochs} epochs at lr "
                 f"{budget['lr']:g}; preference "
                 f"accuracy on the held-out human pairs; {time.time() - t0:.0f} s of wall time.")  # fmt: skip
    table = "\n".join(lines)
    with open(os.path.join(a.output, "regime_map.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(a.output, "regime_map.json"), "w") as f:
        json.dump({"args": vars(a), "cells": [{"share": s, "overlap": o, **c} for (s, o), c in cells.items()]}, f,
                  indent=1)  # fmt: skip
    plot(cells, shares, overlaps, os.path.join(a.output, "regime_map.png"))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
