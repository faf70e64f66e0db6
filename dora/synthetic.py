"""The demo's worlds under their first name: ``dora.synthetic`` re-exports ``dora.worlds`` (the named worlds,
the addition task's generator, the tiny model), and ``python -m dora.synthetic`` writes a world's splits."""

from __future__ import annotations

from dora.worlds import (
    ALPHABET,
    DEFAULT_WORLD,
    SOURCES,
    WORLDS,
    WorldConfig,
    answer_of,
    build_model,
    build_tokenizer,
    get_world,
    make_pair,
    make_world,
    parse_answer,
)
from dora.worlds.addition import prompt_text, sample_sources, style, wrong_answer

__all__ = [
    "ALPHABET", "DEFAULT_WORLD", "SOURCES", "WORLDS", "WorldConfig", "answer_of", "build_model", "build_tokenizer",
    "get_world", "main", "make_pair", "make_world", "parse_answer", "prompt_text", "sample_sources", "style",
    "wrong_answer",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m dora.synthetic --output DIR``: write a world's train/test/sft splits as jsonl."""
    import argparse
    import json
    import os

    p = argparse.ArgumentParser(prog="python -m dora.synthetic", description=main.__doc__)
    p.add_argument("--output", required=True)
    p.add_argument("--world", default=DEFAULT_WORLD, choices=sorted(WORLDS))
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=400)
    p.add_argument("--synthetic-share", type=float, default=None, help="default: the world's (0.8)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    over = {"synthetic_share": a.synthetic_share} if a.synthetic_share is not None else {}
    world = make_world(get_world(a.world, n_train=a.n_train, n_test=a.n_test, seed=a.seed, **over))
    os.makedirs(a.output, exist_ok=True)
    for split, rows in world.items():
        with open(os.path.join(a.output, f"{split}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"wrote {', '.join(f'{k}.jsonl ({len(v)} rows)' for k, v in world.items())} to {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
