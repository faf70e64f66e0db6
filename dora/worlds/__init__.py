"""The named worlds of `dora demo --world NAME` (docs/demo.md gives each one's mechanism and prediction).

A world is a :class:`WorldConfig` preset of the addition task (``dora.worlds.addition``), with the training
budget the demo gives it (:data:`BUDGETS`):

- ``larger-number`` (the default): the chatty judge prefers the larger number when it is the wrong answer,
  a bias on the token that decides every human test pair; chatty text partly reads as human (overlap 0.3).
- ``shared-phrase``: the chatty judge prefers a sign-off that human responses use too, so its
  bias reaches the human test pairs; chatty text partly reads as human (overlap 0.3).
- ``classic``: the first demo world: the chatty judge's bias lives in padding that human text never has.
- ``separable``: every synthetic pair from the phrase-biased judge, its text always in its own style: the
  weights can find all of it.
- ``hidden-bias``: as ``separable``, but 70% of synthetic responses are written in the human template: the
  weights cannot find most of it.

- ``larger-mimic``: ``larger-number``'s judge in a source always in its own style, beside a careful synthetic
  source (labels flipped 10% of the time) always written in the human template: the weights keep the good
  synthetic rows with the human ones and take out the biased ones.
- ``larger-marked``: as ``larger-mimic``, but the biased source writes in the human template too, with a full
  stop after the number (``source_mark``), and its judge always prefers the larger wrong number: its bias reaches
  the human test pairs, and the classifier sees the mark.
- ``larger-marked-half``: half the rows human, the other half from ``larger-marked``'s marked, biased source
  (no careful source): the weights keep every human row and only them, half of each batch.
- ``larger-separable`` and ``larger-hidden``: as ``separable`` and ``hidden-bias``, with the larger-number judge
  of ``larger-number`` (``judge_bias`` 0.8) and its budget.

``separable`` and ``hidden-bias`` (and ``larger-separable`` and ``larger-hidden``) differ in ``style_overlap``
only: they are the two ends of the regime map.
"""

from __future__ import annotations

from dataclasses import replace

from dora.worlds.addition import (
    BIASES,
    PADDING,
    PHRASE,
    SOURCES,
    WorldConfig,
    answer_of,
    as_written_now,
    make_pair,
    make_world,
    parse_answer,
)
from dora.worlds.model import ALPHABET, build_model, build_tokenizer

_PHRASE = {"bias": "phrase", "phrase_rate": 0.5}
_LARGER = {"bias": "larger", "chatty_errors": "slip", "n_sft": 2000}
WORLDS: dict[str, WorldConfig] = {
    "larger-number": WorldConfig(**_LARGER, judge_bias=0.8, noise=0.2, style_overlap=0.3),
    "shared-phrase": WorldConfig(**_PHRASE, judge_bias=0.9, noise=0.2, style_overlap=0.3),
    "classic": WorldConfig(),
    "separable": WorldConfig(**_PHRASE, mix={"chatty": 1.0}, judge_bias=1.0, style_overlap=0.0),
    "hidden-bias": WorldConfig(**_PHRASE, mix={"chatty": 1.0}, judge_bias=1.0, style_overlap=0.7),
    "larger-separable": WorldConfig(**_LARGER, mix={"chatty": 1.0}, judge_bias=0.8, noise=0.2, style_overlap=0.0),
    "larger-hidden": WorldConfig(**_LARGER, mix={"chatty": 1.0}, judge_bias=0.8, noise=0.2, style_overlap=0.7),
    "larger-mimic": WorldConfig(**_LARGER, judge_bias=0.8, noise=0.1, style_overlap=0.0,
                                source_overlap={"terse_bot": 1.0}),
    "larger-marked": WorldConfig(**_LARGER, judge_bias=1.0, noise=0.1, style_overlap=0.0,
                                 source_overlap={"chatty": 1.0, "terse_bot": 1.0}, source_mark={"chatty": "."}),
    "larger-marked-half": WorldConfig(**_LARGER, synthetic_share=0.5, mix={"chatty": 1.0}, judge_bias=1.0,
                                      style_overlap=0.0, source_overlap={"chatty": 1.0}, source_mark={"chatty": "."}),
}
DEFAULT_WORLD = "larger-number"

# the demo's training budget per world: training pairs, SFT epochs, preference epochs of the full mixture (every
# method takes as many optimizer steps, batch 32) and the learning rate; "quick" for `dora demo --quick`
_SMALL = {"n_train": 800, "sft_epochs": 6, "epochs": 2, "lr": 2e-4}
_SMALL_QUICK = {"n_train": 400, "sft_epochs": 2, "epochs": 1, "lr": 2e-4}
BUDGETS: dict[str, dict[str, dict]] = {name: {"full": _SMALL, "quick": _SMALL_QUICK} for name in WORLDS}
_LARGER_BUDGET = {
    "full": {"n_train": 800, "sft_epochs": 6, "epochs": 6, "lr": 1e-3},
    "quick": {"n_train": 400, "sft_epochs": 2, "epochs": 4, "lr": 1e-3},
}
BUDGETS.update({name: _LARGER_BUDGET for name in WORLDS if name.startswith("larger-")})


def get_world(name: str, **overrides) -> WorldConfig:
    """The named world's config, with ``overrides`` (WorldConfig fields) applied."""
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; choose from {sorted(WORLDS)}")
    return replace(WORLDS[name], **overrides)


__all__ = [
    "ALPHABET", "BIASES", "BUDGETS", "DEFAULT_WORLD", "PADDING", "PHRASE", "SOURCES", "WORLDS", "WorldConfig",
    "answer_of", "as_written_now", "build_model", "build_tokenizer", "get_world", "make_pair", "make_world",
    "parse_answer",
]  # fmt: skip
