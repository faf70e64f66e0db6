"""Loading preference rows from a local file (jsonl, json, parquet, csv), a saved dataset or a Hub id; local-looking
paths are checked before any Hub lookup, and a broken file is one line naming the file and line."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("dora.data")

__all__ = ["load_rows", "looks_local", "check_local_path", "row_labels", "read_utf8", "DATA_SUFFIXES"]


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
    hint = ""
    parts, folder = [], os.path.abspath(full)
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:  # the first missing part of the path
        parts.insert(0, os.path.basename(folder))
        folder = os.path.dirname(folder)
    if os.path.isdir(folder):
        near = difflib.get_close_matches(parts[0], sorted(os.listdir(folder)), n=1, cutoff=0.6)
        if near:
            fixed = os.path.join(folder, near[0], *parts[1:])
            hint = f"; did you mean {os.path.relpath(fixed) if not os.path.isabs(str(path)) else fixed!r}?"
    raise FileNotFoundError(f"{what} {str(path)!r} not found: no file or folder {os.path.abspath(full)}{hint}")


def _not_utf8(path: str, line: int, raw: bytes, start: int) -> ValueError:
    """The one-line error for bytes that are not UTF-8: the file, the line, the byte and its column."""
    column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
    return ValueError(
        f"{path}, line {line}: not UTF-8 text (byte 0x{raw[start]:02x} at column {column}); save the file as UTF-8"
    )


def _check_utf8(path: str) -> None:
    """A text file (jsonl, json, csv) that is not UTF-8: one line naming the file, line and byte (read line by line,
    so that a large data file is never held whole)."""
    with open(path, "rb") as f:
        for k, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, k, raw, e.start) from None


def read_utf8(path: str) -> str:
    """The whole text of a small file (a YAML recipe), or the one-line error of ``_check_utf8`` naming its line."""
    with open(os.path.expanduser(path), "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, raw[: e.start].count(b"\n") + 1, raw, e.start) from None


def _kind(value) -> str | None:
    """The type of a JSON value as a column holds it: text, number, boolean, a list of one kind, object."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "object"
    kinds = {_kind(v) for v in value} - {None}
    return "list" if not kinds else f"list of {kinds.pop()}" if len(kinds) == 1 else "mixed list"


def _column_kinds(rows: list[dict]) -> dict[str, str]:
    """Each column's kind: the kind most of its values have (an empty list fits any list)."""
    from collections import Counter

    counts: dict[str, Counter] = {}
    for row in rows:
        for c, v in row.items():
            k = _kind(v)
            if k not in (None, "list", "mixed list"):
                counts.setdefault(c, Counter())[k] += 1
    return {c: n.most_common(1)[0][0] for c, n in counts.items()}


def _type_problem(row: dict, kinds: dict[str, str]) -> str | None:
    for c, v in row.items():
        k = _kind(v)
        if k == "mixed list":
            return f"column '{c}': a list whose items have different types ({v!r:.60})"
        want = kinds.get(c)
        if k is None or want is None or k == want or (k == "list" and want.startswith("list")):
            continue
        return f"column '{c}': {k} {v!r:.60} where the column's other rows hold {want}"
    return None


def _read_json_rows(path: str) -> tuple[list[dict], list[str]]:
    """The rows of a jsonl file (or a json array of objects) as written, and each row's label (``line k``,
    1-based, for jsonl; ``row k`` for json); a line that is not JSON or not an object is a one-line error."""
    import json

    _check_utf8(path)
    with open(path, encoding="utf-8") as f:
        if path.lower().endswith(".json"):
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
            if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
                data = [dict(zip(data, values)) for values in zip(*data.values())]  # {column: [values]}
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise ValueError(f"{path}: a JSON array of objects (one per row) expected")
            return data, [f"row {i + 1}" for i in range(len(data))]
        rows, labels = [], []
        for k, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {k}: not valid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {k}: a JSON object expected, got {type(row).__name__}")
            rows.append(row)
            labels.append(f"line {k}")
    return rows, labels


NUMBER_COLUMNS = ("dora_weight", "target_prob", "chosen_target_prob", "rejected_target_prob")  # read as numbers
TEXT_COLUMNS = ("prompt", "chosen", "rejected", "responses")  # read as text, however they look


