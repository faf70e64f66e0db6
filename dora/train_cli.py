"""`dora train --config recipe.yaml [--any_field value ...]`.

YAML keys are DoRAConfig fields plus ``model_name_or_path``, ``ref_model_name_or_path``, ``dataset``,
``dataset_split``, ``eval_dataset``, ``eval_dataset_split``, ``torch_dtype`` and ``lora`` (a mapping:
r, alpha, dropout, target_modules). Command-line flags override YAML keys (``--max_steps 2``).
Runs the same under ``accelerate launch -m dora train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

import yaml

logger = logging.getLogger(__name__)

ACCEPTS_OVERRIDES = True

EXTRA_KEYS = {
    "model_name_or_path", "ref_model_name_or_path", "dataset", "dataset_split", "eval_dataset",
    "eval_dataset_split", "torch_dtype", "lora",
}  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML recipe: DoRAConfig fields + model_name_or_path, dataset, lora, ...")
    p.set_defaults(overrides=[])
    p.epilog = "Any other --key value pair overrides the recipe key of that name (a DoRAConfig field)."


def _parse_value(text: str):
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
    """``["--a", "1", "--b=x", "--flag"]`` -> ``{"a": 1, "b": "x", "flag": True}``; values parsed as YAML."""
    out, i = {}, 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise SystemExit(f"dora train: expected --key value, got {tok!r}")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            out[key.replace("-", "_")] = _parse_value(value)
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            out[key.replace("-", "_")] = _parse_value(tokens[i + 1])
            i += 2
        else:
            out[key.replace("-", "_")] = True
            i += 1
    return out


def load_recipe(path: str | None, overrides: dict) -> tuple[dict, dict]:
    """(DoRAConfig kwargs, extra keys) from a YAML recipe and overrides; unknown keys are an error."""
    from dora.config import DoRAConfig

    recipe = {}
    if path:
        with open(path) as f:
            recipe = yaml.safe_load(f) or {}
    recipe.update(overrides)
    fields = {f.name for f in dataclasses.fields(DoRAConfig) if f.init}
    unknown = sorted(k for k in recipe if k not in fields and k not in EXTRA_KEYS)
    if unknown:
        raise SystemExit(
            f"dora train: unknown key(s) {unknown} (not DoRAConfig fields nor {sorted(EXTRA_KEYS)})"
        )
    recipe = {k: _number(v) if isinstance(v, str) else v for k, v in recipe.items()}
    extra = {k: recipe.pop(k) for k in list(recipe) if k in EXTRA_KEYS}
    if "model_name_or_path" not in extra:
        raise SystemExit("dora train: the recipe needs model_name_or_path")
    if "dataset" not in extra:
        raise SystemExit("dora train: the recipe needs dataset (a local file or folder, or a Hub id)")
    recipe.setdefault("output_dir", "dora_output")
    return recipe, extra


def build(config_kwargs: dict, extra: dict):
    """The DoRATrainer a recipe describes."""
    import torch

    from dora.config import DoRAConfig
    from dora.data import load_rows
    from dora.trainer import DoRATrainer

    args = DoRAConfig(**config_kwargs)
    train = load_rows(extra["dataset"], extra.get("dataset_split", "train"))
    evald = None
    if extra.get("eval_dataset"):
        evald = load_rows(extra["eval_dataset"], extra.get("eval_dataset_split", "test"))
    peft_config = None
    if extra.get("lora"):
        from peft import LoraConfig

        lora = dict(extra["lora"])
        peft_config = LoraConfig(
            r=lora.pop("r", 8),
            lora_alpha=lora.pop("alpha", 16),
            lora_dropout=lora.pop("dropout", 0.0),
            target_modules=lora.pop("target_modules", None),
            task_type="CAUSAL_LM",
            **lora,
        )
    init = {}
    dtype = extra.get("torch_dtype")
    if dtype:
        init["dtype"] = dtype if dtype == "auto" else getattr(torch, dtype)
    return DoRATrainer(
        model=extra["model_name_or_path"],
        ref_model=extra.get("ref_model_name_or_path"),
        args=args,
        train_dataset=train,
        eval_dataset=evald,
        peft_config=peft_config,
        model_init_kwargs=init,
    )


def run(args) -> int:
    overrides = parse_overrides(args.overrides or [])
    config_kwargs, extra = load_recipe(args.config, overrides)
    trainer = build(config_kwargs, extra)
    trainer.train(resume_from_checkpoint=config_kwargs.get("resume_from_checkpoint"))
    trainer.save_model(trainer.args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(trainer.args.output_dir)
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        if trainer.accelerator.is_main_process:
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    return 0
