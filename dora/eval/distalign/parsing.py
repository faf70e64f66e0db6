"""Stage 3: a model's output -> a distribution over the options, or None when it cannot be read.

- ``logp_distribution``: the next-token probabilities of the option letters, renormalised; the mass off the
  options is returned with it.
- ``parse_sequence``: N answers written as letters, separated (``A B A``, ``A, B, A``) or as one contiguous
  run (``ABBBAABDD``, what the reference prompt asks for), counted.
- ``parse_verbalized``: the first ``{...}`` object, read with ``json`` (never evaluated), keys letters or
  option texts, values fractions or percents.

Nothing here guesses: an output that cannot be read is None, and scoring decides what a failure costs.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from dora.eval.distalign.data import LETTERS

__all__ = ["letter_token_ids", "logp_distribution", "parse_sequence", "parse_verbalized"]


def letter_token_ids(tokenizer, n: int) -> list[list[int]]:
    """For each of the first n letters, the single-token ids of "X" and " X" (whichever exist)."""
    out = []
    for letter in LETTERS[:n]:
        ids = set()
        for text in (letter, " " + letter):
            t = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(t) == 1:
                ids.add(int(t[0]))
        if not ids:
            raise ValueError(f"the tokenizer has no single token for the option letter {letter!r}")
        out.append(sorted(ids))
    return out


def logp_distribution(next_token_probs: np.ndarray, letter_ids: list[list[int]]) -> tuple[np.ndarray | None, float]:
    """Renormalised next-token probabilities of the option letters, and the mass off the options
    (None and 1.0 when the letters have no mass at all)."""
    mass = np.array([float(np.sum(next_token_probs[ids])) for ids in letter_ids], dtype=np.float64)
    total = float(mass.sum())
    if not total > 0:
        return None, 1.0
    return mass / total, max(0.0, 1.0 - total)


def _answers(text: str) -> list[str]:
    """The answer items of the first non-empty line (after "Answer:" when the text has one): a separated
    token is one item, except a run of capital letters (``ABBA``), which is one item per letter."""
    m = re.search(r"answer\s*:", text, re.IGNORECASE)
    text = text[m.end() :] if m else text  # after the first "Answer:", as the reference reads it
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    items = []
    for token in re.split(r"[\s,;]+", line):
        t = token.strip(".()[]'\"")
        if not t:
            if token:
                items.append(token)  # punctuation alone: an unreadable item
            continue
        if len(t) > 1 and re.fullmatch(r"[A-Z]+", t):
            items.extend(t)
        else:
            items.append(t.upper() if len(t) == 1 else t)
    return items


def parse_sequence(text: str, n_options: int, samples: int | None = None) -> tuple[np.ndarray | None, float]:
    """Shares of the option letters among the first ``samples`` answers of the first line, and the share of
    those answers that are not an option letter. None when no answer is an option letter."""
    items = _answers(text)[:samples]
    if not items:
        return None, 1.0
    valid = [t for t in items if len(t) == 1 and t in LETTERS[:n_options]]
    failure = 1.0 - len(valid) / len(items)
    if not valid:
        return None, failure
    counts = np.array([valid.count(c) for c in LETTERS[:n_options]], dtype=np.float64)
    return counts / counts.sum(), failure


def _option_index(key, options: list[str]) -> int | None:
    """ "A", "(A)", "A.", "'A'" or the option's own text -> its index; anything else -> None."""
    k = str(key).strip()
    lowered = [o.strip().lower() for o in options]
    if k.lower() in lowered:
        return lowered.index(k.lower())
    m = re.fullmatch(r"[('\"]?([A-Za-z])[)'\".:]?", k)
    if m and m.group(1).upper() in LETTERS[: len(options)]:
        return LETTERS.index(m.group(1).upper())
    return None


def _number(v) -> float | None:
    s = str(v).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)", s)
    if not m:
        return None
    x = float(m.group(1))
    return x / 100 if m.group(2) else x


def _json_object(text: str):
    m = re.search(r"\{[^{}]*\}", text)
    if not m:
        return None
    raw = re.sub(r"(?<![\w\"'.])([0-9]*\.?[0-9]+\s*%)", r'"\1"', m.group(0))  # bare 30% -> "30%"
    bare_keys = r"([{,]\s*)([A-Za-z])\s*:"
    for candidate in (
        raw,
        raw.replace("'", '"'),
        re.sub(bare_keys, r'\1"\2":', raw),
        re.sub(bare_keys, r'\1"\2":', raw.replace("'", '"')),  # {'A': '45%', D: '11%'}, the reference's own
    ):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return None


def parse_verbalized(text: str, options: list[str] | int) -> np.ndarray | None:
    """The first ``{...}`` object of the text: keys option letters or texts, values fractions or percents
    (``0.3``, ``30%``, ``"30%"``); renormalised. None when there is no readable object, a value is not a
    non-negative number, or nothing falls on an option."""
    if isinstance(options, int):
        options = list(LETTERS[:options])
    obj = _json_object(text)
    if not isinstance(obj, dict):
        return None
    values = np.zeros(len(options))
    for key, v in obj.items():
        x = _number(v)
        if x is None or not math.isfinite(x):
            return None
        i = _option_index(key, options)
        if i is not None:
            values[i] += x
    return values / values.sum() if values.sum() > 0 else None
