"""DoRA without source labels: density-ratio weights of a trusted sample against the pool, the target
share, the guards, the CLI and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import build_tiny_encoder
from datasets import Dataset

from dora.classifier.density import annotate_density_ratio, estimate_target_share
from dora.cli import main

VOCAB = [f"w{i}" for i in range(10)]


def rows(n: int, seed: int, kinds=None, vocab=VOCAB) -> tuple[list[dict], np.ndarray]:
    """Single-response rows: three shared words, plus the marker of the row's kind (none when kind is "")."""
    rng = np.random.default_rng(seed)
    kinds = np.array([""] * n) if kinds is None else np.asarray(kinds)
    out = []
    for k in kinds:
        words = list(rng.choice(vocab, 3)) + ([str(k)] if k else [])
        out.append({"prompt": f"q {rng.integers(20)}", "response": " ".join(words)})
    return out, kinds


def draw(n: int, probs: dict[str, float], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(list(probs), size=n, p=list(probs.values()))


def test_one_distribution_gives_weights_one():
    pool, _ = rows(3000, 0)
    trusted, _ = rows(1000, 1)
    ds, report = annotate_density_ratio(Dataset.from_list(pool), Dataset.from_list(trusted), bootstrap=50)
    w = np.array(ds["dora_weight"])
    assert np.abs(w - 1).max() <= 0.1
    assert report["roc_auc"] == pytest.approx(0.5, abs=0.03)
    assert report["coverage"] == pytest.approx(1.0, abs=0.1)  # the pool covers the trusted distribution
    assert report["target_share"] > 0.85  # nothing in the pool looks unlike the trusted sample
    assert report["warnings"] == []


def test_weights_order_and_track_the_true_ratio():
    """Target: kind A 60%, B 40%; other sources: B 30%, C 70%; the pool is 30% target. The true ratio
    dQ0/dP per kind is written out below; A is an anchor set, so the share is identifiable (0.3)."""
    q0, q1, alpha = {"A": 0.6, "B": 0.4, "C": 0.0}, {"A": 0.0, "B": 0.3, "C": 0.7}, 0.3
    p = {k: alpha * q0[k] + (1 - alpha) * q1[k] for k in q0}
    truth = {k: q0[k] / p[k] for k in q0}  # A 3.33, B 1.21, C 0; E_P[truth] = 1
    pool, kinds = rows(4000, 2, draw(4000, p, 3))
    trusted, _ = rows(600, 4, draw(600, q0, 5))
    ds, report = annotate_density_ratio(Dataset.from_list(pool), Dataset.from_list(trusted), bootstrap=50)
    w = np.array(ds["dora_weight"])
    mean = {k: w[kinds == k].mean() for k in "ABC"}
    assert mean["A"] > mean["B"] > mean["C"]
    assert mean["A"] == pytest.approx(truth["A"], rel=0.15)
    assert mean["B"] == pytest.approx(truth["B"], rel=0.15)
    assert mean["C"] < 0.15
    assert report["target_share"] == pytest.approx(alpha, abs=0.05)


def _expected_weights(c: np.ndarray, n_pool: int, n_trusted: int, clip: float, subset: bool) -> np.ndarray:
    """The weight written for each row, from its written P(trusted): Bayes on the classifier's training set,
    clip, mean 1 (float64, independent of the module)."""
    ratio = n_pool / n_trusted * (c if subset else c / (1 - c))
    w = np.minimum(ratio, clip)
    return w / w.mean()


@pytest.mark.parametrize("subset", [False, True])
def test_written_weights_follow_the_formula(subset):
    p = {"A": 0.2, "B": 0.3, "C": 0.5}
    pool, kinds = rows(1500, 6, draw(1500, p, 7))
    if subset:
        trusted = [r for r, k in zip(pool, kinds) if k == "A"][:200]
    else:
        trusted, _ = rows(200, 8, draw(200, {"A": 0.7, "B": 0.3}, 9))
    ds, report = annotate_density_ratio(
        Dataset.from_list(pool), Dataset.from_list(trusted), trusted_in_pool=subset, bootstrap=20
    )
    c = np.array(ds["trusted_prob"], dtype=np.float64)
    assert report["clip"] == pytest.approx(1 / report["response_share_interval"][0])
    expected = _expected_weights(c, 1500, 200, report["clip"], subset)
    np.testing.assert_allclose(ds["dora_weight"], expected, rtol=1e-6)


def test_target_share_of_a_subset_trusted_sample():
    """Case-control positive-unlabelled data: the trusted rows are a random 500 of the pool's target rows."""
    alpha = 0.3
    kinds = draw(5000, {"T": alpha, "O": 1 - alpha}, 10)
    rng = np.random.default_rng(11)
    u = rng.random(5000)
    marker = np.where(kinds == "T", np.where(u < 0.6, "foo", ""), np.where(u < 0.5, "bar", ""))
    pool, _ = rows(5000, 12, marker)
    target_rows = np.nonzero(kinds == "T")[0]
    trusted = [pool[i] for i in rng.choice(target_rows, 500, replace=False)]
    ds, report = annotate_density_ratio(
        Dataset.from_list(pool), Dataset.from_list(trusted), trusted_in_pool=True, bootstrap=100
    )
    truth = (kinds == "T").mean()
    lo, hi = report["target_share_interval"]
    assert report["target_share"] == pytest.approx(truth, abs=0.05)
    assert lo <= report["target_share"] <= hi and hi - lo < 0.15
    w = np.array(ds["dora_weight"])
    assert w[kinds == "T"].mean() > 2 * w[kinds == "O"].mean()


def test_target_share_counts_rows_and_sees_pairs_whole():
    """Target pairs: both responses carry "foo"; the other pairs: one "foo" response and one "bar", so each
    "foo" response alone could be target text but no other pair is. Over rows the share 0.25 is identified;
    over responses only its bound 0.25 + 0.75 / 2 = 0.625 is, and that bound sets the per-response clip."""
    alpha, n = 0.25, 3000
    kinds = draw(n, {"T": alpha, "O": 1 - alpha}, 20)
    rng = np.random.default_rng(21)
    words = lambda: " ".join(rng.choice(VOCAB, 3))  # noqa: E731
    pool = []
    for k in kinds:
        a, b = f"{words()} foo", f"{words()} {'foo' if k == 'T' else 'bar'}"
        pool.append({"prompt": f"q {rng.integers(20)}", "chosen": a, "rejected": b} if rng.random() < 0.5 else
                    {"prompt": f"q {rng.integers(20)}", "chosen": b, "rejected": a})  # fmt: skip
    trusted = [pool[i] for i in rng.choice(np.nonzero(kinds == "T")[0], 300, replace=False)]
    _, report = annotate_density_ratio(
        Dataset.from_list(pool), Dataset.from_list(trusted), trusted_in_pool=True, bootstrap=50
    )
    truth = (kinds == "T").mean()  # the drawn share (0.265)
    assert report["target_share"] == pytest.approx(truth, abs=0.02)
    assert report["response_share"] == pytest.approx(truth + (1 - truth) / 2, abs=0.03)
    assert report["clip"] == pytest.approx(1 / report["response_share_interval"][0])


def test_share_estimator_finds_the_anchor_or_the_upper_bound():
    """Scores with known densities: Q0 uniform on [0, 1]; the pool is 0.3 Q0 + 0.7 Q1. With Q1 uniform on
    [0, 0.5] the top half is an anchor and the share 0.3 is identified; with Q1 = half uniform on [0, 1],
    half on [0, 0.5], inf p/q0 = 0.3 + 0.7 * 0.5 = 0.65: the estimate is that upper bound, not 0.3."""
    rng = np.random.default_rng(0)
    q0 = rng.random(5000)
    mix = rng.random(20000) < 0.3
    anchored = np.where(mix, rng.random(20000), 0.5 * rng.random(20000))
    half = np.where(rng.random(20000) < 0.5, rng.random(20000), 0.5 * rng.random(20000))
    covered = np.where(mix, rng.random(20000), half)
    a = estimate_target_share(q0, anchored, bootstrap=50)
    b = estimate_target_share(q0, covered, bootstrap=50)
    assert a["share"] == pytest.approx(0.3, abs=0.03)
    assert b["share"] == pytest.approx(0.65, abs=0.04)
    assert a["interval"][0] <= a["share"] <= a["interval"][1]


def test_share_interval_resamples_rows_not_responses():
    """A row's two responses with one score are one draw, not two: resampling rows widens the interval by
    about sqrt(2) over resampling the responses as if independent."""
    rng = np.random.default_rng(1)
    q0 = rng.random(1000)
    pool = np.where(rng.random(4000) < 0.3, rng.random(4000), 0.5 * rng.random(4000))
    two = lambda x: np.repeat(x, 2)  # noqa: E731  (each row's responses share the row's score)
    rows_ = estimate_target_share(two(q0), two(pool), per_row=2, bootstrap=300, seed=0)
    responses = estimate_target_share(two(q0), two(pool), per_row=1, bootstrap=300, seed=0)
    width = lambda r: r["interval"][1] - r["interval"][0]  # noqa: E731
    assert rows_["share"] == responses["share"]
    assert 1.2 < width(rows_) / width(responses) < 2.5
    with pytest.raises(ValueError, match="per_row=2 does not divide"):
        estimate_target_share(q0[:5], pool, per_row=2)


def test_support_warning_on_disjoint_vocabularies():
    pool, _ = rows(800, 13)
    trusted, _ = rows(200, 14, vocab=[f"v{i}" for i in range(10)])
    with pytest.warns(UserWarning, match="off-distribution"):
        _, report = annotate_density_ratio(Dataset.from_list(pool), Dataset.from_list(trusted), bootstrap=20)
    assert report["coverage"] < 0.05 and report["roc_auc"] > 0.99


def test_ess_warning_when_a_few_rows_carry_the_weight():
    """1% of the pool looks like the trusted sample: the weights concentrate on it."""
    pool, _ = rows(2000, 15, draw(2000, {"foo": 0.01, "": 0.99}, 16))
    trusted, _ = rows(300, 17, ["foo"] * 300)
    with pytest.warns(UserWarning, match="effective sample size collapsed"):
        _, report = annotate_density_ratio(Dataset.from_list(pool), Dataset.from_list(trusted), bootstrap=20)
    assert report["ess_fraction"] < 0.1


def test_no_prompt_column_and_a_rerun_on_its_own_output():
    """The prompt column is optional (tfidf then reads the responses only); run again on its own output, the
    written columns are replaced by the same values, not duplicated."""
    pool, kinds = rows(600, 23, draw(600, {"foo": 0.3, "": 0.7}, 24))
    trusted, _ = rows(150, 25, ["foo"] * 150)
    strip = [{"response": r["response"]} for r in pool], [{"response": r["response"]} for r in trusted]
    ds, report = annotate_density_ratio(Dataset.from_list(strip[0]), Dataset.from_list(strip[1]), bootstrap=20)
    w = np.array(ds["dora_weight"])
    assert report["shift_detected"] and w[kinds == "foo"].mean() > 2 * w[kinds == ""].mean()
    again, _ = annotate_density_ratio(ds, Dataset.from_list(strip[1]), bootstrap=20)
    assert again.column_names == ds.column_names
    np.testing.assert_allclose(again["dora_weight"], w)
    np.testing.assert_allclose(again["trusted_prob"], ds["trusted_prob"])


def test_eps_zero_is_refused():
    """c = 1 would make the separate-sample odds c/(1 - c) infinite."""
    pool, _ = rows(50, 27)
    with pytest.raises(ValueError, match=r"eps must be in \(0, 0.5\), got 0"):
        annotate_density_ratio(Dataset.from_list(pool), Dataset.from_list(pool[:10]), eps=0)


def test_source_columns_of_the_pool_are_ignored():
    """A stale labels column (listwise ``sources``, wrong lengths and nulls included) changes nothing."""
    rng = np.random.default_rng(26)
    resp = [[" ".join(rng.choice(VOCAB, 3)) + (" foo" if rng.random() < 0.3 else "") for _ in range(3)]
            for _ in range(300)]  # fmt: skip
    plain = [{"prompt": "q", "responses": r} for r in resp]
    labelled = [dict(row, sources=["a", "b", "c"]) for row in plain]
    labelled[5]["sources"], labelled[7]["sources"] = ["a"], None
    trusted = [{"prompt": "q", "responses": [" ".join(rng.choice(VOCAB, 3)) + " foo" for _ in range(3)]}
               for _ in range(80)]  # fmt: skip
    a, _ = annotate_density_ratio(Dataset.from_list(plain), Dataset.from_list(trusted), folds=3, bootstrap=10)
    b, _ = annotate_density_ratio(Dataset.from_list(labelled), Dataset.from_list(trusted), folds=3, bootstrap=10)
    np.testing.assert_allclose(b["dora_weight"], a["dora_weight"])
    assert b["sources"][5] == ["a"]  # the column itself is kept as it was


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A tiny BERT and a word-level tokenizer over the test's words, saved like a Hub checkpoint."""
    words = ["q", "foo", *VOCAB, *[str(i) for i in range(20)]]
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"), words)


@pytest.mark.parametrize("backend", ["embedding", "transformer"])
def test_hf_backends(tiny_encoder, backend, one_thread):
    """The other backends through the same path: the pool's 'foo' rows look like the trusted sample."""
    pool, kinds = rows(160, 20, draw(160, {"foo": 0.3, "": 0.7}, 21))
    trusted, _ = rows(100, 22, ["foo"] * 100)
    extra = {"epochs": 8.0, "learning_rate": 3e-3, "batch_size": 32} if backend == "transformer" else {}
    ds, report = annotate_density_ratio(
        Dataset.from_list(pool), Dataset.from_list(trusted), backend=backend, folds=2, bootstrap=20,
        model_name_or_path=tiny_encoder, **extra,
    )  # fmt: skip
    w = np.array(ds["dora_weight"])
    assert report["shift_detected"] and report["C"] is None, report["roc_auc"]
    assert w[kinds == "foo"].mean() > 1.5 * w[kinds == ""].mean()
    assert w.mean() == pytest.approx(1.0)


def _pairs(n: int, style: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = int(rng.integers(100))
        chosen, rejected = (f"{a}", f"{a + 1}") if style == "terse" else (f"Sure! It is {a}.", f"Sure! It is {a + 1}.")
        out.append({"prompt": f"q{a}", "chosen": chosen, "rejected": rejected})
    return out


def _write(path, rows_):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows_))
    return str(path)


