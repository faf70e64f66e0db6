"""The addition worlds behind `dora demo`: preference tasks whose human preference is known exactly.

Task: single-digit addition, ``"Q: 3+4=\\nA: "``; the human prefers the correct sum. Three sources write
and label preference pairs (docs/demo.md describes every world and its mechanism):

- ``human``: terse answers (``"7"``); the wrong answer is a plausible slip (sum +/- 1); labels are right.
- ``chatty`` (a synthetic LLM): ``"The answer is 7."``; its characteristic error is sum + 1 (or, with
  ``chatty_errors="slip"``, the human's slip sum +/- 1). Its judge is biased, and the bias lives in one of
  three features (``bias``):
  - ``"padding"`` (the classic world): a wrong chatty answer ends with ``" I am sure."`` and the judge
    prefers the longer response with probability ``judge_bias``. Human text never has the padding.
  - ``"phrase"``: human and chatty responses end with ``PHRASE`` with probability ``phrase_rate``, each
    response independently of its correctness; when exactly one response of a chatty pair has it, the judge
    picks that one with probability ``judge_bias`` (otherwise the right one). Human test pairs vary the
    phrase too, uncorrelated with the right answer, so a policy that learns the judge's taste pays for it
    on the human split.
  - ``"larger"``: when the wrong answer is the larger number, the judge picks it with probability
    ``judge_bias`` (a taste for "more", as a length bias); otherwise the right one. Human test pairs have
    the larger number on the wrong answer half the time, so the bias reaches the very token that decides
    the pair.
- ``terse_bot`` (a synthetic LLM with a noisy judge): ``"= 7"``; random wrong answers; labels flipped with
  probability ``noise``.

With probability ``style_overlap`` (or its source's ``source_overlap``) a synthetic response uses the human
template (followed by the source's ``source_mark``, if it has one), so the source classifier cannot separate the
sources perfectly. The held-out test split is human pairs only. Every method gets the same training data; nothing
in the world knows which method is trained on it.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

SOURCES = ("human", "chatty", "terse_bot")
BIASES = ("padding", "phrase", "larger")
CHATTY_ERRORS = ("sum+1", "slip")
PHRASE = " Hope this helps!"  # a sign-off both humans and the chatty model write
PADDING = " I am sure."  # the classic world's chatty padding (never in human text)


@dataclass
class WorldConfig:
    """The knobs of a world. ``synthetic_share`` is split between the synthetic sources by ``mix``."""

    n_train: int = 2000
    n_test: int = 400
    synthetic_share: float = 0.8
    mix: dict[str, float] = field(default_factory=lambda: {"chatty": 0.5, "terse_bot": 0.5})
    judge_bias: float = 0.8
    noise: float = 0.3
    style_overlap: float = 0.25
    source_overlap: dict[str, float] = field(default_factory=dict)  # a synthetic source's own style_overlap
    source_mark: dict[str, str] = field(default_factory=dict)  # appended to a source's human-template responses
    source_prompt: dict[str, str] = field(default_factory=dict)  # a source's own prompt template ({a}, {b})
    chatty_error_rate: float = 0.8  # "sum+1": how often chatty's wrong answer is its characteristic sum + 1
    chatty_errors: str = "sum+1"  # chatty's wrong answers: "sum+1" (at chatty_error_rate) or "slip" (sum +/- 1)
    bias: str = "padding"  # the feature the chatty judge prefers: "padding" (classic), "phrase" or "larger"
    phrase_rate: float = 0.5  # "phrase": how often a human or chatty response ends with PHRASE
    max_operand: int = 9
    n_sft: int = 0  # SFT rows; 0: as many as n_train
    seed: int = 0

    def __post_init__(self):
        for name in ("synthetic_share", "judge_bias", "noise", "style_overlap", "chatty_error_rate", "phrase_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"WorldConfig.{name} must be in [0, 1], got {v}")
        for s, v in self.source_overlap.items():
            if s not in SOURCES[1:] or not 0.0 <= v <= 1.0:
                raise ValueError(f"WorldConfig.source_overlap maps {SOURCES[1:]} to [0, 1], got {s!r}: {v!r}")
        for s, v in self.source_mark.items():
            if s not in SOURCES[1:] or not isinstance(v, str) or not v:
                raise ValueError(f"WorldConfig.source_mark maps {SOURCES[1:]} to a non-empty text, got {s!r}: {v!r}")
        for s, v in self.source_prompt.items():
            if s not in SOURCES[1:] or not isinstance(v, str) or "{a}" not in v or "{b}" not in v:
                raise ValueError(f"WorldConfig.source_prompt maps {SOURCES[1:]} to a template with {{a}} and {{b}}, "
                                 f"got {s!r}: {v!r}")
        if any(s not in SOURCES[1:] for s in self.mix) or sum(self.mix.values()) <= 0:
            raise ValueError(f"WorldConfig.mix must weight {SOURCES[1:]}, got {self.mix}")
        if self.bias not in BIASES:
            raise ValueError(f"WorldConfig.bias must be one of {BIASES}, got {self.bias!r}")
        if self.chatty_errors not in CHATTY_ERRORS:
            raise ValueError(f"WorldConfig.chatty_errors must be one of {CHATTY_ERRORS}, got {self.chatty_errors!r}")
        if self.max_operand < 1:
            raise ValueError(f"WorldConfig.max_operand must be at least 1, got {self.max_operand}")
        if self.n_sft < 0:
            raise ValueError(f"WorldConfig.n_sft must be at least 0, got {self.n_sft}")

    def to_dict(self) -> dict:
        return asdict(self)


def as_written_now(config: dict, fields) -> dict:
    """A ``WorldConfig.to_dict()`` written before some of ``fields`` existed, with those at their defaults (the
    values the world had then), so that it compares with a config written today."""
    defaults = WorldConfig().to_dict()
    return {**{k: defaults[k] for k in fields if k not in config and k in defaults}, **config}


def prompt_text(a: int, b: int, template: str | None = None) -> str:
    """The human prompt, or a source's own ``template`` (``WorldConfig.source_prompt``)."""
    return template.format(a=a, b=b) if template else f"Q: {a}+{b}=\nA: "


