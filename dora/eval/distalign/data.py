"""Stage 1: the benchmark's data files -> ``Item`` (one group's answer distribution over one question's options).

Readers for a user's copy of the benchmark (its data may not be redistributed): OpinionQA
``<ATTRIBUTE>_data.json`` (+ ``info.csv``), NYT book opinions ``data.json``, Global Values ``data.json``, and a
JSONL format of our own. The real files' quirks are handled here, each counted in one warning per file:
``MC_options`` split at commas or carrying stray quotes (the options then come from the groups' own answer
keys, ordered by ``info.csv``'s ``option_mapping`` when it has the question), empty or all-zero groups
(skipped), duplicate options, shares that do not sum to 1. Only the first ``max_questions`` questions of a
file are decoded at all.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger("dora.eval.distalign")

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
REFUSALS = ("refused", "don't know", "dk/refused", "no answer")  # never given an ordinal position
# The groups the paper scores (Meister et al. 2025, Sec. 3): Global Values keeps each question's first three
# listed countries (``Item.rank`` < 3).
PAPER_GROUPS = {
    "opinionqa": {"Democrat", "Republican", "Male", "Female", "Black", "White"},
    "nytimes": {"Democrat", "Republican", "Male", "Female"},
}
FORMATS = ("opinionqa", "nytimes", "globalvalues", "jsonl")


@dataclass
class Item:
    """One (dataset, question, group): the group's answer distribution over ``options`` (in the order the
    option letters A, B, ... index). ``ordinals`` gives each option's position on an ordered scale (None for
    an option off the scale, e.g. "Refused"); ``ordinals=None``: unordered options."""

    dataset: str
    qid: str
    question: str
    options: list[str]
    group: str
    distribution: np.ndarray
    ordinals: list[float | None] | None = None
    context: dict = field(default_factory=dict)  # NYT: genre, summary; the source file: path
    rank: int | None = None  # Global Values: the country's position in the question's ``countries``

    @property
    def ordinal(self) -> bool:
        return self.ordinals is not None


class _Counts:
    """Quirks met while reading one file, reported as one warning line at the end."""

    def __init__(self, path: str):
        self.path, self.counts = path, Counter()

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def report(self) -> None:
        if self.counts:
            parts = ", ".join(f"{n} {what}" for what, n in self.counts.items())
            logger.warning("%s: %s", self.path, parts)


def _iter_json(path: str, max_items: int | None = None):
    """(key, value) pairs of a file holding one JSON object, decoded one at a time: the first
    ``max_items`` are read, the rest of the file is not parsed. Errors name the path, line and column."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file") from e
    dec, ws = json.JSONDecoder(), re.compile(r"\s*")
    try:
        pos = ws.match(text, 0).end()
        if text[pos : pos + 1] != "{":
            raise json.JSONDecodeError("expected a JSON object keyed by question", text, pos)
        pos = ws.match(text, pos + 1).end()
        n = 0
        while text[pos : pos + 1] != "}" and (max_items is None or n < max_items):
            key, pos = dec.raw_decode(text, pos)
            pos = ws.match(text, pos).end()
            if not isinstance(key, str) or text[pos : pos + 1] != ":":
                raise json.JSONDecodeError("expected a string key and ':'", text, pos)
            value, pos = dec.raw_decode(text, ws.match(text, pos + 1).end())
            yield key, value
            n += 1
            pos = ws.match(text, pos).end()
            if text[pos : pos + 1] == ",":
                pos = ws.match(text, pos + 1).end()
            elif text[pos : pos + 1] != "}":
                raise json.JSONDecodeError("expected ',' or '}'", text, pos)
        if n == 0 and (max_items is None or max_items > 0):
            raise ValueError(f"{path}: expected a non-empty JSON object keyed by question")
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e


