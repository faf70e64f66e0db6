"""Preference data: loading, validation, tokenisation and the collator.

Rows follow TRL's conventions (DESIGN.md "Data"):
- pairwise: ``prompt``, ``chosen``, ``rejected`` (strings, or chat message lists);
- listwise: ``prompt``, ``responses`` (list), ``scores`` (list, higher is better).
Optional: ``source`` (or ``chosen_source`` / ``rejected_source``; listwise ``sources``), ``target_prob(s)``,
``dora_weight``, ``group``. Validation raises a ValueError that names the row and the column.

Tokenisation matches TRL 1.16's DPOTrainer: a plain-text completion gets the EOS token appended; the
completion starts where the tokenised prompt and prompt + completion diverge; chat messages go through the
tokenizer's chat template (the prompt with ``add_generation_prompt=True``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "load_rows",
    "validate_rows",
    "tokenize_row",
    "prepare_dataset",
    "PreferenceCollator",
    "is_listwise",
]


# --------------------------------------------------------------------------- loading


def load_rows(path_or_id: str, split: str = "train"):
    """A ``datasets.Dataset`` from a local file (jsonl, json, parquet, csv), a folder written by
    ``save_to_disk``, or a Hub dataset id."""
    import datasets

    if os.path.isdir(path_or_id):
        if os.path.exists(os.path.join(path_or_id, "dataset_info.json")) or os.path.exists(
            os.path.join(path_or_id, "state.json")
        ):
            ds = datasets.load_from_disk(path_or_id)
            return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        return datasets.load_dataset(path_or_id, split=split)
    if os.path.isfile(path_or_id):
        ext = path_or_id.rsplit(".", 1)[-1].lower()
        builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}.get(ext)
        if builder is None:
            raise ValueError(f"{path_or_id}: unsupported file type .{ext} (use jsonl, json, parquet or csv)")
        return datasets.load_dataset(builder, data_files=path_or_id, split="train")
    return datasets.load_dataset(path_or_id, split=split)


def is_listwise(columns) -> bool:
    return "responses" in columns


def split_implicit_prompt(chosen, rejected) -> tuple:
    """(prompt, chosen, rejected) from rows whose prompt is the shared start of both responses, as in
    Anthropic HH. Text: the prompt ends after the last "Assistant:" of the common prefix (else at its last
    space); chat messages: the messages both share."""
    if isinstance(chosen, list):
        k = 0
        while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
            k += 1
        return chosen[:k], chosen[k:], rejected[k:]
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    prefix = chosen[:n]
    cut = prefix.rfind("Assistant:")
    cut = cut + len("Assistant:") if cut >= 0 else prefix.rfind(" ") + 1
    return chosen[:cut], chosen[cut:], rejected[cut:]


def add_implicit_prompt(dataset):
    """Add a ``prompt`` column to pairwise rows that have none (``chosen``/``rejected`` hold the dialogue)."""
    if "prompt" in dataset.column_names or not {"chosen", "rejected"} <= set(dataset.column_names):
        return dataset

    def split(row):
        prompt, chosen, rejected = split_implicit_prompt(row["chosen"], row["rejected"])
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}

    return dataset.map(split, desc="Extracting the shared prompt")


# --------------------------------------------------------------------------- validation


def _is_empty(x) -> bool:
    if x is None:
        return True
    if isinstance(x, str):
        return not x.strip()
    if isinstance(x, list):  # chat messages
        return len(x) == 0 or all(not str(m.get("content", "")).strip() for m in x if isinstance(m, dict))
    return False


def _check_number(value, row: int, column: str, low: float, high: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise ValueError(f"row {row}, column '{column}': {value!r} is not a finite number in [{low}, {high}]")


def validate_rows(dataset, *, weight_column: str = "dora_weight") -> None:
    """Raise a ValueError naming the first bad row and column; never skip a row silently."""
    cols = set(dataset.column_names)
    listwise = is_listwise(cols)
    required = ["prompt", "responses", "scores"] if listwise else ["prompt", "chosen", "rejected"]
    missing = [c for c in required if c not in cols]
    if missing:
        raise ValueError(f"missing column(s) {missing}; the dataset has {sorted(cols)}")
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty")
    data = {
        c: dataset[c]
        for c in cols
        if c
        in (
            *required,
            weight_column,
            "target_prob",
            "target_probs",
            "chosen_target_prob",
            "rejected_target_prob",
        )
    }
    for i in range(n):
        if _is_empty(data["prompt"][i]):
            raise ValueError(f"row {i}, column 'prompt': empty prompt")
        if listwise:
            responses, scores = data["responses"][i], data["scores"][i]
            if not isinstance(responses, list) or len(responses) < 2:
                raise ValueError(f"row {i}, column 'responses': needs a list of at least 2 responses")
            if not isinstance(scores, list) or len(scores) != len(responses):
                raise ValueError(f"row {i}, column 'scores': needs one score per response ({len(responses)})")
            for j, r in enumerate(responses):
                if _is_empty(r):
                    raise ValueError(f"row {i}, column 'responses': response {j} is empty")
            for s in scores:
                _check_number(s, i, "scores", -math.inf, math.inf)
        else:
            for c in ("chosen", "rejected"):
                if _is_empty(data[c][i]):
                    raise ValueError(f"row {i}, column '{c}': empty response")
            if data["chosen"][i] == data["rejected"][i]:
                raise ValueError(f"row {i}, columns 'chosen'/'rejected': the two responses are identical")
        if weight_column in data:
            _check_number(data[weight_column][i], i, weight_column, 0.0, math.inf)
        for c in ("target_prob", "chosen_target_prob", "rejected_target_prob"):
            if c in data:
                _check_number(data[c][i], i, c, 0.0, 1.0)
        if "target_probs" in data:
            for p in data["target_probs"][i]:
                _check_number(p, i, "target_probs", 0.0, 1.0)


# --------------------------------------------------------------------------- tokenisation


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _encode(tokenizer, x, **chat_kwargs) -> list[int]:
    if isinstance(x, list):
        out = tokenizer.apply_chat_template(x, tokenize=True, return_dict=True, **chat_kwargs)
        return list(out["input_ids"])
    return tokenizer(x)["input_ids"]


def tokenize_row(tokenizer, prompt, completions: list) -> tuple[list[int], list[list[int]]]:
    """(prompt_ids, [completion_ids, ...]) for a prompt and its responses, split as TRL's DPOTrainer does."""
    chat = isinstance(prompt, list)
    if chat:
        prompt_ids = _encode(tokenizer, prompt, add_generation_prompt=True)
        full = [_encode(tokenizer, prompt + c) for c in completions]
    else:
        eos = tokenizer.eos_token or ""
        texts = [c if c.endswith(eos) else c + eos for c in completions]
        prompt_ids = _encode(tokenizer, prompt)
        full = [_encode(tokenizer, prompt + c) for c in texts]
    cut = min(_common_prefix(prompt_ids, f) for f in full)
    return prompt_ids[:cut], [f[cut:] for f in full]


