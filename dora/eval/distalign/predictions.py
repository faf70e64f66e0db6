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


# a run's own predictions.jsonl names these fields qid / prediction (a list over the item's options); both read
FIELDS = (("dataset",), ("question", "qid"), ("group",), ("method",), ("steering",), ("distribution", "prediction"))


def read_predictions(path: str, items: list[Item]) -> list[dict]:
    """Predictions for ``items`` from a JSONL file, as ``score_predictions`` takes them."""
    index = {(it.dataset, it.qid, it.group): i for i, it in enumerate(items)}
    out, seen, unmatched = [], set(), 0
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object")
        for names in FIELDS:
            if not any(n in row for n in names):
                raise ValueError(f"{where}: missing field '{names[0]}'")
        question = row["question"] if "question" in row else row["qid"]
        raw = row["distribution"] if "distribution" in row else row["prediction"]
        try:
            method, steering = canonical("method", row["method"]), canonical("steering", row["steering"])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        dataset = ALIASES.get(str(row["dataset"]), str(row["dataset"]))
        i = index.get((dataset, str(question), str(row["group"])))
        if i is None:
            unmatched += 1
            continue
        if (i, method, steering) in seen:
            raise ValueError(f"{where}: a second prediction for this question, group, method and steering")
        seen.add((i, method, steering))
        dist, mass = _distribution(raw, items[i].options, where, row.get("mass"))
        out.append({"item": i, "method": method, "steering": steering, "prediction": dist, "mass": mass})
    if unmatched:
        logger.warning("%s: %d rows for questions or groups that are not scored, left out", path, unmatched)
    if not out:
        raise ValueError(f"{path}: no prediction matches a loaded question and group (dataset, question, group)")
    return out


def check_coverage(path: str, items: list[Item], predictions: list[dict]) -> None:
    """Every loaded (question, group) has a prediction for each method/steering the file holds; else one line
    saying how many are missing (a file covering 3 of 235 questions would otherwise score as if complete)."""
    for method, steering in sorted({(p["method"], p["steering"]) for p in predictions}):
        covered = {p["item"] for p in predictions if (p["method"], p["steering"]) == (method, steering)}
        missing = [it for i, it in enumerate(items) if i not in covered]
        if missing:
            first = missing[0]
            raise ValueError(f"{path}: {len(missing)} of {len(items)} loaded questions have no {method}/{steering} "
                             f"prediction (first: {first.dataset} {first.qid!r}, group {first.group!r}); add "
                             "--allow-partial to score only the covered ones")  # fmt: skip


def _distribution(raw, options: list[str], where: str, mass=None) -> tuple[np.ndarray | None, float]:
    """The renormalised distribution (None for a failed parse) and the total it was given with (``mass`` when
    the row gives it, as a run's predictions.jsonl does)."""
    if raw is None:
        return None, 0.0
    if isinstance(raw, list):  # a run's predictions.jsonl: one number per option, in the item's order
        if len(raw) != len(options):
            raise ValueError(f"{where}, field 'prediction': {len(raw)} numbers for {len(options)} options")
        raw = dict(zip(options, raw))
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
    if mass is not None and total > 0:
        if isinstance(mass, bool) or not isinstance(mass, (int, float)) or not 0 <= mass < math.inf:
            raise ValueError(f"{where}, field 'mass': {mass!r}, not a non-negative number")
        return values / total, float(mass)
    return (values / total if total > 0 else None), total
