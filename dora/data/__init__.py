"""Preference data: loading, validation, tokenisation and the collator.

Rows follow TRL's conventions (docs/concepts.md, "Names"):
- pairwise: ``prompt``, ``chosen``, ``rejected`` (strings, or chat message lists);
- listwise: ``prompt``, ``responses`` (list), ``scores`` (list, higher is better).
Optional: ``source`` (or ``chosen_source`` / ``rejected_source``; listwise ``sources``), ``target_prob(s)``,
``dora_weight``, ``group``. Validation raises a ValueError that names the row and the column.

Tokenisation matches TRL 1.16's DPOTrainer: a plain-text completion gets the EOS token appended; the
completion starts where the tokenised prompt and prompt + completion diverge; chat messages go through the
tokenizer's chat template (the prompt with ``add_generation_prompt=True``).
"""

from dora.data.collator import PreferenceCollator
from dora.data.formats import add_implicit_prompt, is_listwise, split_implicit_prompt
from dora.data.loading import (
    DATA_SUFFIXES,
    as_dataset,
    check_local_path,
    load_rows,
    looks_local,
    read_utf8,
    row_labels,
)
from dora.data.tokenize import prepare_dataset, tokenize_row
from dora.data.validation import check_loss_fits_data, check_weight_columns, validate_rows

__all__ = [
    "load_rows",
    "as_dataset",
    "looks_local",
    "check_local_path",
    "row_labels",
    "read_utf8",
    "DATA_SUFFIXES",
    "is_listwise",
    "split_implicit_prompt",
    "add_implicit_prompt",
    "validate_rows",
    "check_weight_columns",
    "check_loss_fits_data",
    "tokenize_row",
    "prepare_dataset",
    "PreferenceCollator",
]
