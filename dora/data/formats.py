"""The two row formats (TRL"s pairwise ``prompt``/``chosen``/``rejected``; listwise ``prompt``/``responses``/
``scores``) and the shared prompt of rows that have none (Anthropic HH)."""

from __future__ import annotations

__all__ = ["is_listwise", "split_implicit_prompt", "add_implicit_prompt"]


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
