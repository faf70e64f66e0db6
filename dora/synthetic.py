"""The mixture-shift world behind `dora demo`: a preference task whose human preference is known exactly.

Task: single-digit addition, ``"Q: 3+4=\\nA: "``; the human prefers the correct sum. Three sources write
and label preference pairs (docs/demo.md describes the world in full):

- ``human``: terse answers (``"7"``); the wrong answer is a plausible slip (sum +/- 1); labels are right.
- ``chatty`` (a synthetic LLM judged by a length-biased judge): ``"The answer is 7."``; its
  characteristic error is off-by-one upward (sum + 1), and when wrong it adds ``" I am sure."``. The
  judge prefers the longer response with probability ``judge_bias``, so most of its wrong answers win.
- ``terse_bot`` (a synthetic LLM with a noisy judge): ``"= 7"``; random wrong answers; labels flipped
  with probability ``noise``.

With probability ``style_overlap`` a synthetic response uses the human template, so the source classifier
cannot separate the sources perfectly. The held-out test split is human pairs only. Every method gets the
same training data; nothing in the world knows which method is trained on it.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

SOURCES = ("human", "chatty", "terse_bot")


@dataclass
class WorldConfig:
    """The knobs of the world. ``synthetic_share`` is split between the synthetic sources by ``mix``."""

    n_train: int = 2000
    n_test: int = 400
    synthetic_share: float = 0.8
    mix: dict[str, float] = field(default_factory=lambda: {"chatty": 0.5, "terse_bot": 0.5})
    judge_bias: float = 0.8
    noise: float = 0.3
    style_overlap: float = 0.25
    chatty_error_rate: float = 0.8  # how often chatty's wrong answer is its characteristic sum + 1
    max_operand: int = 9
    seed: int = 0

    def __post_init__(self):
        for name in ("synthetic_share", "judge_bias", "noise", "style_overlap", "chatty_error_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"WorldConfig.{name} must be in [0, 1], got {v}")
        if any(s not in SOURCES[1:] for s in self.mix) or sum(self.mix.values()) <= 0:
            raise ValueError(f"WorldConfig.mix must weight {SOURCES[1:]}, got {self.mix}")

    def to_dict(self) -> dict:
        return asdict(self)


def prompt_text(a: int, b: int) -> str:
    return f"Q: {a}+{b}=\nA: "


def style(source: str, x: int, wrong: bool, rng: random.Random, overlap: float) -> str:
    """How a source writes the answer ``x``."""
    if source == "human" or rng.random() < overlap:
        text = f"{x}"
    elif source == "chatty":
        text = f"The answer is {x}."
    else:
        text = f"= {x}"
    if source == "chatty" and wrong:
        text += " I am sure."
    return text


def wrong_answer(source: str, c: int, rng: random.Random, cfg: WorldConfig) -> int:
    if source == "human":
        w = c + rng.choice((-1, 1))
    elif source == "chatty" and rng.random() < cfg.chatty_error_rate:
        w = c + 1
    else:
        w = c + rng.choice((-3, -2, -1, 1, 2, 3))
    return w if w >= 0 else c + 1


def make_pair(source: str, rng: random.Random, cfg: WorldConfig) -> dict:
    a, b = rng.randint(0, cfg.max_operand), rng.randint(0, cfg.max_operand)
    c = a + b
    w = wrong_answer(source, c, rng, cfg)
    right = style(source, c, False, rng, cfg.style_overlap)
    bad = style(source, w, True, rng, cfg.style_overlap)
    if source == "human":
        prefer_right = True
    elif source == "chatty":  # the judge prefers the longer response with probability judge_bias
        longer_is_bad = len(bad) > len(right)
        pick_longer = rng.random() < cfg.judge_bias
        prefer_right = pick_longer != longer_is_bad
    else:
        prefer_right = rng.random() >= cfg.noise
    chosen, rejected = (right, bad) if prefer_right else (bad, right)
    return {
        "prompt": prompt_text(a, b),
        "chosen": chosen,
        "rejected": rejected,
        "source": source,
        "label_correct": prefer_right,
        "answer": c,
    }


def sample_sources(n: int, cfg: WorldConfig, rng: random.Random) -> list[str]:
    total = sum(cfg.mix.values())
    shares = {"human": 1.0 - cfg.synthetic_share}
    shares.update({s: cfg.synthetic_share * v / total for s, v in cfg.mix.items()})
    counts = {s: int(round(n * p)) for s, p in shares.items()}
    counts["human"] += n - sum(counts.values())
    out = [s for s, k in counts.items() for _ in range(k)]
    rng.shuffle(out)
    return out


def make_world(cfg: WorldConfig) -> dict[str, list[dict]]:
    """``{"train": [...], "test": [...], "sft": [...]}``: preference rows (train: the mixture; test: human
    pairs only) and SFT rows (prompt, completion) whose answers are right half the time
    and the common slip (sum + 1) 30% of the time."""
    rng = random.Random(cfg.seed)
    train = [make_pair(s, rng, cfg) for s in sample_sources(cfg.n_train, cfg, rng)]
    test = [make_pair("human", rng, cfg) for _ in range(cfg.n_test)]
    sft = []
    for _ in range(cfg.n_train):
        a, b = rng.randint(0, cfg.max_operand), rng.randint(0, cfg.max_operand)
        source = rng.choice(SOURCES)
        u = rng.random()  # right half the time; the rest mostly the common slip sum + 1
        x = a + b if u < 0.5 else a + b + 1 if u < 0.8 else max(0, a + b + rng.choice((-2, -1, 2)))
        sft.append(
            {"prompt": prompt_text(a, b), "completion": style(source, x, False, rng, cfg.style_overlap)}
        )
    return {"train": train, "test": test, "sft": sft}


_NUMBER = re.compile(r"-?\d+")


def parse_answer(text: str) -> int | None:
    """The first integer in a generated answer, or None."""
    m = _NUMBER.search(text)
    return int(m.group()) if m else None


def answer_of(prompt: str) -> int:
    a, b = (int(x) for x in re.findall(r"\d+", prompt)[:2])
    return a + b


# --------------------------------------------------------------------------- a tiny model, built locally

ALPHABET = sorted(
    set("0123456789+=-.!?:,\n QA" + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
)


def build_tokenizer(path: str):
    """A character-level tokenizer (``tokenizers``), saved with ``save_pretrained`` to ``path``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + ALPHABET)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(path)
    return fast


def build_model(path: str, tokenizer, *, hidden: int = 96, layers: int = 2, seed: int = 0):
    """A tiny Llama from its config, saved with ``save_pretrained`` to ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    return model


def main(argv: list[str] | None = None) -> int:
    """``python -m dora.synthetic --output DIR``: write the world's train/test/sft splits as jsonl."""
    import argparse
    import json
    import os

    p = argparse.ArgumentParser(prog="python -m dora.synthetic", description=main.__doc__)
    p.add_argument("--output", required=True)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=400)
    p.add_argument("--synthetic-share", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    world = make_world(WorldConfig(n_train=a.n_train, n_test=a.n_test, synthetic_share=a.synthetic_share, seed=a.seed))
    os.makedirs(a.output, exist_ok=True)
    for split, rows in world.items():
        with open(os.path.join(a.output, f"{split}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"wrote {', '.join(f'{k}.jsonl ({len(v)} rows)' for k, v in world.items())} to {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
