"""Distributions produced elsewhere (an API model, another harness), read for scoring without a model.

One JSON object per line::

    {"dataset": "opinionqa", "question": "GAP21Q33_g_W82", "group": "Male", "method": "verbalize",
     "steering": "persona", "distribution": {"A": 0.2, "B": 0.5, "C": 0.3}}

``question`` is the question's key in the data file (OpinionQA: its id; NYT: the book title; Global
Values: the question text). ``distribution`` keys are option texts or letters; a letter indexes the item's
options in the order the loader gives them (``Item.options``; ``predictions.jsonl`` of a run lists them).
``distribution: null`` (or all zeros) is a failed parse. Values are renormalised; the total they were
given with is kept for scoring vectors as given (``renormalize=False``). Rows for groups or questions that
are not scored (group filter, ``--max-questions``) are counted and left out.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from dora.eval.distalign.data import ALIASES, Item, iter_jsonl
from dora.eval.distalign.parsing import _option_index
from dora.eval.distalign.scoring import canonical

logger = logging.getLogger("dora.eval.distalign")


def read_predictions(path: str, items: list[Item]) -> list[dict]:
    """Predictions for ``items`` from a JSONL file, as ``score_predictions`` takes them."""
    index = {(it.dataset, it.qid, it.group): i for i, it in enumerate(items)}
    out, seen, unmatched = [], set(), 0
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object")
        for key in ("dataset", "question", "group", "method", "steering", "distribution"):
            if key not in row:
                raise ValueError(f"{where}: missing field '{key}'")
        try:
            method, steering = canonical("method", row["method"]), canonical("steering", row["steering"])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        dataset = ALIASES.get(str(row["dataset"]), str(row["dataset"]))
        i = index.get((dataset, str(row["question"]), str(row["group"])))
        if i is None:
            unmatched += 1
            continue
        if (i, method, steering) in seen:
            raise ValueError(f"{where}: a second prediction for this question, group, method and steering")
        seen.add((i, method, steering))
        dist, mass = _distribution(row["distribution"], items[i].options, where)
        out.append({"item": i, "method": method, "steering": steering, "prediction": dist, "mass": mass})
    if unmatched:
        logger.warning("%s: %d rows for questions or groups that are not scored, left out", path, unmatched)
    if not out:
        raise ValueError(f"{path}: no prediction matches a loaded question and group (dataset, question, group)")
    return out


def _distribution(raw, options: list[str], where: str) -> tuple[np.ndarray | None, float]:
    """The renormalised distribution (None for a failed parse) and the total it was given with."""
    if raw is None:
        return None, 0.0
    if not isinstance(raw, dict):
        raise ValueError(f"{where}, field 'distribution': expected {{option or letter: probability}} or null")
    values = np.zeros(len(options))
    for key, v in raw.items():
        k = _option_index(key, options)
        if k is None:
            raise ValueError(f"{where}, field 'distribution': {key!r} is neither an option nor a letter of {options}")
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{where}, field 'distribution': {key!r} has {v!r}, not a non-negative number")
        values[k] += v
    total = float(values.sum())
    return (values / total if total > 0 else None), total