def prepare_dataset(
    dataset,
    tokenizer,
    *,
    weight_column: str = "dora_weight",
    source_column: str = "source",
    group_column: str = "group",
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    num_proc: int | None = None,
    desc: str = "train",
):
    """Validate, tokenise and attach the columns the collator reads: ``prompt_ids``, ``completion_ids``
    (a list: [chosen, rejected] or the n responses), ``scores``, ``weight``, ``source``, ``group``.
    Rows whose prompt alone exceeds ``max_prompt_length`` (or fills ``max_length``) are dropped, with a
    warning that counts them."""
    dataset = add_implicit_prompt(dataset)
    validate_rows(dataset, weight_column=weight_column)
    cols = set(dataset.column_names)
    listwise = is_listwise(cols)
    if weight_column not in cols:
        logger.warning("no '%s' column in the %s dataset: every weight is 1", weight_column, desc)

    def tok(row):
        completions = row["responses"] if listwise else [row["chosen"], row["rejected"]]
        prompt_ids, completion_ids = tokenize_row(tokenizer, row["prompt"], completions)
        n = len(completion_ids)
        if listwise:
            sources = row.get("sources") or [row.get(source_column)] * n
        else:
            default = row.get(source_column)
            sources = [row.get("chosen_source") or default, row.get("rejected_source") or default]
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "scores": [float(s) for s in row["scores"]] if listwise else [1.0, 0.0],
            "weight": float(row[weight_column]) if weight_column in row else 1.0,
            "source": "" if sources[0] is None else str(sources[0]),
            "group": "" if row.get(group_column) is None else str(row[group_column]),
        }

    keep = [c for c in ("ref_logps",) if c in cols]
    out = dataset.map(
        tok,
        remove_columns=[c for c in dataset.column_names if c not in keep],
        num_proc=num_proc,
        desc=f"Tokenizing {desc} dataset",
    )
    limit = max_prompt_length
    if max_length is not None:
        limit = min(limit, max_length - 1) if limit is not None else max_length - 1
    if limit is not None:
        before = len(out)
        out = out.filter(lambda r: len(r["prompt_ids"]) <= limit, desc=f"Dropping long prompts ({desc})")
        dropped = before - len(out)
        if dropped:
            logger.warning("%d of %d %s rows dropped: prompt longer than %d tokens", dropped, before, desc, limit)
        if len(out) == 0:
            raise ValueError(f"every {desc} row has a prompt longer than {limit} tokens")
    return out


