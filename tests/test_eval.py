"""Evaluation: metrics against hand-computed values, benchmark loaders, the three expression methods end to
end on a tiny model, and preference accuracy against an independent full-logits computation."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import pair_rows
from datasets import Dataset
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from dora.cli import main
from dora.eval import distalign as D
from dora.eval.metrics import bootstrap_ci, js_similarity, tvd, wasserstein_representativeness
from dora.eval.preference import implicit_reward_accuracy, win_rate_from_scores

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "distalign")


def test_metrics_by_hand():
    p, q = [0.5, 0.5, 0.0], [0.25, 0.25, 0.5]
    assert tvd(p, q) == pytest.approx(0.5)  # 0.5 * (0.25 + 0.25 + 0.5)
    assert tvd([2, 2, 0], [1, 1, 2]) == pytest.approx(0.5)  # counts are normalised
    assert tvd(p, p) == 0.0
    # W1 with options at 0, 1, 2: |cdf diff| = |0.5-0.25| + |1-0.5| = 0.75; repr = 1 - 0.75 / 2
    assert wasserstein_representativeness(p, q) == pytest.approx(1 - 0.75 / 2)
    assert 1 - wasserstein_representativeness(p, q) == pytest.approx(
        wasserstein_distance([0, 1, 2], [0, 1, 2], p, q) / 2
    )
    # JS by hand: m = [3/8, 3/8, 1/4]; KL(p||m) = log2(4/3); KL(q||m) = 2*0.25*log2(2/3) + 0.5*log2(2)
    js = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert js_similarity(p, q) == pytest.approx(1 - math.sqrt(js))
    assert js_similarity(p, q) == pytest.approx(1 - jensenshannon(p, q, base=2))
    with pytest.raises(ValueError):
        tvd([0, 0], [1, 0])


def test_bootstrap_and_win_rate():
    x = np.r_[np.ones(60), np.zeros(40)]
    lo, hi = bootstrap_ci(x, samples=500, seed=1)
    assert lo < 0.6 < hi and hi - lo < 0.25
    r = win_rate_from_scores([1.0, 2.0, 0.0, 5.0], [0.5, 2.0, 1.0, 1.0], bootstrap=200, seed=3)
    assert (r["win"], r["tie"], r["lose"]) == (0.5, 0.25, 0.25)
    rng = np.random.default_rng(3)  # the same resampling, recomputed with numpy
    wins = np.array([1.0, 0.0, 0.0, 1.0])
    stats = [wins[rng.integers(0, 4, 4)].mean() for _ in range(200)]
    assert r["win_ci95"] == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])))
    assert r["win_ci95"][0] <= r["win"] <= r["win_ci95"][1]


def test_loaders():
    oqa = D.load_benchmark(os.path.join(FIX, "SEX_data.json"))
    assert {it.group for it in oqa} == {"Female", "Male"} and len(oqa) == 6
    female_q1 = next(it for it in oqa if it.qid == "Q1_W1" and it.group == "Female")
    np.testing.assert_allclose(female_q1.distribution, [0.10, 0.30, 0.55, 0.05])
    male_q1 = next(it for it in oqa if it.qid == "Q1_W1" and it.group == "Male")
    np.testing.assert_allclose(male_q1.distribution, [0.2, 0.4, 0.4, 0.0])  # zero-filled "Refused"
    nyt = D.load_benchmark(os.path.join(FIX, "data.json"))
    assert len(nyt) == 4 and nyt[0].dataset == "nytimes" and nyt[0].ordinal
    glob = D.load_benchmark(os.path.join(FIX, "global_data.json"))
    assert glob[0].options == ["A strong economy", "A clean environment", "DK/Refused"] and len(glob) == 4
    toy = D.load_benchmark(os.path.join(FIX, "questions.jsonl"))
    np.testing.assert_allclose(toy[1].distribution, [1 / 3] * 3)


def test_uniform_baseline_closed_form_and_truth_scores_zero():
    items = D.load_benchmark(os.path.join(FIX, "global_data.json"))
    # closed form: TVD(p, uniform) = 0.5 * sum |p_i - 1/k|, mean over questions per country, then countries
    by_country = {}
    for it in items:
        by_country.setdefault(it.group, []).append(0.5 * np.abs(it.distribution - 1 / 3).sum())
    expected = np.mean([np.mean(v) for v in by_country.values()])
    assert D.baselines(items)["uniform"] == pytest.approx(expected)
    truth = D.score(items, [it.distribution for it in items], samples=50)
    assert truth["tvd"]["overall"] == pytest.approx(0.0, abs=1e-12) and truth["js"][
        "overall"
    ] == pytest.approx(1.0)


class TruthRunner:
    """A stand-in model whose letter probabilities are the group's true distribution."""

    def __init__(self, items):
        self.items, self.calls = items, 0
        from transformers import AutoTokenizer  # noqa: F401

        self.tokenizer = _LetterTokenizer()

    def next_token_probs(self, prompts):
        out = np.zeros((len(prompts), 64))
        for k, it in enumerate(self.items):
            for i, p in enumerate(it.distribution):
                out[k, i] = p
        return out


