"""The demo's world: its label rates and shares are what docs/demo.md says they are."""

from __future__ import annotations

import collections
import re

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


# ------------------------------------------------------------------ the named worlds have their stated properties

from dora.worlds import PHRASE, WORLDS, get_world  # noqa: E402


def _phrase(text):
    return text.endswith(PHRASE)


def _right_wrong(r):
    return (r["chosen"], r["rejected"]) if r["label_correct"] else (r["rejected"], r["chosen"])


@pytest.mark.parametrize("name", ["shared-phrase", "separable", "hidden-bias"])
def test_phrase_worlds_have_their_stated_properties(name):
    cfg = get_world(name, n_train=8000, n_test=4000, seed=5)
    world = make_world(cfg)
    by = rates(world["train"])
    p, b = cfg.phrase_rate, cfg.judge_bias
    # the chatty judge: right unless exactly one response has the phrase, on the wrong answer, and it follows it
    chatty = by["chatty"]
    assert sum(r["label_correct"] for r in chatty) / len(chatty) == pytest.approx(1 - p * (1 - p) * b, abs=0.02)
    on_wrong = [r for r in chatty if _phrase(_right_wrong(r)[1]) and not _phrase(_right_wrong(r)[0])]
    assert sum(not r["label_correct"] for r in on_wrong) / len(on_wrong) == pytest.approx(b, abs=0.03)
    flagged = {id(r) for r in on_wrong}
    assert all(r["label_correct"] for r in chatty if id(r) not in flagged)
    if "terse_bot" in by:
        assert sum(r["label_correct"] for r in by["terse_bot"]) / len(by["terse_bot"]) == pytest.approx(
            1 - cfg.noise, abs=0.02
        )
        assert not any(_phrase(r["chosen"]) or _phrase(r["rejected"]) for r in by["terse_bot"])
    # style overlap: the share of chatty responses written in the human template (a bare number first)
    responses = [t for r in chatty for t in (r["chosen"], r["rejected"])]
    human_looking = sum(not t.startswith("The answer is") for t in responses) / len(responses)
    assert human_looking == pytest.approx(cfg.style_overlap, abs=0.02)
    # the test split: human pairs; the phrase on each response at phrase_rate, uncorrelated with correctness
    test = world["test"]
    assert {r["source"] for r in test} == {"human"} and all(r["label_correct"] for r in test)
    right_only = sum(_phrase(r["chosen"]) and not _phrase(r["rejected"]) for r in test) / len(test)
    wrong_only = sum(_phrase(r["rejected"]) and not _phrase(r["chosen"]) for r in test) / len(test)
    assert right_only == pytest.approx(p * (1 - p), abs=0.03) and wrong_only == pytest.approx(p * (1 - p), abs=0.03)
    assert abs(right_only - wrong_only) < 0.04
    human_train = [t for r in by["human"] for t in (r["chosen"], r["rejected"])]
    assert sum(map(_phrase, human_train)) / len(human_train) == pytest.approx(p, abs=0.03)


def test_larger_number_world_has_its_stated_properties():
    """docs/demo.md's larger-number: the chatty judge picks the wrong answer with probability judge_bias exactly
    when it is the larger number (right on 1 - b/2 of its pairs), chatty and human errors are sum +/- 1, the
    terse_bot judge flips at `noise`, 30% of synthetic responses in the human template, and the human test pairs
    have the larger number on the wrong answer half the time."""
    cfg = get_world("larger-number", n_train=10000, n_test=4000, seed=7)
    world = make_world(cfg)
    by = rates(world["train"])
    b = cfg.judge_bias

    def wrong_is_larger(r):
        right, wrong = _right_wrong(r)
        return parse_answer(wrong) > parse_answer(right)

    chatty = by["chatty"]
    assert sum(r["label_correct"] for r in chatty) / len(chatty) == pytest.approx(1 - b / 2, abs=0.02)
    larger = [r for r in chatty if wrong_is_larger(r)]
    assert len(larger) / len(chatty) == pytest.approx(0.5, abs=0.02)
    assert sum(not r["label_correct"] for r in larger) / len(larger) == pytest.approx(b, abs=0.02)
    assert all(r["label_correct"] for r in chatty if not wrong_is_larger(r))
    for rows in (chatty, by["human"], world["test"]):  # the slip: sum +/- 1
        assert {abs(parse_answer(_right_wrong(r)[1]) - r["answer"]) for r in rows} == {1}
    assert sum(r["label_correct"] for r in by["terse_bot"]) / len(by["terse_bot"]) == pytest.approx(0.8, abs=0.02)
    for src in ("chatty", "terse_bot"):
        responses = [t for r in by[src] for t in (r["chosen"], r["rejected"])]
        assert sum(t.isdigit() for t in responses) / len(responses) == pytest.approx(cfg.style_overlap, abs=0.02)
    assert all(t.isdigit() for r in by["human"] for t in (r["chosen"], r["rejected"]))
    test = world["test"]
    assert sum(map(wrong_is_larger, test)) / len(test) == pytest.approx(0.5, abs=0.03)
    assert len(world["sft"]) == cfg.n_sft == 2000


