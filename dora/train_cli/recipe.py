"""`dora train`'s keys: the tables of recipe keys and `trl dpo` flags, ``--help``, and the recipe (YAML + flags)
read into DoRAConfig kwargs and recipe keys, with the nearest known key for a typo."""

from __future__ import annotations

import dataclasses
import difflib
import os

import yaml

# keys beside DoRAConfig's fields: name -> help
RECIPE_KEYS = {
    "model_name_or_path": "the policy: a local folder (a model or a PEFT adapter) or a Hub id",
    "ref_model_name_or_path": "an explicit reference model (default: see the start-up summary)",
    "dataset": "training data: a local file (jsonl, json, parquet, csv), a saved dataset, or a Hub id",
    "dataset_config": "the Hub dataset's configuration name",
    "dataset_split": "the split of dataset to train on (default: train)",
    "eval_dataset": "held-out data (default: dataset's eval_dataset_split when eval_strategy is not 'no')",
    "eval_dataset_split": "the split of eval_dataset, or of dataset (default: test)",
    "torch_dtype": "dtype to load the model in: auto, bfloat16, float16, float32",
    "model_revision": "the model's revision on the Hub (branch, tag or commit)",
    "attn_implementation": "attention implementation: eager, sdpa, flash_attention_2, ...",
    "lora": "a LoRA mapping: r, alpha, dropout, target_modules and any other LoraConfig field",
    "use_peft": "train a LoRA adapter (the --lora_* flags set it; default r 16, alpha 32, dropout 0.05)",
    "lora_r": "LoRA rank r (default 16)",
    "lora_alpha": "LoRA alpha (default 32)",
    "lora_dropout": "LoRA dropout (default 0.05)",
    "lora_target_modules": "modules to adapt: names, or all-linear",
    "lora_target_parameters": "parameters to adapt (LoraConfig target_parameters)",
    "lora_modules_to_save": "modules trained in full and saved beside the adapter",
    "lora_task_type": "PEFT task type (default CAUSAL_LM)",
    "use_rslora": "rank-stabilised LoRA (scaling alpha / sqrt(r))",
    "use_dora": "PEFT's weight-decomposed LoRA (a LoRA variant, not this library's DoRA objective)",
    "ignore_bias_buffers": "DDP: ignore the model's boolean buffers (as trl dpo)",
    "overwrite_output_dir": "write into an output_dir that holds files (an earlier run's are replaced)",
}
# `trl dpo`'s names (and --model / --ref_model, as `dora eval`) for recipe keys
ALIASES = {
    "model": "model_name_or_path",
    "ref_model": "ref_model_name_or_path",
    "dataset_name": "dataset",
    "dataset_train_split": "dataset_split",
    "dataset_test_split": "eval_dataset_split",
    "dtype": "torch_dtype",
}
# `trl dpo` flags accepted only at their default: name -> (default, what to do instead)
REFUSED_FLAGS = {
    "dataset_streaming": (False, "streaming is not supported: give a local file, a saved dataset or a Hub id"),
    "streaming": (False, "streaming is not supported: give a local file, a saved dataset or a Hub id"),
    "datasets": (None, "dataset mixtures are not supported: give one dataset (and eval_dataset)"),
    "test_split_size": (None, "give the held-out data as eval_dataset"),
    "load_in_8bit": (False, "quantised loading is not supported here: pass a quantised model to DoRATrainer"),
    "load_in_4bit": (False, "quantised loading is not supported here: pass a quantised model to DoRATrainer"),
    "bnb_4bit_quant_type": ("nf4", "quantised loading is not supported here"),
    "use_bnb_nested_quant": (False, "quantised loading is not supported here"),
    "bnb_4bit_quant_storage": (None, "quantised loading is not supported here"),
}
LORA_FLAGS = {
    "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_target_modules": "target_modules",
    "lora_target_parameters": "target_parameters", "lora_modules_to_save": "modules_to_save",
    "lora_task_type": "task_type", "use_rslora": "use_rslora", "use_dora": "use_dora",
}  # fmt: skip
LORA_DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.05}  # trl dpo's