class _LetterTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [D.LETTERS.index(text.strip())]}


def test_logp_of_the_truth_scores_zero():
    items = D.load_benchmark(os.path.join(FIX, "SEX_data.json"))
    preds, off = D.predict(TruthRunner(items), items, "logp", "persona")
    assert D.score(items, preds, samples=20)["tvd"]["overall"] == pytest.approx(0.0, abs=1e-12)
    assert max(off) == pytest.approx(0.0, abs=1e-12)


def test_parsers_count_failures():
    d, fail = D.parse_sequence("A B A C x A ??", 3)
    np.testing.assert_allclose(d, [3 / 5, 1 / 5, 1 / 5])
    assert fail == pytest.approx(2 / 7)
    assert D.parse_sequence("nothing here", 3) == (None, 1.0)
    np.testing.assert_allclose(D.parse_verbalized('blah {"A": 30%, "B": "70%"} ok', 2), [0.3, 0.7])
    np.testing.assert_allclose(D.parse_verbalized("{'A': 0.2, 'B': 0.2, 'C': 0.1}", 3), [0.4, 0.4, 0.2])
    assert D.parse_verbalized("{'A': __import__('os')}", 2) is None  # never evaluated
    assert D.parse_verbalized("no json", 2) is None


@pytest.fixture(scope="module")
def letter_model(tmp_path_factory):
    """A tiny Llama whose character vocabulary holds the letters, saved like a checkpoint."""
    from dora.synthetic import build_model, build_tokenizer

    path = str(tmp_path_factory.mktemp("letters"))
    tok = build_tokenizer(path)
    build_model(path, tok, hidden=32, layers=1, seed=0)
    return path


def test_distalign_cli_end_to_end(tmp_path, letter_model):
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "distalign",
                "--model",
                letter_model,
                "--data",
                os.path.join(FIX, "SEX_data.json"),
                os.path.join(FIX, "questions.jsonl"),
                "--samples",
                "6",
                "--bootstrap",
                "50",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "results.json").read_text())
    assert set(report["results"]) == {
        f"{m}/{s}" for m in ("logp", "sequence", "verbalize") for s in ("none", "persona", "fewshot")
    }
    for key, r in report["results"].items():
        assert 0.0 <= r["tvd"]["overall"] <= 1.0, key
    # an untrained model writes no JSON: every verbalized answer is a counted failure, not a crash
    assert report["results"]["verbalize/none"]["failure_rate"] == 1.0
    assert "knowledge_to_simulation_gap" in report["results"]["sequence/none"]
    assert (out / "results.md").exists()


def test_implicit_reward_accuracy_matches_full_logits(tmp_path, letter_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dora.synthetic import build_model

    ref_dir = str(tmp_path / "ref")
    tok = AutoTokenizer.from_pretrained(letter_model)
    tok.save_pretrained(ref_dir)
    build_model(ref_dir, tok, hidden=32, layers=1, seed=7)
    rows = pair_rows(12)
    got = implicit_reward_accuracy(
        letter_model, ref_dir, tok, Dataset.from_list(rows), beta=0.5, batch_size=5
    )

    def logp(model, prompt, completion):  # independent: full logits, float64, no chunking
        p = tok(prompt)["input_ids"]
        ids = tok(prompt + completion + tok.eos_token)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        return sum(lp[t - 1, ids[t]].item() for t in range(len(p), len(ids)))

    pol, ref = (
        AutoModelForCausalLM.from_pretrained(letter_model),
        AutoModelForCausalLM.from_pretrained(ref_dir),
    )
    margins = []
    for r in rows:
        rc = 0.5 * (logp(pol, r["prompt"], r["chosen"]) - logp(ref, r["prompt"], r["chosen"]))
        rr = 0.5 * (logp(pol, r["prompt"], r["rejected"]) - logp(ref, r["prompt"], r["rejected"]))
        margins.append(rc - rr)
    margins = np.array(margins)
    assert got["accuracy"] == pytest.approx(float((margins > 0).mean()))
    assert got["margin"] == pytest.approx(float(margins.mean()), rel=1e-4, abs=1e-5)
    assert set(got["by_source"]) == {"human", "gpt"}
