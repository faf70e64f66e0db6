"""Distributional alignment, stages 1-3: metrics against hand-computed values and scipy, the loaders on
hand-made fixtures with the quirks of the benchmark's real files, the parsers, the prompts and few-shot
neighbours, and the three expression methods end to end through the CLI on a tiny Llama built here."""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from dora.cli import main
from dora.eval import distalign as D
from dora.eval.metrics import bootstrap_ci, js_similarity, tvd, wasserstein_representativeness

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "distalign")
BENCH = os.path.join(FIX, "bench")
OQA = os.path.join(BENCH, "opinions_qa", "data", "human_resp", "Pew_small")
NYT = os.path.join(BENCH, "nytimes", "data.json")
GV = os.path.join(BENCH, "Global_Values", "data", "data.json")

pytestmark = pytest.mark.usefixtures("one_thread")


def item(dataset, qid, group, dist, options=None, question=None, ordinals=None):
    options = options or [f"o{i}" for i in range(len(dist))]
    d = np.asarray(dist, float)
    return D.Item(dataset, qid, question or f"question {qid}", options, group, d / d.sum(), ordinals)


# --------------------------------------------------------------------------- metrics


def test_metrics_by_hand_and_scipy():
    p, q = [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]
    assert tvd(p, q) == pytest.approx(0.5)  # 0.5 * (0.25 + 0.25 + 0.5)
    assert tvd([2, 2, 0], [1, 1, 2]) == pytest.approx(0.5)  # counts are normalised
    # W1 with options at 0, 1, 2: |cdf diff| = |0.5 - 0.25| + |1 - 0.5| = 0.75; repr. 1 - 0.75 / 2
    assert wasserstein_representativeness(p, q) == pytest.approx(0.625)
    assert wasserstein_representativeness([1, 0, 0, 0], [0, 0, 0, 1]) == pytest.approx(0.0)
    # JS by hand: m = [3/8, 3/8, 1/4]; KL(p||m) = log2(4/3); KL(q||m) = 2 * 0.25 * log2(2/3) + 0.5 * log2(2)
    jsd = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert js_similarity(p, q) == pytest.approx(1 - math.sqrt(jsd))
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
        assert js_similarity(a, b) == pytest.approx(1 - jensenshannon(a, b, base=2))
        assert 1 - wasserstein_representativeness(a, b) == pytest.approx(
            wasserstein_distance(range(5), range(5), a, b) / 4
        )
    with pytest.raises(ValueError):
        tvd([0, 0], [1, 0])


def test_wasserstein_uses_ordinal_positions():
    # OpinionQA's info.csv puts "Neither" between the 2nd and 3rd option: positions [1, 2, 3, 4, 2.5]
    pos = [1.0, 2.0, 3.0, 4.0, 2.5]
    p, q = [0.1, 0.2, 0.3, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0, 1.0]
    w1 = wasserstein_distance(pos, pos, p, q)  # scipy, independent
    # by hand: mass at distance |x - 2.5|: 0.1 * 1.5 + 0.2 * 0.5 + 0.3 * 0.5 + 0.2 * 1.5 = 0.7
    assert w1 == pytest.approx(0.7)
    assert wasserstein_representativeness(p, q, pos) == pytest.approx(1 - 0.7 / 3)
    # list positions would have put "Neither" at the far end
    assert wasserstein_representativeness(p, q) != pytest.approx(1 - 0.7 / 3)


def test_bootstrap_ci_is_a_numpy_percentile_bootstrap():
    x = np.r_[np.ones(60), np.zeros(40)]
    lo, hi = bootstrap_ci(x, samples=500, seed=1)
    rng = np.random.default_rng(1)
    stats = [x[rng.integers(0, 100, 100)].mean() for _ in range(500)]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])))


# --------------------------------------------------------------------------- loaders


def _by(items):
    return {(it.qid, it.group): it for it in items}