def test_cli_end_to_end(tmp_path):
    pool = _pairs(150, "terse", 0) + _pairs(150, "chatty", 1)
    data = _write(tmp_path / "pool.jsonl", pool)
    trusted = _write(tmp_path / "trusted.jsonl", _pairs(60, "terse", 2))
    out = tmp_path / "out"
    argv = ["classify", "--dataset", data, "--target-dataset", trusted, "--output", str(out), "--folds", "3",
            "--share-bootstrap", "20"]  # fmt: skip
    assert main(argv) == 0
    written = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert len(written) == 300 and {"dora_weight", "chosen_trusted_prob", "rejected_trusted_prob"} <= set(written[0])
    w = np.array([r["dora_weight"] for r in written])
    assert w.mean() == pytest.approx(1.0, abs=1e-6)
    assert w[:150].mean() > 3 * w[150:].mean()  # the terse rows look like the trusted sample
    for f in ("report.json", "report.md", "reliability.png", "weights.png", "share.png", "classifier/classifier.json"):
        assert (out / f).exists(), f
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "no_labels" and len(report["target_share_interval"]) == 2


def test_cli_bad_input(tmp_path, capsys):
    pool = _write(tmp_path / "pool.jsonl", _pairs(40, "terse", 0))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")

    def error(argv) -> str:  # exit status 2 and one line on stderr; the line without its prefix
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bar of the data loading
        assert err.startswith("dora classify: error: "), err
        return err[len("dora classify: error: ") :]

    base = ["classify", "--dataset", pool, "--output", str(tmp_path / "out"), "--target-dataset"]
    assert error(base + [str(empty)]) == f"{empty}: empty file, no rows"
    rows_ = _pairs(10, "terse", 1)
    rows_[2]["rejected"] = ""
    bad = _write(tmp_path / "bad.jsonl", rows_)
    assert error(base + [bad]) == f"{bad}, line 3, column 'rejected': missing or empty response"
    no_col = _write(tmp_path / "nocol.jsonl", [{"prompt": r["prompt"], "chosen": r["chosen"]} for r in rows_])
    assert error(base + [no_col]).startswith(f"{no_col}: missing column 'rejected'")
    labelled_flag = error(base + [pool, "--target-sources", "human"])
    assert labelled_flag == "--target-sources belong to labelled mode, not to --target-dataset"
    outside = _write(tmp_path / "outside.jsonl", [{"prompt": "new", "chosen": "a", "rejected": "b"}])
    assert error(base + [outside, "--trusted-in-pool"]).startswith(f"{outside}, line 1: not found in {pool}")