# --------------------------------------------------------------------------- collation


@dataclass
class PreferenceCollator:
    """Pads prompt + completion sequences (right padding) response-major: for a batch of B rows with n
    responses each, sequence ``j * B + i`` is response j of row i (pairs: chosen, then rejected, as TRL).
    Carries ``weights`` [B], ``scores`` [B, n], ``source_ids`` / ``group_ids`` [B] and ``ref_logps`` [B, n]
    beside the model inputs; the trainer passes only ``input_ids`` and ``attention_mask`` to the model."""

    pad_token_id: int
    max_length: int | None = None
    source_vocab: dict[str, int] = field(default_factory=dict)
    group_vocab: dict[str, int] = field(default_factory=dict)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = len(rows[0]["completion_ids"])
        if any(len(r["completion_ids"]) != n for r in rows):
            raise ValueError("every row of a batch needs the same number of responses")
        seqs, masks = [], []
        for j in range(n):
            for r in rows:
                ids = r["prompt_ids"] + r["completion_ids"][j]
                m = [0] * len(r["prompt_ids"]) + [1] * len(r["completion_ids"][j])
                if self.max_length is not None:
                    ids, m = ids[: self.max_length], m[: self.max_length]
                seqs.append(ids)
                masks.append(m)
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        completion = torch.zeros((len(seqs), width), dtype=torch.long)
        for k, (s, m) in enumerate(zip(seqs, masks)):
            input_ids[k, : len(s)] = torch.tensor(s)
            attention[k, : len(s)] = 1
            completion[k, : len(m)] = torch.tensor(m)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "completion_mask": completion,
            "weights": torch.tensor([r["weight"] for r in rows], dtype=torch.float32),
            "scores": torch.tensor([r["scores"] for r in rows], dtype=torch.float32),
            "source_ids": torch.tensor([self.source_vocab.get(r["source"], -1) for r in rows]),
            "group_ids": torch.tensor([self.group_vocab.get(r["group"], 0) for r in rows]),
        }
        if "ref_logps" in rows[0]:
            batch["ref_logps"] = torch.tensor([r["ref_logps"] for r in rows], dtype=torch.float32)
        return batch