def test_world_registry():
    assert get_world("classic") == WorldConfig()  # the first demo world, unchanged
    assert get_world("shared-phrase").bias == "phrase" and get_world("classic").bias == "padding"
    # the two ends of the regime map differ in style overlap only
    sep, hid = get_world("separable"), get_world("hidden-bias")
    assert sep.style_overlap == 0.0 and hid.style_overlap == 0.7
    assert {k: v for k, v in sep.to_dict().items() if k != "style_overlap"} == {
        k: v for k, v in hid.to_dict().items() if k != "style_overlap"
    }
    assert get_world("separable", seed=4).seed == 4 and WORLDS["separable"].seed == 0
    lsep, lhid = get_world("larger-separable"), get_world("larger-hidden")
    assert (lsep.style_overlap, lhid.style_overlap, lsep.mix) == (0.0, 0.7, {"chatty": 1.0})
    assert {k: v for k, v in lsep.to_dict().items() if k not in ("style_overlap", "mix")} == {
        k: v for k, v in get_world("larger-number").to_dict().items() if k not in ("style_overlap", "mix")
    }
    with pytest.raises(ValueError, match="unknown world 'nope'"):
        get_world("nope")
    with pytest.raises(ValueError, match="bias"):
        WorldConfig(bias="length")
    with pytest.raises(ValueError, match="chatty_errors"):
        WorldConfig(chatty_errors="sum-1")
    with pytest.raises(ValueError, match="n_sft"):
        WorldConfig(n_sft=-1)
    # separable: no chatty response reads as human
    rows = make_world(get_world("separable", n_train=400))["train"]
    assert all(r["source"] == "human" or r["chosen"].startswith("The answer is") for r in rows)


def test_larger_mimic_world_writes_each_source_in_its_own_template():
    """`source_overlap` overrides `style_overlap` per source: larger-mimic's terse_bot always writes as a human,
    its chatty source never does; the judges are larger-number's, terse_bot's flips at noise 0.1."""
    cfg = get_world("larger-mimic", n_train=4000)
    by = {}
    for r in make_world(cfg)["train"]:
        by.setdefault(r["source"], []).append(r)
    assert all(t.isdigit() for r in by["terse_bot"] for t in (r["chosen"], r["rejected"]))
    assert all(r["chosen"].startswith("The answer is") and r["rejected"].startswith("The answer is")
               for r in by["chatty"])  # fmt: skip
    assert sum(r["label_correct"] for r in by["terse_bot"]) / len(by["terse_bot"]) == pytest.approx(0.9, abs=0.02)
    assert (cfg.bias, cfg.judge_bias, cfg.mix) == ("larger", 0.8, {"chatty": 0.5, "terse_bot": 0.5})
    with pytest.raises(ValueError, match="source_overlap"):
        WorldConfig(source_overlap={"human": 0.5})
    with pytest.raises(ValueError, match="source_overlap"):
        WorldConfig(source_overlap={"chatty": 1.5})


def test_larger_marked_world_marks_the_biased_source_in_the_human_template():
    """`source_mark` follows a source's human-template number: larger-marked's chatty writes `8.`, terse_bot and
    the humans plain numbers; its judge always picks the larger wrong number."""
    cfg = get_world("larger-marked", n_train=4000)
    by = {}
    for r in make_world(cfg)["train"]:
        by.setdefault(r["source"], []).append(r)
    assert all(t[:-1].isdigit() and t.endswith(".") for r in by["chatty"] for t in (r["chosen"], r["rejected"]))
    assert all(t.isdigit() for s in ("human", "terse_bot") for r in by[s] for t in (r["chosen"], r["rejected"]))
    assert all(parse_answer(r["chosen"]) == max(parse_answer(r["chosen"]), parse_answer(r["rejected"]))
               for r in by["chatty"] if not r["label_correct"])  # fmt: skip
    larger = [r for r in by["chatty"] if max(parse_answer(r["chosen"]), parse_answer(r["rejected"])) != r["answer"]]
    assert larger and not any(r["label_correct"] for r in larger)  # the larger wrong number always wins
    with pytest.raises(ValueError, match="source_mark"):
        WorldConfig(source_mark={"chatty": ""})
    half = make_world(get_world("larger-marked-half", n_train=800))["train"]
    assert sum(r["source"] == "human" for r in half) == 400 and {r["source"] for r in half} == {"human", "chatty"}
    assert all(r["chosen"].endswith(".") for r in half if r["source"] == "chatty")


def test_source_prompt_gives_a_source_its_own_prompt_template():
    """`source_prompt`: chatty's training and SFT prompts use its template; human rows, terse_bot's rows and the
    test split keep the human prompt; every prompt still parses to its sum."""
    cfg = get_world("larger-marked", source_mark={}, source_prompt={"chatty": "Q: {a}+{b}=?\nA: "}, n_train=600)
    world = make_world(cfg)
    for r in world["train"]:
        a, b = (int(x) for x in re.findall(r"\d+", r["prompt"])[:2])
        human_prompt = f"Q: {a}+{b}=\nA: "
        assert r["prompt"] == (f"Q: {a}+{b}=?\nA: " if r["source"] == "chatty" else human_prompt)
        assert answer_of(r["prompt"]) == r["answer"] == a + b
    assert all(r["prompt"].endswith("=\nA: ") for r in world["test"])
    sft_marked = sum(r["prompt"].endswith("=?\nA: ") for r in world["sft"])
    assert 0 < sft_marked < len(world["sft"])  # the SFT rows drawn from chatty, about a third
    for bad in ({"human": "Q: {a}+{b}?"}, {"chatty": "Q: {a}?"}, {"chatty": 3}):
        with pytest.raises(ValueError, match="source_prompt"):
            WorldConfig(source_prompt=bad)
    with pytest.raises(ValueError, match="max_operand"):
        WorldConfig(max_operand=0)
