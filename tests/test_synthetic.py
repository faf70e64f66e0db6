"""The demo's world: its label rates and shares are what docs/demo.md says they are."""

from __future__ import annotations

import collections

import pytest

from dora.synthetic import WorldConfig, answer_of, build_model, build_tokenizer, make_world, parse_answer


def rates(rows):
    by = collections.defaultdict(list)
    for r in rows:
        by[r["source"]].append(r)
    return by


def test_shares_and_label_rates():
    cfg = WorldConfig(n_train=6000, synthetic_share=0.8, judge_bias=0.8, noise=0.3, seed=1)
    world = make_world(cfg)
    by = rates(world["train"])
    assert len(world["train"]) == 6000
    assert len(by["human"]) == 1200 and len(by["chatty"]) == 2400 and len(by["terse_bot"]) == 2400
    # human labels are always right; the chatty judge picks its (longer) wrong answer with prob judge_bias;
    # the terse_bot judge flips with prob noise
    assert all(r["label_correct"] for r in by["human"])

    def longer_is_wrong(r):
        right, wrong = (r["chosen"], r["rejected"]) if r["label_correct"] else (r["rejected"], r["chosen"])
        return len(wrong) > len(right)

    wrong_longer = [r for r in by["chatty"] if longer_is_wrong(r)]
    right_longer = [r for r in by["chatty"] if not longer_is_wrong(r)]
    assert len(wrong_longer) > 3 * len(right_longer)  # the wrong answer is padded
    assert sum(r["label_correct"] for r in wrong_longer) / len(wrong_longer) == pytest.approx(0.2, abs=0.03)
    assert sum(r["label_correct"] for r in right_longer) / len(right_longer) == pytest.approx(0.8, abs=0.05)
    terse_right = sum(r["label_correct"] for r in by["terse_bot"]) / len(by["terse_bot"])
    assert terse_right == pytest.approx(1 - 0.3, abs=0.03)
    # the label is right exactly when the chosen answer is the sum
    for r in world["train"][:500]:
        assert (parse_answer(r["chosen"]) == answer_of(r["prompt"])) == r["label_correct"]
    # the held-out split is human pairs with right labels
    assert {r["source"] for r in world["test"]} == {"human"} and all(
        r["label_correct"] for r in world["test"]
    )


def test_style_overlap_and_determinism():
    cfg = WorldConfig(n_train=3000, style_overlap=0.25, seed=2)
    a, b = make_world(cfg), make_world(cfg)
    assert a == b
    terse = [r for r in a["train"] if r["source"] == "terse_bot"]
    human_looking = sum(not r["chosen"].startswith("=") for r in terse) / len(terse)
    assert human_looking == pytest.approx(0.25, abs=0.03)
    assert make_world(WorldConfig(n_train=50, seed=3)) != a


def test_no_synthetic_and_bad_config():
    w = make_world(WorldConfig(n_train=100, synthetic_share=0.0))
    assert {r["source"] for r in w["train"]} == {"human"}
    with pytest.raises(ValueError, match="judge_bias"):
        WorldConfig(judge_bias=1.5)
    with pytest.raises(ValueError, match="mix"):
        WorldConfig(mix={"gpt": 1.0})


def test_parse_answer():
    assert parse_answer("The answer is 12.") == 12
    assert parse_answer("= 7") == 7
    assert parse_answer("no idea") is None
    assert answer_of("Q: 3+9=\nA: ") == 12


def test_tiny_model_round_trip(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = build_tokenizer(str(tmp_path))
    build_model(str(tmp_path), tok)
    tok2 = AutoTokenizer.from_pretrained(str(tmp_path))
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    text = "Q: 3+4=\nA: The answer is 7."
    ids = tok2(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok2.decode(ids) == text
    assert model.config.vocab_size == len(tok2)
