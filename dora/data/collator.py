"""The collator: prompt + completion sequences padded response-major, with weights, scores, sources and groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["PreferenceCollator"]


@dataclass
class PreferenceCollator:
    """Pads prompt + completion sequences (right padding) response-major: for a batch of B rows with n
    responses each, sequence ``j * B + i`` is response j of row i (pairs: chosen, then rejected, as TRL).
    Carries ``weight`` [B], ``scores`` [B, n], ``source_ids`` [B, n] (each response's source), ``group_ids`` [B] and
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
            "weight": torch.tensor([r["weight"] for r in rows], dtype=torch.float32),
            "scores": torch.tensor([r["scores"] for r in rows], dtype=torch.float32),
            "source_ids": torch.tensor(
                [[self.source_vocab.get(x, -1) for x in r.get("sources", [r["source"]] * n)] for r in rows]
            ),
            "group_ids": torch.tensor([self.group_vocab.get(r["group"], 0) for r in rows]),
        }
        if "ref_logps" in rows[0]:
            batch["ref_logps"] = torch.tensor([r["ref_logps"] for r in rows], dtype=torch.float32)
        return batch
