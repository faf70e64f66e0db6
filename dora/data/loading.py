"""Loading preference rows from a local file (jsonl, json, parquet, csv), a saved dataset or a Hub id; local-looking
paths are checked before any Hub lookup, and a broken file is one line naming the file and line."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("dora.data")

__all__ = ["load_rows", "looks_local", "check_local_path", "row_labels", "DATA_SUFFIXES"]


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


def load_rows(path_or_id: str, split: str = "train", name: str | None = None, what: str = "dataset"):
    """A ``datasets.Dataset`` from a local file (jsonl, json, parquet, csv), a folder written by
    ``save_to_disk``, or a Hub dataset id (``name``: its configuration). A missing local-looking path (named as
    ``what``), an empty file or an unreadable file is a one-line error naming it."""
    import datasets

    check_local_path(path_or_id, what)
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
        if ext in ("jsonl", "json", "csv"):
            with open(path_or_id, "rb") as f:
                if not f.read(1 << 16).strip():
                    raise ValueError(f"{path_or_id}: empty file, no rows")
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


def as_dataset(rows, name: str | None = None):
    """A ``datasets.Dataset`` from a Dataset, a list of row dicts or a pandas DataFrame; else a one-line
    TypeError."""
    from datasets import Dataset

    if isinstance(rows, Dataset):
        return rows
    if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
        return Dataset.from_list(rows)
    if type(rows).__name__ == "DataFrame" and hasattr(rows, "to_dict"):
        return Dataset.from_pandas(rows, preserve_index=False)
    raise TypeError(
        f"{name or 'dataset'}: expected a datasets.Dataset, a list of row dicts or a pandas DataFrame, got "
        f"{type(rows).__name__}"
    )
