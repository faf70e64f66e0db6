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
    "check_weight_columns",
    "check_loss_fits_data",
]


# --------------------------------------------------------------------------- loading

DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".arrow")


def looks_local(path: str) -> bool:
    """A path a user means as local: absolute, ``./``, ``../``, ``~``, or a data-file name (``x.jsonl``)."""
    p = str(path)
    return (
        os.path.isabs(p)
        or p in (".", "..")
        or p.startswith(("./", "../", "~", ".\\", "..\\"))
        or p.lower().endswith(DATA_SUFFIXES)
    )


def check_local_path(path: str, what: str = "dataset") -> None:
    """A FileNotFoundError naming ``path`` (and a near name in its folder) when a local-looking path is missing;
    called before any Hub lookup, so a typo is not reported as a connection error."""
    import difflib

    full = os.path.expanduser(str(path))
    if not looks_local(str(path)) or os.path.exists(full):
        return
    folder = os.path.dirname(os.path.abspath(full))
    near = []
    if os.path.isdir(folder):
        near = difflib.get_close_matches(os.path.basename(full), sorted(os.listdir(folder)), n=1, cutoff=0.6)
    hint = f"; did you mean {os.path.join(os.path.dirname(str(path)), near[0])!r}?" if near else ""
    raise FileNotFoundError(f"{what} {str(path)!r} not found: no file or folder {os.path.abspath(full)}{hint}")


def _explain_load_error(path: str, error: Exception) -> ValueError:
    """One line for a file ``datasets`` cannot read: the first broken JSON line, else the root cause."""
    import json

    if path.lower().endswith(".jsonl"):
        with open(path, encoding="utf-8", errors="replace") as f:
            for k, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    return ValueError(f"{path}, line {k}: not valid JSON ({e.msg}, column {e.colno})")
                if not isinstance(row, dict):
                    return ValueError(f"{path}, line {k}: a JSON object expected, got {type(row).__name__}")
    elif path.lower().endswith(".json"):
        with open(path, encoding="utf-8", errors="replace") as f:
            try:
                json.load(f)
            except json.JSONDecodeError as e:
                return ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg}, column {e.colno})")
    root = error
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
    text = (str(root).strip().splitlines() or [type(root).__name__])[0]
    return ValueError(f"{path}: cannot be read as a dataset: {text}")


def load_rows(path_or_id: str, split: str = "train", name: str | None = None):
    """A ``datasets.Dataset`` from a local file (jsonl, json, parquet, csv), a folder written by
    ``save_to_disk``, or a Hub dataset id (``name``: its configuration). A missing local-looking path or an
    unreadable file is a one-line error naming it."""
    import datasets

    check_local_path(path_or_id, "dataset")
    path_or_id = os.path.expanduser(str(path_or_id))
    if os.path.isdir(path_or_id):
        if os.path.exists(os.path.join(path_or_id, "dataset_info.json")) or os.path.exists(
            os.path.join(path_or_id, "state.json")
        ) or os.path.exists(os.path.join(path_or_id, "dataset_dict.json")):
            ds = datasets.load_from_disk(path_or_id)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise ValueError(f"{path_or_id}: no split {split!r}; it has {sorted(ds)}")
                return ds[split]
            return ds
        return datasets.load_dataset(path_or_id, name=name, split=split)
    if os.path.isfile(path_or_id):
        ext = path_or_id.rsplit(".", 1)[-1].lower()
        builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}.get(ext)
        if builder is None:
            raise ValueError(f"{path_or_id}: unsupported file type .{ext} (use jsonl, json, parquet or csv)")
        from datasets.utils import logging as datasets_logging

        level = datasets_logging.get_verbosity()
        datasets_logging.set_verbosity(datasets_logging.CRITICAL)  # its own log line would repeat the error
        try:
            return datasets.load_dataset(builder, data_files=path_or_id, split="train")
        except Exception as e:  # datasets wraps a parse error in a long chain: name the file and line instead
            raise _explain_load_error(path_or_id, e) from e
        finally:
            datasets_logging.set_verbosity(level)
    return datasets.load_dataset(path_or_id, name=name, split=split)


def row_labels(path_or_id: str | None, n: int) -> list[str]:
    """How a row is named in errors: ``line k`` (1-based) for a jsonl file, else ``row k`` (1-based)."""
    path = os.path.expanduser(str(path_or_id)) if path_or_id else ""
    if path.lower().endswith(".jsonl") and os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [k for k, line in enumerate(f, 1) if line.strip()]
        if len(lines) == n:
            return [f"line {k}" for k in lines]
    return [f"row {i + 1}" for i in range(n)]


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