class UsageError(ValueError):
    """A mistake in the command line, the recipe or the data, reported in one line."""


def _fields() -> dict:
    from dora.config import DoRAConfig

    return {f.name: f for f in dataclasses.fields(DoRAConfig) if f.init and not f.name.startswith("_")}


def _first_sentence(text: str, width: int = 100) -> str:
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    cut = text.find(". ")
    return text[: cut + 1] if 0 < cut < width else text[: width - 3] + "..."


def _default(f) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "required"


def help_text() -> str:
    """Every key `dora train` takes, by section, with its default and meaning."""
    from dora.config import DoRAConfig

    fields = _fields()
    declared = set(DoRAConfig.__annotations__)  # DoRAConfig's own fields and its overrides of TrainingArguments
    own = [f for n, f in fields.items() if n in declared]
    rest = [f for n, f in fields.items() if n not in declared and n != "debug"]  # --debug: tracebacks
    lines = ["recipe keys and `trl dpo` flags:"]
    lines += [f"  --{k:<30} {v}" for k, v in RECIPE_KEYS.items()]
    lines += [f"  --{k:<30} the same as --{v}" for k, v in ALIASES.items()]
    lines += ["", "DoRAConfig fields (TRL DPOConfig names; docs/training.md has the table):"]
    lines += [f"  --{f.name:<30} {_first_sentence(f.metadata.get('help', ''))} [{_default(f)}]" for f in own]
    lines += ["", "transformers TrainingArguments fields:"]
    lines += [f"  --{f.name:<30} {_first_sentence(f.metadata.get('help', ''))} [{_default(f)}]" for f in rest]
    lines += ["", "Values are read as YAML (--loss_type '[sigmoid, sft]' or --loss_type sigmoid sft);",
              "--flag alone is true, --no_flag false. Everything is checked before the model loads."]  # fmt: skip
    return "\n".join(lines)


def _parse_value(text: str, key: str = ""):
    if text.lower() in ("yes", "no", "on", "off", "y", "n"):  # YAML 1.1 booleans: --save_strategy no is text
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError(f"--{key} {text!r}: not a YAML value ({problem})") from None
    return _number(value) if isinstance(value, str) else value


