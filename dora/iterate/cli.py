"""`dora iterate --config recipe.yaml [--key value ...]`: rounds of generate -> judge -> re-weight -> train.

Recipe keys: the fields of ``IterateConfig`` plus ``pool`` (the initial preference rows, jsonl), ``judge``,
and optionally ``prompts`` (jsonl with a ``prompt`` column), ``eval_data`` (held-out pairs) and
``eval_judge``, and ``trusted`` (the trusted sample of ``weights: density``). Flags override top-level
keys. Runs the same under ``accelerate launch -m dora iterate``.
Started again with the same ``output_dir``, it resumes after the last finished round.
"""

from __future__ import annotations

import argparse

ACCEPTS_OVERRIDES = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML recipe (docs/howto/iterate.md lists the keys)")
    p.set_defaults(overrides=[])
    p.epilog = "Any other --key value pair overrides the recipe key of that name (e.g. --rounds 2)."


def run(args) -> int:
    from dora.iterate.config import load_iterate_recipe
    from dora.iterate.loop import iterate
    from dora.iterate.report import markdown_table
    from dora.train_cli import parse_overrides

    cfg, data = load_iterate_recipe(args.config, parse_overrides(args.overrides or []))
    reports = iterate(
        cfg,
        pool=data["pool"],
        judge=data["judge"],
        prompts=data.get("prompts"),
        eval_data=data.get("eval_data"),
        eval_judge=data.get("eval_judge"),
        trusted=data.get("trusted"),
    )
    from dora.iterate.generate import process_state

    if process_state().is_main_process:
        print(markdown_table(reports))
        print(f"\nwrote {cfg.output_dir}/report.md, curves.png and round_<r>/ checkpoints")
    return 0
