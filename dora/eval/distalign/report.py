"""Stage 5: the report -> the paper's leaderboard table, per-dataset and per-steering tables, and
``leaderboard.json``.

Every interval is printed at the precision of its estimate.
"""

from __future__ import annotations

from dora.eval.distalign.scoring import METHODS

NAMES = {"verbalize": "Verbalize (V)", "sequence": "Sequence (Seq)", "logprobs": "Log-p"}


def _num(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(ci, digits: int = 3) -> str:
    return "–" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def leaderboard_json(report: dict) -> dict:
    """``{"verbalize" | "sequence" | "logprobs": {"tvd", "ci", "items"}, "baselines": {...}, "gap"}``."""
    out = {m: {"tvd": r["tvd"], "ci": r["ci"], "items": r["items"]} for m, r in report["methods"].items()}
    base = report["baselines"]
    out["baselines"] = {k: {"tvd": b["tvd"], "ci": b["ci"], "items": b["items"]} for k, b in base.items()}
    out["gap"] = report["gap"]
    return out


def markdown(report: dict) -> str:
    """The leaderboard (TVD pooled over the headline steerings, datasets weighted equally), the baselines
    and the gap; TVD per dataset; then per method and steering."""
    steer = " + ".join(report["headline_steerings"])
    lines = [f"Leaderboard: TVD ↓, {steer} pooled, each dataset weighted equally "
             f"({report['n_questions']} questions, {report['n_items']} question-group items)", "",
             "| method | TVD ↓ | 95% CI | items | failed parses |", "|---|---|---|---|---|"]  # fmt: skip
    for m in METHODS:
        r = report["methods"].get(m)
        if r:
            lines.append(f"| {NAMES[m]} | {_num(r['tvd'])} | {_ci(r['ci'])} | {r['items']} "
                         f"| {r['failed']} ({100 * r['failed_share']:.1f}%) |")  # fmt: skip
    for k, b in report["baselines"].items():
        lines.append(f"| baseline: {k} | {_num(b['tvd'])} | {_ci(b['ci'])} | {b['items']} | – |")
    gap = report["gap"]
    lines += ["", f"Knowledge-to-simulation gap (Seq / V − 1): {'–' if gap is None else f'{100 * gap:+.2f}%'}"]
    lines += [f"Failed parses scored as: {report['failed_parse']}", ""]
    datasets = report["datasets"]
    lines += ["TVD per dataset (" + steer + "):", "", "| method | " + " | ".join(datasets) + " |",
              "|---|" + "---|" * len(datasets)]  # fmt: skip
    rows = [(NAMES[m], report["methods"][m]) for m in METHODS if m in report["methods"]]
    rows += [(f"baseline: {k}", b) for k, b in report["baselines"].items()]
    for name, r in rows:
        cells = []
        for d in datasets:
            e = r["by_dataset"].get(d)
            cells.append("–" if e is None else f"{e['tvd']:.3f} {_ci(e['ci'])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Per method and steering:", "",
              "| method / steering | TVD ↓ | 95% CI | 1 − JS ↑ | Wasserstein repr. ↑ | items | failed parses |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, r in report["by_steering"].items():
        extra = f", off-option mass {r['off_option_mass']:.3f}" if "off_option_mass" in r else ""
        lines.append(f"| {key} | {_num(r['tvd'])} | {_ci(r['ci'])} | {_num(r['js'])} | {_num(r['wasserstein'])} "
                     f"| {r['items']} | {r['failed']} ({100 * r['failed_share']:.1f}%){extra} |")  # fmt: skip
    return "\n".join(lines)