def _number(text: str) -> float | int:
    """A CSV cell as a number: an int when written as one, else a float (``nan``/``inf`` pass, for the validator
    to refuse); ValueError when it is no number."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _read_csv_rows(path: str, numbers: tuple = ()) -> tuple[list[dict], list[str], list[tuple[int, str]]]:
    """The rows of a csv file as written: every cell text, an empty cell missing (None); each row's label
    (``line k``, the 1-based file line where the row starts: the header is line 1); and the rows whose value in a
    number column (``NUMBER_COLUMNS`` and ``numbers``, e.g. a custom weight column) is no number, as (index,
    problem). Other columns are numbers only when every cell is one (as arrow typed them), else text as written;
    ``TEXT_COLUMNS`` stay text."""
    import csv

    _check_utf8(path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise ValueError(f"{path}, line 1: no header row (column names) found")
        dup = [h for i, h in enumerate(header) if h in header[:i]]
        if dup:
            raise ValueError(f"{path}, line 1: column {dup[0]!r} named twice")
        rows, labels, start = [], [], reader.line_num + 1
        for cells in reader:
            if cells:  # a blank line is no row (a row of empty cells is one)
                if len(cells) > len(header):
                    raise ValueError(f"{path}, line {start}: {len(cells)} fields where the header has {len(header)}")
                rows.append({h: (c if c != "" else None) for h, c in zip(header, cells + [""] * len(header))})
                labels.append(f"line {start}")
            start = reader.line_num + 1
    bad: dict[int, str] = {}
    number_columns = (*NUMBER_COLUMNS, *numbers)
    for col in header:
        if col in TEXT_COLUMNS:
            continue
        numbers = {}
        for i, row in enumerate(rows):
            if row[col] is not None:
                try:
                    numbers[i] = _number(row[col])
                except ValueError:
                    if col not in number_columns:
                        break  # a text column: left as written
                    bad.setdefault(i, f"column '{col}': {row[col]!r:.60} is not a number")
        else:
            for i, x in numbers.items():
                rows[i][col] = float(x) if col in number_columns else x
    return rows, labels, sorted(bad.items())


def _typed_rows(path: str, skip_invalid: bool, numbers: tuple = ()) -> tuple[list[dict], list[str]]:
    """Rows read as written: a value whose type differs from the rest of its column (json), or a number column's
    cell that is no number (csv), is that row's error (naming its line), not a reason to re-type the column; with
    ``skip_invalid`` such rows are dropped and counted."""
    if path.lower().endswith(".csv"):
        rows, labels, bad = _read_csv_rows(path, numbers)
    else:
        rows, labels = _read_json_rows(path)
        kinds = _column_kinds(rows)
        bad = [(i, p) for i, p in ((i, _type_problem(r, kinds)) for i, r in enumerate(rows)) if p]
    if not bad:
        return rows, labels
    shown = "; ".join(f"{labels[i]}, {p}" for i, p in bad[:3]) + ("; ..." if len(bad) > 3 else "")
    if not skip_invalid or len(bad) == len(rows):
        hint = "fix it, or drop it" if len(bad) == 1 else "fix them, or drop them"
        raise ValueError(f"{path}: {shown} ({len(bad)} of {len(rows)} rows; {hint} with --skip-invalid-rows)")
    logger.warning("%s: %d of %d rows dropped as invalid: %s", path, len(bad), len(rows), shown)
    dropped = {i for i, _ in bad}
    keep = [i for i in range(len(rows)) if i not in dropped]
    return [rows[i] for i in keep], [labels[i] for i in keep]


def _explain_load_error(path: str, error: Exception) -> ValueError:
    """One line for a file ``datasets`` cannot read: the root cause."""
    root = error
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
    text = (str(root).strip().splitlines() or [type(root).__name__])[0]
    return ValueError(f"{path}: cannot be read as a dataset: {text}")


_LABELS: dict[tuple, list[str]] = {}  # (real path, mtime, size) -> the labels of the rows load_rows kept


def _file_key(path: str) -> tuple:
    st = os.stat(path)
    return os.path.realpath(path), st.st_mtime_ns, st.st_size


def _load_file(path: str, skip_invalid: bool, numbers: tuple = ()):
    import datasets

    ext = path.rsplit(".", 1)[-1].lower()
    builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}.get(ext)
    if builder is None:
        raise ValueError(f"{path}: unsupported file type .{ext} (use jsonl, json, parquet or csv)")
    if ext in ("jsonl", "json", "csv"):
        with open(path, "rb") as f:
            if not f.read(1 << 16).strip():
                raise ValueError(f"{path}: empty file, no rows")
    if ext in ("jsonl", "json", "csv"):
        rows, labels = _typed_rows(path, skip_invalid, numbers)
        if not rows:
            raise ValueError(f"{path}: no rows")
        try:
            columns = list(dict.fromkeys(c for r in rows for c in r))  # every row's keys (from_list: the first's)
            ds = datasets.Dataset.from_dict({c: [r.get(c) for r in rows] for c in columns})
        except Exception as e:  # noqa: BLE001 - nested values arrow cannot hold together: name the file
            raise _explain_load_error(path, e) from e
        _LABELS[_file_key(path)] = labels
        return ds
    from datasets.utils import logging as datasets_logging

    level = datasets_logging.get_verbosity()
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)  # its own log line would repeat the error
    try:
        return datasets.load_dataset(builder, data_files=path, split="train")
    except Exception as e:  # datasets wraps a parse error in a long chain: name the file instead
        raise _explain_load_error(path, e) from e
    finally:
        datasets_logging.set_verbosity(level)


def load_rows(
    path_or_id: str, split: str = "train", name: str | None = None, what: str = "dataset", skip_invalid: bool = False,
    number_columns: tuple = (),
):
    """A ``datasets.Dataset`` from a local file (jsonl, json, parquet, csv), a folder written by
    ``save_to_disk``, or a Hub dataset id (``name``: its configuration). A missing local-looking path (named as
    ``what``), an empty file or an unreadable file is a one-line error naming it. JSON and CSV rows are read as
    written: a value of another type than the rest of its column (json), or a cell of a number column that is no
    number (csv), is an error naming its line (``skip_invalid``: that row is dropped, with a warning); CSV text
    stays text ("15" stays "15"). ``number_columns``: CSV columns read as numbers besides ``dora_weight`` and the
    target probabilities (a custom weight column), so that one bad cell is its row's error."""
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
        return _load_file(path_or_id, skip_invalid, tuple(number_columns))
    return datasets.load_dataset(path_or_id, name=name, split=split)


def row_labels(path_or_id: str | None, n: int) -> list[str]:
    """How a row is named in errors: ``line k`` (1-based file line) for a jsonl or csv file, else ``row k``."""
    path = os.path.expanduser(str(path_or_id)) if path_or_id else ""
    if os.path.isfile(path) and len(_LABELS.get(_file_key(path), ())) == n:  # the rows load_rows kept
        return list(_LABELS[_file_key(path)])
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
