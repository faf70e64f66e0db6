"""The responses of a dataset, read and checked once for both pipelines (labelled and no-labels).

A dataset holds listwise rows (``responses``), pairwise rows (``chosen`` / ``rejected``) or one response per row
(``response`` or ``completion``); the prompt is optional. Reading flattens the responses (row r's k-th response
is entry r·n + k) and refuses the first bad row in one line naming the input, the row (``dora.data.row_labels``:
the 1-based line of a jsonl file, else the row number) and the column.
"""

from __future__ import annotations

from dataclasses import dataclass

from dora.data import row_labels

__all__ = ["Responses", "read_responses", "response_columns", "row_names", "bad_response", "row_sources"]


@dataclass
class Responses:
    """The responses of a dataset, flattened: row r's k-th response is entry r * n + k."""

    kind: str  # "pairwise" | "listwise" | "single"
    n: int
    prompts: list[str]
    texts: list[str]
    sources: list[str] | None  # None when read without a source column (no-labels mode)
    rows: list[str]  # how errors name each row: "file, line k" or "row k"

    @property
    def n_rows(self) -> int:
        return len(self.rows)


def row_names(name: str | None, n: int, line_offset: int | list[str] | None = None) -> list[str]:
    """How errors name each of the ``n`` rows of input ``name``: ``dora.data.row_labels`` (a jsonl file's
    1-based lines, else ``row k``), or with ``line_offset`` each row's given label (a list) or ``line i +
    line_offset`` (an int: csv files, whose first line is the header). Prefixed by ``name`` when given."""
    if isinstance(line_offset, (list, tuple)):
        labels = list(line_offset)
    elif line_offset is not None:
        labels = [f"line {i + line_offset}" for i in range(n)]
    else:
        labels = row_labels(name, n)
    return [f"{name}, {label}" for label in labels] if name else labels


def response_columns(cols, name: str | None = None) -> tuple[str, list[str]]:
    """(kind, the columns holding the responses) of a dataset: listwise ``responses``, pairwise
    ``chosen``/``rejected`` (both needed), or one ``response`` / ``completion`` per row."""
    file = f"{name}: " if name else ""
    if "responses" in cols:
        kind, resp = "listwise", ["responses"]
    elif "chosen" in cols or "rejected" in cols:
        kind, resp = "pairwise", ["chosen", "rejected"]
    elif "response" in cols or "completion" in cols:
        kind, resp = "single", ["response" if "response" in cols else "completion"]
    else:
        raise ValueError(
            f"{file}no response columns (expected chosen/rejected, responses, or response); has {sorted(cols)}"
        )
    for c in resp:
        if c not in cols:
            raise ValueError(f"{file}missing column '{c}'; the dataset has {sorted(cols)}")
    return kind, resp


def text_of(x) -> str:
    """A response or prompt as the classifier reads it; chat messages as "role: content" lines."""
    if isinstance(x, list):
        return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in x if isinstance(m, dict))
    return "" if x is None else str(x)


def is_empty(x) -> bool:
    """None, blank text, or a chat list without any content."""
    if x is None:
        return True
    if isinstance(x, list):
        return len(x) == 0 or all(is_empty(m.get("content") if isinstance(m, dict) else m) for m in x)
    return not str(x).strip()


def bad_response(x) -> str | None:
    """Why ``x`` is not a response (a string, or a list of chat messages with string contents), or None."""
    if isinstance(x, str):
        return None
    if isinstance(x, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in x):
        return None
    return f"a response is a string or a list of chat messages, got {type(x).__name__} {str(x)[:40]!r}"


