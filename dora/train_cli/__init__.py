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
import logging
import os
import sys

import yaml

from dora.train_cli.checks import adapter_base, check_model_path, load_data, preflight
from dora.train_cli.recipe import (
    ALIASES,
    RECIPE_KEYS,
    REFUSED_FLAGS,
    UsageError,
    help_text,
    load_recipe,
    lora_config,
    parse_overrides,
)

__all__ = [
    "ALIASES", "RECIPE_KEYS", "REFUSED_FLAGS", "UsageError", "adapter_base", "add_arguments", "build",
    "check_model_path", "help_text", "load_data", "load_recipe", "lora_config", "parse_overrides", "preflight", "run",
]  # fmt: skip

logger = logging.getLogger(__name__)

ACCEPTS_OVERRIDES = True


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
