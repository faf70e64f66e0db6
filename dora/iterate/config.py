"""IterateConfig: what one iterative run needs, read from a YAML recipe (docs/howto/iterate.md lists every key)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from dora.data import read_utf8
from dora.iterate.judge import check_judge_spec

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
        self._check_types()
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
        _check_generation(self.generation)
        if "output_dir" in (self.training or {}):
            raise ValueError("training.output_dir: each round trains in output_dir/round_<r>/trainer (removed after "
                             "the round); set the top-level output_dir instead")  # fmt: skip
        _check_training(self)
        _check_classifier(self.classifier, self.weights)
        _check_lora(self.lora)

    def _check_types(self) -> None:
        """Each key's type, so that ``rounds: "three"`` is one line naming the key, not a comparison error."""
        for name in ("rounds", "samples_per_prompt", "prompts_per_round", "seed"):
            value = getattr(self, name)
            if not (value is None and name == "prompts_per_round") and not _is_int(value):
                raise ValueError(f"{name}: an integer expected, got {value!r}")
        if not _is_number(self.eval_beta):
            raise ValueError(f"eval_beta: a finite number expected, got {self.eval_beta!r}")
        for name in ("model", "output_dir", "reference", "weights"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"{name}: a text value expected, got {getattr(self, name)!r}")
        sources = self.target_sources
        names = isinstance(sources, (list, tuple)) and all(isinstance(s, str) for s in sources)
        if not isinstance(sources, str) and not names:
            raise ValueError(f"target_sources: a source name or a list of names expected, got {sources!r}")
        for name in ("classifier", "generation", "training", "lora"):
            value = getattr(self, name)
            if value is None and name != "lora":
                setattr(self, name, {})  # an empty YAML section
            elif value is not None and not isinstance(value, dict):
                raise ValueError(f"{name}: a mapping of keys to values expected, got {value!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_range(section: str, key: str, value, kind: str, low=None, high=None, low_open=False) -> None:
    """One value of a nested section: its type (``int``, ``number``, ``bool``, ``str``) and range."""
    ok = {"int": _is_int, "number": _is_number, "bool": lambda v: isinstance(v, bool),
          "str": lambda v: isinstance(v, str)}[kind](value)  # fmt: skip
    if not ok:
        raise ValueError(f"{section}.{key}: {'a finite number' if kind == 'number' else f'a {kind}'} expected, "
                         f"got {value!r}")  # fmt: skip
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{section}.{key} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{section}.{key} must be <= {high}, got {value!r}")


GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "batch_size", "backend", "greedy")
# key -> (type, minimum, maximum, minimum excluded)
GENERATION_RANGES = {"max_new_tokens": ("int", 1, None, False), "temperature": ("number", 0, None, True),
                     "top_p": ("number", 0, 1, True), "batch_size": ("int", 1, None, False),
                     "backend": ("str", None, None, False), "greedy": ("bool", None, None, False)}  # fmt: skip
CLASSIFIER_RANGES = {"backend": ("str", None, None, False), "folds": ("int", 1, None, False),
                     "calibration": ("str", None, None, False), "target_share": ("number", 1e-6, 1, False),
                     "stabilizer": ("number", 0, 1e6, False), "preset": ("str", None, None, False),
                     "clip": ("number", 1e-6, None, False), "normalize": ("bool", None, None, False),
                     "eps": ("number", 1e-12, 0.4999, False), "bootstrap": ("int", 0, None, False),
                     "model_name_or_path": ("str", None, None, False), "max_length": ("int", 2, None, False),
                     "batch_size": ("int", 1, None, False), "epochs": ("number", 0, None, True),
                     "learning_rate": ("number", 0, None, True)}  # fmt: skip
LABELLED_ONLY = ("target_share", "stabilizer", "preset")  # the density ratio has no source labels
DENSITY_ONLY = ("bootstrap",)
LORA_KEYS = ("r", "alpha", "dropout", "target_modules")


def _check_generation(generation: dict) -> None:
    _check_keys("generation", generation, GENERATION_KEYS)
    for key, value in generation.items():
        _check_range("generation", key, value, *GENERATION_RANGES[key])
    if generation.get("backend", "hf") not in ("hf", "vllm"):
        raise ValueError(f"generation.backend must be 'hf' or 'vllm', got {generation['backend']!r}")


