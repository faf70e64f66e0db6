"""`dora train [--config recipe.yaml] [--any_field value ...]`: TRL's `trl dpo` flags and DoRAConfig fields.

Keys (YAML or ``--flags``; flags override the recipe) are DoRAConfig fields plus the recipe keys below, which
include `trl dpo`'s script and model flags (``--dataset_name``, ``--use_peft``, ``--lora_r``, ...). Before
any model loads, everything a user can get wrong is checked and reported in one line: unknown keys (with
the nearest known one), refused TRL values, missing local paths, trackers that are not installed, an
adapter whose base cannot be found, and every row of the train and eval data. ``--debug`` shows the
traceback; ``--skip-invalid-rows`` drops invalid rows instead, and counts them.
Runs the same under ``accelerate launch -m dora train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import sys

import yaml

logger = logging.getLogger(__name__)

ACCEPTS_OVERRIDES = True

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


# --------------------------------------------------------------------------- arguments and --help


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
    rest = [f for n, f in fields.items() if n not in declared]
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML recipe: any of the keys below")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument(
        "--skip-invalid-rows", "--skip_invalid_rows", dest="skip_invalid_rows", action="store_true",
        help="drop invalid train/eval rows (counted in a warning) instead of stopping",
    )  # fmt: skip
    p.allow_abbrev = False  # --learning_rat is a typo to report, not an abbreviation
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.set_defaults(overrides=[])
    p.epilog = help_text()


def _parse_value(text: str):
    if text.lower() in ("yes", "no", "on", "off", "y", "n"):  # YAML 1.1 booleans: --save_strategy no is text
        return text
    value = yaml.safe_load(text)
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
            out[key.replace("-", "_")] = _parse_value(value)
            continue
        values = []
        while i < len(tokens) and not tokens[i].startswith("--"):
            values.append(_parse_value(tokens[i]))
            i += 1
        out[key.replace("-", "_")] = True if not values else values[0] if len(values) == 1 else values
    return out


# --------------------------------------------------------------------------- the recipe


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise UsageError(f"recipe {path!r} not found")
    try:
        with open(path) as f:
            recipe = yaml.safe_load(f) or {}
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        raise UsageError(f"{path}, line {mark.line + 1}: not valid YAML ({e.problem})") from e
    if not isinstance(recipe, dict):
        raise UsageError(f"{path}: a mapping of keys to values expected, got {type(recipe).__name__}")
    return recipe


def _suggest(key: str, known) -> str:
    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{near[0]}'?)" if near else ""


def _check_types(recipe: dict, fields: dict) -> None:
    """A text where a number or a boolean field expects one (DoRAConfig would fail later, or not at all)."""
    for k, v in list(recipe.items()):
        f = fields.get(k)
        if f is not None and isinstance(v, bool) and isinstance(f.default, str):
            recipe[k] = "yes" if v else "no"  # YAML 1.1 reads `save_strategy: no` as false
            continue
        if f is None or not isinstance(v, str) or f.default is dataclasses.MISSING or f.default is None:
            continue
        if isinstance(f.default, bool):
            raise UsageError(f"key '{k}': true or false expected, got {v!r}")
        if isinstance(f.default, (int, float)):
            raise UsageError(f"key '{k}': a number expected, got {v!r}")


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
    if "model_name_or_path" not in extra:
        raise UsageError("no model: give --model_name_or_path (or model_name_or_path in the recipe)")
    if "dataset" not in extra:
        raise UsageError("no data: give --dataset_name / --dataset (a local file or folder, or a Hub id)")
    recipe.setdefault("output_dir", "dora_output")
    return recipe, extra


def lora_config(extra: dict):
    """The LoraConfig of a ``lora:`` mapping and the ``--use_peft`` / ``--lora_*`` flags (flags win), or None."""
    flags = {LORA_FLAGS[k]: extra[k] for k in LORA_FLAGS if k in extra}
    mapping = extra.get("lora")
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
    try:
        return LoraConfig(**lora)
    except (TypeError, ValueError) as e:
        raise UsageError(f"lora: {e}") from e


# --------------------------------------------------------------------------- checks before the model loads


def adapter_base(path: str) -> str | None:
    """For a folder holding a PEFT adapter, its base model: relative paths resolved against the working
    directory, then against the adapter's folder; a base that is neither is an error naming it."""
    cfg_path = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(cfg_path):
        return None
    with open(cfg_path) as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{cfg_path}: no base_model_name_or_path")
    from dora.data import looks_local

    for candidate in (base, os.path.join(path, base)):
        if os.path.isdir(os.path.expanduser(candidate)):
            return os.path.abspath(os.path.expanduser(candidate))
    if looks_local(base):
        raise UsageError(
            f"adapter {path!r}: its base model {base!r} (adapter_config.json base_model_name_or_path) is not "
            f"found, neither from {os.getcwd()} nor from the adapter's folder; edit it or run from its folder"
        )
    return base  # a Hub id


def check_model_path(path: str, what: str) -> None:
    from dora.data import check_local_path

    check_local_path(path, what)
    full = os.path.expanduser(path)
    if os.path.isdir(full) and not any(
        os.path.isfile(os.path.join(full, n)) for n in ("config.json", "adapter_config.json")
    ):
        raise UsageError(f"{what} {path!r}: the folder has no config.json (nor adapter_config.json)")


