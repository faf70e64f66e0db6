"""Validation of every row before a model loads: up to ten bad rows named by file line (jsonl) or row and column,
or dropped and counted; and whether the columns and the loss fit together."""

from __future__ import annotations

import logging
import math

from dora.data.formats import is_listwise
from dora.data.loading import row_labels

logger = logging.getLogger("dora.data")

__all__ = ["validate_rows", "check_weight_columns", "check_loss_fits_data", "add_prompt", "check_no_images"]

MAX_WEIGHT = 1e30  # h times a loss stays finite in float32 (max 3.4e38), where the objective is computed
PROMPT_LIKE = ("question", "instruction", "input", "query", "prompt_text", "context", "user", "text", "history")


def _is_empty(x) -> bool:
    if x is None:
        return True
    if isinstance(x, str):
        return not x.strip()
    if isinstance(x, list):  # chat messages
        return len(x) == 0 or all(not str(m.get("content", "")).strip() for m in x if isinstance(m, dict))
    return False


def _number_problem(value, column: str, low: float, high: float) -> str | None:
    if value is None:  # absent, null, or a NaN that the JSON reader stored as null
        return f"column '{column}': missing (null, absent or NaN), a finite number in [{low}, {high}] expected"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        return f"column '{column}': {value!r} is not a finite number in [{low}, {high}]"
    return None


def _text_problem(x, column: str) -> str | None:
    """Why ``x`` is not a usable prompt or response (text or a list of chat messages), or None."""
    items = x if isinstance(x, list) else []
    messages = all(isinstance(m, dict) and ("content" in m or m.get("tool_calls")) for m in items)
    if items and not messages:  # a tool call's message may have no content
        return f"column '{column}': a list must hold chat messages ({{'role': ..., 'content': ...}})"
    if isinstance(x, list):  # a message's content null (not a tool call's) would train as an empty text
        for j, m in enumerate(x):
            if m.get("content") is None and not m.get("tool_calls"):
                return f"column '{column}': message {j + 1} ({m.get('role')!r}) has content null, text expected"
    if x is not None and not isinstance(x, (str, list)):
        return f"column '{column}': text or chat messages expected, got {type(x).__name__} {x!r}"
    if x is None:
        return f"column '{column}': missing (null or absent)"
    if _is_empty(x):
        return f"column '{column}': empty"
    return None


def _row_problem(data: dict, i: int, listwise: bool, weight_column: str, group_column: str | None) -> str | None:
    """The first problem of row ``i`` (a message naming the column), or None."""
    problem = _text_problem(data["prompt"][i], "prompt")
    if problem:
        return problem
    if listwise:
        responses, scores = data["responses"][i], data["scores"][i]
        if not isinstance(responses, list) or len(responses) < 2:
            return "column 'responses': needs a list of at least 2 responses"
        if not isinstance(scores, list) or len(scores) != len(responses):
            return f"column 'scores': needs one score per response ({len(responses)})"
        for j, r in enumerate(responses):
            problem = _text_problem(r, f"responses[{j}]")
            if problem:
                return problem
        for s in scores:
            problem = _number_problem(s, "scores", -math.inf, math.inf)
            if problem:
                return problem
    else:
        for c in ("chosen", "rejected"):
            problem = _text_problem(data[c][i], c)
            if problem:
                return problem
        if data["chosen"][i] == data["rejected"][i]:
            return "columns 'chosen'/'rejected': the two responses are identical"
    checks = [(weight_column, 0.0, MAX_WEIGHT)] + [
        (c, 0.0, 1.0) for c in ("target_prob", "chosen_target_prob", "rejected_target_prob")
    ]
    for c, low, high in checks:
        if c in data:
            problem = _number_problem(data[c][i], c, low, high)
            if problem:
                return problem
    for p in data.get("target_probs", [[]] * (i + 1))[i] or []:
        problem = _number_problem(p, "target_probs", 0.0, 1.0)
        if problem:
            return problem
    if group_column and (data[group_column][i] is None or str(data[group_column][i]) == ""):
        return f"column '{group_column}': no group (objective group_dro needs one per row)"
    return None