def test_opinionqa_quirks_of_the_real_files(caplog):
    with caplog.at_level(logging.WARNING, logger="dora.eval.distalign"):
        items = D.load_benchmark(os.path.join(OQA, "SEX_data.json"), max_questions=6)
    by = _by(items)
    assert items[0].dataset == "opinionqa"
    # MC_options split at a comma: options from the answer keys, ordered by info.csv's option_mapping
    prio = by["PRIO_W1", "Female"]
    assert prio.options == ["A top priority", "Important, but lower priority", "Not important", "Refused"]
    np.testing.assert_allclose(prio.distribution, [0.4, 0.3, 0.2, 0.1])
    np.testing.assert_allclose(by["PRIO_W1", "Male"].distribution, [0.25, 0.5, 0.25, 0.0])  # zero-filled
    assert prio.ordinals == [1.0, 2.0, 3.0, None]  # info.csv's option_ordinal; Refused off the scale
    # split at commas with no info.csv row: keys ordered by the MC option each starts with, duplicates gone
    assert by["FREQ_W2", "Female"].options == ["Yes, often", "Yes, sometimes", "No", "Refused"]
    # stray quotes around the options
    assert by["HELP_W1", "Male"].options == [
        "Mostly helps a cook's chances",
        "Mostly hurts a cook's chances",
        "Refused",
    ]
    np.testing.assert_allclose(by["HELP_W1", "Male"].distribution, [0.25, 0.25, 0.5])
    # an empty group (FREQ_W2 Male) is skipped
    assert ("FREQ_W2", "Male") not in by
    # ordinals from info.csv: [1, 2, 3, 4, 2.5]
    assert by["ECON_W2", "Female"].ordinals == [1.0, 2.0, 3.0, 4.0, 2.5, None]
    assert by["PETS_W2", "Male"].ordinals == [0.0, 1.0, None]  # no info.csv row: list positions
    text = caplog.text
    assert "SEX_data.json" in text and "1 options split at commas" in text and "1 options with stray quotes" in text
    assert "1 empty or all-zero groups skipped" in text


def test_max_questions_reads_only_the_first_questions(tmp_path):
    path = os.path.join(OQA, "SEX_data.json")
    assert len({it.qid for it in D.load_benchmark(path, max_questions=2)}) == 2
    # the rest of the file is not even decoded: a file cut off after two questions loads with N = 2
    text = open(path).read()
    cut = tmp_path / "SEX_data.json"
    cut.write_text(text[: text.index('"FREQ_W2"')] + '"FREQ_W2": {"MC_options": [tru')
    assert len(D.load_benchmark(str(cut), "opinionqa", max_questions=2)) == 4
    with pytest.raises(ValueError, match=r"SEX_data.json: not valid JSON \(line \d+, column \d+"):
        D.load_benchmark(str(cut), "opinionqa", max_questions=3)
    # the 7th question has no MC_options: reached only when the limit lets it in
    with pytest.raises(ValueError, match=r"SEX_data.json: question BAD_W3: missing field 'MC_options'"):
        D.load_benchmark(path)


def test_all_zero_rows_nytimes_and_globalvalues(caplog):
    race = D.load_benchmark(os.path.join(OQA, "RACE_data.json"))
    assert {it.group for it in race} == {"Black", "White", "Asian"}  # Mixed Race: all zero / empty
    nyt = D.load_benchmark(NYT)
    assert len(nyt) == 8 and nyt[0].dataset == "nytimes" and nyt[0].ordinals == [0.0, 1.0, 2.0, 3.0]
    np.testing.assert_allclose(_by(nyt)["The Long Kettle By B. Author", "Male"].distribution, [0.5, 0.25, 0.25, 0])
    assert nyt[0].context["genre"] == "Nature"
    with caplog.at_level(logging.WARNING, logger="dora.eval.distalign"):
        gv = D.load_benchmark(GV)
    by = _by(gv)
    first = "Is it more important to have a fast train or a cheap bus?"
    assert [by[first, c].rank for c in ("Kenya", "Chile", "Japan", "Peru")] == [0, 1, 2, 3]
    np.testing.assert_allclose(by[first, "Chile"].distribution, [0.5, 0.5, 0.0])  # 0.45 + 0.45: renormalised
    assert by["Is the sea too salty?", "Kenya"].options == ["Yes", "No", "Yes", "DK/Refused"]  # by letter
    assert ("Is the sea too salty?", "Japan") not in by  # all zero
    assert "1 shares not summing to 1" in caplog.text and "duplicate options" in caplog.text


def test_group_filter_keeps_the_papers_groups():
    items = D.load_benchmark(os.path.join(OQA, "RACE_data.json")) + D.load_benchmark(GV)
    kept = D.select_groups(items, "paper")
    assert {it.group for it in kept if it.dataset == "opinionqa"} == {"Black", "White"}  # not Asian
    assert {it.group for it in kept if it.dataset == "globalvalues"} == {"Kenya", "Chile", "Japan"}  # not Peru
    assert len(D.select_groups(items, "all")) == len(items)
    assert {it.group for it in D.select_groups(items, ["Asian", "Peru"])} == {"Asian", "Peru"}


