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
from accelerate.utils import broadcast_object_list

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
from dora.train_cli.run_dir import write_manifest
from dora.trainer import DoRATrainer

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
    """(the DoRATrainer a recipe describes, the plan of preflight); every check runs before the model loads."""
    plan = preflight(config_kwargs, extra, skip_invalid)
    args, base = plan["args"], plan["base"]
    import torch
    from transformers import AutoModelForCausalLM

    init = {}
    dtype = extra.get("torch_dtype")
    if dtype:
        init["dtype"] = dtype if dtype == "auto" else getattr(torch, dtype)
    for key, name in (("model_revision", "revision"), ("attn_implementation", "attn_implementation")):
        if extra.get(key):
            init[name] = extra[key]
    model = os.path.expanduser(str(extra["model_name_or_path"]))
    if base is not None:  # a trained adapter: its base, then the adapter on it, trainable
        from peft import PeftModel

        kwargs = {**(args.model_init_kwargs or {}), **init}
        if args.trust_remote_code:
            kwargs["trust_remote_code"] = True
        base_model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
        model = PeftModel.from_pretrained(base_model, model, is_trainable=True)
    trainer = DoRATrainer(
        model=model,
        ref_model=extra.get("ref_model_name_or_path"),
        args=args,
        train_dataset=plan["train"],
        eval_dataset=plan["eval"],
        processing_class=plan["tokenizer"],
        peft_config=plan["peft_config"],
        model_init_kwargs=init,
    )
    if extra.get("ignore_bias_buffers"):  # trl dpo's DDP workaround
        trainer.model._ddp_params_and_buffers_to_ignore = [
            n for n, b in trainer.model.named_buffers() if b.dtype == torch.bool
        ]
    return trainer, plan


def _final_eval(trainer) -> dict | None:
    """The metrics of an evaluation at the last step (the Trainer's own, when eval_strategy hit it), else of
    one run now: the final evaluation runs once."""
    last = trainer.state.global_step
    done = [h for h in trainer.state.log_history if h.get("step") == last and "eval_loss" in h]
    return done[-1] if done else trainer.evaluate()


def _train(trainer, plan: dict) -> int:
    trainer.accelerator.wait_for_everyone()  # every process has checked output_dir before it is claimed
    run = None
    if trainer.accelerator.is_main_process:
        run = write_manifest(trainer.args.output_dir, plan["record"], resuming=plan["resume"] is not None)
    trainer.run_id = broadcast_text(trainer, run)
    trainer.train(resume_from_checkpoint=plan["resume"])
    trainer.save_model(trainer.args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(trainer.args.output_dir)
    if trainer.eval_dataset is not None:
        metrics = _final_eval(trainer)
        if trainer.accelerator.is_main_process:
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    return 0


def broadcast_text(trainer, text: str | None) -> str | None:
    """The main process's ``text`` on every process (one process: itself)."""
    if trainer.accelerator.num_processes == 1:
        return text
    return broadcast_object_list([text])[0]


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    known = (ValueError, OSError, ImportError, yaml.YAMLError, TypeError, KeyError)
    return text if isinstance(e, known) else f"{type(e).__name__}: {text}"


def run(args) -> int:
    """Mistakes (keys, values, paths, data, outputs, trackers, loading) end in one line on stderr, exit status
    2, before any model loads; ``--debug`` re-raises them. Errors during training keep their traceback."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    try:
        config_kwargs, extra = load_recipe(args.config, parse_overrides(args.overrides or []))
        trainer, plan = build(config_kwargs, extra, skip_invalid=args.skip_invalid_rows)
    except Exception as e:  # noqa: BLE001 - bad input of any kind: one line, not a traceback (--debug: it)
        if getattr(args, "debug", False):
            raise
        print(f"dora train: error: {_one_line(e)}", file=sys.stderr)
        return 2
    return _train(trainer, plan)


def quiet_libraries() -> None:
    """Start-up lines of libraries that say nothing to a user (DeepSpeed's "Setting accelerator to CPU")."""
    class _Drop(logging.Filter):
        def filter(self, record):
            return "Setting ds_accelerator" not in record.getMessage() and "accelerator to" not in record.getMessage()

    logging.getLogger("DeepSpeed").addFilter(_Drop())
