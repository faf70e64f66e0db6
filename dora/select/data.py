"""The pilot's data: the held-out human split (given, or carved from the target-source rows, whole prompts at a
time) and the rows each candidate trains on, written as jsonl files under the output folder. Nothing of the
held-out split is in any training file: carved prompts take all their target rows with them, and a training row
equal to a given held-out row (same prompt and responses) is removed from training."""

from __future__ import annotations

import json
import os
import random

from dora.select.candidates import LABEL_WEIGHT

__all__ = ["carve_heldout", "row_key", "candidate_rows", "write_jsonl", "target_share"]


def row_key(row: dict) -> str:
    """A row's identity for the held-out check: its prompt and responses."""
    return json.dumps([row.get("prompt"), row.get("chosen"), row.get("rejected"), row.get("responses")],
                      sort_keys=True, default=str)  # fmt: skip


def _prompt_key(row: dict) -> str:
    return json.dumps(row.get("prompt"), sort_keys=True, default=str)


def is_target(row: dict, source_column: str, targets: list[str]) -> bool:
    return str(row.get(source_column)) in targets


def carve_heldout(rows: list[dict], *, fraction: float, seed: int, source_column: str, targets: list[str],
                  min_pairs: int = 10) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """(training rows, held-out rows): a ``fraction`` of the target rows' prompts (shuffled by ``seed``), and with
    each held-out prompt every target row that has it; the other rows (and every non-target row) train."""
    prompts = sorted({_prompt_key(r) for r in rows if is_target(r, source_column, targets)})
    if not prompts:
        raise ValueError(f"no training row has {source_column} in {targets}: nothing to carve a held-out split from; "
                         f"give --heldout or --target-sources")  # fmt: skip
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: max(1, round(fraction * len(prompts)))])
    train = [r for r in rows if not (is_target(r, source_column, targets) and _prompt_key(r) in held)]
    heldout = [r for r in rows if is_target(r, source_column, targets) and _prompt_key(r) in held]
    if len(heldout) < min_pairs:
        raise ValueError(f"--heldout-fraction {fraction}: the held-out split would have {len(heldout)} pairs "
                         f"(at least {min_pairs} needed): raise it, or give --heldout")  # fmt: skip
    if not any(is_target(r, source_column, targets) for r in train):
        raise ValueError(f"--heldout-fraction {fraction} leaves no {targets} row to train on: lower it")
    return train, heldout


def drop_heldout(rows: list[dict], heldout: list[dict]) -> tuple[list[dict], int]:
    """Training rows without any row equal to a held-out row; and how many were removed."""
    keys = {row_key(r) for r in heldout}
    kept = [r for r in rows if row_key(r) not in keys]
    return kept, len(rows) - len(kept)


def target_share(rows: list[dict], source_column: str, targets: list[str]) -> float:
    return sum(is_target(r, source_column, targets) for r in rows) / len(rows)


def candidate_rows(kind: str, rows: list[dict], source_column: str, targets: list[str]) -> list[dict]:
    """The rows a candidate trains on: all, the target rows, or all with ``label_weight`` = 1/α on target rows
    and 1 elsewhere (α the target share of ``rows``: the target rows' loss multiplied by 1/α)."""
    if kind == "all":
        return rows
    if kind == "target":
        return [r for r in rows if is_target(r, source_column, targets)]
    alpha = target_share(rows, source_column, targets)
    return [dict(r, **{LABEL_WEIGHT: 1.0 / alpha if is_target(r, source_column, targets) else 1.0}) for r in rows]


def write_jsonl(path: str, rows: list[dict]) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r, default=str) + "\n" for r in rows)
    os.replace(tmp, path)
    return path