def test_loaders_name_the_file_row_and_field(tmp_path):
    with pytest.raises(ValueError, match=r"malformed.json: not valid JSON \(line 1"):
        D.load_benchmark(os.path.join(BENCH, "malformed.json"))
    bad = tmp_path / "bad.jsonl"
    row = {"question": "q", "options": ["a", "b"], "group": "g", "distribution": [1, 0]}
    bad.write_text(json.dumps(row) + "\n" + json.dumps({k: v for k, v in row.items() if k != "distribution"}))
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2: missing field 'distribution'"):
        D.load_benchmark(str(bad))
    bad.write_text(json.dumps({**row, "options": ["a", "a"]}))
    with pytest.raises(ValueError, match=r"line 1, field 'options': duplicate options"):
        D.load_benchmark(str(bad))
    bad.write_text(json.dumps({**row, "distribution": {"c": 1}}))
    with pytest.raises(ValueError, match=r"line 1, field 'distribution'.*'c'"):
        D.load_benchmark(str(bad))
    with pytest.raises(ValueError, match=r"nope.json: no such file"):
        D.load_benchmark(str(tmp_path / "nope.json"))
    bad.write_text(json.dumps({**row, "ordinals": [1, "x"]}))
    with pytest.raises(ValueError, match=r"bad.jsonl: line 1, field 'ordinals': 'x' is not a number"):
        D.load_benchmark(str(bad))
    toy = D.load_benchmark(os.path.join(FIX, "questions.jsonl"))
    assert toy[0].dataset == "toy" and toy[0].ordinals is None and toy[1].ordinals == [0.0, 1.0, 2.0]


# --------------------------------------------------------------------------- parsers


def test_sequence_parser_reads_separated_and_contiguous_letters():
    d, fail = D.parse_sequence("ABBBAABDD", 4)  # the reference prompt asks for 30 characters, no spaces
    np.testing.assert_allclose(d, [3 / 9, 4 / 9, 0, 2 / 9])
    assert fail == 0.0
    d, fail = D.parse_sequence("Answer: A B A C x A ??", 3)
    np.testing.assert_allclose(d, [3 / 5, 1 / 5, 1 / 5])
    assert fail == pytest.approx(2 / 7)  # "x" is no option of 3, "??" no letter
    d, fail = D.parse_sequence("AAB, BA C", 3, samples=4)  # only the first N answers count
    np.testing.assert_allclose(d, [0.5, 0.5, 0.0])
    d, _ = D.parse_sequence("Sure, here they are.\nAnswer: CCA", 3)  # read after "Answer:"
    np.testing.assert_allclose(d, [1 / 3, 0, 2 / 3])
    assert D.parse_sequence("nothing here", 3) == (None, 1.0)
    assert D.parse_sequence("", 3) == (None, 1.0)


def test_verbalized_parser_never_evaluates():
    opts = ["Agree", "Disagree", "Refused"]
    np.testing.assert_allclose(D.parse_verbalized('blah {"A": 30%, "B": "70%"} ok', opts), [0.3, 0.7, 0])
    # the reference's own answer format: single quotes and bare letter keys together
    np.testing.assert_allclose(D.parse_verbalized("{'A': '45%', 'B': '44%', C: '11%'}", opts), [0.45, 0.44, 0.11])
    np.testing.assert_allclose(D.parse_verbalized('{"Disagree": 0.25, "Agree": 0.75}', opts), [0.75, 0.25, 0])
    assert D.parse_verbalized("{'A': __import__('os')}", opts) is None
    assert D.parse_verbalized('{"A": -0.5, "B": 1}', opts) is None
    assert D.parse_verbalized('{"Z": 1}', opts) is None
    assert D.parse_verbalized("no json", opts) is None
    probs = np.zeros(10)
    probs[[1, 2, 5]] = [0.2, 0.3, 0.1]
    d, off = D.logp_distribution(probs, [[1, 2], [5]])  # letter A as "A" and " A"; B as "B"
    np.testing.assert_allclose(d, [5 / 6, 1 / 6])
    assert off == pytest.approx(0.4)
    assert D.logp_distribution(np.zeros(10), [[1], [2]]) == (None, 1.0)


# --------------------------------------------------------------------------- prompts and neighbours


