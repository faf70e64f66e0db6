"""The demo's tables and plot: means and spreads per method, each method's paired difference from DPO per seed
with a Student-t interval, the no-labels table."""

from __future__ import annotations

import math
import statistics

NO_LABELS = "DoRA (no labels)"  # DoRA with weights from a trusted sample (`--no-labels`): METHODS["DoRA"]

__all__ = ["NO_LABELS", "summarise", "markdown_table", "no_labels_table", "paired_differences", "paired_table", "plot",
           "per_seed_table", "comparison_table", "harm_and_recovery", "bootstrap_over_seeds"]


def summarise(per_seed: list[dict], methods: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    out = {}
    for name in ["SFT", *methods]:
        keys = per_seed[0][name].keys()
        out[name] = {}
        for k in keys:
            xs = [r[name][k] for r in per_seed]
            out[name][k] = (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)
    return out


def markdown_table(summary: dict, n_seeds: int) -> str:
    def cell(stats, key, pct=True):
        if key not in stats:
            return "–"
        m, s = stats[key]
        return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.3f} ± {s:.3f}"

    lines = [
        "| method | preference accuracy (%) | reward margin | task accuracy (%) |",
        "|---|---|---|---|",
    ]
    for name, stats in summary.items():
        lines.append(
            f"| {name} | {cell(stats, 'preference_accuracy')} | {cell(stats, 'reward_margin', False)} "
            f"| {cell(stats, 'task_accuracy')} |"
        )
    lines.append(f"\nMean ± standard deviation over {n_seeds} seed(s); held-out human split.")
    return "\n".join(lines)


