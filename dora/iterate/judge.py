"""Step (2) of a round: a judge scores each prompt's k responses; the best and the worst make a pair.

A judge is any callable ``judge(prompts, responses) -> scores`` with ``responses[i]`` the k responses to
``prompts[i]`` and ``scores[i]`` their k scores (higher is preferred); under ``accelerate launch`` each
process judges its shard of the prompts. ``RewardModelJudge`` wraps a reward model
(``AutoModelForSequenceClassification``, one or two labels). In a recipe: ``judge: {reward_model: PATH}``
or ``judge: {callable: "package.module:name", kwargs: {...}}`` (a class is instantiated with kwargs).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

__all__ = ["RewardModelJudge", "check_judge_spec", "load_judge", "judge_distributed", "make_pairs"]


class RewardModelJudge:
    """Scores every (prompt, response) with a reward model (``dora.eval.preference.RewardModel``)."""

    def __init__(self, path: str, batch_size: int = 16, max_length: int = 1024, device: str | None = None):
        from dora.eval.preference import RewardModel

        self.model = RewardModel(path, batch_size=batch_size, max_length=max_length, device=device)

    def __call__(self, prompts: list, responses: list[list[str]]) -> list[list[float]]:
        flat_p = [p for p, rs in zip(prompts, responses) for _ in rs]
        flat_r = [r for rs in responses for r in rs]
        flat = self.model.score(flat_p, flat_r).tolist()
        out, i = [], 0
        for rs in responses:
            out.append(flat[i : i + len(rs)])
            i += len(rs)
        return out


def check_judge_spec(spec, key: str = "judge") -> None:
    """The shape of a recipe's judge, checked when the recipe is read (nothing is imported or loaded here)."""
    if callable(spec):
        return
    if isinstance(spec, str):
        spec = {"callable": spec}
    if not isinstance(spec, dict) or len({"reward_model", "callable"} & set(spec)) != 1:
        raise ValueError(f"{key}: expected {{reward_model: PATH}} or {{callable: 'module:name'}}, got {spec!r}")
    if "callable" in spec:
        target = spec["callable"]
        if not isinstance(target, str) or ":" not in target or not all(target.split(":", 1)):
            raise ValueError(f"{key}: callable must read 'package.module:name', got {target!r}")
        unknown = sorted(set(spec) - {"callable", "kwargs"})
        if unknown:
            raise ValueError(f"{key}: unknown key(s) {unknown} next to callable")
        if not isinstance(spec.get("kwargs") or {}, dict):
            raise ValueError(f"{key}: kwargs must be a mapping, got {spec['kwargs']!r}")
    elif not isinstance(spec["reward_model"], str):
        raise ValueError(f"{key}: reward_model must be a folder or a Hub id, got {spec['reward_model']!r}")
    else:
        unknown = sorted(set(spec) - {"reward_model", "batch_size", "max_length", "device"})
        if unknown:
            raise ValueError(f"{key}: unknown key(s) {unknown} next to reward_model")


def load_judge(spec, key: str = "judge") -> Callable:
    """A judge from a recipe value: a callable, ``{"reward_model": path, ...}``, ``{"callable": "mod:name",
    "kwargs": {...}}``, or a string ``"mod:name"``. A ``module:name`` judge imports that module, which runs its
    code (from the working directory too): use only judges whose code you trust."""
    check_judge_spec(spec, key)
    if callable(spec):
        return spec
    spec = dict({"callable": spec} if isinstance(spec, str) else spec)
    if "reward_model" in spec:
        from dora.local_model import check_model_folder, local_num_labels

        check_model_folder(spec["reward_model"], f"{key}.reward_model")
        if local_num_labels(spec["reward_model"]) not in (None, 1, 2):
            raise ValueError(f"{key}.reward_model {spec['reward_model']!r}: a reward model has 1 or 2 labels")
        return RewardModelJudge(spec.pop("reward_model"), **spec)
    module, name = spec["callable"].split(":", 1)
    try:
        obj = getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise ValueError(f"{key}: cannot import module {module!r} ({e})") from None
    except AttributeError:
        raise ValueError(f"{key}: module {module!r} has no {name!r}") from None
    kwargs = spec.get("kwargs") or {}
    try:
        judge = obj(**kwargs) if isinstance(obj, type) else obj
    except TypeError as e:
        raise ValueError(f"{key}: {spec['callable']}(**kwargs): {e}") from None
    if not callable(judge):
        raise ValueError(f"{key}: {spec['callable']} is not callable")
    return judge


def judge_distributed(judge: Callable, prompts: list, responses: list[list[str]]) -> list[list[float]]:
    """``judge(prompts, responses)`` with the prompts split across the processes of ``accelerate launch`` as
    the sampling splits them (one process: the same call): each prompt is judged once, by one process, and
    every process gets all the scores, in prompt order, so every process builds the same pool."""
    from accelerate.utils import gather_object

    from dora.iterate.generate import process_state, shard_indices, unshard

    state = process_state()
    if state.num_processes == 1:
        return judge(prompts, responses)
    idx = shard_indices(len(prompts), state.process_index, state.num_processes)
    mine = judge([prompts[i] for i in idx], [responses[i] for i in idx]) if idx else []
    mine = [[float(s) for s in ss] for ss in mine]
    parts = dict(gather_object([(state.process_index, mine)]))  # one (rank, scores) entry per process
    return unshard([parts[r] for r in range(state.num_processes)], len(prompts))


def make_pairs(prompts: list, responses: list[list[str]], scores: list[list[float]], source: str):
    """One preference row per prompt: the highest-scored response (chosen) against the lowest (rejected).
    Empty responses are left out first; a prompt whose remaining responses all score the same, or read the
    same, gives no pair. Returns (rows, counts)."""
    if len(scores) != len(prompts):
        raise ValueError(f"judge returned scores for {len(scores)} prompts, expected {len(prompts)}")
    rows, counts = [], {"prompts": len(prompts), "pairs": 0, "ties": 0, "empty_responses": 0}
    for i, (p, rs, ss) in enumerate(zip(prompts, responses, scores)):
        ss = [float(s) for s in ss]
        if len(ss) != len(rs):
            raise ValueError(f"judge: prompt {i} has {len(rs)} responses but {len(ss)} scores")
        if any(not math.isfinite(s) for s in ss):
            raise ValueError(f"judge: prompt {i} has a score that is NaN or infinite: {ss}")
        kept = [(s, r) for s, r in zip(ss, rs) if r.strip()]
        counts["empty_responses"] += len(rs) - len(kept)
        if len(kept) < 2:
            counts["ties"] += 1
            continue
        best = max(range(len(kept)), key=lambda j: kept[j][0])  # first of the best, first of the worst
        worst = min(range(len(kept)), key=lambda j: kept[j][0])
        if kept[best][0] == kept[worst][0] or kept[best][1] == kept[worst][1]:
            counts["ties"] += 1
            continue
        rows.append({"prompt": p, "chosen": kept[best][1], "rejected": kept[worst][1], "source": source})
    counts["pairs"] = len(rows)
    return rows, counts