def iter_jsonl(path: str):
    """(``"<path>: line N"``, row) for each non-blank line of a JSONL file, read lazily; a line that is not JSON
    is an error naming the file and line."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from e
    with f:
        for line_no, raw in enumerate(f, start=1):
            where = f"{path}: line {line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{where}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not JSON ({e.msg})") from e


def _require(q, key: str, where: str):
    if not isinstance(q, dict) or key not in q:
        raise ValueError(f"{where}: missing field '{key}'")
    return q[key]


def _option_list(raw, where: str, field_name: str = "MC_options") -> list[str]:
    if isinstance(raw, str):
        try:
            raw = ast.literal_eval(raw)  # a Python list literal, parsed, never evaluated as code
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{where}, field '{field_name}': not a list literal: {raw!r}") from e
    if not isinstance(raw, list) or not 2 <= len(raw) <= len(LETTERS):
        raise ValueError(f"{where}, field '{field_name}': need a list of 2 to 26 options, got {raw!r}")
    return [str(o) for o in raw]


def _counts_vector(values, options: list[str], where: str) -> np.ndarray | None:
    """Counts or shares ({option: value} zero-filled, or a list aligned with the options) as float64;
    None for an empty group. Negative or non-numeric values are errors naming the place."""
    if isinstance(values, dict):
        if not values:
            return None
        unknown = [k for k in values if k not in options]
        if unknown:
            raise ValueError(f"{where}: answers {unknown} are not among the options {options}")
        values = [values.get(o, 0.0) for o in options]
    if not isinstance(values, list) or len(values) != len(options):
        raise ValueError(f"{where}: need {len(options)} values, one per option, got {values!r}")
    try:
        v = np.array([float(x) for x in values], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: not a distribution: {values!r}") from e
    if not np.isfinite(v).all() or (v < 0).any():
        raise ValueError(f"{where}: values must be finite and non-negative, got {values!r}")
    return v


# --------------------------------------------------------------------------- OpinionQA


def read_info(path: str) -> dict[str, tuple[list[str], list[float]]]:
    """An OpinionQA ``info.csv``: {question key: (options in ``option_mapping`` order, ``option_ordinal``)}.
    The mapping's keys order the options (99 = "Refused" last); the ordinals cover the options before the
    refusal codes, in that order (e.g. ``[1, 2, 3, 4, 2.5]``: the fifth option sits between the second and third)."""
    out = {}
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not UTF-8 text") from None
    for line, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
        try:
            mapping = ast.literal_eval(row["option_mapping"])
            ordinal = [float(x) for x in ast.literal_eval(row["option_ordinal"])]
        except (KeyError, ValueError, SyntaxError, TypeError) as e:
            raise ValueError(f"{path}: line {line}: unreadable option_mapping / option_ordinal") from e
        out[row["key"]] = ([str(mapping[k]) for k in sorted(mapping)], ordinal)
    return out


def _strip_quotes(s: str) -> str:
    return s.strip().strip('"').strip("'").strip()


def _resolve_options(mc: list[str], keys: list[str], info) -> tuple[list[str], str | None]:
    """The options of one OpinionQA question and, when they differ from ``MC_options``, why."""
    if info is not None and set(keys) <= set(info[0]):
        return list(info[0]), None if info[0] == mc else "options from info.csv"
    if set(keys) <= set(mc):
        if len(set(mc)) < len(mc):
            return list(dict.fromkeys(mc)), "duplicate options merged"
        return mc, None
    clean = list(dict.fromkeys(_strip_quotes(o) for o in mc))
    if set(keys) <= set(clean):
        return clean, "options with stray quotes"

    # MC_options split at commas: order the answer keys by the first MC option each one starts with
    def position(k: str) -> int:
        return next((i for i, o in enumerate(clean) if o and k.startswith(o)), len(clean))

    return sorted(keys, key=position), "options split at commas (taken from the answer keys)"


def _ordinals(options: list[str], info) -> list[float | None]:
    """Each option's ordinal from info.csv, else its position; refusals get none."""
    if info is not None and options == info[0] and len(info[1]) <= len(options):
        vals = list(info[1]) + [None] * (len(options) - len(info[1]))
        return [None if o.strip().lower() in REFUSALS else v for o, v in zip(options, vals)]
    pos, out = 0, []
    for o in options:
        if o.strip().lower() in REFUSALS:
            out.append(None)
        else:
            out.append(float(pos))
            pos += 1
    return out


