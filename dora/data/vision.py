"""Vision-language preference rows, as TRL 1.16's DPOTrainer takes them: ``prompt``, ``chosen``, ``rejected`` and an
``images`` column (a list of images per row) or an ``image`` column (one image). They are not tokenised ahead: the
collator runs the processor on each batch (images to pixel values, text to tokens), through TRL's own
``DataCollatorForVisionPreference``, and adds DoRA's columns (``weight``, ``scores``, ``source_ids``,
``group_ids``). Every batch key other than those and ``completion_mask`` goes to the model's forward, the policy's
and the reference's alike (``pixel_values``, ``image_grid_thw``, ``pixel_attention_mask``, ``image_sizes``,
``token_type_ids``, ``mm_token_type_ids``, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

__all__ = [
    "IMAGE_COLUMNS",
    "NOT_MODEL_INPUTS",
    "VisionPreferenceCollator",
    "is_vision_data",
    "model_inputs",
    "vision_columns",
]

IMAGE_COLUMNS = ("image", "images")
# the collator's keys that the model's forward does not take (the trainer reads them)
NOT_MODEL_INPUTS = ("completion_mask", "weight", "scores", "source_ids", "group_ids", "ref_logps")
# what TRL's collator reads from a row
_TRL_KEYS = ("prompt", "chosen", "rejected", *IMAGE_COLUMNS, "tools", "chat_template_kwargs")


def is_vision_data(columns) -> bool:
    """Whether rows with these columns carry images (TRL's test: an ``image`` or ``images`` key)."""
    return any(c in columns for c in IMAGE_COLUMNS)


def vision_columns(weight_column: str, source_column: str, group_column: str | None) -> list[str]:
    """The columns a vision collator reads (what ``remove_unused_columns`` must keep)."""
    extra = [weight_column, source_column, "chosen_source", "rejected_source"]
    extra += [group_column] if group_column else []
    return [*_TRL_KEYS, *extra]


def model_inputs(batch: dict) -> dict:
    """The batch's extra inputs of the model's forward (pixel values and the like): every key but the token ids,
    the attention mask and the trainer's own."""
    return {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", *NOT_MODEL_INPUTS)}


@dataclass
class VisionPreferenceCollator:
    """TRL's ``DataCollatorForVisionPreference`` (the processor on prompt + images, chosen and rejected; sequences
    chosen then rejected, as DoRA's response-major layout for pairs), with DoRA's ``weight`` [B], ``scores`` [B, 2],
    ``source_ids`` [B, 2] and ``group_ids`` [B] read from the raw rows."""

    processor: Any
    max_length: int | None = None
    source_vocab: dict[str, int] = field(default_factory=dict)
    group_vocab: dict[str, int] = field(default_factory=dict)
    weight_column: str = "dora_weight"
    source_column: str = "source"
    group_column: str | None = "group"

    def __post_init__(self):
        self._trl = DataCollatorForVisionPreference(processor=self.processor, max_length=self.max_length)

    def _sources(self, row: dict) -> list[int]:
        default = row.get(self.source_column)
        names = [row.get("chosen_source") or default, row.get("rejected_source") or default]
        return [self.source_vocab.get("" if x is None else str(x), -1) for x in names]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(self._trl([{k: r[k] for k in _TRL_KEYS if k in r} for r in rows]))  # TRL's collator edits rows
        group = self.group_column
        groups = ["" if not group or r.get(group) is None else str(r[group]) for r in rows]
        batch.update(
            weight=torch.tensor([float(r.get(self.weight_column, 1.0)) for r in rows], dtype=torch.float32),
            scores=torch.tensor([[1.0, 0.0]] * len(rows), dtype=torch.float32),
            source_ids=torch.tensor([self._sources(r) for r in rows]),
            group_ids=torch.tensor([self.group_vocab.get(g, 0) for g in groups]),
        )
        return batch
