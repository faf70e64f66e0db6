"""`dora iterate --config recipe.yaml [--key value ...]`: rounds of generate -> judge -> re-weight -> train.

Recipe keys: the fields of ``IterateConfig`` plus ``pool`` (the initial preference rows, jsonl), ``judge``,
and optionally ``prompts`` (jsonl with a ``prompt`` column), ``eval_data`` (held-out pairs) and
``eval_judge``, and ``trusted`` (the trusted sample of ``weights: density``). Flags override top-level
keys. Runs the same under ``accelerate launch -m dora iterate``.
Started again with the same ``output_dir``, it resumes after the last finished round, and says so.
A judge given as ``module:callable`` imports that module, which runs its code (from the working directory
too, like ``trust_remote_code=True`` in transformers): use only judges whose code you have read.
"""

from __future__ import annotations

import argparse
import os

from dora.iterate.config import load_iterate_recipe
from dora.local_model import check_model_folder
from dora.outputs import check_output_dir

ACCEPTS_OVERRIDES = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML recipe (docs/howto/iterate.md lists the keys)")
    p.set_defaults(overrides=[])
    p.epilog = "Any other --key value pair overrides the recipe key of that name (e.g. --rounds 2)."


def finished_rounds(output_dir: str) -> list[int]:
    """The rounds of an earlier run in ``output_dir`` whose report exists (a round's report is written last)."""
    if not os.path.isdir(output_dir):
        return []
    done = []
    for name in os.listdir(output_dir):
        r = name.removeprefix("round_")
        if name.startswith("round_") and r.isdigit() and os.path.isfile(os.path.join(output_dir, name, "report.json")):
            done.append(int(r))
    return sorted(done)


def _say_resume(cfg) -> None:
    """One line when an earlier run is continued (a run started again with the same output_dir resumes)."""
    done = [r for r in finished_rounds(cfg.output_dir) if r >= 1]
    if not done or not os.path.isfile(os.path.join(cfg.output_dir, "iterate_config.json")):
        return
    last = max(done)
    if last >= cfg.rounds:
        print(f"dora iterate: {cfg.output_dir} already holds rounds 1..{last} of this run: nothing left to train")
    else:
        print(f"dora iterate: resuming the run in {cfg.output_dir} after round {last} (rounds 1..{last} are kept)")


def _check_output_dir(recipe: str, cfg, data: dict) -> None:
    """output_dir before anything is written: not a file, not inside a model's folder, not over an input, not a
    folder of other files (an earlier run of this recipe is resumed), writable."""
    inputs = [recipe, *(v for k, v in data.items() if k in ("pool", "prompts", "eval_data", "trusted"))]
    check_output_dir(cfg.output_dir, what="output_dir", resume=True, writes=("iterate_config.json",),
                     inputs=[p for p in inputs if isinstance(p, str)])  # fmt: skip
    out = os.path.expanduser(cfg.output_dir)
    held = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if held and "iterate_config.json" not in held:
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise ValueError(f"output_dir {cfg.output_dir!r} holds other files ({shown}): choose a new folder (a folder "
                         "of an earlier dora iterate run is resumed)")  # fmt: skip


def run(args) -> int:
    from dora.iterate.generate import process_state
    from dora.iterate.loop import iterate
    from dora.iterate.report import markdown_table
    from dora.train_cli import parse_overrides

    cfg, data = load_iterate_recipe(args.config, parse_overrides(args.overrides or []))
    check_model_folder(cfg.model, "model", strict=False)  # a model without a tokenizer, before anything loads
    _check_output_dir(args.config, cfg, data)
    if process_state().is_main_process:
        _say_resume(cfg)
    try:
        reports = iterate(
            cfg,
            pool=data["pool"],
            judge=data["judge"],
            prompts=data.get("prompts"),
            eval_data=data.get("eval_data"),
            eval_judge=data.get("eval_judge"),
            trusted=data.get("trusted"),
        )
    except OSError as e:  # a model or file that cannot be read: one line naming it
        first = (e.strerror or str(e)).strip().splitlines()[0] if (e.strerror or str(e)).strip() else type(e).__name__
        raise ValueError(f"{e.filename or cfg.model}: {first}") from e
    except ValueError as e:  # a library's message over several lines (a tokenizer that cannot load): one line
        if "\n" not in str(e).strip():
            raise
        raise ValueError(" ".join(str(e).split())) from e
    if process_state().is_main_process:
        print(markdown_table(reports))
        print(f"\nwrote {cfg.output_dir}/report.md, curves.png and round_<r>/ checkpoints")
    return 0