def test_reference_prompts_read_the_formatting_examples_of_the_users_copy():
    items = _by(D.load_benchmark(os.path.join(OQA, "SEX_data.json"), max_questions=6))
    it = items["PETS_W2", "Female"]
    p = D.build_prompt(it, "sequence", "persona")
    assert p.startswith("I will provide a sequence of responses to a series of questions from a random group")
    assert 'simulate 30 samples from a group of "Female"' in p
    assert "Question: Do you own a bicycle?" in p  # bench/inputs/opinion_surveys/sequence/prompt_task1.txt
    assert 'Your turn! Please answer this question for the group "Female".' in p
    assert p.endswith("Question: Which pets are better companions?\nA. Cats\nB. Dogs\nC. Refused\nAnswer:")
    # no copy of this method's examples: hand-written stand-ins of the same shape
    v = D.build_prompt(it, "verbalize", "none")
    assert "dictionary mapping answer choice letter to probability" in v and "Do you own a bicycle" not in v
    assert "How often do you cook dinner at home?" in v and v.endswith("C. Refused\nAnswer:")
    nyt = D.load_benchmark(NYT)[0]
    p = D.build_prompt(nyt, "logprobs", "persona")
    assert "Book Title: Moss And Stone By A. Writer\nBook Genre: Nature" in p
    assert "how likely is a Democrat to read it?\nA. 1: Very unlikely" in p
    gv = D.load_benchmark(GV)[0]
    assert "How would someone from Kenya respond to the following question?" in D.build_prompt(
        gv, "verbalize", "persona"
    )
    concise = D.build_prompt(it, "verbalize", "persona", style="concise")
    assert concise.startswith("Answer as a group of Female people would.") and '"A": 0.62' in concise
    with pytest.raises(ValueError, match="unknown prompt style"):
        D.build_prompt(it, "verbalize", "persona", style="fancy")


def test_few_shot_neighbours_follow_the_shipped_similarity_files():
    items = D.load_benchmark(os.path.join(OQA, "SEX_data.json"), max_questions=6)
    shots, source = D.select_shots(items, k=5)
    assert source == "similarity files + tf-idf"  # PETS_W2 / RAIN_W3 are in the top-10 file, the rest not
    pets = next(i for i, it in enumerate(items) if (it.qid, it.group) == ("PETS_W2", "Female"))
    # top-10 of PETS_W2 (loaded ones): RAIN_W3 (4 options), PRIO_W1 (4), ECON_W2 (6), HELP_W1 (3), FREQ_W2
    # (4; no Male row). PETS_W2 has 3 options: the different-size ones come first (all 4 of them), then the
    # same-size one: HELP_W1. Female: [RAIN, PRIO, ECON, FREQ, HELP]
    assert [s.qid for s in shots[pets]] == ["RAIN_W3", "PRIO_W1", "ECON_W2", "FREQ_W2", "HELP_W1"]
    male = next(i for i, it in enumerate(items) if (it.qid, it.group) == ("PETS_W2", "Male"))
    assert [s.qid for s in shots[male]] == ["RAIN_W3", "PRIO_W1", "ECON_W2", "HELP_W1"]
    assert all(s.group == items[pets].group for s in shots[pets])
    # questions that are not scored can still be examples: the shot pool
    only_pets = [it for it in items if it.qid == "PETS_W2"]
    assert D.select_shots(only_pets, k=5)[0][0] == []
    pooled, _ = D.select_shots(only_pets, k=5, pool=items)
    assert [s.qid for s in pooled[0]] == ["RAIN_W3", "PRIO_W1", "ECON_W2", "FREQ_W2", "HELP_W1"]
    # k = 2: the two least similar of the different-size neighbours
    shots2, _ = D.select_shots(items, k=2)
    assert [s.qid for s in shots2[pets]] == ["ECON_W2", "FREQ_W2"]
    # Global Values: the neighbours (and their distributions) come from question_similarity.json
    gv = D.load_benchmark(GV)
    gshots, _ = D.select_shots(gv, k=5)
    assert [s.question for s in gshots[0]] == ["Do you prefer walking or cycling?",
                                               "Should cities plant more trees or build more parking?"]  # fmt: skip
    np.testing.assert_allclose(gshots[0][0].distribution, [0.25, 0.75])
    p = D.build_prompt(gv[0], "verbalize", "few_shot", gshots[0])
    assert "Context: Let the probability that a Kenya responds to the following question with Walking be 25%" in p
    assert "Answer: {'A': '25%', 'B': '75%'}" in p


