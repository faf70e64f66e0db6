"""The distributional-alignment benchmark (Meister, Guestrin, Hashimoto, "Benchmarking Distributional
Alignment of Large Language Models", arXiv 2411.05403, NAACL 2025): can a model match the distribution of
answers a demographic group gives to a multiple-choice question?

Steering: ``none``, ``persona`` ("answer as a group of <group> would"), ``fewshot`` (persona + the k = 5 most
similar questions, by TF-IDF cosine, shown with the group's true distribution). Expression: ``logp``
(next-token probabilities of the option letters), ``sequence`` (N = 30 sampled letters), ``verbalize`` (a
JSON distribution). Metric: total variation distance per (group, question), averaged over questions, then
groups, then (equal weight) datasets, with a 1000-sample bootstrap interval over questions. Loaders read the
user's copy of the benchmark's data (it may not be redistributed): OpinionQA ``<GROUP>_data.json``, NYT
book opinions ``data.json``, GlobalOpinionQA ``data.json``, and a JSONL format of our own.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import os
import re
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from dora.eval.metrics import js_similarity, normalize, tvd, wasserstein_representativeness

__all__ = [
    "Item",
    "load_benchmark",
    "build_prompt",
    "similar_questions",
    "parse_sequence",
    "parse_verbalized",
    "logp_distribution",
    "ModelRunner",
    "predict",
    "score",
    "discretisation_floor",
    "baselines",
    "evaluate",
    "markdown",
]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
METHODS = ("logp", "sequence", "verbalize")
STEERINGS = ("none", "persona", "fewshot")
NON_ORDINAL = ("refused", "don't know", "dk/refused", "no answer")  # left out of the ordinal metric


@dataclass
class Item:
    """One (dataset, group, question) with the group's answer distribution over ``options``."""

    dataset: str
    qid: str
    question: str
    options: list[str]
    group: str
    distribution: np.ndarray
    ordinal: bool = False


# --------------------------------------------------------------------------- loaders


def _require(q, key: str, where: str):
    if not isinstance(q, dict) or key not in q:
        raise ValueError(f"{where}: missing field '{key}'")
    return q[key]


def _options(raw, where: str) -> list[str]:
    if isinstance(raw, str):
        try:
            raw = ast.literal_eval(raw)  # a Python list literal, parsed, never evaluated as code
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{where}, field 'MC_options': not a list literal: {raw!r}") from e
    if not isinstance(raw, list) or not 2 <= len(raw) <= len(LETTERS):
        raise ValueError(f"{where}, field 'MC_options': need a list of 2 to 26 options, got {raw!r}")
    return [str(o) for o in raw]


def _dist(values, options: list[str], where: str) -> np.ndarray:
    """Counts or shares ({option: value}, zero-filled, or a list aligned with the options), normalised."""
    if isinstance(values, dict):
        unknown = [k for k in values if k not in options]
        if unknown:
            raise ValueError(f"{where}: answers {unknown} are not among the options {options}")
        values = [values.get(o, 0.0) for o in options]
    if not isinstance(values, list) or len(values) != len(options):
        raise ValueError(f"{where}: need {len(options)} values, one per option, got {values!r}")
    try:
        return normalize([float(v) for v in values])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: not a distribution: {values!r}") from e


def _read_json(path: str) -> dict:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON object keyed by question")
    return data


def load_opinionqa(path: str) -> list[Item]:
    """OpinionQA subset ``<GROUP>_data.json``: {qid: {MC_options, question_text, <group>: {option: count}}}.
    The options are ordered (refusals are left out of the ordinal metric)."""
    attribute = os.path.basename(path).split("_data.json")[0]
    items = []
    for qid, q in _read_json(path).items():
        where = f"{path}: question {qid}"
        options = _options(_require(q, "MC_options", where), where)
        text = _require(q, "question_text", where)
        for group, counts in q.items():
            if group in ("MC_options", "question_text"):
                continue
            d = _dist(counts, options, f"{where}, group {group}")
            items.append(Item(f"opinionqa_{attribute}", qid, text, options, group, d, ordinal=True))
    return items