def no_labels_table(per_seed: list[dict]) -> str:
    """Per seed: preference accuracy of DPO, DoRA and DoRA (no labels), the share of DoRA's gain over DPO
    that the unlabelled weights keep, and the target-share estimates (separate and subset trusted sets)."""
    lines = [
        "| seed | DPO | DoRA | DoRA (no labels) | α̂, separate trusted set | α̂, trusted subset of the pool | true α |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(per_seed):
        nl = r["classifier_no_labels"]
        sub = nl["subset_share"]
        acc = [f"{100 * r[m]['preference_accuracy']:.1f}" if m in r else "–" for m in ("DPO", "DoRA", NO_LABELS)]
        lines.append(
            f"| {i} | {' | '.join(acc)} | {nl['target_share']:.3f} [{nl['target_share_interval'][0]:.3f}, "
            f"{nl['target_share_interval'][1]:.3f}] | {sub['estimate']:.3f} [{sub['interval'][0]:.3f}, "
            f"{sub['interval'][1]:.3f}] | {sub['truth']:.3f} |"
        )
    if all("DPO" in r and "DoRA" in r for r in per_seed):
        gain = statistics.fmean(r["DoRA"]["preference_accuracy"] - r["DPO"]["preference_accuracy"] for r in per_seed)
        kept = statistics.fmean(r[NO_LABELS]["preference_accuracy"] - r["DPO"]["preference_accuracy"] for r in per_seed)
        share = (f"{100 * kept / gain:.0f}% of it kept" if gain > 0
                 else "the share of the gain kept is undefined (DoRA did not beat DPO)")  # fmt: skip
        lines.append(
            f"\nDoRA's mean gain over DPO: {100 * gain:+.1f} points; DoRA (no labels): {100 * kept:+.1f} "
            f"points; {share}."
        )
    return "\n".join(lines)


def paired_differences(per_seed: list[dict], methods: list[str], baseline: str = "DPO") -> dict:
    """Each method minus the baseline, per seed (same world, SFT model and classifier), with the mean and a
    95% Student-t interval over the seed differences: {method: {metric: {"per_seed", "mean", "ci"}}}."""
    from scipy.stats import t

    out = {}
    for name in methods:
        if name == baseline or baseline not in per_seed[0]:
            continue
        out[name] = {}
        for key in ("preference_accuracy", "reward_margin", "task_accuracy"):
            if key not in per_seed[0][name]:
                continue
            d = [r[name][key] - r[baseline][key] for r in per_seed]
            m = statistics.fmean(d)
            if len(d) > 1:
                half = t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
                ci = (m - half, m + half)
            else:
                ci = None
            out[name][key] = {"per_seed": d, "mean": m, "ci": ci}
    return out


def paired_table(paired: dict, n_seeds: int, baseline: str = "DPO") -> str:
    def cell(x, pct=True):
        f = (lambda v: f"{100 * v:+.1f}") if pct else (lambda v: f"{v:+.4f}")
        per = ", ".join(f(v) for v in x["per_seed"])
        ci = f" [{f(x['ci'][0])}, {f(x['ci'][1])}]" if x["ci"] else ""
        return f"{per} | {f(x['mean'])}{ci}"

    lines = [
        f"| method − {baseline} | preference accuracy, per seed (points) | mean [95% CI] "
        "| task accuracy, per seed (points) | mean [95% CI] | reward margin, per seed | mean [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in paired.items():
        task = cell(d["task_accuracy"]) if "task_accuracy" in d else "– | –"
        lines.append(f"| {name} | {cell(d['preference_accuracy'])} | {task} | {cell(d['reward_margin'], False)} |")
    lines.append(
        f"\nPaired on the seed (same world, SFT model and weights); the interval is a Student-t interval over the "
        f"{n_seeds} per-seed differences (t with {n_seeds - 1} degrees of freedom)."
        if n_seeds > 1
        else "\nPaired on the seed (same world, SFT model and weights); one seed, so no interval (use --seeds 3)."
    )
    return "\n".join(lines)


def plot(summary: dict, per_seed: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [n for n in summary if "preference_accuracy" in summary[n]]
    means = [100 * summary[n]["preference_accuracy"][0] for n in names]
    errs = [100 * summary[n]["preference_accuracy"][1] for n in names]
    ax1.bar(names, means, yerr=errs, capsize=4, color=["#999"] * (len(names) - 1) + ["#c33"])
    ax1.set_ylabel("preference accuracy on human split (%)")
    ax1.set_ylim(max(0, min(means) - 15), 100)
    ax1.tick_params(axis="x", rotation=30)
    weights = per_seed[0]["weights"]
    top = max(max(w) for w in weights.values())
    edges = [top * i / 40 for i in range(41)] if top > 0 else 40
    for s, w in weights.items():
        ax2.hist(w, bins=edges, alpha=0.6, label=s)
    ax2.set_xlabel("dora_weight per pair, as written (seed 0)")
    ax2.set_ylabel("pairs")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def per_seed_table(per_seed: list[dict], methods: list[str], key: str = "preference_accuracy") -> str:
    """One row per seed: each method's number (in %), so every paired difference below can be checked."""
    lines = [f"| seed | {' | '.join(methods)} |", "|---|" + "---|" * len(methods)]
    for i, r in enumerate(per_seed):
        lines.append(f"| {i} | " + " | ".join(f"{100 * r[m][key]:.1f}" for m in methods) + " |")
    return "\n".join(lines)


def bootstrap_over_seeds(per_seed: list[dict], stat, *, n_boot: int = 10000, seed: int = 0) -> tuple[list, int]:
    """``stat`` on ``n_boot`` resamples of the seeds (with replacement, a fixed generator); a resample where
    ``stat`` is undefined (returns None) is dropped and counted. Returns (values, dropped)."""
    import random

    rng = random.Random(seed)
    values, dropped = [], 0
    for _ in range(n_boot):
        v = stat([per_seed[rng.randrange(len(per_seed))] for _ in per_seed])
        if v is None:
            dropped += 1
        else:
            values.append(v)
    return values, dropped


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def harm_and_recovery(per_seed: list[dict], key: str = "preference_accuracy", method: str = "DoRA") -> dict:
    """The harm the synthetic labels do (Oracle − DPO) and the share of it ``method`` recovers,
    (method − DPO) / (Oracle − DPO), a ratio of means over seeds; intervals are 95% percentile bootstraps over
    the seeds (10 000 resamples; a resample whose harm is <= 0 has no share and is dropped, and counted)."""

    def mean_diff(rows, a, b):
        return statistics.fmean(r[a][key] - r[b][key] for r in rows)

    def share(rows):
        harm = mean_diff(rows, "Oracle", "DPO")
        return mean_diff(rows, method, "DPO") / harm if harm > 0 else None

    harms, _ = bootstrap_over_seeds(per_seed, lambda rows: mean_diff(rows, "Oracle", "DPO"))
    shares, dropped = bootstrap_over_seeds(per_seed, share)
    return {
        "harm": mean_diff(per_seed, "Oracle", "DPO"),
        "harm_ci": (_percentile(harms, 0.025), _percentile(harms, 0.975)),
        "share": share(per_seed),
        "share_ci": (_percentile(shares, 0.025), _percentile(shares, 0.975)) if shares else None,
        "dropped": dropped,
    }


def comparison_table(per_seed: list[dict], method: str = "DoRA", baselines=("DPO", "Human-only", "Label reweight")):
    """``method`` minus each baseline present, per seed, with the mean and its 95% Student-t interval; then the
    harm (Oracle − DPO) and the share of it recovered, when the Oracle and DPO were run."""
    present = [b for b in baselines if b in per_seed[0] and method in per_seed[0]]
    lines = [f"| {method} − | preference accuracy, per seed (points) | mean [95% t-interval] |", "|---|---|---|"]
    for b in present:
        d = paired_differences(per_seed, [method], baseline=b)[method]["preference_accuracy"]
        ci = f" [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]" if d["ci"] else ""
        lines.append(f"| {b} | {', '.join(f'{100 * v:+.1f}' for v in d['per_seed'])} | {100 * d['mean']:+.1f}{ci} |")
    if "Oracle" in per_seed[0] and "DPO" in per_seed[0] and method in per_seed[0] and len(per_seed) > 1:
        h = harm_and_recovery(per_seed, method=method)
        lo, hi = h["share_ci"] or (0.0, 0.0)
        share = (f"{100 * h['share']:.0f}% [{100 * lo:.0f}%, {100 * hi:.0f}%]" if h["share"] is not None
                 else "undefined (the oracle did not beat DPO)")  # fmt: skip
        lines.append(
            f"\nHarm of the synthetic labels, Oracle − DPO: {100 * h['harm']:+.1f} points "
            f"[{100 * h['harm_ci'][0]:+.1f}, {100 * h['harm_ci'][1]:+.1f}]; share of it {method} recovers, "
            f"({method} − DPO) / (Oracle − DPO): {share} "
            f"(95% percentile bootstrap over the seeds, 10 000 resamples; {h['dropped']} with no harm dropped)."
        )
    return "\n".join(lines)
