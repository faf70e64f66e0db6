"""Tokenisation as TRL 1.16"s DPOTrainer: a plain-text completion gets the EOS token appended; the completion starts
where the tokenised prompt and prompt + completion diverge; chat messages go through the tokenizer"s chat template
(the prompt with ``add_generation_prompt=True``)."""

from __future__ import annotations

import json
import logging

from dora.data.formats import add_implicit_prompt, is_listwise
from dora.data.streaming import check_stream, is_stream, stream_columns
from dora.data.validation import check_weight_columns, validate_rows

logger = logging.getLogger("dora.data")

__all__ = ["tokenize_row", "chat_template_kwargs", "prepare_dataset"]


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


def chat_template_kwargs(row: dict) -> dict:
    """A row's keyword arguments of ``apply_chat_template``, as TRL 1.16: its ``tools`` (a list, or JSON text) and
    its ``chat_template_kwargs`` column (e.g. ``{"enable_thinking": False}``)."""
    tools = row.get("tools")
    tools = json.loads(tools) if isinstance(tools, str) else tools
    return {"tools": tools, **(row.get("chat_template_kwargs") or {})}


def tokenize_row(tokenizer, prompt, completions: list, **chat_kwargs) -> tuple[list[int], list[list[int]]]:
    """(prompt_ids, [completion_ids, ...]) for a prompt and its responses, split as TRL's DPOTrainer does;
    ``chat_kwargs`` go to the chat template (chat rows only)."""
    chat = isinstance(prompt, list)
    if chat:
        prompt_ids = _encode(tokenizer, prompt, add_generation_prompt=True, **chat_kwargs)
        full = [_encode(tokenizer, prompt + c, **chat_kwargs) for c in completions]
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
    truncation_mode: str = "keep_start",
    validated: bool = False,
):
    """Validate, tokenise and attach the columns the collator reads: ``prompt_ids``, ``completion_ids``
    (a list: [chosen, rejected] or the n responses), ``scores``, ``weight``, ``source``, ``group``.
    Rows whose prompt alone exceeds ``max_prompt_length`` (or fills ``max_length``) are dropped, with a
    warning that counts them; with ``truncation_mode="keep_end"`` a long prompt keeps its end, so only
    ``max_prompt_length`` drops rows (as TRL). ``validated``: the rows were checked already (the trainer checks
    every dataset before any model loads), so they are not checked twice."""
    if is_stream(dataset):
        if not validated:
            dataset = check_stream(dataset, weight_column=weight_column, name=desc)
        cols = set(stream_columns(dataset))
    else:
        dataset = add_implicit_prompt(dataset)
        cols = set(dataset.column_names)
    if not validated and not is_stream(dataset):
        validate_rows(dataset, weight_column=weight_column, name=desc)
        check_weight_columns(cols, weight_column, desc)
    listwise = is_listwise(cols)
    if weight_column not in cols:
        logger.warning("no '%s' column in the %s dataset: every weight is 1", weight_column, desc)

    def tok(row):
        completions = row["responses"] if listwise else [row["chosen"], row["rejected"]]
        prompt_ids, completion_ids = tokenize_row(tokenizer, row["prompt"], completions, **chat_template_kwargs(row))
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
    limit = max_prompt_length
    if max_length is not None and truncation_mode == "keep_start":
        limit = min(limit, max_length - 1) if limit is not None else max_length - 1
    if is_stream(dataset):  # tokenised as the rows stream; long prompts dropped there, uncounted
        out = dataset.map(tok, remove_columns=[c for c in cols if c not in keep])
        return out if limit is None else out.filter(lambda row: len(row["prompt_ids"]) <= limit)
    out = dataset.map(
        tok,
        remove_columns=[c for c in dataset.column_names if c not in keep],
        num_proc=num_proc,
        desc=f"Tokenizing {desc} dataset",
    )
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