def _number_problem(value, column: str, low: float, high: float) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        return f"column '{column}': {value!r} is not a finite number in [{low}, {high}]"
    return None


def _text_problem(x, column: str) -> str | None:
    """Why ``x`` is not a usable prompt or response (text or a list of chat messages), or None."""
    if isinstance(x, list) and x and not all(isinstance(m, dict) and "content" in m for m in x):
        return f"column '{column}': a list must hold chat messages ({{'role': ..., 'content': ...}})"
    if x is not None and not isinstance(x, (str, list)):
        return f"column '{column}': text or chat messages expected, got {type(x).__name__} {x!r}"
    if _is_empty(x):
        return f"column '{column}': empty"
    return None


def _row_problem(data: dict, i: int, listwise: bool, weight_column: str, group_column: str | None) -> str | None:
    """The first problem of row ``i`` (a message naming the column), or None."""
    problem = _text_problem(data["prompt"][i], "prompt")
    if problem:
        return problem
    if listwise:
        responses, scores = data["responses"][i], data["scores"][i]
        if not isinstance(responses, list) or len(responses) < 2:
            return "column 'responses': needs a list of at least 2 responses"
        if not isinstance(scores, list) or len(scores) != len(responses):
            return f"column 'scores': needs one score per response ({len(responses)})"
        for j, r in enumerate(responses):
            problem = _text_problem(r, f"responses[{j}]")
            if problem:
                return problem
        for s in scores:
            problem = _number_problem(s, "scores", -math.inf, math.inf)
            if problem:
                return problem
    else:
        for c in ("chosen", "rejected"):
            problem = _text_problem(data[c][i], c)
            if problem:
                return problem
        if data["chosen"][i] == data["rejected"][i]:
            return "columns 'chosen'/'rejected': the two responses are identical"
    checks = [(weight_column, 0.0, math.inf)] + [
        (c, 0.0, 1.0) for c in ("target_prob", "chosen_target_prob", "rejected_target_prob")
    ]
    for c, low, high in checks:
        if c in data:
            problem = _number_problem(data[c][i], c, low, high)
            if problem:
                return problem
    for p in data.get("target_probs", [[]] * (i + 1))[i] or []:
        problem = _number_problem(p, "target_probs", 0.0, 1.0)
        if problem:
            return problem
    if group_column and (data[group_column][i] is None or str(data[group_column][i]) == ""):
        return f"column '{group_column}': no group (objective group_dro needs one per row)"
    return None


def validate_rows(
    dataset,
    *,
    weight_column: str = "dora_weight",
    name: str = "train",
    path: str | None = None,
    group_column: str | None = None,
    skip_invalid: bool = False,
    max_shown: int = 10,
):
    """Check every row; raise one ValueError naming the dataset, and up to ``max_shown`` bad rows by file line
    (jsonl, 1-based) or row number (1-based) and column. With ``skip_invalid`` the bad rows are dropped and
    counted in a warning instead. Returns the dataset (without the dropped rows)."""
    import difflib

    where = f"{name} dataset" + (f" {path}" if path else "")
    cols = set(dataset.column_names)
    listwise = is_listwise(cols)
    required = ["prompt", "responses", "scores"] if listwise else ["prompt", "chosen", "rejected"]
    if group_column:
        required.append(group_column)
    missing = [c for c in required if c not in cols]
    if missing:
        near = {c: difflib.get_close_matches(c, sorted(cols), n=1) for c in missing}
        hint = "".join(f"; '{m[0]}' for '{c}'?" for c, m in near.items() if m)
        raise ValueError(f"{where}: missing column(s) {missing}; it has {sorted(cols)}{hint}")
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{where}: the dataset is empty")
    wanted = (*required, weight_column, "target_prob", "target_probs", "chosen_target_prob", "rejected_target_prob")
    data = {c: dataset[c] for c in cols if c in wanted}
    bad = []
    for i in range(n):
        problem = _row_problem(data, i, listwise, weight_column, group_column)
        if problem:
            bad.append((i, problem))
    if not bad:
        return dataset
    labels = row_labels(path, n)
    shown = [f"  {labels[i]}, {problem}" for i, problem in bad[:max_shown]]
    more = f"\n  ... and {len(bad) - max_shown} more" if len(bad) > max_shown else ""
    if skip_invalid:
        if len(bad) == n:
            raise ValueError(f"{where}: every one of its {n} rows is invalid, e.g.\n" + shown[0])
        logger.warning("%s: %d of %d rows dropped as invalid:\n%s%s", where, len(bad), n, "\n".join(shown), more)
        dropped = {i for i, _ in bad}
        return dataset.select([i for i in range(n) if i not in dropped])
    raise ValueError(
        f"{where}: {len(bad)} invalid row(s) of {n} (fix them, or drop them with --skip-invalid-rows):\n"
        + "\n".join(shown)
        + more
    )


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