def _number(value: str):
    """YAML 1.1 reads ``1e-5`` as a string; read it as the number a user means."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_overrides(tokens: list[str]) -> dict:
    """``["--a", "1", "--b=x", "--flag", "--l", "x", "y"]`` -> ``{"a": 1, "b": "x", "flag": True, "l": ["x", "y"]}``;
    values are read as YAML, several values after one flag make a list (HfArgumentParser's ``nargs="+"``)."""
    out, i = {}, 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise UsageError(f"expected --key value, got {tok!r}")
        key, i = tok[2:], i + 1
        if "=" in key:
            key, value = key.split("=", 1)
            out[key.replace("-", "_")] = _parse_value(value, key)
            continue
        values = []
        while i < len(tokens) and not tokens[i].startswith("--"):
            values.append(_parse_value(tokens[i], key))
            i += 1
        out[key.replace("-", "_")] = True if not values else values[0] if len(values) == 1 else values
    return out


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise UsageError(f"recipe {path!r} not found")
    try:
        with open(path) as f:
            recipe = yaml.safe_load(f) or {}
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        raise UsageError(f"{path}, line {mark.line + 1}: not valid YAML ({e.problem})") from e
    except (UnicodeDecodeError, yaml.YAMLError) as e:  # yaml's reader: bytes that are not UTF-8 text
        raise UsageError(f"{path}: not a UTF-8 YAML file ({str(e).splitlines()[0]})") from e
    if not isinstance(recipe, dict):
        raise UsageError(f"{path}: a mapping of keys to values expected, got {type(recipe).__name__}")
    return recipe


def _suggest(key: str, known) -> str:
    """The nearest known name; among near ones, one holding every word of ``key`` first, a train setting
    before an eval one (``per_device_batch_size``: ``per_device_train_batch_size``)."""
    near = difflib.get_close_matches(key.replace("-", "_"), sorted(known), n=4, cutoff=0.6)
    words = set(key.replace("-", "_").split("_"))
    near.sort(key=lambda k: (not words <= set(k.split("_")), "eval" in k and "eval" not in words))
    return f" (did you mean '{near[0]}'?)" if near else ""


# booleans: the words `trl dpo` reads (HfArgumentParser's string_to_bool, but t/f), and on/off
TRUE, FALSE = ("true", "yes", "y", "on", "1"), ("false", "no", "n", "off", "0")
ONE_VALUE = ("model_name_or_path", "ref_model_name_or_path", "dataset", "dataset_config", "dataset_split",
             "eval_dataset", "eval_dataset_split", "output_dir", "resume_from_checkpoint", "torch_dtype",
             "model_revision", "attn_implementation")  # fmt: skip
RECIPE_BOOLS = ("use_peft", "use_rslora", "use_dora", "ignore_bias_buffers", "overwrite_output_dir")
DTYPES = ("auto", "bfloat16", "float16", "float32")


def _kind(f) -> str | None:
    """"bool" or "number" for a field whose annotation is only that (optionally None), else None."""
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if any(w in t for w in ("str", "list", "dict", "Literal", "Enum", "Strategy", "Type")):
        return None
    if "bool" in t:
        return "bool"
    return "number" if ("float" in t or "int" in t) else None


def _integer(f) -> bool:
    """A field whose annotation is int (optionally None), not float."""
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return "int" in t and "float" not in t


def _to_bool(key: str, v):
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise UsageError(f"key '{key}': true or false expected, got {v!r}")


def _check_types(recipe: dict, fields: dict) -> None:
    """A text where a number or a boolean field expects one (DoRAConfig would fail later, or not at all); yes/no
    words read as booleans where a boolean belongs (as `trl dpo`); one value where one path belongs."""
    for k, v in list(recipe.items()):
        if k in ONE_VALUE and isinstance(v, list):
            raise UsageError(f"key '{k}': one value expected, got {len(v)}: {v!r}")
        if k in ONE_VALUE and k != "resume_from_checkpoint" and (isinstance(v, bool) or v is None or v == ""):
            raise UsageError(f"key '{k}': a value expected (a path or a name), got {v!r}")
        if k in RECIPE_BOOLS:
            recipe[k] = _to_bool(k, v)
            continue
        f = fields.get(k)
        if f is None:
            continue
        if isinstance(v, bool) and isinstance(f.default, str):
            recipe[k] = "yes" if v else "no"  # YAML 1.1 reads `save_strategy: no` as false
            continue
        kind = _kind(f) or ("bool" if isinstance(f.default, bool) else None)
        if v is None or kind is None:
            continue
        if kind == "bool":
            recipe[k] = _to_bool(k, v)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UsageError(f"key '{k}': a number expected, got {v!r}")
        elif isinstance(v, float) and _integer(f) and not v.is_integer():
            raise UsageError(f"key '{k}': a whole number expected, got {v!r}")


def load_recipe(path: str | None, overrides: dict) -> tuple[dict, dict]:
    """(DoRAConfig kwargs, recipe keys) from a YAML recipe and overrides; unknown keys name the nearest known."""
    fields = _fields()
    recipe = _read_yaml(path) if path else {}
    for given in (recipe, overrides):
        for alias, name in ALIASES.items():
            if alias in given:
                given[name] = given.pop(alias)
    recipe.update(overrides)
    bools = {k for k, f in fields.items() if isinstance(f.default, bool)} | {
        k for k in (*RECIPE_KEYS, *REFUSED_FLAGS) if k.startswith("use_") or k.startswith("load_in")
    }
    for k in [k for k in recipe if k.startswith("no_") and k[3:] in bools and recipe[k] is True]:
        del recipe[k]
        recipe[k[3:]] = False  # --no_remove_unused_columns, as HfArgumentParser
    if "debug" in recipe:  # TrainingArguments' debug options; dora train's --debug shows tracebacks
        raise UsageError(
            "key 'debug': dora train's --debug (a flag, no value) shows the traceback of an error; "
            "TrainingArguments' debug options are not available"
        )
    known = set(fields) | set(RECIPE_KEYS) | set(ALIASES) | set(REFUSED_FLAGS)
    unknown = [k for k in recipe if k not in known]
    if unknown:
        listed = ", ".join(f"'{k}'{_suggest(k, known)}" for k in unknown)
        raise UsageError(f"unknown key(s) {listed}: see dora train --help")
    for k, (default, instead) in REFUSED_FLAGS.items():
        if k in recipe and recipe[k] != default and not (default is None and recipe[k] in ([], "")):
            raise UsageError(f"{k}={recipe[k]!r} is not supported by dora train: {instead}")
        recipe.pop(k, None)
    recipe = {k: _number(v) if isinstance(v, str) else v for k, v in recipe.items()}
    _check_types(recipe, fields)
    extra = {k: recipe.pop(k) for k in list(recipe) if k in RECIPE_KEYS}
    if extra.get("torch_dtype") is not None and extra["torch_dtype"] not in DTYPES:
        raise UsageError(f"torch_dtype {extra['torch_dtype']!r}: one of {', '.join(DTYPES)} expected")
    if "model_name_or_path" not in extra:
        raise UsageError("no model: give --model_name_or_path (or model_name_or_path in the recipe)")
    if "dataset" not in extra:
        raise UsageError("no data: give --dataset_name / --dataset (a local file or folder, or a Hub id)")
    recipe.setdefault("output_dir", "dora_output")
    return recipe, extra


def lora_config(extra: dict):
    """The LoraConfig of a ``lora:`` mapping and the ``--use_peft`` / ``--lora_*`` flags (flags win), or None."""
    flags = {LORA_FLAGS[k]: extra[k] for k in LORA_FLAGS if k in extra}
    for key in ("target_modules", "modules_to_save"):  # one name after the flag is a list of one (trl dpo's nargs)
        if isinstance(flags.get(key), str) and flags[key] != "all-linear":
            flags[key] = [flags[key]]
    mapping = extra.get("lora")
    if extra.get("use_peft") is False:  # an explicit --use_peft false wins over --lora_* flags, as in trl dpo
        return None
    if not (mapping or flags or extra.get("use_peft")):
        return None
    if mapping is not None and not isinstance(mapping, dict):
        raise UsageError(f"lora: a mapping (r, alpha, dropout, target_modules, ...) expected, got {mapping!r}")
    from peft import LoraConfig

    lora = {**LORA_DEFAULTS, **(mapping or {}), **flags}
    names = {"alpha": "lora_alpha", "dropout": "lora_dropout"}
    lora = {names.get(k, k): v for k, v in lora.items()}
    known = {f.name for f in dataclasses.fields(LoraConfig) if f.init} | {"alpha", "dropout"}
    unknown = [k for k in lora if k not in known]
    if unknown:
        listed = ", ".join(f"'{k}'{_suggest(k, known)}" for k in unknown)
        raise UsageError(f"unknown key(s) in lora: {listed}")
    lora.setdefault("task_type", "CAUSAL_LM")
    for key, ok, want in (("r", lambda x: isinstance(x, int) and x >= 1, "a whole number >= 1"),
                          ("lora_alpha", lambda x: isinstance(x, (int, float)) and 0 < x < float("inf"), "> 0"),
                          ("lora_dropout", lambda x: isinstance(x, (int, float)) and 0 <= x < 1, "in [0, 1)")):
        if key in lora and not ok(lora[key]):
            raise UsageError(f"lora: {key} must be {want}, got {lora[key]!r}")  # fmt: skip
    try:
        return LoraConfig(**lora)
    except (TypeError, ValueError) as e:
        raise UsageError(f"lora: {e}") from e