def style(source: str, x: int, wrong: bool, rng: random.Random, cfg: WorldConfig) -> str:
    """How a source writes the answer ``x`` (the classic world's random draws are kept in their order)."""
    if source == "human" or rng.random() < cfg.source_overlap.get(source, cfg.style_overlap):
        text = f"{x}" + cfg.source_mark.get(source, "")
    elif source == "chatty":
        text = f"The answer is {x}."
    else:
        text = f"= {x}"
    if cfg.bias == "padding":
        if source == "chatty" and wrong:
            text += PADDING
    elif cfg.bias == "phrase" and source in ("human", "chatty") and rng.random() < cfg.phrase_rate:
        text += PHRASE
    return text


def wrong_answer(source: str, c: int, rng: random.Random, cfg: WorldConfig) -> int:
    if source == "human" or (source == "chatty" and cfg.chatty_errors == "slip"):
        w = c + rng.choice((-1, 1))
    elif source == "chatty" and rng.random() < cfg.chatty_error_rate:
        w = c + 1
    else:
        w = c + rng.choice((-3, -2, -1, 1, 2, 3))
    return w if w >= 0 else c + 1


def chatty_prefers_right(right: str, bad: str, rng: random.Random, cfg: WorldConfig) -> bool:
    """The biased judge: "padding" picks the longer response with probability judge_bias; "phrase" picks the
    response with the phrase with probability judge_bias when exactly one has it, else the right one;
    "larger" picks the wrong answer with probability judge_bias when it is the larger number, else the right one."""
    if cfg.bias == "larger":
        if parse_answer(bad) < parse_answer(right):
            return True
        return rng.random() >= cfg.judge_bias
    if cfg.bias == "padding":
        longer_is_bad = len(bad) > len(right)
        return (rng.random() < cfg.judge_bias) != longer_is_bad
    phrase_right, phrase_bad = right.endswith(PHRASE), bad.endswith(PHRASE)
    if phrase_right == phrase_bad:
        return True
    return phrase_right if rng.random() < cfg.judge_bias else True


def make_pair(source: str, rng: random.Random, cfg: WorldConfig) -> dict:
    a, b = rng.randint(0, cfg.max_operand), rng.randint(0, cfg.max_operand)
    c = a + b
    w = wrong_answer(source, c, rng, cfg)
    right = style(source, c, False, rng, cfg)
    bad = style(source, w, True, rng, cfg)
    if source == "human":
        prefer_right = True
    elif source == "chatty":
        prefer_right = chatty_prefers_right(right, bad, rng, cfg)
    else:
        prefer_right = rng.random() >= cfg.noise
    chosen, rejected = (right, bad) if prefer_right else (bad, right)
    return {
        "prompt": prompt_text(a, b, cfg.source_prompt.get(source)),
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
    for _ in range(cfg.n_sft or cfg.n_train):
        a, b = rng.randint(0, cfg.max_operand), rng.randint(0, cfg.max_operand)
        source = rng.choice(SOURCES)
        u = rng.random()  # right half the time; the rest mostly the common slip sum + 1
        x = a + b if u < 0.5 else a + b + 1 if u < 0.8 else max(0, a + b + rng.choice((-2, -1, 2)))
        prompt = prompt_text(a, b, cfg.source_prompt.get(source))
        sft.append({"prompt": prompt, "completion": style(source, x, False, rng, cfg)})
    return {"train": train, "test": test, "sft": sft}


_NUMBER = re.compile(r"-?\d+")


def parse_answer(text: str) -> int | None:
    """The first integer in a generated answer, or None."""
    m = _NUMBER.search(text)
    return int(m.group()) if m else None


def answer_of(prompt: str) -> int:
    a, b = (int(x) for x in re.findall(r"\d+", prompt)[:2])
    return a + b
