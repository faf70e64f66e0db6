"""The classifier's diagnostics: discrimination and calibration on out-of-fold probabilities, the weights per
source and their effective sample size, written as report.json / report.md and two plots (both pipelines:
``save_outputs``)."""

from __future__ import annotations

import json
import os

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

from dora.classifier.crossfit import expected_calibration_error, reliability_bins
from dora.ratio import effective_sample_size

__all__ = [
    "score_summary", "diagnostics", "format_table", "markdown_table", "report_markdown", "save_outputs",
    "plot_diagnostics",
]  # fmt: skip


def score_summary(probs, labels, weights) -> dict:
    """Scores of the out-of-fold probabilities, and statistics of the written per-row weights."""
    ess = effective_sample_size(weights)
    return {
        "roc_auc": float(roc_auc_score(labels, probs)),
        "brier": float(brier_score_loss(labels, probs)),
        "ece": expected_calibration_error(probs, labels),
        "reliability": reliability_bins(probs, labels),
        "weight_min": float(weights.min()),
        "weight_median": float(np.median(weights)),
        "weight_max": float(weights.max()),
        "weight_mean": float(weights.mean()),
        "ess": ess,
        "ess_fraction": ess / len(weights),
    }


def diagnostics(probs, labels, weights, row_src, sources, known) -> dict:
    """``score_summary``, and the weights and probabilities per source (labelled mode)."""
    src, rsrc = np.array(sources), np.array(row_src)
    return {
        **score_summary(probs, labels, weights),
        "mean_weight_by_source": {s: float(weights[rsrc == s].mean()) for s in sorted(set(row_src))},
        "rows_by_source": {s: int((rsrc == s).sum()) for s in sorted(set(row_src))},
        "mean_target_prob_by_source": {s: float(probs[src == s].mean()) for s in known},
    }


def _scale(report: dict) -> str:
    return "normalised to mean 1" if report.get("normalize") else "unnormalised"


def format_table(report: dict) -> str:
    rows = [
        ("ROC-AUC", f"{report['roc_auc']:.3f}"),
        ("Brier score", f"{report['brier']:.4f}"),
        ("expected calibration error", f"{report['ece']:.4f}"),
    ]
    if report.get("preset"):
        rows.append(("weight formula", f"preset {report['preset']} (w = n·c)"))
    else:
        rows.append(
            (
                "target share α / imbalance γ / stabiliser s",
                f"{report['target_share']:.4g} / {report['gamma']:.4g} / {report['stabilizer']:.4g}",
            )
        )
    rows += [
        (
            "weight min / median / max",
            f"{report['weight_min']:.3f} / {report['weight_median']:.3f} / {report['weight_max']:.3f}",
        ),
        ("weight mean", f"{report['weight_mean']:.3f}"),
        (
            "effective sample size",
            f"{report['ess']:.1f} of {report['n_rows']} ({100 * report['ess_fraction']:.1f}%)",
        ),
    ]
    counts = report.get("rows_by_source", {})
    rows += [
        (f"mean weight, {s} ({counts.get(s, '?')} rows)", f"{w:.3f}")
        for s, w in report["mean_weight_by_source"].items()
    ]
    regime = f"\n\n**Prediction:** {report['regime']['sentence']}" if "regime" in report else ""
    return markdown_table(rows) + regime + (
        f"\n\nWeights: the written per-row `dora_weight`, {_scale(report)}. Probabilities, ROC-AUC, Brier and "
        "ECE: out of fold (classifier and calibrator)."
    )


def markdown_table(rows: list[tuple[str, str]]) -> str:
    """A two-column (metric, value) markdown table."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in [("metric", "value"), ("-" * width, "---"), *rows])


def save_outputs(output_dir: str, classifier, report: dict, markdown: str, weights, row_src) -> None:
    """classifier/ (fit on all rows), report.json, report.md (``markdown``) and the two plots."""
    os.makedirs(output_dir, exist_ok=True)
    classifier.save_pretrained(os.path.join(output_dir, "classifier"))
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(output_dir, "report.md"), "w") as f:
        f.write(markdown)
    plot_diagnostics(report, weights, row_src, output_dir)


def report_markdown(report: dict) -> str:
    """report.md of labelled mode."""
    return (
        "# Source classifier report\n\n" + format_table(report) + "\n\n![reliability](reliability.png)\n"
        "![weights](weights.png)\n"
    )


def plot_diagnostics(report: dict, weights, row_src, output_dir: str) -> None:
    """reliability.png (out-of-fold, with the count of responses per bin) and weights.png (the written
    per-row weights, per row source: the scale of report.md)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positive = "trusted" if report.get("mode") == "no_labels" else "target"  # the classifier's positive class
    bins = [b for b in report["reliability"] if b["count"]]
    fig, (ax, axn) = plt.subplots(
        2, 1, figsize=(4.8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], "--", color="#999", label="perfect calibration")
    xs, ys = [b["mean_predicted"] for b in bins], [b["share_target"] for b in bins]
    ax.plot(xs, ys, "o-", color="#c33", label="classifier (out of fold)")
    for b in bins:
        ax.annotate(str(b["count"]), (b["mean_predicted"], b["share_target"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=7, color="#555")
    ax.set_ylabel(f"observed share of {positive}")
    ax.set_title(f"ECE {report['ece']:.3f} (out of fold)", fontsize=9)
    ax.legend(fontsize=8)
    axn.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["count"] for b in bins], width=0.09, color="#777")
    axn.set_xlabel(f"predicted P({positive})")
    axn.set_ylabel("responses")
    axn.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "reliability.png"), dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    src = np.array(row_src)
    edges = np.linspace(0.0, float(weights.max()) if weights.max() > 0 else 1.0, 41)
    for s in sorted(set(row_src)):
        ax.hist(weights[src == s], bins=edges, alpha=0.6, label=s)
    ax.set_xlabel(f"dora_weight per row (as written, {_scale(report)})")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "weights.png"), dpi=110)
    plt.close(fig)
