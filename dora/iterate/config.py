"""IterateConfig: what one iterative run needs, read from a YAML recipe (docs/howto/iterate.md lists every key)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

__all__ = ["IterateConfig", "load_iterate_recipe"]

WEIGHT_MODES = ("classifier", "density", "none")
REFERENCES = ("fixed", "previous")


@dataclass
class IterateConfig:
    """Rounds of generate -> judge -> re-weight -> train. ``training`` holds DoRAConfig fields for each round."""

    model: str  # the round-0 policy: a folder or a Hub id
    output_dir: str = "iterate_out"
    rounds: int = 3
    samples_per_prompt: int = 4  # k responses per prompt; the best and the worst make one pair
    prompts_per_round: int | None = None  # a seeded subset of the prompts each round; None: all
    reference: str = "fixed"  # fixed: the round-0 policy; previous: the policy the round starts from
    weights: str = "classifier"  # classifier (labelled sources) | density (no labels) | none (unit weights)
    target_sources: list[str] = field(default_factory=lambda: ["human"])
    classifier: dict = field(default_factory=dict)  # dora.classifier.annotate keywords (backend, folds, ...)
    generation: dict = field(default_factory=dict)  # max_new_tokens, temperature, top_p, batch_size, backend
    training: dict = field(default_factory=dict)  # DoRAConfig fields
    lora: dict | None = None  # r, alpha, dropout, target_modules: a fresh adapter per round, merged after it
    eval_beta: float = 0.1  # β of the implicit reward in the per-round preference accuracy
    seed: int = 0

    def __post_init__(self):
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2 (a pair needs two), got {self.samples_per_prompt}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.weights not in WEIGHT_MODES:
            raise ValueError(f"weights must be one of {WEIGHT_MODES}, got {self.weights!r}")
        if not self.target_sources:
            raise ValueError("target_sources must name at least one source")
        if isinstance(self.target_sources, str):
            self.target_sources = [self.target_sources]
        if not self.eval_beta > 0:
            raise ValueError(f"eval_beta must be > 0, got {self.eval_beta}")
        if self.prompts_per_round is not None and self.prompts_per_round < 1:
            raise ValueError(f"prompts_per_round must be >= 1 (or left out: all prompts), got {self.prompts_per_round}")
        _check_keys("generation", self.generation, GENERATION_KEYS)
        _check_keys("training", self.training, _doraconfig_fields())
        if self.classifier.get("backend") is not None:
            from dora.classifier.backends import BACKENDS

            if self.classifier["backend"] not in BACKENDS:
                raise ValueError(f"classifier.backend {self.classifier['backend']!r} is not one of "
                                 f"{sorted(BACKENDS)}")  # fmt: skip
        if "output_dir" in (self.training or {}):
            raise ValueError("training.output_dir: each round trains in output_dir/round_<r>/trainer (removed after "
                             "the round); set the top-level output_dir instead")  # fmt: skip


GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "batch_size", "backend", "greedy")


def _doraconfig_fields() -> set[str]:
    from dora.config import DoRAConfig

    return {f.name for f in dataclasses.fields(DoRAConfig) if f.init}


def _check_keys(section: str, given: dict, known) -> None:
    """An unknown key of a ``generation`` / ``training`` mapping, with the nearest known one, before any model
    loads (it would otherwise fail only when the round reaches it)."""
    import difflib

    if not isinstance(given, dict):
        raise ValueError(f"{section}: a mapping of keys to values expected, got {given!r}")
    for key in given:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ValueError(f"{section}: unknown key '{key}'{hint}")


# keys of a recipe that are not IterateConfig fields: where the data and the judge come from
DATA_KEYS = ("pool", "prompts", "eval_data", "judge", "eval_judge", "trusted")


def load_iterate_recipe(path: str | None, overrides: dict | None = None) -> tuple[IterateConfig, dict]:
    """(IterateConfig, data keys) from a YAML recipe and ``--key value`` overrides; unknown keys are an error."""
    import yaml

    recipe = {}
    if path:
        if not os.path.isfile(os.path.expanduser(path)):
            raise FileNotFoundError(f"recipe {path!r} not found")
        try:
            with open(os.path.expanduser(path)) as f:
                recipe = yaml.safe_load(f) or {}
        except yaml.MarkedYAMLError as e:
            raise ValueError(f"{path}, line {e.problem_mark.line + 1}: not valid YAML ({e.problem})") from None
        if not isinstance(recipe, dict):
            raise ValueError(f"{path}: a recipe is a mapping of keys to values")
    recipe.update(overrides or {})
    fields = {f.name for f in dataclasses.fields(IterateConfig)}
    unknown = sorted(k for k in recipe if k not in fields and k not in DATA_KEYS)
    if unknown:
        known = sorted(fields) + list(DATA_KEYS)
        raise ValueError(f"{path or 'dora iterate'}: unknown key(s) {unknown}; known: {known}")
    data = {k: recipe.pop(k) for k in DATA_KEYS if k in recipe}
    for k in ("model", "pool", "judge"):
        if k not in recipe and k not in data:
            raise ValueError(f"{path or 'dora iterate'}: the recipe needs '{k}'")
    try:
        return IterateConfig(**recipe), data
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path or 'dora iterate'}: {e}") from None