def load_data(args, extra: dict, skip_invalid: bool = False):
    """(train, eval or None), loaded and every row validated, before any model loads."""
    from dora.data import add_implicit_prompt, check_weight_columns, is_listwise, load_rows, validate_rows

    group = args.group_column if args.objective == "group_dro" else None
    parts = [("train", extra["dataset"], extra.get("dataset_split", "train"))]
    if extra.get("eval_dataset"):
        parts.append(("eval", extra["eval_dataset"], extra.get("eval_dataset_split", "test")))
    elif args.eval_strategy != "no":  # trl dpo: the dataset's test split
        parts.append(("eval", extra["dataset"], extra.get("eval_dataset_split", "test")))
    out = []
    for name, source, split in parts:
        no_eval = UsageError(
            f"eval_strategy={args.eval_strategy.value!r} needs eval data: {source!r} has no split {split!r}; "
            f"give eval_dataset (or eval_strategy no)"
        )
        implicit = name == "eval" and not extra.get("eval_dataset")
        if implicit and os.path.isfile(os.path.expanduser(str(source))):
            raise no_eval  # a file is one split
        try:
            ds = load_rows(source, split, extra.get("dataset_config"))
        except ValueError as e:
            if implicit and "split" in str(e).lower():
                raise no_eval from e
            raise
        if is_listwise(ds.column_names) and not args.listwise:
            raise UsageError(
                f"{name} dataset {source}: listwise rows (responses, scores) but loss_type {args.loss_type} is "
                f"pairwise: use loss_type dpo_pl (or rrhf, lire)"
            )
        ds = add_implicit_prompt(ds)
        path = source if os.path.isfile(os.path.expanduser(source)) else None
        kept = validate_rows(
            ds, weight_column=args.weight_column, name=name, path=path, group_column=group, skip_invalid=skip_invalid
        )
        check_weight_columns(kept.column_names, args.weight_column, name)
        out.append(kept)
    return out[0], (out[1] if len(out) > 1 else None)


def preflight(config_kwargs: dict, extra: dict, skip_invalid: bool = False):
    """Everything that needs no model: the config (refused values, trackers), the paths, the data."""
    from dora.config import DoRAConfig

    try:
        args = DoRAConfig(**config_kwargs)
    except TypeError as e:
        raise UsageError(str(e)) from e
    check_model_path(str(extra["model_name_or_path"]), "model")
    if extra.get("ref_model_name_or_path"):
        check_model_path(str(extra["ref_model_name_or_path"]), "ref_model")
    base = adapter_base(os.path.expanduser(str(extra["model_name_or_path"])))
    peft_config = lora_config(extra)
    train, evald = load_data(args, extra, skip_invalid)
    return args, base, peft_config, train, evald


# --------------------------------------------------------------------------- the run


def build(config_kwargs: dict, extra: dict, skip_invalid: bool = False):
    """The DoRATrainer a recipe describes; every check runs before the model loads."""
    args, base, peft_config, train, evald = preflight(config_kwargs, extra, skip_invalid)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dora.trainer import DoRATrainer

    init = {}
    dtype = extra.get("torch_dtype")
    if dtype:
        init["dtype"] = dtype if dtype == "auto" else getattr(torch, dtype)
    for key, name in (("model_revision", "revision"), ("attn_implementation", "attn_implementation")):
        if extra.get(key):
            init[name] = extra[key]
    model, tokenizer = os.path.expanduser(str(extra["model_name_or_path"])), None
    if base is not None:  # a trained adapter: its base, then the adapter on it, trainable
        from peft import PeftModel

        kwargs = {**(args.model_init_kwargs or {}), **init}
        if args.trust_remote_code:
            kwargs["trust_remote_code"] = True
        adapter = model
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base, **kwargs), adapter, is_trainable=True
        )
        has_tokenizer = os.path.isfile(os.path.join(adapter, "tokenizer_config.json"))
        tokenizer = AutoTokenizer.from_pretrained(adapter if has_tokenizer else base)
    trainer = DoRATrainer(
        model=model,
        ref_model=extra.get("ref_model_name_or_path"),
        args=args,
        train_dataset=train,
        eval_dataset=evald,
        processing_class=tokenizer,
        peft_config=peft_config,
        model_init_kwargs=init,
    )
    if extra.get("ignore_bias_buffers"):  # trl dpo's DDP workaround
        trainer.model._ddp_params_and_buffers_to_ignore = [
            n for n, b in trainer.model.named_buffers() if b.dtype == torch.bool
        ]
    return trainer


def _train(trainer, resume_from_checkpoint=None) -> int:
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model(trainer.args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(trainer.args.output_dir)
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        if trainer.accelerator.is_main_process:
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    return 0


def run(args) -> int:
    """Mistakes (keys, paths, data, trackers, loading) end in one line on stderr before training starts;
    ``--debug`` re-raises them. Errors during training keep their traceback."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    try:
        config_kwargs, extra = load_recipe(args.config, parse_overrides(args.overrides or []))
        trainer = build(config_kwargs, extra, skip_invalid=args.skip_invalid_rows)
    except (ValueError, OSError, ImportError, yaml.YAMLError) as e:
        if getattr(args, "debug", False):
            raise
        text = str(e).strip() or type(e).__name__
        print(f"dora train: error: {text}", file=sys.stderr)
        return 2
    return _train(trainer, config_kwargs.get("resume_from_checkpoint"))
