"""Distributional alignment: metrics against hand-computed values and scipy, loaders on hand-made fixtures,
baselines against closed forms, parsers, few-shot selection, and the three expression methods end to end
through the CLI on a tiny Llama built here."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import binom, wasserstein_distance

from dora.cli import main
from dora.eval import distalign as D
from dora.eval.metrics import bootstrap_ci, js_similarity, tvd, wasserstein_representativeness

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "distalign")


pytestmark = pytest.mark.usefixtures("one_thread")


def item(dataset, qid, group, dist, options=None, question=None, ordinal=False):
    options = options or [f"o{i}" for i in range(len(dist))]
    return D.Item(
        dataset, qid, question or f"question {qid}", options, group, np.asarray(dist, float), ordinal
    )


# --------------------------------------------------------------------------- metrics


def test_metrics_by_hand_and_scipy():
    p, q = [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]
    assert tvd(p, q) == pytest.approx(0.5)  # 0.5 * (0.25 + 0.25 + 0.5)
    assert tvd([2, 2, 0], [1, 1, 2]) == pytest.approx(0.5)  # counts are normalised
    assert tvd(p, p) == 0.0
    # W1 with options at 0, 1, 2: |cdf diff| = |0.5 - 0.25| + |1 - 0.5| = 0.75; repr. 1 - 0.75 / 2
    assert wasserstein_representativeness(p, q) == pytest.approx(0.625)
    assert 1 - wasserstein_representativeness(p, q) == pytest.approx(
        wasserstein_distance([0, 1, 2], [0, 1, 2], p, q) / 2
    )
    # one-hot on the first vs the last of 4 ordered options: W1 = 3, the worst case
    assert wasserstein_representativeness([1, 0, 0, 0], [0, 0, 0, 1]) == pytest.approx(0.0)
    # JS by hand: m = [3/8, 3/8, 1/4]; KL(p||m) = log2(4/3); KL(q||m) = 2 * 0.25 * log2(2/3) + 0.5 * log2(2)
    jsd = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert js_similarity(p, q) == pytest.approx(1 - math.sqrt(jsd))
    assert js_similarity(p, q) == pytest.approx(1 - jensenshannon(p, q, base=2))
    assert js_similarity([1, 0], [0, 1]) == pytest.approx(0.0)  # disjoint supports: JS distance 1
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
        assert tvd(a, b) == pytest.approx(0.5 * np.abs(a - b).sum())
        assert js_similarity(a, b) == pytest.approx(1 - jensenshannon(a, b, base=2))
        assert 1 - wasserstein_representativeness(a, b) == pytest.approx(
            wasserstein_distance(range(5), range(5), a, b) / 4
        )
    with pytest.raises(ValueError):
        tvd([0, 0], [1, 0])


def test_bootstrap_ci_is_a_numpy_percentile_bootstrap():
    x = np.r_[np.ones(60), np.zeros(40)]
    lo, hi = bootstrap_ci(x, samples=500, seed=1)
    rng = np.random.default_rng(1)
    stats = [x[rng.integers(0, 100, 100)].mean() for _ in range(500)]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])))
    assert lo < 0.6 < hi


def test_aggregate_is_mean_over_groups_of_mean_over_questions_then_datasets():
    items = [
        item("a", "q1", "g1", [1, 0]),
        item("a", "q2", "g1", [1, 0]),
        item("a", "q3", "g1", [1, 0]),
        item("a", "q1", "g2", [1, 0]),
        item("b", "q1", "g1", [1, 0]),
    ]
    values = [0.1, 0.2, 0.6, 0.9, 0.3]
    by_ds, overall = D.aggregate(items, values)
    # a: g1 mean 0.3, g2 0.9 -> 0.6; b: 0.3; overall (0.6 + 0.3) / 2, not the item mean 0.42
    assert by_ds == pytest.approx({"a": 0.6, "b": 0.3})
    assert overall == pytest.approx(0.45)


def test_bootstrap_over_questions_matches_numpy():
    rng0 = np.random.default_rng(5)
    items, values = [], []
    for q in range(8):
        for g in ("g1", "g2"):
            items.append(item("only", f"q{q}", g, [1, 0]))
            values.append(float(rng0.random()))
    lo, hi = D.bootstrap_aggregate(items, values, samples=300, seed=2)
    v = np.array(values).reshape(8, 2)  # questions x groups
    rng = np.random.default_rng(2)
    counts = rng.multinomial(8, np.full(8, 1 / 8), size=300)
    stats = ((counts @ v) / counts.sum(1, keepdims=True)).mean(1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])))
    assert lo <= D.aggregate(items, values)[1] <= hi


# --------------------------------------------------------------------------- loaders


def test_loaders():
    oqa = D.load_benchmark(os.path.join(FIX, "SEX_data.json"))
    assert {it.group for it in oqa} == {"Female", "Male"} and len(oqa) == 6
    assert oqa[0].dataset == "opinionqa_SEX" and oqa[0].ordinal
    female_q1 = next(it for it in oqa if it.qid == "Q1_W1" and it.group == "Female")
    np.testing.assert_allclose(female_q1.distribution, [0.10, 0.30, 0.55, 0.05])
    male_q1 = next(it for it in oqa if it.qid == "Q1_W1" and it.group == "Male")
    np.testing.assert_allclose(male_q1.distribution, [0.2, 0.4, 0.4, 0.0])  # zero-filled "Refused"
    nyt = D.load_benchmark(os.path.join(FIX, "data.json"))
    assert len(nyt) == 4 and nyt[0].dataset == "nytimes" and nyt[0].ordinal
    np.testing.assert_allclose(nyt[0].distribution, [0.1, 0.15, 0.5, 0.25])  # 2, 3, 10, 5 of 20
    assert "A Quiet Garden" in nyt[0].question
    glob = D.load_benchmark(os.path.join(FIX, "global_data.json"))
    assert glob[0].options == ["A strong economy", "A clean environment", "DK/Refused"] and len(glob) == 4
    assert not glob[0].ordinal and glob[1].group == "Chile"
    toy = D.load_benchmark(os.path.join(FIX, "questions.jsonl"))
    assert toy[0].dataset == "toy" and not toy[0].ordinal and toy[1].ordinal
    np.testing.assert_allclose(toy[1].distribution, [1 / 3] * 3)


def test_loaders_name_the_bad_row_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"question": "q", "options": ["a", "b"], "group": "g", "distribution": [1, 0]}) + "\n"
        + json.dumps({"question": "q", "options": ["a", "b"], "group": "g"}) + "\n"
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"row 1: missing field 'distribution'"):
        D.load_benchmark(str(bad))
    bad.write_text(
        json.dumps({"question": "q", "options": ["a", "b"], "group": "g", "distribution": [1]}) + "\n"
    )
    with pytest.raises(ValueError, match=r"row 0, field 'distribution'"):
        D.load_benchmark(str(bad))
    bad.write_text(
        json.dumps({"question": "q", "options": ["a", "b"], "group": "g", "distribution": {"c": 1}})
    )
    with pytest.raises(ValueError, match=r"row 0.*'c'"):
        D.load_benchmark(str(bad))
    oqa = tmp_path / "RACE_data.json"
    oqa.write_text(json.dumps({"Q9": {"question_text": "?", "Black": {"Yes": 1}}}))
    with pytest.raises(ValueError, match=r"question Q9: missing field 'MC_options'"):
        D.load_benchmark(str(oqa), "opinionqa")


# --------------------------------------------------------------------------- baselines


def test_baselines_closed_forms():
    items = D.load_benchmark(os.path.join(FIX, "global_data.json"))
    # uniform: TVD(p, 1/k) = 0.5 * sum |p_i - 1/3|, mean over questions per country, then countries
    # Kenya: (0.5 * (0.2667 + 0.0333 + 0.2333), 0.5 * (0.3667 + 0.1333 + 0.2333)); Chile likewise
    kenya = [0.5 * (abs(0.6 - 1 / 3) + abs(0.3 - 1 / 3) + abs(0.1 - 1 / 3)),
             0.5 * (abs(0.7 - 1 / 3) + abs(0.2 - 1 / 3) + abs(0.1 - 1 / 3))]  # fmt: skip
    chile = [0.5 * (abs(0.4 - 1 / 3) + abs(0.5 - 1 / 3) + abs(0.1 - 1 / 3)),
             0.5 * (abs(0.8 - 1 / 3) + abs(0.15 - 1 / 3) + abs(0.05 - 1 / 3))]  # fmt: skip
    b = D.baselines(items)
    assert b["uniform"]["overall"] == pytest.approx((np.mean(kenya) + np.mean(chile)) / 2)
    # majority one-hot: TVD = 1 - p_max
    assert b["majority"]["overall"] == pytest.approx(((0.4 + 0.3) / 2 + (0.5 + 0.2) / 2) / 2)
    assert 0 < b["floor_n30"]["overall"] < b["uniform"]["overall"]


def test_discretisation_floor_exact_and_monte_carlo():
    # two options: TVD(p, X/n) = |X/n - p| with X ~ Binomial(n, p)
    for p, n in ((0.7, 30), (0.5, 10), (0.05, 30)):
        x = np.arange(n + 1)
        expected = float(np.sum(binom.pmf(x, n, p) * np.abs(x / n - p)))
        assert D.discretisation_floor([p, 1 - p], n) == pytest.approx(expected, rel=1e-10)
    # one draw from [0.5, 0.5]: the empirical distribution is one-hot, TVD 0.5 always
    assert D.discretisation_floor([0.5, 0.5], 1) == pytest.approx(0.5)
    assert D.discretisation_floor([1.0, 0.0, 0.0], 30) == pytest.approx(0.0)
    p = [0.1, 0.2, 0.3, 0.4]
    exact = D.discretisation_floor(p, 30)
    mc = D.discretisation_floor(p, 30, exact_limit=0, draws=20_000, seed=1)
    assert mc == pytest.approx(exact, abs=0.003)


# --------------------------------------------------------------------------- predictions


class TruthRunner:
    """A stand-in model whose next-token probabilities put each item's true distribution on its letters
    (token id = letter index) and 10% of the mass on a token that is no option."""

    def __init__(self, items):
        self.items = items
        self.tokenizer = lambda text, add_special_tokens=False: {"input_ids": [D.LETTERS.index(text.strip())]}

    def next_token_probs(self, prompts):
        assert len(prompts) == len(self.items)
        out = np.zeros((len(prompts), 64))
        for k, it in enumerate(self.items):
            out[k, : len(it.options)] = 0.9 * it.distribution
            out[k, 63] = 0.1
        return out


def test_a_model_that_outputs_the_truth_scores_zero():
    items = D.load_benchmark(os.path.join(FIX, "SEX_data.json")) + D.load_benchmark(
        os.path.join(FIX, "data.json")
    )
    preds, off, _ = D.predict(TruthRunner(items), items, "logp", "persona")
    s = D.score(items, preds, samples=20)
    assert s["tvd"]["overall"] == pytest.approx(0.0, abs=1e-12)
    assert s["js"]["overall"] == pytest.approx(1.0)
    assert s["wasserstein"]["overall"] == pytest.approx(1.0)
    assert np.allclose(off, 0.1)


class ScriptedRunner:
    """A stand-in model that writes the given texts."""

    def __init__(self, texts):
        self.texts, self.tokenizer = texts, None

    def generate(self, prompts, max_new_tokens, sample, seed=0):
        return list(self.texts)


def test_malformed_outputs_are_counted_failures():
    items = [item("d", "q1", "g", [0.5, 0.5]), item("d", "q2", "g", [0.2, 0.8]), item("d", "q3", "g", [1, 0])]
    texts = ["A A B x\nQuestion: ...", "", "%%% ??"]
    preds, fails, _ = D.predict(ScriptedRunner(texts), items, "sequence", "none", samples=4)
    np.testing.assert_allclose(preds[0], [2 / 3, 1 / 3])
    np.testing.assert_allclose(preds[1], [0.5, 0.5])  # nothing written: uniform, a full failure
    assert fails == pytest.approx([0.25, 1.0, 1.0])
    texts = ['{"A": "20%", "B": "80%"}', "{'A': __import__('os').system('x')}", "I think A."]
    preds, fails, _ = D.predict(ScriptedRunner(texts), items, "verbalize", "persona")
    np.testing.assert_allclose(preds[0], [0.2, 0.8])
    np.testing.assert_allclose(preds[1], [0.5, 0.5])
    assert fails == [0.0, 1.0, 1.0]


def test_parsers():
    d, fail = D.parse_sequence("A B A C x A ??", 3)
    np.testing.assert_allclose(d, [3 / 5, 1 / 5, 1 / 5])
    assert fail == pytest.approx(2 / 7)
    d, fail = D.parse_sequence("B B A A A extra words", 2, samples=4)  # only the first N items count
    np.testing.assert_allclose(d, [0.5, 0.5])
    assert fail == 0.0
    assert D.parse_sequence("nothing here", 3) == (None, 1.0)
    opts = ["Agree", "Disagree", "Refused"]
    np.testing.assert_allclose(D.parse_verbalized('blah {"A": 30%, "B": "70%"} ok', opts), [0.3, 0.7, 0])
    np.testing.assert_allclose(D.parse_verbalized("{'A': 0.2, 'B': 0.2, 'C': 0.1}", opts), [0.4, 0.4, 0.2])
    np.testing.assert_allclose(D.parse_verbalized("{'A': '45%', B: '55%'}", opts), [0.45, 0.55, 0])
    np.testing.assert_allclose(D.parse_verbalized('{"Disagree": 0.25, "Agree": 0.75}', opts), [0.75, 0.25, 0])
    assert D.parse_verbalized("{'A': __import__('os')}", opts) is None  # never evaluated
    assert D.parse_verbalized('{"A": -0.5, "B": 1}', opts) is None
    assert D.parse_verbalized('{"Z": 1}', opts) is None
    assert D.parse_verbalized("no json", opts) is None
    probs = np.zeros(10)
    probs[[1, 2, 5]] = [0.2, 0.3, 0.1]
    d, off = D.logp_distribution(probs, [[1, 2], [5]])  # letter A as "A" and " A"; B as "B"
    np.testing.assert_allclose(d, [5 / 6, 1 / 6])
    assert off == pytest.approx(0.4)


def test_fewshot_uses_similar_questions_and_shows_the_truth():
    qs = ["Do you like green apples?", "Do you like red apples?", "Is the sky blue today?",
          "Do you like apples and pears?", "Is the sea blue today?"]  # fmt: skip
    items = [item("d", f"q{i}", "g", [0.25, 0.75], question=q) for i, q in enumerate(qs)]
    items.append(item("d", "q0", "h", [0.6, 0.4], question=qs[0]))  # another group: never a shot of group g
    shots = D.similar_questions(items, k=2)
    assert set(shots[0]) == {1, 3}
    assert shots[2] == [4, 0]  # "sky"/"sea": shared words first; then no overlap, in file order
    assert all(i not in s for i, s in shots.items())
    assert shots[5] == []
    prompt = D.build_prompt(items[0], "verbalize", "fewshot", [items[j] for j in shots[0]])
    assert prompt.startswith("Answer as a group of g people would.")
    assert prompt.count('{"A": 0.25, "B": 0.75}') == 2 and prompt.endswith("Answer:")
    logp_prompt = D.build_prompt(items[0], "logp", "fewshot", [items[1]])
    assert "'o0' be 25%, 'o1' be 75%" in logp_prompt and "Answer: B" in logp_prompt
    assert not D.build_prompt(items[0], "logp", "none", [items[1]]).startswith("Answer as")


# --------------------------------------------------------------------------- end to end


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
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_distalign_cli_end_to_end(tmp_path, letter_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    files = [os.path.join(FIX, "SEX_data.json"), os.path.join(FIX, "questions.jsonl")]
    argv = ["eval", "distalign", "--model", letter_model, "--data", *files, "--samples", "6",
            "--bootstrap", "50", "--batch-size", "3", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    keys = {f"{m}/{s}" for m in D.METHODS for s in D.STEERINGS}
    assert set(report["results"]) == keys and report["n_items"] == 8
    for key, r in report["results"].items():
        assert 0.0 <= r["tvd"]["overall"] <= 1.0, key
        assert r["tvd"]["ci95"][0] <= r["tvd"]["overall"] <= r["tvd"]["ci95"][1], key
        assert 0.0 <= r.get("failure_rate", r.get("off_option_mass")) <= 1.0, key
        assert set(r["tvd"]["by_dataset"]) == {"opinionqa_SEX", "toy"}
    # an untrained model writes no JSON: every verbalized answer is a counted failure, not a crash
    assert report["results"]["verbalize/none"]["failure_rate"] == 1.0
    gap = report["results"]["sequence/persona"]["knowledge_to_simulation_gap"]
    tvds = {k: r["tvd"]["overall"] for k, r in report["results"].items()}
    assert gap == pytest.approx(tvds["sequence/persona"] / tvds["logp/persona"] - 1)
    assert set(report["baselines"]) == {"uniform", "majority", "floor_n6"}
    assert "| logp/none |" in (out / "results.md").read_text()

    # log-p, recomputed one prompt at a time without padding: the batched, left-padded run agrees
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 * 9
    items = D.load_benchmark(files[0]) + D.load_benchmark(files[1])
    tok = AutoTokenizer.from_pretrained(letter_model)
    model = AutoModelForCausalLM.from_pretrained(letter_model)
    logp_rows = [r for r in rows if r["method"] == "logp" and r["steering"] == "persona"]
    for it, row in zip(items, logp_rows):
        ids = tok(D.build_prompt(it, "logp", "persona", []), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            probs = torch.softmax(model(ids).logits[0, -1].double(), -1)
        letters = probs[[tok.convert_tokens_to_ids(c) for c in D.LETTERS[: len(it.options)]]].numpy()
        np.testing.assert_allclose(row["prediction"], letters / letters.sum(), rtol=1e-4, atol=1e-6)
        assert row["tvd"] == pytest.approx(
            0.5 * np.abs(letters / letters.sum() - it.distribution).sum(), abs=1e-5
        )
        assert row["failure"] == pytest.approx(1 - letters.sum(), abs=1e-5)


def test_distalign_cli_rejects_unknown_names(letter_model):
    with pytest.raises(ValueError, match="unknown method 'logits'"):
        main(["eval", "distalign", "--model", letter_model, "--data", os.path.join(FIX, "questions.jsonl"),
              "--methods", "logits"])  # fmt: skip
