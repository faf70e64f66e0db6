"""Distributional alignment, stages 4-5: pooling, the gap, baselines, failed parses and the bootstrap against
float64 formulas written out here; `dora eval distalign --predictions` end to end on the fixtures."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from scipy.stats import binom

from dora.cli import main
from dora.eval import distalign as D

BENCH = os.path.join(os.path.dirname(__file__), "fixtures", "distalign", "bench")
OQA = os.path.join(BENCH, "opinions_qa", "data", "human_resp", "Pew_small")
NYT = os.path.join(BENCH, "nytimes", "data.json")
GV = os.path.join(BENCH, "Global_Values", "data", "data.json")


def item(dataset, qid, group, dist):
    d = np.asarray(dist, float)
    return D.Item(dataset, qid, f"question {qid}", [f"o{i}" for i in range(len(d))], group, d / d.sum())


def tv(p, q):
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q))


def test_pooling_weighs_datasets_equally_and_pools_persona_and_few_shot():
    items = [item("a", "q1", "g1", [1, 0]), item("a", "q2", "g1", [0.5, 0.5]), item("a", "q1", "g2", [0.2, 0.8]),
             item("b", "q1", "g1", [0.3, 0.7])]  # fmt: skip
    preds, by_hand = [], {}
    rng = np.random.default_rng(0)
    for m in ("verbalize", "sequence"):
        for s in ("none", "persona", "few_shot"):
            for i, it in enumerate(items):
                p = rng.dirichlet([1, 1])
                preds.append({"item": i, "method": m, "steering": s, "prediction": p})
                by_hand.setdefault((m, s, it.dataset), []).append(tv(p, it.distribution))
    report, rows = D.score_predictions(items, preds, bootstrap=0)
    for m in ("verbalize", "sequence"):
        # dataset a pools its 3 items x 2 steerings (6 values), b its 1 x 2; each dataset counts 1/2
        a = by_hand[m, "persona", "a"] + by_hand[m, "few_shot", "a"]
        b = by_hand[m, "persona", "b"] + by_hand[m, "few_shot", "b"]
        assert report["methods"][m]["tvd"] == pytest.approx((sum(a) / 6 + sum(b) / 2) / 2, rel=1e-12)
        assert report["methods"][m]["by_dataset"]["a"]["tvd"] == pytest.approx(sum(a) / 6)
        assert report["methods"][m]["items"] == 8
        none = by_hand[m, "none", "a"]
        assert report["by_steering"][f"{m}/none"]["by_dataset"]["a"]["tvd"] == pytest.approx(sum(none) / 3)
    # the paper's Eq. 2: Seq / V - 1
    seq, verb = report["methods"]["sequence"]["tvd"], report["methods"]["verbalize"]["tvd"]
    assert report["gap"] == pytest.approx(seq / verb - 1)
    assert report["headline_steerings"] == ["persona", "few_shot"]
    assert len(rows) == len(preds)


def test_gap_by_hand():
    items = [item("d", "q", "g", [0.5, 0.5])]
    preds = [{"item": 0, "method": "verbalize", "steering": "persona", "prediction": np.array([0.6, 0.4])},
             {"item": 0, "method": "sequence", "steering": "persona", "prediction": np.array([0.8, 0.2])},
             {"item": 0, "method": "logprobs", "steering": "persona", "prediction": np.array([1.0, 0.0])}]  # fmt: skip
    report, _ = D.score_predictions(items, preds, bootstrap=0)
    # TVD: V 0.1, Seq 0.3, Log-p 0.5; the gap is Seq / V - 1 = 2.0 (not X / Log-p - 1)
    assert report["gap"] == pytest.approx(0.3 / 0.1 - 1)
    assert report["methods"]["logprobs"]["tvd"] == pytest.approx(0.5)


def test_failed_parses_are_counted_and_scored_by_the_chosen_policy():
    items = [item("d", "q1", "g", [0.7, 0.2, 0.1]), item("d", "q2", "g", [0.2, 0.2, 0.6])]
    preds = [{"item": 0, "method": "verbalize", "steering": "persona", "prediction": np.array([0.7, 0.2, 0.1])},
             {"item": 1, "method": "verbalize", "steering": "persona", "prediction": None}]  # fmt: skip
    zero, _ = D.score_predictions(items, preds, bootstrap=0)  # the reference: the zero vector, TVD 1/2
    assert zero["methods"]["verbalize"]["tvd"] == pytest.approx((0.0 + 0.5) / 2)
    assert zero["methods"]["verbalize"]["failed"] == 1 and zero["methods"]["verbalize"]["failed_share"] == 0.5
    uni, _ = D.score_predictions(items, preds, bootstrap=0, failed="uniform")
    assert uni["methods"]["verbalize"]["tvd"] == pytest.approx(tv([1 / 3] * 3, [0.2, 0.2, 0.6]) / 2)
    skip, _ = D.score_predictions(items, preds, bootstrap=0, failed="skip")
    assert skip["methods"]["verbalize"]["tvd"] == pytest.approx(0.0) and skip["methods"]["verbalize"]["items"] == 1
    with pytest.raises(ValueError, match="unknown failed-parse policy"):
        D.score_predictions(items, preds, failed="guess")


def test_vectors_as_given_count_the_mass_off_the_options(tmp_path):
    items = [item("d", "q1", "g", [0.2, 0.2, 0.6])]
    preds = tmp_path / "p.jsonl"
    _write(preds, [{"dataset": "d", "question": "q1", "group": "g", "method": "logprobs", "steering": "persona",
                    "distribution": {"A": 0.25, "B": 0.25}}])  # fmt: skip
    rows = D.read_predictions(str(preds), items)
    assert rows[0]["mass"] == pytest.approx(0.5)
    as_given, _ = D.score_predictions(items, rows, bootstrap=0, renormalize=False)
    # 0.5 * (|0.2 - 0.25| + |0.2 - 0.25| + |0.6 - 0|) against 0.5 * (|0.2 - 0.5| + |0.2 - 0.5| + 0.6)
    assert as_given["methods"]["logprobs"]["tvd"] == pytest.approx(0.35)
    renormalized, _ = D.score_predictions(items, rows, bootstrap=0)
    assert renormalized["methods"]["logprobs"]["tvd"] == pytest.approx(0.6)


def test_bootstrap_resamples_questions_within_datasets():
    rng0 = np.random.default_rng(5)
    datasets, questions, values = [], [], []
    for ds, nq in (("a", 6), ("b", 4)):
        for q in range(nq):
            for _ in range(2):  # two groups
                datasets.append(ds)
                questions.append(f"q{q}")
                values.append(float(rng0.random()))
    lo, hi = D.bootstrap_pooled(datasets, questions, values, samples=300, seed=2)
    rng = np.random.default_rng(2)
    v = np.array(values)
    per = []
    for nq, start in ((6, 0), (4, 12)):
        sums = v[start : start + 2 * nq].reshape(nq, 2).sum(1)
        counts = rng.multinomial(nq, np.full(nq, 1 / nq), size=300)
        per.append((counts @ sums) / (counts.sum(1) * 2))
    stats = np.mean(per, axis=0)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])))
    assert lo <= D.pooled(datasets, values)[1] <= hi


def test_baselines_closed_forms():
    items = D.select_groups(D.load_benchmark(GV), "paper")
    b = D.baselines(items, bootstrap=0)
    uniform = [tv(it.distribution, [1 / len(it.options)] * len(it.options)) for it in items]
    majority = [1 - max(it.distribution) for it in items]  # TVD to the one-hot majority answer
    assert b["uniform"]["tvd"] == pytest.approx(np.mean(uniform))  # one dataset: the pooled mean
    assert b["majority"]["tvd"] == pytest.approx(np.mean(majority))
    assert 0 < b["floor_n30"]["tvd"] < b["uniform"]["tvd"]


def test_discretisation_floor_exact_and_monte_carlo():
    for p, n in ((0.7, 30), (0.5, 10), (0.05, 30)):  # two options: E|X/n - p| with X ~ Binomial(n, p)
        x = np.arange(n + 1)
        expected = float(np.sum(binom.pmf(x, n, p) * np.abs(x / n - p)))
        assert D.discretisation_floor([p, 1 - p], n) == pytest.approx(expected, rel=1e-10)
    assert D.discretisation_floor([1.0, 0.0, 0.0], 30) == pytest.approx(0.0)
    exact = D.discretisation_floor([0.1, 0.2, 0.3, 0.4], 30)
    assert D.discretisation_floor([0.1, 0.2, 0.3, 0.4], 30, exact_limit=0, seed=1) == pytest.approx(exact, abs=0.003)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_predictions_cli_scores_distributions_made_elsewhere(tmp_path, caplog):
    sex = os.path.join(OQA, "SEX_data.json")
    race = os.path.join(OQA, "RACE_data.json")
    items = D.select_groups(D.load_benchmark(sex, max_questions=6) + D.load_benchmark(race) + D.load_benchmark(GV))
    rng = np.random.default_rng(1)
    rows, expect = [], {}
    for m in ("verbalize", "sequence", "logprobs"):
        for s in ("persona", "few_shot"):
            for it in items:
                p = rng.dirichlet(np.ones(len(it.options)))
                dist = {o: float(x) for o, x in zip(it.options, p)}  # option texts: order-free
                if m == "sequence" or len(set(it.options)) < len(it.options):
                    dist = {D.LETTERS[k]: float(x) for k, x in enumerate(p)}  # letters: the loader's order
                rows.append({"dataset": it.dataset, "question": it.qid, "group": it.group, "method": m,
                             "steering": s, "distribution": dist})  # fmt: skip
                expect.setdefault(m, {}).setdefault(it.dataset, []).append(tv(p, it.distribution))
    # rows for groups the paper does not score (Asian, Peru) are counted and left out
    rows.append({**rows[0], "group": "Asian", "question": "PETS_W2"})
    rows.append({"dataset": "globalvalues", "question": items[-1].qid, "group": "Peru", "method": "verbalize",
                 "steering": "persona", "distribution": {"A": 1.0}})  # fmt: skip
    preds = tmp_path / "preds.jsonl"
    _write(preds, rows)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="dora.eval.distalign"):
        assert main(["eval", "distalign", "--predictions", str(preds), "--data", sex, race, GV, "--max-questions",
                     "6", "--bootstrap", "200", "--output", str(out)]) == 0  # fmt: skip
    assert "2 rows for questions or groups that are not scored" in caplog.text
    board = json.loads((out / "leaderboard.json").read_text())
    for m, by_ds in expect.items():
        assert board[m]["tvd"] == pytest.approx(np.mean([np.mean(v) for v in by_ds.values()]), rel=1e-10)
        assert board[m]["items"] == 2 * len(items)
        assert board[m]["ci"][0] <= board[m]["tvd"] <= board[m]["ci"][1]
    assert board["gap"] == pytest.approx(board["sequence"]["tvd"] / board["verbalize"]["tvd"] - 1)
    assert {"uniform", "majority", "floor_n30"} == set(board["baselines"])
    table = (out / "results.md").read_text()
    assert "| Verbalize (V) |" in table and "globalvalues" in table and "opinionqa" in table


def test_predictions_errors_name_the_line_and_field(tmp_path):
    gv_q = "Is it more important to have a fast train or a cheap bus?"
    good = {"dataset": "globalvalues", "question": gv_q, "group": "Kenya", "method": "verbalize",
            "steering": "persona", "distribution": {"A": 0.5, "B": 0.5}}  # fmt: skip
    other = {**good, "group": "Chile"}
    preds = tmp_path / "p.jsonl"
    items = D.load_benchmark(GV)
    for bad, msg in (
        ({**other, "distribution": {"Z": 1.0}}, r"p.jsonl: line 2, field 'distribution': 'Z' is neither"),
        ({**other, "distribution": {"A": -1}}, r"line 2, field 'distribution': 'A' has -1"),
        ({**other, "method": "logits"}, r"line 2: unknown method 'logits'"),
        ({k: v for k, v in good.items() if k != "group"}, r"line 2: missing field 'group'"),
        (good, r"line 2: a second prediction"),
    ):
        _write(preds, [good, bad])
        with pytest.raises(ValueError, match=msg):
            D.read_predictions(str(preds), items)
    _write(preds, [{**good, "group": "Mars"}])
    with pytest.raises(ValueError, match="no prediction matches"):
        D.read_predictions(str(preds), items)
    # the --methods / --steering filter leaves nothing: an error, not an empty leaderboard
    _write(preds, [good])
    with pytest.raises(ValueError, match=r"p.jsonl: no prediction for --methods sequence and --steering"):
        main(["eval", "distalign", "--predictions", str(preds), "--data", GV, "--methods", "sequence", "--debug"])
    # letters index the loader's option order
    _write(preds, [{**good, "distribution": {"B": 3, "A": 1}}])
    (row,) = D.read_predictions(str(preds), items)
    np.testing.assert_allclose(row["prediction"], [0.25, 0.75, 0.0])
