"""Which rows were down- and up-weighted: per source, the rows with the lowest and the highest ``dora_weight``,
with a text excerpt, so a user can read what the classifier took for synthetic and for human."""

from __future__ import annotations

import json

import numpy as np

__all__ = ["weight_extremes", "format_extremes"]

TEXT_COLUMNS = ("chosen", "responses", "completion", "response", "text")


def _flat(value) -> str:
    """A response as one line: the last message of a chat list, the first of a list of responses."""
    if isinstance(value, list) and value:
        return _flat(value[0] if not isinstance(value[0], dict) or "role" not in value[0] else value[-1])
    if isinstance(value, dict):
        return _flat(value.get("content", json.dumps(value)))
    return " ".join(str(value).split())


def _excerpt(row: dict, width: int) -> str:
    for column in TEXT_COLUMNS:
        if row.get(column) not in (None, "", []):
            text = _flat(row[column])
            return text if len(text) <= width else text[: width - 1] + "…"
    return ""


def weight_extremes(
    dataset, *, source_column: str = "source", k: int = 3, width: int = 80, row_names=None, weight="dora_weight"
) -> dict:
    """``{source: {"lowest": [...], "highest": [...]}}``, each entry ``{"row", "weight", "text"}``: the ``k``
    rows of the source with the lowest and the highest weight (ties by row order). Rows are grouped by
    ``source_column`` (else ``chosen_source``; else one group ``all``); ``row_names[i]`` names row i (default
    ``row i+1``)."""
    columns = dataset.column_names
    group_col = source_column if source_column in columns else "chosen_source" if "chosen_source" in columns else None
    weights = np.asarray(dataset[weight], dtype=np.float64)
    groups = [str(g) for g in dataset[group_col]] if group_col else ["all"] * len(weights)
    out = {}
    for source in sorted(set(groups)):
        rows = np.array([i for i, g in enumerate(groups) if g == source])
        order = rows[np.argsort(weights[rows], kind="stable")]
        take = min(k, len(order))

        def entry(i):
            name = row_names[i] if row_names is not None else f"row {i + 1}"
            return {"row": name, "weight": float(weights[i]), "text": _excerpt(dataset[int(i)], width)}

        out[source] = {
            "lowest": [entry(i) for i in order[:take]],
            "highest": [entry(i) for i in order[::-1][:take]],
        }
    return out


def format_extremes(extremes: dict) -> str:
    """A Markdown table: source, which end, row, weight, text."""
    lines = ["| source | end | row | weight | text |", "|---|---|---|---|---|"]
    for source, ends in extremes.items():
        for end in ("lowest", "highest"):
            for e in ends[end]:
                text = e["text"].replace("|", "\\|")
                lines.append(f"| {source} | {end} | {e['row']} | {e['weight']:.4g} | {text} |")
    return "\n".join(lines)
