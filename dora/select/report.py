"""`dora select`'s report: the verdict, a Markdown table (accuracy, margin, intervals against DPO and against the
best, time per candidate), a JSON file, a plot, and the chosen recipe as a YAML that `dora train --config` runs."""

from __future__ import annotations

import json
import os

import numpy as np
import yaml

from dora.select.candidates import spec
from dora.select.data import candidate_rows, write_jsonl
from dora.select.verdict import verdict

__all__ = ["write_report", "recipe_for", "markdown"]


def _ci(x) -> str:
    return "–" if x is None else f"[{100 * x[0]:+.1f}, {100 * x[1]:+.1f}]"


def markdown(v: dict, results: dict, steps: int, horizon: int | None = None) -> str:
    """The report's table and verdict; ``horizon``: the steps the learning-rate schedule spans, when more than
    ``steps`` (the first ``steps`` of the full run's schedule)."""
    of = f" (the first {steps} of the full run's {horizon}-step learning-rate schedule)" if (horizon or 0) > steps \
        else ""
    lines = [
        "| candidate | held-out accuracy (%) | reward margin | − DPO (points) [interval] | − best (points) [interval] "
        "| steps | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in v["candidates"].items():
        mark = " **(chosen)**" if name == v["choice"] else ""
        lines.append(
            f"| {name}{mark} | {100 * row['accuracy']:.1f} | {row.get('margin', float('nan')):.4f} "
            f"| {100 * row['vs_baseline']:+.1f} {_ci(row['vs_baseline_ci'])} | {100 * row['vs_best']:+.1f} "
            f"{_ci(row['vs_best_ci'])} | {results[name]['steps']} | {results[name]['seconds']:.0f} |"
        )
    lines += [
        "",
        f"{v['n']} held-out pairs; {steps} steps per candidate{of}, the same start, data order and seed. Intervals: "
        "paired "
        f"bootstrap ({v['samples']} resamples of the pairs) at {100 * v['level']:.2f}% each, so that all "
        f"{max(1, len(v['candidates']) - 1)} comparisons with {v['baseline']} hold together at "
        f"{100 * v['confidence']:.0f}%.",
        "",
        f"**Verdict:** {v['text']}",
    ]
    return "\n".join(lines)


def plot(v: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(v["candidates"])
    rows = [v["candidates"][n] for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.5 * len(names) + 1.5), sharey=True)
    colors = ["#c33" if n == v["choice"] else "#999" for n in names]
    ax1.barh(names, [100 * r["accuracy"] for r in rows], color=colors)
    ax1.set_xlabel("held-out preference accuracy (%)")
    ax1.invert_yaxis()
    mid = [100 * r["vs_baseline"] for r in rows]
    lo = [m - 100 * r["vs_baseline_ci"][0] if r["vs_baseline_ci"] else 0 for m, r in zip(mid, rows)]
    hi = [100 * r["vs_baseline_ci"][1] - m if r["vs_baseline_ci"] else 0 for m, r in zip(mid, rows)]
    ax2.errorbar(mid, names, xerr=[lo, hi], fmt="o", color="k", capsize=3)
    ax2.axvline(0, color="#999", lw=1)
    ax2.set_xlabel(f"− {v['baseline']} (points), {100 * v['confidence']:.0f}% simultaneous intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def recipe_for(p, choice: str) -> dict:
    """The full run's recipe: the user's keys, the chosen candidate's keys, the data it trains on (all of the
    user's rows, held-out ones included; target rows only or label weights written under data/full_*)."""
    s = spec(choice)
    recipe = {**p.extra, **p.config_kwargs, **s["keys"]}
    if s["rows"] != "all":
        src = p.settings["recipe"].get("source_column", "source")
        path = os.path.abspath(os.path.join(p.output, "data", f"full_{s['rows']}.jsonl"))
        write_jsonl(path, candidate_rows(s["rows"], p.all_rows, src, p.settings["targets"]))
        recipe.update(dataset=path, dataset_split="train")
        recipe.pop("dataset_config", None)
    return json.loads(json.dumps(recipe, default=str))


def write_report(p, results: dict, chosen: dict, rejected: dict) -> dict:
    correct = {n: (chosen[n] > rejected[n]).astype(np.float64) for n in p.names}
    margins = {n: chosen[n] - rejected[n] for n in p.names}
    v = verdict(correct, margins, baseline="DPO", samples=p.bootstrap, seed=p.seed, confidence=p.confidence)
    table = markdown(v, results, p.steps, p.horizon)
    recipe = recipe_for(p, v["choice"])
    recipe_path = os.path.join(p.output, "recipe.yaml")
    with open(recipe_path, "w") as f:
        f.write(f"# dora select ({p.output}/report.md): {v['text']}\n# dora train --config {recipe_path}\n")
        yaml.safe_dump(recipe, f, sort_keys=False, allow_unicode=True)
    with open(os.path.join(p.output, "report.md"), "w") as f:
        f.write(table + "\n")
    out = {"verdict": v, "results": results, "recipe": recipe_path, "steps": p.steps, "full_steps": p.full_steps,
           "schedule": p.schedule, "schedule_steps": p.horizon}  # fmt: skip
    with open(os.path.join(p.output, "report.json"), "w") as f:
        json.dump(out, f, indent=1, default=str)
    plot(v, os.path.join(p.output, "report.png"))
    total = sum(r["seconds"] for r in results.values())
    print(f"\n{table}\n\nwrote {p.output}/report.md, report.json, report.png and recipe.yaml "
          f"(candidates' training and scoring: {total:.0f} s)", flush=True)  # fmt: skip
    return out