def validate_rows(
    dataset,
    *,
    weight_column: str = "dora_weight",
    name: str = "train",
    path: str | None = None,
    group_column: str | None = None,
    skip_invalid: bool = False,
    max_shown: int = 10,
    skip_hint: str = "--skip-invalid-rows",
    allow_images: bool = False,
):
    """Check every row; raise one ValueError naming the dataset, and up to ``max_shown`` bad rows by file line
    (jsonl, 1-based) or row number (1-based) and column. With ``skip_invalid`` the bad rows are dropped and
    counted in a warning instead (``skip_hint`` names that option in the error). Returns the dataset (without the
    dropped rows). ``allow_images``: an ``image`` / ``images`` column is kept (for a vision-language model)."""
    import difflib

    where = f"{name} dataset" + (f" {path}" if path else "")
    cols = set(dataset.column_names)
    listwise = is_listwise(cols)
    required = ["prompt", "responses", "scores"] if listwise else ["prompt", "chosen", "rejected"]
    if group_column:
        required.append(group_column)
    missing = [c for c in required if c not in cols]
    if missing:
        near = {c: difflib.get_close_matches(c, sorted(cols), n=1) for c in missing}
        hint = "".join(f"; '{m[0]}' for '{c}'?" for c, m in near.items() if m)
        raise ValueError(f"{where}: missing column(s) {missing}; it has {sorted(cols)}{hint}")
    if not allow_images:  # the trainer checks images against its model (a vision-language one takes them)
        check_no_images(cols, where)
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{where}: the dataset is empty")
    wanted = (*required, weight_column, "target_prob", "target_probs", "chosen_target_prob", "rejected_target_prob")
    # plain lists, read once (as the classifier does): a datasets Column indexed row by row costs a table query
    data = dataset.select_columns(sorted(c for c in cols if c in wanted)).to_dict()
    bad = []
    for i in range(n):
        problem = _row_problem(data, i, listwise, weight_column, group_column)
        if problem:
            bad.append((i, problem))
    if not bad:
        _check_weight_total(data.get(weight_column), where, weight_column)
        return dataset
    labels = row_labels(path, n)
    shown = [f"  {labels[i]}, {problem}" for i, problem in bad[:max_shown]]
    more = f"\n  ... and {len(bad) - max_shown} more" if len(bad) > max_shown else ""
    if skip_invalid:
        if len(bad) == n:
            raise ValueError(f"{where}: every one of its {n} rows is invalid, e.g.\n" + shown[0])
        logger.warning("%s: %d of %d rows dropped as invalid:\n%s%s", where, len(bad), n, "\n".join(shown), more)
        dropped = {i for i, _ in bad}
        weights = data.get(weight_column)
        _check_weight_total(None if weights is None else [w for i, w in enumerate(weights) if i not in dropped],
                            where, weight_column)  # fmt: skip
        return dataset.select([i for i in range(n) if i not in dropped])
    if len(bad) == 1:
        i, problem = bad[0]
        raise ValueError(f"{where}, {labels[i]}, {problem} (1 invalid row of {n}: fix it, or drop it with {skip_hint})")
    i, problem = bad[0]
    raise ValueError(  # the first line names the first bad row; the others follow, one a line
        f"{where}, {labels[i]}, {problem} ({len(bad)} invalid rows of {n}: fix them, or drop them with "
        f"{skip_hint}); the others:\n" + "\n".join(shown[1:]) + more
    )


def check_no_images(columns, where: str = "train dataset") -> None:
    """Image columns are refused, not dropped, unless the model is a vision-language model (the trainer then takes
    them, as TRL's DPOTrainer); TRL refuses images on a text-only model too."""
    images = [c for c in ("image", "images") if c in columns]
    if images:
        raise ValueError(
            f"{where}: column '{images[0]}' holds images (the data is vision-related), and the model is a text-only "
            "model, not a vision-language model (a config with a vision tower, and a processor): drop the column "
            "to train on the text alone, or train a vision-language model"
        )


def _check_weight_total(weights, where: str, column: str) -> None:
    """Weights that are all 0 leave nothing to train on (every objective's gradient is 0)."""
    if weights is not None and weights and not any(w for w in weights if w is not None):
        raise ValueError(f"{where}: every row's '{column}' is 0, so nothing would be learnt; check the weights")


def add_prompt(dataset, where: str = "train dataset"):
    """The dataset with a ``prompt`` column: its own, or the shared start of ``chosen`` and ``rejected`` (rows in
    Anthropic HH's form). A prompt column under another name (``question``, ...) or rows that share no start
    are a one-line error naming the columns present, not rows with an empty prompt."""
    from dora.data.formats import add_implicit_prompt, split_implicit_prompt

    cols = dataset.column_names
    if "prompt" in cols or is_listwise(cols) or not {"chosen", "rejected"} <= set(cols):
        return dataset
    like = [c for c in cols if c.lower() in PROMPT_LIKE or "prompt" in c.lower()]
    data = dataset.select_columns(["chosen", "rejected"]).to_dict()
    empty = sum(
        1 for c, r in zip(data["chosen"], data["rejected"])
        if isinstance(c, (str, list)) and isinstance(r, type(c)) and not split_implicit_prompt(c, r)[0]
    )  # fmt: skip
    if like or empty:
        hint = f"; rename '{like[0]}' to 'prompt'" if like else ""
        shared = f" and the chosen and rejected of {empty} of {len(dataset)} rows share no prompt" if empty else ""
        raise ValueError(f"{where}: no column 'prompt'{shared}; it has {sorted(cols)}{hint}")
    return add_implicit_prompt(dataset)


def check_loss_fits_data(dataset, loss_type, listwise_loss: bool, where: str = "train dataset") -> None:
    """A pairwise loss takes listwise rows only as lists of two (ranked by their scores); longer lists need a
    listwise loss."""
    if listwise_loss or not is_listwise(dataset.column_names):
        return
    sizes = sorted({len(r) for r in dataset["responses"] if isinstance(r, list)} - {2})
    if sizes:
        raise ValueError(
            f"{where}: lists of {', '.join(map(str, sizes))} responses, but loss_type {loss_type} is pairwise "
            "(lists of 2 only): use loss_type dpo_pl (or rrhf, lire)"
        )


def check_weight_columns(columns, weight_column: str = "dora_weight", desc: str = "train") -> None:
    """Classifier probabilities without weights are an error, not weight 1: the weight dQ0/dP needs the
    target share α of the data, which only the classifier's run knows (docs/concepts.md, "Calibration weights")."""
    names = ("target_prob", "target_probs", "chosen_target_prob", "rejected_target_prob")
    probs = [c for c in names if c in columns]
    if probs and weight_column not in columns:
        raise ValueError(
            f"{desc} dataset: column '{probs[0]}' but no '{weight_column}' column: turn the probabilities into "
            f"weights with `dora classify` (which writes '{weight_column}') or "
            f"dora.calibration_weights(probs, target_share=...), or name the weight column with weight_column"
        )
