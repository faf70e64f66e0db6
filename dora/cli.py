"""`dora classify | train | eval | demo | bench | iterate`.

Each sub-command lives in its own module, which exposes ``add_arguments(parser)`` and ``run(args) -> int``;
this file only dispatches, and imports a module only when its command runs (``dora --help`` stays fast).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "classify": ("dora.classifier.cli", "train a source classifier and write DoRA weights into a dataset"),
    "train": ("dora.train_cli", "train a policy with DoRATrainer: a YAML recipe and/or trl dpo's flags"),
    "eval": ("dora.eval.cli", "evaluate a policy: preference accuracy, win rate, distributional alignment"),
    "demo": ("dora.demo", "the mixture-shift world, end to end, on a CPU"),
    "bench": ("dora.bench", "DoRATrainer vs TRL's DPOTrainer: speed and memory"),
    "iterate": ("dora.iterate.cli", "iterative DoRA: rounds of generate, judge, re-weight, train"),
    "select": ("dora.select.cli", "a pilot on held-out human pairs: does DoRA (or another method) beat DPO here?"),
}


ONE_LINE_ERRORS = ("classify", "eval", "iterate", "select")  # bad input: one line, exit 2; --debug: the traceback


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dora-align")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dora",
        description="Distribution-aware robust preference alignment.",
        epilog="Bad input to a command is one line naming the file, row or flag; add --debug for the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"dora-align {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            importlib.import_module(module).add_arguments(p)
    return parser


def _finish(code: int) -> int:
    """Under `accelerate launch`, tear the process group down before exit: a gloo group left to the interpreter's
    shutdown can abort a process ("terminate called without an active exception") after a run that succeeded."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    if code == 0 and dist is not None and dist.is_available() and dist.is_initialized():
        import gc

        gc.collect()  # sharded modules hold reference cycles: free them while the group lives, not at exit
        dist.barrier()
        dist.destroy_process_group()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    debug = command != "train" and "--debug" in argv  # dora train takes --debug itself
    if debug:
        argv.remove("--debug")
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        build_parser([]).print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    if extra:  # only commands that take free --key value overrides (train) accept the rest
        if not getattr(module, "ACCEPTS_OVERRIDES", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
    if args.command not in ONE_LINE_ERRORS:  # dora train handles its own errors; demo and bench take no input files
        return _finish(int(module.run(args) or 0))
    try:
        return _finish(int(module.run(args) or 0))
    except (ValueError, OSError) as e:  # bad input, an unreadable file: one line naming it (--debug: traceback)
        if debug or os.environ.get("DORA_DEBUG"):
            raise
        print(f"dora {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
