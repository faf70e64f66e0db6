"""Streamed rows (``datasets.IterableDataset``, as ``load_dataset(..., streaming=True)`` gives): their columns are
checked on the first row before any model loads, and every row as it streams, with the same messages as
``validate_rows``; a bad row stops training with its row number (1-based, in stream order)."""

from __future__ import annotations

from dora.data.formats import is_listwise, split_implicit_prompt
from dora.data.validation import _row_problem, check_weight_columns

__all__ = ["is_stream", "stream_columns", "check_stream"]


def is_stream(dataset) -> bool:
    """Whether ``dataset`` is a ``datasets.IterableDataset`` (rows read as they stream; no length)."""
    from datasets import IterableDataset

    return isinstance(dataset, IterableDataset)


def stream_columns(dataset) -> list[str]:
    """The column names of a stream: its features', else its first row's."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(next(iter(dataset)).keys())


def check_stream(dataset, *, weight_column: str, name: str, group_column: str | None = None):
    """The stream with a ``prompt`` column (the shared start of chosen and rejected when it has none) whose rows are
    checked as they are read. Missing columns, image columns and an empty stream are refused at once."""
    where = f"{name} dataset"
    cols = stream_columns(dataset)
    listwise = is_listwise(cols)
    if "prompt" not in cols and not listwise and {"chosen", "rejected"} <= set(cols):
        dataset = dataset.map(_split_prompt)
        cols = [*cols, "prompt"]
    required = ["prompt", "responses", "scores"] if listwise else ["prompt", "chosen", "rejected"]
    required += [group_column] if group_column else []
    missing = [c for c in required if c not in cols]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; it has {sorted(cols)}")
    if any(c in cols for c in ("image", "images")):  # vision rows are collated as they are, from a map-style Dataset
        raise ValueError(f"{where}: streamed rows with images (an IterableDataset) are not supported: use a Dataset")
    check_weight_columns(cols, weight_column, name)
    if next(iter(dataset), None) is None:
        raise ValueError(f"{where}: the dataset is empty")

    def check(row, i):
        problem = _row_problem({k: [v] for k, v in row.items()}, 0, listwise, weight_column, group_column)
        if problem:
            raise ValueError(f"{where}, row {i + 1}, {problem}")
        return row

    return dataset.map(check, with_indices=True)


def _split_prompt(row):
    prompt, chosen, rejected = split_implicit_prompt(row["chosen"], row["rejected"])
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