def load_nytimes(path: str) -> list[Item]:
    """NYT book opinions ``data.json``: {title: {MC_options, genre, summary, <group>: {option: count}}}."""
    items = []
    for title, q in _read_json(path).items():
        where = f"{path}: book {title!r}"
        options = _options(_require(q, "MC_options", where), where)
        question = (
            f"Book Title: {title}\nBook Genre: {q.get('genre', '')}\nBook Summary: {q.get('summary', '')}\n"
            "Given the information about this book, how likely is a reader to read it?"
        )
        for group, counts in q.items():
            if group in ("MC_options", "genre", "summary"):
                continue
            d = _dist(counts, options, f"{where}, group {group}")
            items.append(Item("nytimes", title, question, options, group, d, ordinal=True))
    return items


def load_globalopinions(path: str) -> list[Item]:
    """GlobalOpinionQA ``data.json``: {question: {<country>: [share, ...], MC_options: "['a', ...]",
    countries: [...]}}. The options are not treated as ordered."""
    items = []
    for k, (question, q) in enumerate(_read_json(path).items()):
        where = f"{path}: question {k}"
        options = _options(_require(q, "MC_options", where), where)
        countries = q.get("countries") or [c for c in q if c not in ("MC_options", "countries")]
        for c in countries:
            d = _dist(_require(q, c, where), options, f"{where}, country {c}")
            items.append(Item("globalopinions", str(k), question, options, c, d, ordinal=False))
    return items