def load_opinionqa(path: str, *, max_questions: int | None = None, info_files=()) -> list[Item]:
    """OpinionQA ``<ATTRIBUTE>_data.json``: {qid: {MC_options, question_text, <group>: {option: count}}}.
    Reads ``info.csv`` next to the file (and any ``info_files``) for option order and ordinals."""
    info: dict = {}
    for p in [os.path.join(os.path.dirname(path), "info.csv"), *info_files]:
        if os.path.isfile(p):
            info.update(read_info(p))
    counts = _Counts(path)
    items = []
    for qid, q in _iter_json(path, max_questions):
        where = f"{path}: question {qid}"
        mc = _option_list(_require(q, "MC_options", where), where)
        text = str(_require(q, "question_text", where))
        groups = {g: c for g, c in q.items() if g not in ("MC_options", "question_text")}
        keys = list(dict.fromkeys(k for c in groups.values() if isinstance(c, dict) for k in c))
        options, why = _resolve_options(mc, keys, info.get(qid))
        if why:
            counts.add(why)
        ordinals = _ordinals(options, info.get(qid))
        if qid not in info:
            counts.add("questions without info.csv ordinals (list positions used)")
        for group, c in groups.items():
            v = _counts_vector(c, options, f"{where}, group {group}")
            if v is None or v.sum() <= 0:
                counts.add("empty or all-zero groups skipped")
                continue
            items.append(Item("opinionqa", qid, text, options, group, v / v.sum(), ordinals, {"path": path}))
    counts.report()
    return items


# --------------------------------------------------------------------------- NYT book opinions


def load_nytimes(path: str, *, max_questions: int | None = None, **_) -> list[Item]:
    """NYT book opinions ``data.json``: {title: {MC_options, genre, summary, <group>: {option: count}}}.
    The options (a 1-4 likelihood scale) are ordered."""
    counts = _Counts(path)
    items = []
    for title, q in _iter_json(path, max_questions):
        where = f"{path}: book {title!r}"
        options = _option_list(_require(q, "MC_options", where), where)
        if len(set(options)) < len(options):
            counts.add("duplicate options merged")
            options = list(dict.fromkeys(options))
        context = {"genre": str(q.get("genre", "")), "summary": str(q.get("summary", "")), "path": path}
        ordinals = _ordinals(options, None)
        for group, c in q.items():
            if group in ("MC_options", "genre", "summary"):
                continue
            v = _counts_vector(c, options, f"{where}, group {group}")
            if v is None or v.sum() <= 0:
                counts.add("empty or all-zero groups skipped")
                continue
            items.append(Item("nytimes", title, title, options, group, v / v.sum(), ordinals, context))
    counts.report()
    return items


# --------------------------------------------------------------------------- Global Values


def load_globalvalues(path: str, *, max_questions: int | None = None, **_) -> list[Item]:
    """Global Values ``data.json``: {question: {<country>: [share, ...], MC_options: "['a', ...]",
    countries: [...]}}. Unordered options; shares are renormalised (a warning counts those off by > 1%)."""
    counts = _Counts(path)
    items = []
    for question, q in _iter_json(path, max_questions):
        where = f"{path}: question {question[:60]!r}"
        options = _option_list(_require(q, "MC_options", where), where)
        if len(set(options)) < len(options):
            counts.add("questions with duplicate options (kept apart by letter)")
        countries = q.get("countries") or [c for c in q if c not in ("MC_options", "countries")]
        for rank, c in enumerate(countries):
            v = _counts_vector(_require(q, c, where), options, f"{where}, country {c}")
            if v is None or v.sum() <= 0:
                counts.add("empty or all-zero groups skipped")
                continue
            if abs(v.sum() - 1.0) > 0.01:
                counts.add("shares not summing to 1 (renormalised)")
            items.append(Item("globalvalues", question, question, options, c, v / v.sum(), None, {"path": path}, rank))
    counts.report()
    return items


# --------------------------------------------------------------------------- our JSONL