def test_few_shot_prompt_shows_the_truth_in_each_format():
    items = D.load_benchmark(NYT)
    shots, _ = D.select_shots(items, k=5)
    p = D.build_prompt(items[0], "sequence", "few_shot", shots[0], samples=30, seed=3)
    assert p.count("Context: Let the probability that a Democrat responds") == 1
    assert "'1: Very unlikely' be 20%, '2: Somewhat unlikely' be 20%, '3: Somewhat likely' be 40%" in p
    answer = p.split("Answer: ")[1].split("\n")[0].split()
    assert len(answer) == 30 and set(answer) <= set("ABCD")
    assert p == D.build_prompt(items[0], "sequence", "few_shot", shots[0], samples=30, seed=3)  # seeded
    v = D.build_prompt(items[0], "verbalize", "few_shot", shots[0])
    assert "Answer: {A: '20%', B: '20%', C: '40%', D: '20%'}" in v


# --------------------------------------------------------------------------- model side


class ScriptedRunner:
    """A stand-in model that writes the given texts and records how it was asked to decode."""

    def __init__(self, texts):
        self.texts, self.tokenizer, self.calls = texts, None, []

    def generate(self, prompts, max_new_tokens, sample, seed=0):
        self.calls.append(sample)
        return list(self.texts)


def test_unreadable_outputs_are_failures_and_verbalize_samples():
    items = [item("d", "q1", "g", [0.5, 0.5]), item("d", "q2", "g", [0.2, 0.8]), item("d", "q3", "g", [1, 0])]
    rows = D.predict(ScriptedRunner(["A A B x\nmore", "", "%%% ??"]), items, "sequence", "none", samples=4)
    np.testing.assert_allclose(rows[0]["prediction"], [2 / 3, 1 / 3])
    assert rows[1]["prediction"] is None and rows[2]["prediction"] is None
    assert [r["failure"] for r in rows] == pytest.approx([0.25, 1.0, 1.0])
    runner = ScriptedRunner(['{"A": "20%", "B": "80%"}', "{'A': __import__('os').system('x')}", "I think A."])
    rows = D.predict(runner, items, "verbalize", "persona")
    np.testing.assert_allclose(rows[0]["prediction"], [0.2, 0.8])
    assert rows[1]["prediction"] is None and [r["failure"] for r in rows] == [0.0, 1.0, 1.0]
    assert runner.calls == [True]  # temperature-1 sampling, as the paper
    D.predict(runner, items, "verbalize", "persona", verbalize_decoding="greedy")
    assert runner.calls[-1] is False


class StubRunner(ScriptedRunner):
    """Letters carry the probabilities 0.5, 0.3, 0.2 (and 0.1 off the options); texts are fixed."""

    def __init__(self, texts):
        super().__init__(texts)
        self.tokenizer = lambda text, add_special_tokens=False: {"input_ids": [D.LETTERS.index(text.strip())]}
        self.prompts = []

    def next_token_probs(self, prompts):
        self.prompts += prompts
        out = np.zeros((len(prompts), 30))
        out[:, :3] = [0.45, 0.27, 0.18]
        out[:, 29] = 0.1
        return out

    def generate(self, prompts, max_new_tokens, sample, seed=0):
        self.prompts += prompts
        return [self.texts[i % len(self.texts)] for i in range(len(prompts))]


def test_evaluate_runs_every_method_and_steering_with_reference_prompts():
    items = D.select_groups(D.load_benchmark(os.path.join(OQA, "SEX_data.json"), max_questions=6))
    runner = StubRunner(["Answer: ABCAB", "{'A': '50%', 'B': '30%', 'C': '20%'}"])
    report, rows = D.evaluate(runner, items, bootstrap=20, samples=5)
    assert set(report["by_steering"]) == {f"{m}/{s}" for m in D.METHODS for s in D.STEERINGS}
    assert report["shots"] == "similarity files + tf-idf" and report["prompt_style"] == "reference"
    assert sum("Context: Let the probability that a Female responds" in p for p in runner.prompts) > 0
    pets = [r for r in rows if r["qid"] == "PETS_W2" and r["group"] == "Female"]
    for r in pets:  # truth [0.6, 0.4, 0]
        if r["method"] == "logprobs":
            np.testing.assert_allclose(r["prediction"], [0.5, 0.3, 0.2])
            assert r["off_option_mass"] == pytest.approx(0.1)
        elif r["prediction"] is not None:
            assert r["tvd"] == pytest.approx(0.5 * np.abs(np.array(r["prediction"]) - [0.6, 0.4, 0.0]).sum())


