"""`dora select [--config recipe.yaml] [--any dora train key ...] --steps N [--candidates ...] [--heldout FILE]`."""

from __future__ import annotations

import argparse
import sys

import yaml

from dora.select.candidates import DEFAULT
from dora.select.pilot import SCHEDULES, plan, run_plan
from dora.train_cli.recipe import parse_overrides

__all__ = ["ACCEPTS_OVERRIDES", "add_arguments", "run"]

ACCEPTS_OVERRIDES = True  # every `dora train` key (--model_name_or_path, --dataset, --learning_rate, ...)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a `dora train` recipe (YAML); `dora train` keys as flags override it")
    p.add_argument("--output", default="dora_select", help="folder for the candidates, report and recipe "
                   "(a finished candidate in it is not trained again)")  # fmt: skip
    p.add_argument("--steps", type=int, default=50, help="training steps per candidate (the pilot budget)")
    p.add_argument("--schedule", default="full", choices=SCHEDULES,
                   help="the learning-rate schedule of each pilot: 'full' (default) the full run's (the recipe's "
                        "epochs or max_steps), stopped after --steps; 'pilot' its own, over --steps")
    p.add_argument("--candidates", default=None,
                   help=f"comma-separated; default: {', '.join(DEFAULT)} (DoRA at any λ: 'DoRA λ=0.25' or dora-l=0.25)")
    p.add_argument("--heldout", default=None, help="held-out human pairs (a file); default: carved from the "
                   "target-source rows of the data, whole prompts at a time")  # fmt: skip
    p.add_argument("--keep-heldout-duplicates", action="store_true",
                   help="with --heldout: keep training rows whose text equals a held-out row (data that repeats by "
                        "design, where such a row is an independent draw); default: leave them out")
    p.add_argument("--heldout-fraction", type=float, default=0.2, help="share of the target rows' prompts to carve")
    p.add_argument("--target-sources", default="human", help="comma-separated sources of the target distribution")
    p.add_argument("--confidence", type=float, default=0.95, help="joint level of the intervals against DPO")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the held-out pairs")
    p.add_argument("--overwrite-output", action="store_true", help="write into a non-empty --output folder that "
                   "holds no select run")  # fmt: skip
    p.add_argument("--skip-invalid-rows", action="store_true", help="drop invalid rows (counted) instead of stopping")
    p.allow_abbrev = False
    p.set_defaults(overrides=[])
    p.epilog = ("Any `dora train` key is also a flag (--model_name_or_path, --dataset, --learning_rate, --use_peft "
                "false, ...; see dora train --help). Guide: docs/howto/select.md.")


def run(args) -> int:
    """Mistakes end in one line (exit 2) before any model loads: raised as ValueError for `dora`'s handler."""
    try:
        p = plan(args.config, parse_overrides(args.overrides or []), output=args.output, candidates=args.candidates,
                 steps=args.steps, heldout=args.heldout, heldout_fraction=args.heldout_fraction,
                 target_sources=[t for t in args.target_sources.split(",") if t.strip()],
                 confidence=args.confidence, bootstrap=args.bootstrap, skip_invalid_rows=args.skip_invalid_rows,
                 overwrite=args.overwrite_output,
                 keep_heldout_duplicates=args.keep_heldout_duplicates, schedule=args.schedule)  # fmt: skip
    except (OSError, ImportError, yaml.YAMLError) as e:
        raise ValueError(str(e).strip() or type(e).__name__) from e
    run_plan(p)
    return 0


if __name__ == "__main__":
    from dora.cli import main

    sys.exit(main(["select", *sys.argv[1:]]))