def _check_classifier(classifier: dict, weights: str) -> None:
    """The classifier keywords a round passes to ``annotate`` (or ``annotate_density_ratio``), checked now."""
    _check_keys("classifier", classifier, CLASSIFIER_RANGES)
    wrong = LABELLED_ONLY if weights == "density" else DENSITY_ONLY if weights == "classifier" else ()
    for key, value in classifier.items():
        if key in wrong:
            raise ValueError(f"classifier.{key} does not apply to weights: {weights}")
        if key == "clip" and value == "auto" and weights == "density":
            continue
        _check_range("classifier", key, value, *CLASSIFIER_RANGES[key])
    if classifier.get("calibration", "platt") not in ("platt", "isotonic", "none"):
        raise ValueError(f"classifier.calibration must be platt, isotonic or none, got {classifier['calibration']!r}")
    if classifier.get("preset") not in (None, "authors"):
        raise ValueError(f"classifier.preset must be 'authors' (or left out), got {classifier['preset']!r}")
    if weights == "density" and classifier.get("folds", 2) < 2:
        raise ValueError(f"classifier.folds must be >= 2 with weights: density, got {classifier['folds']}")
    if classifier.get("backend") is not None:
        from dora.classifier.backends import BACKENDS

        if classifier["backend"] not in BACKENDS:
            raise ValueError(f"classifier.backend {classifier['backend']!r} is not one of "
                             f"{sorted(BACKENDS)}")  # fmt: skip


def _check_lora(lora: dict | None) -> None:
    if lora is None:
        return
    from peft import LoraConfig

    set_by_round = {"lora_alpha", "lora_dropout", "task_type"}  # the round passes these itself
    _check_keys("lora", lora, set(LORA_KEYS) | {f.name for f in dataclasses.fields(LoraConfig)} - set_by_round)
    for key, kind, low in (("r", "int", 1), ("alpha", "number", 0), ("dropout", "number", 0)):
        if key in lora:
            _check_range("lora", key, lora[key], kind, low, 1 if key == "dropout" else None, key == "alpha")
    modules = lora.get("target_modules")
    if modules is not None and not isinstance(modules, str) and not (
            isinstance(modules, (list, tuple)) and all(isinstance(m, str) for m in modules)):  # fmt: skip
        raise ValueError(f"lora.target_modules: a module name or a list of names expected, got {modules!r}")


def _check_training(cfg: IterateConfig) -> None:
    """The ``training`` values as DoRAConfig reads them, with the settings each round adds (so that a NaN
    learning rate stops here, not after round 1's sampling)."""
    from dora.config import DoRAConfig

    _check_keys("training", cfg.training, _doraconfig_fields())
    kwargs = dict(output_dir=os.path.join(cfg.output_dir, "round_1", "trainer"), save_strategy="no", report_to=[],
                  disable_tqdm=True, logging_steps=5)  # fmt: skip
    kwargs.update(cfg.training)
    kwargs["seed"] = cfg.seed + 1
    numeric = {f.name: f.default for f in dataclasses.fields(DoRAConfig)
               if isinstance(f.default, (int, float)) and not isinstance(f.default, bool)}  # fmt: skip
    for key, value in cfg.training.items():
        if key in numeric and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"training.{key}: a number expected, got {value!r}")
    try:
        DoRAConfig(**kwargs)
    except (TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"training: {first}") from None


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
        text = read_utf8(path)
        try:
            recipe = yaml.safe_load(text) or {}
        except yaml.MarkedYAMLError as e:
            raise ValueError(f"{path}, line {e.problem_mark.line + 1}: not valid YAML ({e.problem})") from None
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
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
    where = path or "dora iterate"
    try:
        config = IterateConfig(**recipe)
        for key in ("judge", "eval_judge"):
            if data.get(key) is not None:
                check_judge_spec(data[key], key)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    for key in ("pool", "prompts", "eval_data", "trusted"):
        value = data.get(key)
        rows = isinstance(value, list) and all(isinstance(r, dict) for r in value)
        if key in data and not isinstance(value, str) and not rows:
            raise ValueError(f"{where}: {key}: a jsonl path (or a list of rows) expected, got {value!r}")
    return config, data