def test_cli_more_bad_input(tmp_path, capsys):
    """Inputs of different shapes, flags out of range, non-text responses, blank lines in a file, a missing
    trusted file: one line, exit status 2, nothing written."""
    pool = _write(tmp_path / "pool.jsonl", _pairs(40, "terse", 0))
    out = tmp_path / "out"

    def error(*extra) -> str:
        assert main(["classify", "--dataset", pool, "--output", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("dora classify: error: "), err
        return err[len("dora classify: error: ") :]

    rows_ = _pairs(10, "terse", 1)
    no_prompt = _write(tmp_path / "noprompt.jsonl", [{k: r[k] for k in ("chosen", "rejected")} for r in rows_])
    assert error("--target-dataset", no_prompt) == (
        f"{no_prompt}: no 'prompt' column, {pool} has one (the two inputs must have the same columns)"
    )
    chat = [dict(r, chosen=[{"role": "assistant", "content": r["chosen"]}]) for r in rows_]
    chat_file = _write(tmp_path / "chat.jsonl", chat)
    assert error("--target-dataset", chat_file) == (
        f"{chat_file}, column 'chosen': chat messages, {pool} has plain text (the two inputs must have the same format)"
    )
    numbers = [dict(r) for r in rows_]
    numbers[4]["chosen"] = 123
    num_file = _write(tmp_path / "numbers.jsonl", numbers)
    # datasets reads a column of mixed types as strings or fails; either way the row must not pass as text "123"
    msg = error("--target-dataset", num_file)
    assert num_file in msg
    blank = tmp_path / "blank.jsonl"  # the bad row is on line 9, after two blank lines
    lines = [json.dumps(r) for r in rows_[:6]]
    bad = dict(rows_[6], rejected="")
    text = [lines[0], "", *lines[1:4], "", *lines[4:], json.dumps(bad)]
    blank.write_text("\n".join(text) + "\n")
    assert error("--target-dataset", str(blank)) == f"{blank}, line 9, column 'rejected': missing or empty response"
    trusted = _write(tmp_path / "trusted.jsonl", rows_)
    assert error("--target-dataset", trusted, "--folds", "1") == (
        "--folds must be >= 2 with --target-dataset (cross-fitted scores), got 1"
    )
    assert error("--target-dataset", trusted, "--share-bootstrap", "-5") == "--share-bootstrap must be >= 0, got -5"
    assert error("--target-dataset", trusted, "--source-column", "origin") == (
        "--source-column belong to labelled mode, not to --target-dataset"
    )
    assert error("--target-sources", "x", "--folds", "0") == "--folds must be >= 1, got 0"
    assert not out.exists()  # no folder left behind by a failed run
    lone = tmp_path / "lone"  # the output folder named like the missing file must not become the hint
    lone.mkdir()
    argv = ["classify", "--dataset", pool, "--target-dataset", str(lone / "trusted_v2.jsonl"), "--output",
            str(lone / "trusted_v2")]  # fmt: skip
    assert main(argv) == 2
    missing = capsys.readouterr().err.strip().splitlines()[-1]
    assert missing.startswith("dora classify: error: --target-dataset ") and "not found" in missing, missing
    assert "did you mean" not in missing and not (lone / "trusted_v2").exists()


def test_cli_prints_each_warning_once(tmp_path, capsys):
    """The support warning on disjoint vocabularies: one "warning:" line on stdout, no Python warning on stderr."""
    pool = _write(tmp_path / "pool.jsonl", rows(300, 13)[0])
    trusted = _write(tmp_path / "trusted.jsonl", rows(100, 14, vocab=[f"v{i}" for i in range(10)])[0])
    argv = ["classify", "--dataset", pool, "--target-dataset", trusted, "--output", str(tmp_path / "out"),
            "--share-bootstrap", "10"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.count("off-distribution") == 1
    assert "warning: the trusted set is off-distribution" in captured.out
    assert "off-distribution" not in captured.err


def test_python_inputs_and_the_two_ess_warnings():
    """Lists of dicts and DataFrames are read as datasets (same weights); other objects are a one-line
    TypeError. A trusted sample larger than the weights' effective sample size gets its own warning, not the
    collapse warning."""
    import pandas as pd

    pool, kinds = rows(400, 30, draw(400, {"foo": 0.3, "": 0.7}, 31))
    trusted, _ = rows(300, 32, ["foo"] * 300)
    with pytest.warns(UserWarning) as caught:
        a, report = annotate_density_ratio(pool, trusted, folds=3, bootstrap=10)
    messages = [str(w.message) for w in caught]
    assert any("below the trusted sample's own 300 rows" in m for m in messages), messages
    assert not any("collapsed" in m for m in messages)
    assert report["ess"] < 300 and report["ess_fraction"] > 0.1
    b, _ = annotate_density_ratio(pd.DataFrame(pool), pd.DataFrame(trusted), folds=3, bootstrap=10)
    np.testing.assert_allclose(b["dora_weight"], a["dora_weight"])
    with pytest.raises(TypeError, match="trusted: expected a datasets.Dataset, a list of row dicts or a pandas"):
        annotate_density_ratio(pool, "trusted.jsonl")
    with pytest.raises(ValueError, match="folds must be >= 2 without source labels"):
        annotate_density_ratio(pool, trusted, folds=1)


@pytest.mark.slow
def test_demo_no_labels_row(tmp_path):
    out = tmp_path / "demo"
    # one preference epoch: what is checked here (the row, the weights, the subset share) does not depend on it
    argv = ["demo", "--quick", "--methods", "DPO", "--no-labels", "--trusted-size", "100", "--epochs", "1",
            "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "| DoRA (no labels) |" in (out / "results.md").read_text()
    seed0 = json.loads((out / "results.json").read_text())["per_seed"][0]
    assert 0.0 <= seed0["DoRA (no labels)"]["preference_accuracy"] <= 1.0
    w = seed0["weights_no_labels"]
    assert np.mean(w["human"]) > np.mean(w["chatty"])  # the trusted human pairs pick out the human rows
    assert seed0["classifier_no_labels"]["subset_share"]["truth"] == pytest.approx(0.2, abs=0.01)


def _separable_world(seed: int) -> tuple[list[dict], list[dict], np.ndarray]:
    """Fully separable sources: human responses use one vocabulary of 2000 words, synthetic responses another,
    six words each (so most words are rare: out of fold, a response is often scored from words its model never
    saw). The pool is 20% human; the 200 trusted rows are drawn apart. The true dQ0/dP of a synthetic row is 0."""
    rng = np.random.default_rng(seed)
    vocab = {"human": [f"h{i}" for i in range(2000)], "synthetic": [f"s{i}" for i in range(2000)]}

    def row(source: str) -> dict:
        chosen, rejected = (" ".join(rng.choice(vocab[source], 6)) for _ in range(2))
        return {"prompt": f"q{rng.integers(100)}", "chosen": chosen, "rejected": rejected, "source": source}

    pool = [row("human" if rng.random() < 0.2 else "synthetic") for _ in range(2000)]
    trusted = [row("human") for _ in range(200)]
    for r in trusted:
        del r["source"]
    return pool, trusted, np.array([r.pop("source") for r in pool])


def test_separable_sources_get_weights_near_zero():
    """The weights were soft here (synthetic rows 0.22 on average, against 0.001 with labels): Platt's one
    sigmoid cannot follow P(trusted | x), which plateaus at N_T / (N_T + α N_P) = 1/3 on human text and is 0
    elsewhere. With the fitted ceiling the synthetic rows' mean weight is near their true 0, and the human rows'
    near their true 1/α."""
    pool, trusted, source = _separable_world(40)
    ds, report = annotate_density_ratio(pool, trusted, bootstrap=20)
    w = np.array(ds["dora_weight"])
    alpha = (source == "human").mean()
    assert w[source == "synthetic"].mean() <= 0.15
    assert w[source == "human"].mean() == pytest.approx(1 / alpha, rel=0.1)
    c = np.array(ds["chosen_trusted_prob"])[source == "human"]
    assert c.mean() == pytest.approx(400 / (400 + alpha * 4000), abs=0.03)  # the plateau, N_T / (N_T + α N_P)


def test_calibration_ceiling_recovers_a_plateau_and_stays_off_without_one():
    """Scores whose true P(positive) is m·σ(2z − 1) with m = 0.3: the ceiling's fit finds m; on scores with a
    plain logistic truth (m = 1) the likelihood-ratio test keeps Platt's map (m = 1 exactly)."""
    from scipy.special import expit

    from dora.classifier import Calibrator

    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 20000)
    raw = expit(z)
    for m in (0.3, 1.0):
        y = (rng.random(len(z)) < m * expit(2 * z - 1)).astype(int)
        cal = Calibrator("platt", ceiling=True).fit(raw, y)
        if m < 1:
            assert cal.m == pytest.approx(m, abs=0.02) and cal.a == pytest.approx(2, rel=0.15)
        else:
            assert cal.m == 1.0
        np.testing.assert_allclose(cal(raw), m * expit(2 * z - 1), atol=0.03)