def load_jsonl(path: str) -> list[Item]:
    """Our format: one JSON row per (question, group) with ``question``, ``options``, ``group``,
    ``distribution`` (a list aligned with the options, or {option: value}); optional ``dataset`` (default:
    the file name), ``qid`` (default: the question text), ``ordinal`` (default false)."""
    items = []
    with open(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: row {i}: not JSON ({e})") from e
            for key in ("question", "options", "group", "distribution"):
                _require(row, key, f"{path}: row {i}")
            options = _options(row["options"], f"{path}: row {i}")
            d = _dist(row["distribution"], options, f"{path}: row {i}, field 'distribution'")
            items.append(
                Item(
                    str(row.get("dataset", os.path.basename(path))),
                    str(row.get("qid", row["question"])),
                    str(row["question"]),
                    options,
                    str(row["group"]),
                    d,
                    bool(row.get("ordinal", False)),
                )
            )
    if not items:
        raise ValueError(f"{path}: no rows")
    return items


LOADERS = {
    "opinionqa": load_opinionqa,
    "nytimes": load_nytimes,
    "globalopinions": load_globalopinions,
    "jsonl": load_jsonl,
}


def detect_format(path: str) -> str:
    if path.endswith(".jsonl"):
        return "jsonl"
    first = next(iter(_read_json(path).values()))
    if not isinstance(first, dict):
        raise ValueError(f"{path}: not a benchmark file (values must be objects)")
    if "question_text" in first:
        return "opinionqa"
    if "countries" in first or isinstance(first.get("MC_options"), str):
        return "globalopinions"
    if "genre" in first or "summary" in first:
        return "nytimes"
    raise ValueError(f"{path}: unknown layout; pass --format ({', '.join(LOADERS)})")


def load_benchmark(path: str, fmt: str = "auto") -> list[Item]:
    """Read one file in the benchmark's formats; ``fmt="auto"`` detects the format from the content."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in LOADERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(LOADERS)}")
    return LOADERS[fmt](path)


# --------------------------------------------------------------------------- prompts


def options_block(options: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def persona(item: Item) -> str:
    who = f"people from {item.group}" if item.dataset == "globalopinions" else f"{item.group} people"
    return f"Answer as a group of {who} would."


INSTRUCTIONS = {
    "logp": "Answer with the letter of one option.",
    "sequence": "Write {n} answers, one letter each, separated by spaces, as {n} different people would.",
    "verbalize": "Give the share of people choosing each option as JSON, e.g. {example}.",
}


def _instruction(method: str, options: list[str], samples: int) -> str:
    example = json.dumps({LETTERS[i]: round(1 / len(options), 2) for i in range(len(options))})
    return INSTRUCTIONS[method].format(n=samples, example=example)


def _shot_answer(method: str, item: Item, samples: int, rng: np.random.Generator) -> str:
    """A few-shot example's true distribution, written in the expression format. Log-p answers with one
    letter, so the distribution goes in a context line (the paper's wording) before the argmax letter."""
    letters = LETTERS[: len(item.options)]
    if method == "verbalize":
        return json.dumps({letters[i]: round(float(p), 2) for i, p in enumerate(item.distribution)})
    if method == "sequence":
        return " ".join(rng.choice(list(letters), samples, p=item.distribution))
    return letters[int(np.argmax(item.distribution))]


def _shot_context(item: Item) -> str:
    shares = ", ".join(f"'{o}' be {round(100 * p)}%" for o, p in zip(item.options, item.distribution))
    return f"Context: let the probability that the group answers with {shares}."


def build_prompt(
    item: Item, method: str, steering: str, shots: list[Item], samples: int = 30, seed: int = 0
) -> str:
    """The prompt of one item: [persona] [few-shot examples] question, lettered options, instruction."""
    if method not in METHODS or steering not in STEERINGS:
        raise ValueError(f"unknown method {method!r} or steering {steering!r}")
    parts = [persona(item)] if steering in ("persona", "fewshot") else []
    rng = np.random.default_rng(seed)
    for s in shots if steering == "fewshot" else []:
        context = _shot_context(s) + "\n" if method == "logp" else ""
        parts.append(
            f"{context}Question: {s.question}\n{options_block(s.options)}\n"
            f"{_instruction(method, s.options, samples)}\nAnswer: {_shot_answer(method, s, samples, rng)}"
        )
    parts.append(
        f"Question: {item.question}\n{options_block(item.options)}\n"
        f"{_instruction(method, item.options, samples)}\nAnswer:"
    )
    return "\n\n".join(parts)


def similar_questions(items: list[Item], k: int = 5) -> dict[int, list[int]]:
    """For each item, the k most similar other questions (TF-IDF cosine, ties by position) of the same
    dataset and group; the question itself is never among them."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    out: dict[int, list[int]] = {}
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, it in enumerate(items):
        by_key.setdefault((it.dataset, it.group), []).append(i)
    for idx in by_key.values():
        texts = [items[i].question for i in idx]
        try:
            x = TfidfVectorizer().fit_transform(texts)
            sim = (x @ x.T).toarray()
        except ValueError:  # no word in any question: no similarity, keep file order
            sim = np.zeros((len(idx), len(idx)))
        for row, i in enumerate(idx):
            order = np.argsort(-sim[row], kind="stable")
            out[i] = [idx[j] for j in order if items[idx[j]].qid != items[i].qid][:k]
    return out


# --------------------------------------------------------------------------- expression methods


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


def logp_distribution(next_token_probs: np.ndarray, letter_ids: list[list[int]]) -> tuple[np.ndarray, float]:
    """Renormalised next-token probabilities of the option letters, and the mass off the options."""
    mass = np.array([float(np.sum(next_token_probs[ids])) for ids in letter_ids], dtype=np.float64)
    total = float(mass.sum())
    if total <= 0:
        return np.full(len(letter_ids), 1.0 / len(letter_ids)), 1.0
    return mass / total, max(0.0, 1.0 - total)


def parse_sequence(text: str, n_options: int, samples: int | None = None) -> tuple[np.ndarray | None, float]:
    """Shares of the valid letters among the first ``samples`` items of the first line, and the
    format-failure rate (the share of items that are not an option letter). None when none is valid."""
    lines = text.strip().splitlines()
    tokens = [t for t in re.split(r"[\s,;]+", lines[0] if lines else "") if t][:samples]
    if not tokens:
        return None, 1.0
    letters = [t.strip(".()'\"").upper() for t in tokens]
    valid = [t for t in letters if len(t) == 1 and t in LETTERS[:n_options]]
    failure = 1.0 - len(valid) / len(tokens)
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


def parse_verbalized(text: str, options: list[str] | int) -> np.ndarray | None:
    """The first ``{...}`` object of the model's text, read with ``json`` (never evaluated): keys are option
    letters or option texts, values fractions or percents (``0.3``, ``30%``, ``"30%"``); renormalised. None
    when there is no such object, a value is not a non-negative number, or nothing falls on an option."""
    if isinstance(options, int):
        options = list(LETTERS[:options])
    m = re.search(r"\{[^{}]*\}", text)
    if not m:
        return None
    raw = re.sub(r"(?<![\w\"'.])([0-9]*\.?[0-9]+\s*%)", r'"\1"', m.group(0))  # bare 30% -> "30%"
    obj = None
    for candidate in (raw, re.sub(r"'", '"', raw), re.sub(r"([{,]\s*)([A-Za-z])\s*:", r'\1"\2":', raw)):
        try:
            obj = json.loads(candidate)
            break
        except json.JSONDecodeError:
            continue
    if obj is None:  # single quotes and bare keys together, as in {'A': '45%', D: '11%'}
        try:
            obj = json.loads(re.sub(r"([{,]\s*)([A-Za-z])\s*:", r'\1"\2":', raw.replace("'", '"')))
        except json.JSONDecodeError:
            return None
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


# --------------------------------------------------------------------------- the model side


class ModelRunner:
    """Batched next-token probabilities and generations from a local causal LM (a folder, a Hub id, a LoRA
    adapter folder written by ``dora train``). ``chat_template`` wraps each prompt as a user message."""

    def __init__(
        self,
        model_name_or_path: str,
        batch_size: int = 16,
        device: str | None = None,
        chat_template: bool = False,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = "auto" if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_name_or_path, dtype=dtype)
        self.model.to(self.device).eval()
        self.batch_size, self.chat_template = batch_size, chat_template

    def _encode(self, prompts: list[str]):
        if self.chat_template:
            prompts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in prompts
            ]
        enc = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=not self.chat_template
        )
        return enc.to(self.device)

    def next_token_probs(self, prompts: list[str]) -> np.ndarray:
        out = []
        for i in tqdm(range(0, len(prompts), self.batch_size), desc="next-token probs", leave=False):
            enc = self._encode(prompts[i : i + self.batch_size])
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # left padding
            with self.torch.no_grad():
                logits = self.model(**enc, position_ids=positions).logits[:, -1].float()
            out.append(self.torch.softmax(logits, -1).cpu().numpy())
        return np.concatenate(out)

    def generate(self, prompts: list[str], max_new_tokens: int, sample: bool, seed: int = 0) -> list[str]:
        """Pure sampling (temperature 1, no top-k / top-p) when ``sample``, else greedy."""
        self.torch.manual_seed(seed)
        kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if sample else dict(do_sample=False)
        texts = []
        for i in tqdm(range(0, len(prompts), self.batch_size), desc="generating", leave=False):
            enc = self._encode(prompts[i : i + self.batch_size])
            with self.torch.no_grad():
                gen = self.model.generate(
                    **enc, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, **kw
                )
            texts += self.tokenizer.batch_decode(
                gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
            )
        return texts


def predict(
    runner,
    items: list[Item],
    method: str,
    steering: str,
    *,
    samples: int = 30,
    seed: int = 0,
    shots: dict[int, list[int]] | None = None,
) -> tuple[list[np.ndarray], list[float], list[str | None]]:
    """The model's distribution for each item, a per-item failure number (the mass off the options for
    logp, the invalid share for sequence, 1.0 for an unreadable verbalized answer) and the raw text.
    A failed item is scored as the uniform distribution: counted, never a crash."""
    shots = shots or {}
    prompts = [
        build_prompt(it, method, steering, [items[j] for j in shots.get(i, [])], samples, seed + i)
        for i, it in enumerate(items)
    ]
    uniform = [np.full(len(it.options), 1.0 / len(it.options)) for it in items]
    if method == "logp":
        probs = runner.next_token_probs(prompts)
        cache: dict[int, list[list[int]]] = {}
        dists, failures = [], []
        for it, p in zip(items, probs):
            n = len(it.options)
            ids = cache.setdefault(n, letter_token_ids(runner.tokenizer, n))
            d, off = logp_distribution(p, ids)
            dists.append(d)
            failures.append(off)
        return dists, failures, [None] * len(items)
    if method == "sequence":
        texts = runner.generate(prompts, max_new_tokens=3 * samples + 4, sample=True, seed=seed)
        parsed = [parse_sequence(t, len(it.options), samples) for it, t in zip(items, texts)]
        return (
            [d if d is not None else u for (d, _), u in zip(parsed, uniform)],
            [f for _, f in parsed],
            texts,
        )
    if method == "verbalize":
        longest = max(len(it.options) for it in items)
        texts = runner.generate(prompts, max_new_tokens=16 + 12 * longest, sample=False, seed=seed)
        parsed = [parse_verbalized(t, it.options) for it, t in zip(items, texts)]
        dists = [d if d is not None else u for d, u in zip(parsed, uniform)]
        return dists, [0.0 if d is not None else 1.0 for d in parsed], texts
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


# --------------------------------------------------------------------------- scoring


def _ordinal_pair(item: Item, p: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    keep = [i for i, o in enumerate(item.options) if o.strip().lower() not in NON_ORDINAL]
    if not item.ordinal or len(keep) < 2 or item.distribution[keep].sum() <= 0 or p[keep].sum() <= 0:
        return None
    return item.distribution[keep], p[keep]


def aggregate(items: list[Item], values: list[float | None]) -> tuple[dict[str, float], float | None]:
    """Per dataset, the mean over groups of the mean over questions; overall, the mean over datasets."""
    by_ds: dict[str, dict[str, list[float]]] = {}
    for it, v in zip(items, values):
        if v is not None:
            by_ds.setdefault(it.dataset, {}).setdefault(it.group, []).append(v)
    means = {ds: float(np.mean([np.mean(v) for v in g.values()])) for ds, g in sorted(by_ds.items())}
    return means, (float(np.mean(list(means.values()))) if means else None)


def bootstrap_aggregate(
    items: list[Item], values: list[float], *, samples: int = 1000, seed: int = 0
) -> list[float] | None:
    """95% percentile interval of ``aggregate``'s overall value when the questions of each dataset are
    resampled with replacement (a question brings all its groups along). For each dataset in sorted order,
    the resampled multiplicities of its Q questions (in order of first appearance) are
    ``rng.multinomial(Q, [1/Q] * Q, size=samples)``."""
    if samples <= 0 or not items:
        return None
    rng = np.random.default_rng(seed)
    per_dataset = []
    for ds in sorted({it.dataset for it in items}):
        idx = [i for i, it in enumerate(items) if it.dataset == ds]
        qids = list(dict.fromkeys(items[i].qid for i in idx))
        groups = list(dict.fromkeys(items[i].group for i in idx))
        v = np.zeros((len(qids), len(groups)))
        m = np.zeros((len(qids), len(groups)))
        for i in idx:
            q, g = qids.index(items[i].qid), groups.index(items[i].group)
            v[q, g] += values[i]
            m[q, g] += 1
        counts = rng.multinomial(len(qids), np.full(len(qids), 1.0 / len(qids)), size=samples)
        num, den = counts @ v, counts @ m  # [samples, groups]
        with np.errstate(invalid="ignore", divide="ignore"):
            per_dataset.append(np.nanmean(np.where(den > 0, num / den, np.nan), axis=1))
    overall = np.mean(per_dataset, axis=0)
    return [float(np.quantile(overall, 0.025)), float(np.quantile(overall, 0.975))]


def score(items: list[Item], predictions: list[np.ndarray], *, samples: int = 1000, seed: int = 0) -> dict:
    """TVD, 1 - JS distance and the ordinal Wasserstein representativeness (ordered items only), each
    aggregated per dataset and overall, with bootstrap intervals over questions."""
    values: dict[str, list] = {"tvd": [], "js": [], "wasserstein": []}
    for it, p in zip(items, predictions):
        p = np.asarray(p, dtype=np.float64)
        if p.shape != it.distribution.shape:
            raise ValueError(
                f"question {it.qid}, group {it.group}: {len(p)} values for {len(it.options)} options"
            )
        pair = _ordinal_pair(it, p)
        values["tvd"].append(tvd(it.distribution, p))
        values["js"].append(js_similarity(it.distribution, p))
        values["wasserstein"].append(None if pair is None else wasserstein_representativeness(*pair))
    result = {}
    for key, vals in values.items():
        by_ds, overall = aggregate(items, vals)
        kept = [(it, v) for it, v in zip(items, vals) if v is not None]
        ci = bootstrap_aggregate([it for it, _ in kept], [v for _, v in kept], samples=samples, seed=seed)
        result[key] = {"overall": overall, "ci95": ci, "by_dataset": by_ds}
    result["per_item"] = values["tvd"]
    return result


def discretisation_floor(p, n: int = 30, *, exact_limit: int = 200_000, draws: int = 20_000, seed: int = 0):
    """E[TVD(p, empirical distribution of n draws from p)]: exact over every composition of n into the
    options when there are at most ``exact_limit`` of them, else a seeded Monte Carlo of ``draws`` draws."""
    from scipy.special import gammaln, xlogy

    p = normalize(p)
    k = len(p)
    if math.comb(n + k - 1, k - 1) <= exact_limit:
        bars = np.array(list(itertools.combinations(range(n + k - 1), k - 1)), dtype=np.int64).reshape(
            -1, k - 1
        )
        edges = np.concatenate(
            [np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), n + k - 1)], axis=1
        )
        counts = (
            np.diff(edges, axis=1) - 1
        )  # stars and bars: every vector of k non-negative counts summing to n
        logpmf = gammaln(n + 1) - gammaln(counts + 1).sum(1) + xlogy(counts, p).sum(1)
        return float(np.sum(np.exp(logpmf) * 0.5 * np.abs(counts / n - p).sum(1)))
    freq = np.random.default_rng(seed).multinomial(n, p, size=draws) / n
    return float(np.mean(0.5 * np.abs(freq - p).sum(axis=1)))


def baselines(items: list[Item], *, samples: int = 30, seed: int = 0) -> dict:
    """TVD of the uniform distribution, of the true majority answer (one-hot), and the discretisation floor
    of ``samples`` samples, aggregated like the model's scores (overall and per dataset)."""
    values = {
        "uniform": [tvd(it.distribution, np.ones(len(it.options))) for it in items],
        "majority": [
            tvd(it.distribution, np.eye(len(it.options))[int(np.argmax(it.distribution))]) for it in items
        ],
        f"floor_n{samples}": [discretisation_floor(it.distribution, samples, seed=seed) for it in items],
    }
    out = {}
    for key, vals in values.items():
        by_ds, overall = aggregate(items, vals)
        out[key] = {"overall": overall, "by_dataset": by_ds}
    return out


def check_names(methods, steerings) -> None:
    """A ValueError for an unknown or missing method or steering name."""
    for kind, names, known in (("method", methods, METHODS), ("steering", steerings, STEERINGS)):
        if not names:
            raise ValueError(f"no {kind} given; choose from {', '.join(known)}")
        for n in names:
            if n not in known:
                raise ValueError(f"unknown {kind} {n!r}; choose from {', '.join(known)}")


def evaluate(
    runner,
    items: list[Item],
    *,
    methods=METHODS,
    steerings=STEERINGS,
    samples: int = 30,
    seed: int = 0,
    bootstrap: int = 1000,
    k_shots: int = 5,
) -> tuple[dict, list[dict]]:
    """Every (method, steering): scores and failure rates; then baselines and the knowledge-to-simulation
    gap TVD(sequence or verbalize) / TVD(logp) - 1 per steering. Returns (report, per-item predictions)."""
    check_names(methods, steerings)
    if not items:
        raise ValueError("no benchmark items to evaluate")
    shots = similar_questions(items, k_shots) if "fewshot" in steerings else {}
    results, rows = {}, []
    for steering, method in tqdm(list(itertools.product(steerings, methods)), desc="distalign"):
        preds, failures, texts = predict(
            runner, items, method, steering, samples=samples, seed=seed, shots=shots
        )
        r = score(items, preds, samples=bootstrap, seed=seed)
        per_item = r.pop("per_item")
        r["failure_rate" if method != "logp" else "off_option_mass"] = float(np.mean(failures))
        results[f"{method}/{steering}"] = r
        for it, p, f, t, v in zip(items, preds, failures, texts, per_item):
            rows.append({
                "method": method, "steering": steering, "dataset": it.dataset, "qid": it.qid,
                "group": it.group, "truth": it.distribution.tolist(), "prediction": np.asarray(p).tolist(),
                "tvd": v, "failure": f, "text": t,
            })  # fmt: skip
    for steering in steerings:
        base = results.get(f"logp/{steering}")
        for method in ("sequence", "verbalize"):
            r = results.get(f"{method}/{steering}")
            if base and r and base["tvd"]["overall"]:
                r["knowledge_to_simulation_gap"] = r["tvd"]["overall"] / base["tvd"]["overall"] - 1.0
    report = {
        "results": results,
        "baselines": baselines(items, samples=samples, seed=seed),
        "n_items": len(items),
        "n_questions": len({(it.dataset, it.qid) for it in items}),
        "datasets": sorted({it.dataset for it in items}),
    }
    return report, rows


def markdown(report: dict) -> str:
    """Markdown tables: overall scores, TVD per dataset, baselines, the knowledge-to-simulation gap."""
    datasets = report["datasets"]
    lines = [
        "| method / steering | TVD ↓ | 95% CI | 1 − JS ↑ | Wasserstein repr. ↑ | failures | K→S gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in report["results"].items():
        ci = r["tvd"]["ci95"]
        w = r["wasserstein"]["overall"]
        gap = r.get("knowledge_to_simulation_gap")
        lines.append(
            f"| {key} | {r['tvd']['overall']:.3f} | {ci[0]:.3f}–{ci[1]:.3f} | {r['js']['overall']:.3f} "
            f"| {'–' if w is None else f'{w:.3f}'} | {r.get('failure_rate', r.get('off_option_mass')):.3f} "
            f"| {'–' if gap is None else f'{gap:+.3f}'} |"
        )
    lines += ["", "TVD per dataset:", "", "| method / steering | " + " | ".join(datasets) + " |"]
    lines.append("|---|" + "---|" * len(datasets))
    rows = [(k, r["tvd"]["by_dataset"]) for k, r in report["results"].items()]
    rows += [(f"baseline: {k}", b["by_dataset"]) for k, b in report["baselines"].items()]
    for key, by_ds in rows:
        cells = [f"{by_ds[d]:.3f}" if d in by_ds else "–" for d in datasets]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Baselines (TVD): " + ", ".join(f"{k} {b['overall']:.3f}" for k, b in report["baselines"].items()),
    ]
    return "\n".join(lines)
