"""The per-round report: the pool's composition, the weights (classifier AUC, statistics, the weight that
policy-written rows get), the robust batch's effective size, and the evaluation (human-split preference
accuracy, win rate against round 0); ``report.md`` and ``curves.png`` over all rounds."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from dora.ratio import effective_sample_size

__all__ = ["round_summary", "write_run_report", "markdown_table"]


def _is_policy(source: str) -> bool:
    return source.startswith("policy_r")


def round_summary(r, policy, rows, pairs, weight_report, train_stats, evaluation, target_sources) -> dict:
    src = np.array([row["source"] for row in rows], dtype=object)
    w = np.array([float(row.get("dora_weight", 1.0)) for row in rows], dtype=np.float64)
    policy_rows = np.array([_is_policy(s) for s in src])
    target_rows = np.isin(src, list(target_sources))
    weights = {
        "mean": float(w.mean()),
        "min": float(w.min()),
        "max": float(w.max()),
        "ess_fraction": effective_sample_size(w) / len(w),
        "mean_by_source": {s: float(w[src == s].mean()) for s in sorted(set(src.tolist()))},
        "mean_policy_rows": float(w[policy_rows].mean()) if policy_rows.any() else None,
        "mean_target_rows": float(w[target_rows].mean()) if target_rows.any() else None,
        # the share of the total weight that policy-written rows carry, against their share of the rows
        "weight_share_policy_rows": float(w[policy_rows].sum() / w.sum()) if w.sum() > 0 else None,
    }
    for k in ("roc_auc", "brier", "ece"):
        if k in weight_report:
            weights[k] = weight_report[k]
    return {
        "round": r,
        "policy": policy,
        "pool": dict(Counter(src.tolist())),
        "pool_size": len(rows),
        "policy_share": float(policy_rows.mean()),
        "new_pairs": pairs,
        "weights": weights,
        "train": train_stats,
        "eval": evaluation,
    }


def _fmt(x, pct=False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x:.3f}"


def markdown_table(reports: list[dict]) -> str:
    extra = sorted(
        {
            k
            for rep in reports
            for k, v in rep["eval"].items()
            if isinstance(v, (int, float)) and k not in ("preference_accuracy", "win_rate", "reward_margin")
        }
    )
    head = [
        "round",
        "pool",
        "policy-written (%)",
        "new pairs",
        "AUC",
        "weight: policy rows",
        "weight: target rows",
        "ESS / batch",
        "pref. accuracy (%)",
        "win rate vs r0 (%)",
        *extra,
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rep in reports:
        w, t, ev = rep.get("weights", {}), rep.get("train", {}), rep["eval"]
        ess = f"{t['ess']:.1f} / {t['batch_size']}" if t.get("ess") is not None else "–"
        cells = [
            str(rep["round"]), str(rep.get("pool_size", sum(rep["pool"].values()))),
            _fmt(rep.get("policy_share", 0.0), True), str(rep.get("new_pairs", {}).get("pairs", "–")),
            _fmt(w.get("roc_auc")), _fmt(w.get("mean_policy_rows")), _fmt(w.get("mean_target_rows")), ess,
            _fmt(ev.get("preference_accuracy"), True), _fmt(ev.get("win_rate"), True),
            *[_fmt(ev.get(k)) for k in extra],
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_run_report(reports: list[dict], out_dir: str) -> None:
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("# Iterative run\n\n" + markdown_table(reports) + "\n\n![curves](curves.png)\n")
    plot_curves({"run": reports}, os.path.join(out_dir, "curves.png"))


def plot_curves(runs: dict[str, list[dict]], path: str) -> None:
    """Per-round curves of one or more runs (``{label: reports}``): preference accuracy, win rate, the share
    of policy-written rows, and the mean weight of policy-written rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [
        ("human-split preference accuracy (%)", lambda rep: rep["eval"].get("preference_accuracy"), 100),
        ("win rate vs round 0 (%)", lambda rep: rep["eval"].get("win_rate"), 100),
        ("policy-written share of the pool (%)", lambda rep: rep.get("policy_share", 0.0), 100),
        ("mean weight of policy-written rows", lambda rep: rep.get("weights", {}).get("mean_policy_rows"), 1),
    ]
    for ax, (title, get, scale) in zip(axes, panels):
        for label, reports in runs.items():
            pts = [(rep["round"], get(rep)) for rep in reports if get(rep) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, [scale * y for y in ys], "o-", label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