def check_loss_fits_data(dataset, loss_type, listwise_loss: bool, where: str = "train dataset") -> None:
    """A pairwise loss takes listwise rows only as lists of two (ranked by their scores); longer lists need a
    listwise loss."""
    if listwise_loss or not is_listwise(dataset.column_names):
        return
    sizes = sorted({len(r) for r in dataset["responses"] if isinstance(r, list)} - {2})
    if sizes:
        raise ValueError(
            f"{where}: lists of {', '.join(map(str, sizes))} responses, but loss_type {loss_type} is pairwise "
            "(lists of 2 only): use loss_type dpo_pl (or rrhf, lire)"
        )


def check_weight_columns(columns, weight_column: str = "dora_weight", desc: str = "train") -> None:
    """Classifier probabilities without weights are an error, not weight 1: the weight dQ0/dP needs the
    target share α of the data, which only the classifier's run knows (DESIGN "Calibration weight")."""
    names = ("target_prob", "target_probs", "chosen_target_prob", "rejected_target_prob")
    probs = [c for c in names if c in columns]
    if probs and weight_column not in columns:
        raise ValueError(
            f"{desc} dataset: column '{probs[0]}' but no '{weight_column}' column: turn the probabilities into "
            f"weights with `dora classify` (which writes '{weight_column}') or "
            f"dora.calibration_weights(probs, target_share=...), or name the weight column with weight_column"
        )


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
    truncation_mode: str = "keep_start",
):
    """Validate, tokenise and attach the columns the collator reads: ``prompt_ids``, ``completion_ids``
    (a list: [chosen, rejected] or the n responses), ``scores``, ``weight``, ``source``, ``group``.
    Rows whose prompt alone exceeds ``max_prompt_length`` (or fills ``max_length``) are dropped, with a
    warning that counts them; with ``truncation_mode="keep_end"`` a long prompt keeps its end, so only
    ``max_prompt_length`` drops rows (as TRL)."""
    dataset = add_implicit_prompt(dataset)
    validate_rows(dataset, weight_column=weight_column, name=desc)
    cols = set(dataset.column_names)
    listwise = is_listwise(cols)
    check_weight_columns(cols, weight_column, desc)
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
            "sources": ["" if x is None else str(x) for x in sources],
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
    if max_length is not None and truncation_mode == "keep_start":
        limit = min(limit, max_length - 1) if limit is not None else max_length - 1
    if limit is not None:  # lengths from the Arrow column: no pass over the rows, no progress bar
        import pyarrow.compute as pc

        before = len(out)
        lengths = pc.list_value_length(out.with_format("arrow")["prompt_ids"]).to_pylist()
        keep = [i for i, k in enumerate(lengths) if k <= limit]
        if len(keep) < before:
            out = out.select(keep)
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
    Carries ``weights`` [B], ``scores`` [B, n], ``source_ids`` [B, n] (each response's source), ``group_ids`` [B] and
    ``ref_logps`` [B, n]
    beside the model inputs; the trainer passes only ``input_ids`` and ``attention_mask`` to the model."""

    pad_token_id: int
    max_length: int | None = None
    source_vocab: dict[str, int] = field(default_factory=dict)
    group_vocab: dict[str, int] = field(default_factory=dict)
    truncation_mode: str = "keep_start"  # past max_length keep the start, or the end (as TRL's collator)

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
                    keep_end = self.truncation_mode == "keep_end"
                    cut = slice(-self.max_length, None) if keep_end else slice(self.max_length)
                    ids, m = ids[cut], m[cut]
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
            "source_ids": torch.tensor(
                [[self.source_vocab.get(x, -1) for x in r.get("sources", [r["source"]] * n)] for r in rows]
            ),
            "group_ids": torch.tensor([self.group_vocab.get(r["group"], 0) for r in rows]),
        }
        if "ref_logps" in rows[0]:
            batch["ref_logps"] = torch.tensor([r["ref_logps"] for r in rows], dtype=torch.float32)
        return batch