@pytest.fixture(scope="module")
def letter_model(tmp_path_factory):
    """A tiny Llama with a character-level `tokenizers` vocabulary holding the letters, saved and loaded
    like a user's checkpoint."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = str(tmp_path_factory.mktemp("letters"))
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=8192,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_distalign_cli_end_to_end(tmp_path, letter_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    files = [NYT, os.path.join(FIX, "questions.jsonl")]
    argv = ["eval", "distalign", "--model", letter_model, "--data", *files, "--samples", "6", "--shots", "1",
            "--bootstrap", "50", "--batch-size", "4", "--prompt-style", "concise", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    assert set(report["by_steering"]) == {f"{m}/{s}" for m in D.METHODS for s in D.STEERINGS}
    assert report["n_items"] == 10 and report["headline_steerings"] == ["persona", "few_shot"]
    for key, r in report["by_steering"].items():
        assert 0.0 <= r["tvd"] <= 1.0 and r["ci"][0] <= r["tvd"] <= r["ci"][1], key
        assert set(r["by_dataset"]) == {"nytimes", "toy"}
    # an untrained model writes no JSON: every verbalized answer is a counted failure, scored TVD 1/2
    assert report["by_steering"]["verbalize/none"]["failed_share"] == 1.0
    assert report["by_steering"]["verbalize/none"]["tvd"] == pytest.approx(0.5)
    board = json.loads((out / "leaderboard.json").read_text())
    assert set(board) == {"logprobs", "sequence", "verbalize", "baselines", "gap"}
    assert board["gap"] == pytest.approx(board["sequence"]["tvd"] / board["verbalize"]["tvd"] - 1)
    assert set(board["baselines"]) == {"uniform", "majority", "floor_n6"}
    assert "| Log-p |" in (out / "results.md").read_text()

    # log-p, recomputed one prompt at a time without padding: the batched, left-padded run agrees
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 10 * 9
    items = D.load_benchmark(files[0]) + D.load_benchmark(files[1])
    tok = AutoTokenizer.from_pretrained(letter_model)
    model = AutoModelForCausalLM.from_pretrained(letter_model)
    logp_rows = [r for r in rows if r["method"] == "logprobs" and r["steering"] == "persona"]
    for it, row in zip(items, logp_rows):
        ids = tok(D.build_prompt(it, "logprobs", "persona", style="concise"), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            probs = torch.softmax(model(ids).logits[0, -1].double(), -1)
        letters = probs[[tok.convert_tokens_to_ids(c) for c in D.LETTERS[: len(it.options)]]].numpy()
        np.testing.assert_allclose(row["prediction"], letters / letters.sum(), rtol=1e-4, atol=1e-6)
        assert row["tvd"] == pytest.approx(0.5 * np.abs(letters / letters.sum() - it.distribution).sum(), abs=1e-5)
        assert row["off_option_mass"] == pytest.approx(1 - letters.sum(), abs=1e-5)


def test_distalign_cli_rejects_unknown_names(letter_model, capsys):
    argv = ["eval", "distalign", "--model", letter_model, "--data", os.path.join(FIX, "questions.jsonl"),
            "--methods", "logits"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dora eval: error: ") and "unknown method 'logits'" in err
    with pytest.raises(ValueError, match="unknown method 'logits'"):
        main([*argv, "--debug"])


def test_distalign_cli_checks_flags_and_files(tmp_path, capsys):
    """Out-of-range flags, a missing --info file and a folder given as --data: one line, exit status 2."""
    data = os.path.join(FIX, "questions.jsonl")

    def error(*extra) -> str:
        assert main(["eval", "distalign", "--predictions", str(tmp_path / "p.jsonl"), *extra]) == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    (tmp_path / "p.jsonl").write_text("")
    assert error("--data", data, "--samples", "-3") == "dora eval: error: --samples must be >= 1, got -3"
    assert error("--data", data, "--shots", "-1") == "dora eval: error: --shots must be >= 0, got -1"
    assert error("--data", data, "--max-questions", "0") == "dora eval: error: --max-questions must be >= 1, got 0"
    assert error("--data", data, "--info", str(tmp_path / "nope.csv")) == (
        f"dora eval: error: {tmp_path / 'nope.csv'}: no such file"
    )
    assert error("--data", str(tmp_path)) == f"dora eval: error: {tmp_path}: a folder, not a benchmark file"