def load_jsonl(path: str, *, max_questions: int | None = None, **_) -> list[Item]:
    """One JSON row per (question, group): ``question``, ``options``, ``group``, ``distribution`` (a list
    aligned with the options, or {option: value}); optional ``dataset`` (default: the file name), ``qid``
    (default: the question text), ``ordinal`` (true: the options are ordered) or ``ordinals`` (a number or
    null per option). Rows are read until ``max_questions`` distinct questions are complete."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    items, seen = [], set()
    for where, row in iter_jsonl(path):
        for key in ("question", "options", "group", "distribution"):
            _require(row, key, where)
        qid = str(row.get("qid", row["question"]))
        if qid not in seen and max_questions is not None and len(seen) >= max_questions:
            break
        seen.add(qid)
        options = _option_list(row["options"], where, "options")
        if len(set(options)) < len(options):
            raise ValueError(f"{where}, field 'options': duplicate options {options}")
        v = _counts_vector(row["distribution"], options, f"{where}, field 'distribution'")
        if v is None or v.sum() <= 0:
            raise ValueError(f"{where}, field 'distribution': empty or all zero")
        ordinals = row.get("ordinals")
        if ordinals is not None and (not isinstance(ordinals, list) or len(ordinals) != len(options)):
            raise ValueError(f"{where}, field 'ordinals': need one number (or null) per option")
        if ordinals is not None:
            bad = [o for o in ordinals if o is not None and (isinstance(o, bool) or not isinstance(o, (int, float))
                                                             or not math.isfinite(o))]  # fmt: skip
            if bad:
                raise ValueError(f"{where}, field 'ordinals': {bad[0]!r} is not a number (or null)")
            ordinals = [None if o is None else float(o) for o in ordinals]
        if ordinals is None and row.get("ordinal", False):
            ordinals = _ordinals(options, None)
        dataset = str(row.get("dataset", os.path.splitext(os.path.basename(path))[0]))
        items.append(
            Item(dataset, qid, str(row["question"]), options, str(row["group"]), v / v.sum(),
                 ordinals, {"path": path})
        )  # fmt: skip
    if not items:
        raise ValueError(f"{path}: no rows")
    return items


LOADERS = {
    "opinionqa": load_opinionqa,
    "nytimes": load_nytimes,
    "globalvalues": load_globalvalues,
    "jsonl": load_jsonl,
}
ALIASES = {"globalopinions": "globalvalues", "global_values": "globalvalues", "oqa": "opinionqa"}


def detect_format(path: str) -> str:
    """The format of a file, from its name (``.jsonl``) or the fields of its first question."""
    if path.endswith(".jsonl"):
        return "jsonl"
    first = next(_iter_json(path, 1))[1]
    if not isinstance(first, dict):
        raise ValueError(f"{path}: not a benchmark file (each question must be a JSON object)")
    if "question_text" in first:
        return "opinionqa"
    if "countries" in first or isinstance(first.get("MC_options"), str):
        return "globalvalues"
    if "genre" in first or "summary" in first:
        return "nytimes"
    raise ValueError(f"{path}: unknown layout; pass --format ({', '.join(FORMATS)})")


def load_benchmark(path: str, fmt: str = "auto", *, max_questions: int | None = None, info_files=()) -> list[Item]:
    """Read one benchmark file (``fmt="auto"`` detects the format); only its first ``max_questions``
    questions. ``info_files``: extra OpinionQA ``info.csv`` files for option order and ordinals."""
    fmt = ALIASES.get(fmt, fmt)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in LOADERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    return LOADERS[fmt](path, max_questions=max_questions, info_files=info_files)


def select_groups(items: list[Item], groups: str | list[str] = "paper") -> list[Item]:
    """``"paper"``: the paper's groups (Democrat / Republican, Male / Female, Black / White for OpinionQA;
    the four NYT groups; each Global Values question's first three countries; every group of other
    datasets). ``"all"``: every group. A list: those group names."""
    if groups == "all":
        return list(items)
    if groups == "paper":

        def keep(it: Item) -> bool:
            if it.dataset in PAPER_GROUPS:
                return it.group in PAPER_GROUPS[it.dataset]
            return it.rank is None or it.rank < 3

        return [it for it in items if keep(it)]
    wanted = set(groups)
    return [it for it in items if it.group in wanted]