def read_responses(
    dataset, name: str | None = None, line_offset: int | list[str] | None = None, source_column: str | None = None
) -> Responses:
    """The responses of ``dataset`` (and, with ``source_column``, each response's source: ``chosen_source`` /
    ``rejected_source`` or listwise ``sources`` where given, else the row's), checked; errors name the row
    (``row_names``) and the column."""
    if len(dataset) == 0:
        raise ValueError(f"{name or 'dataset'}: empty, no rows")
    cols = set(dataset.column_names)
    kind, resp_cols = response_columns(cols, name)
    own_sources = {"chosen_source", "rejected_source"} <= cols or "sources" in cols
    if source_column is not None and source_column not in cols and not own_sources:
        raise ValueError(
            f"{name + ': ' if name else ''}missing column '{source_column}' (the source of each row); the dataset "
            f"has {sorted(cols)}"
        )
    # plain Python lists, read once: indexing a dataset column row by row goes through Arrow each time
    keep = {*resp_cols, "prompt"}
    if source_column is not None:
        keep |= {source_column, "chosen_source", "rejected_source", "sources"}
    data = dataset.select_columns(sorted(keep & cols)).to_dict()
    where = row_names(name, len(dataset), line_offset)
    out = Responses(kind, 0, [], [], [] if source_column else None, where)
    prompts = data.get("prompt", [""] * len(dataset))
    for i in range(len(dataset)):
        items, columns = _row_items(kind, resp_cols, data, i, where[i])
        if out.n == 0:
            out.n = len(items)
        elif len(items) != out.n:
            raise ValueError(f"{where[i]}, column 'responses': {len(items)} responses, the first row has {out.n}")
        for item, col in zip(items, columns):
            if is_empty(item):
                raise ValueError(f"{where[i]}, column '{col}': missing or empty response")
            if bad_response(item):
                raise ValueError(f"{where[i]}, column '{col}': {bad_response(item)}")
        if source_column is not None:
            out.sources += _row_sources(kind, data, i, source_column, columns, where[i])
        out.prompts += [text_of(prompts[i])] * len(items)
        out.texts += [text_of(item) for item in items]
    return out


def _row_items(kind: str, resp_cols: list[str], data: dict, i: int, where: str) -> tuple[list, list[str]]:
    """Row i's responses and the column name of each."""
    if kind == "listwise":
        items = data["responses"][i]
        if not isinstance(items, list) or not items:  # a string would be read one character a response
            raise ValueError(f"{where}, column 'responses': needs a non-empty list of responses")
        return items, [f"responses[{k}]" for k in range(len(items))]
    if kind == "pairwise":
        return [data["chosen"][i], data["rejected"][i]], ["chosen", "rejected"]
    return [data[resp_cols[0]][i]], [resp_cols[0]]


def _row_sources(kind: str, data: dict, i: int, source_column: str, columns: list[str], where: str) -> list[str]:
    """The source of each of row i's responses: its own where given, else the row's."""

    def get(column: str):
        return data[column][i] if column in data else None

    row_source = get(source_column)
    if kind == "listwise":
        own = get("sources") or [row_source] * len(columns)
        if len(own) != len(columns):
            raise ValueError(f"{where}, column 'sources': {len(own)} sources for {len(columns)} responses")
    elif kind == "pairwise":
        own = [get("chosen_source") or row_source, get("rejected_source") or row_source]
    else:
        own = [row_source]
    for src, col in zip(own, columns):
        if src is None or str(src) == "":
            raise ValueError(f"{where}, column '{source_column}': no source for response '{col}'")
    return [str(s) for s in own]


def row_sources(sources: list[str], n: int) -> list[str]:
    """A row's source: its responses' source, or ``a+b`` (sorted) when they differ."""
    return ["+".join(sorted(set(sources[i : i + n]))) for i in range(0, len(sources), n)]


def write_columns(dataset, kind: str, probs, weights, positive: str):
    """``dataset`` with the probability columns of its kind (``chosen_{positive}_prob`` /
    ``rejected_{positive}_prob``, ``{positive}_probs`` or ``{positive}_prob``; ``positive`` is "target" or
    "trusted") and ``dora_weight``; an earlier run's columns are replaced. ``probs``: [rows, n]."""
    names = {
        "pairwise": [f"chosen_{positive}_prob", f"rejected_{positive}_prob"],
        "listwise": [f"{positive}_probs"],
        "single": [f"{positive}_prob"],
    }
    written = [*names["pairwise"], *names["listwise"], *names["single"], "dora_weight"]
    out = dataset.remove_columns([c for c in written if c in dataset.column_names])
    if kind == "listwise":
        out = out.add_column(names[kind][0], probs.tolist())
    else:
        for k, column in enumerate(names[kind]):
            out = out.add_column(column, probs[:, k].tolist())
    return out.add_column("dora_weight", weights.astype(float).tolist())
