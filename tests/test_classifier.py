"""Source classifiers: AUC against the Bayes AUC, cross-fitting, density-ratio recovery, persistence, CLI."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from datasets import Dataset
from scipy.stats import spearmanr

from dora.classifier import annotate, load_classifier
from dora.classifier.crossfit import cross_calibrate, expected_calibration_error, make_folds
from dora.classifier.report import format_table
from dora.cli import main

WORDS = [f"w{i}" for i in range(30)]


def style_rows(n: int, p_target: float, p_other: float, seed: int = 0) -> list[dict]:
    """Single-response rows: the token 'foo' appears with probability p_target in human responses and
    p_other in the others; everything else is drawn from the same distribution."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        source = "human" if i % 2 == 0 else "gpt"
        words = list(rng.choice(WORDS, 6))
        if rng.random() < (p_target if source == "human" else p_other):
            words.insert(int(rng.integers(0, 6)), "foo")
        rows.append({"prompt": f"question {rng.integers(50)}", "response": " ".join(words), "source": source})
    return rows


def bayes_auc(p_t: float, p_o: float) -> float:
    """AUC of the best score, the indicator of 'foo': P(s_t > s_o) + P(tie) / 2."""
    return p_t * (1 - p_o) + 0.5 * (p_t * p_o + (1 - p_t) * (1 - p_o))


def test_auc_reaches_what_the_difference_allows():
    _, report = annotate(Dataset.from_list(style_rows(4000, 0.9, 0.3)), target_sources=["human"], folds=5)
    assert bayes_auc(0.9, 0.3) == pytest.approx(0.8)
    assert report["roc_auc"] == pytest.approx(0.8, abs=0.03)
    assert report["ece"] < 0.08  # calibrated out of fold (10 bins, 4000 responses)


def test_no_difference_gives_auc_half_and_weights_one():
    ds, report = annotate(
        Dataset.from_list(style_rows(3000, 0.5, 0.5)), target_sources=["human"], normalize=True
    )
    assert report["roc_auc"] == pytest.approx(0.5, abs=0.05)
    w = np.array(ds["dora_weight"])
    assert w.mean() == pytest.approx(1.0, abs=1e-6)
    assert w.std() < 0.1  # every sample weighs about the same: DoRA falls back to (KL-DRO over) ERM


def test_cross_fitting_keeps_memorised_weights_bounded():
    rng = np.random.default_rng(1)
    rows = [
        {
            "prompt": f"p{i}",
            "response": " ".join(f"u{rng.integers(1e9)}" for _ in range(3)),
            "source": "human" if rng.random() < 0.5 else "gpt",
        }
        for i in range(1500)
    ]
    ds = Dataset.from_list(rows)
    crossed, rep_c = annotate(ds, target_sources=["human"], folds=5, calibration="none")
    insample, rep_i = annotate(ds, target_sources=["human"], folds=1, calibration="none")
    wc, wi = np.array(crossed["dora_weight"]), np.array(insample["dora_weight"])
    assert rep_c["roc_auc"] == pytest.approx(0.5, abs=0.06)  # nothing to learn out of fold
    assert rep_i["roc_auc"] > 0.95  # memorised in sample
    # out of fold, the weights barely move; in sample, the memorised labels spread them apart
    assert wc.std() < 0.02 * wc.mean()
    assert wi.std() > 5 * wc.std()


def test_weights_track_the_true_density_ratio():
    """Bag-of-words sources with known token distributions: the true ratio q0(y)/q1(y) is a product."""
    rng = np.random.default_rng(2)
    vocab = [f"t{i}" for i in range(20)]
    q0 = rng.dirichlet(np.ones(20))
    q1 = rng.dirichlet(np.ones(20))
    rows, log_ratio = [], []
    for i in range(6000):
        q = q0 if i % 2 == 0 else q1
        idx = rng.choice(20, 8, p=q)
        rows.append(
            {
                "prompt": "p",
                "response": " ".join(vocab[j] for j in idx),
                "source": "human" if i % 2 == 0 else "synthetic",
            }
        )
        log_ratio.append(float(np.sum(np.log(q0[idx]) - np.log(q1[idx]))))
    ds, _ = annotate(Dataset.from_list(rows), target_sources=["human"], folds=5)
    rho = spearmanr(ds["dora_weight"], log_ratio).statistic
    assert rho >= 0.8, rho


def test_pairwise_and_listwise_columns(tmp_path):
    pairs = [
        {
            "prompt": f"q{i}",
            "chosen": f"short {i}",
            "rejected": f"a long padded answer {i} indeed",
            "chosen_source": "human" if i % 2 else "gpt",
            "rejected_source": "gpt",
        }
        for i in range(200)
    ]
    ds, report = annotate(Dataset.from_list(pairs), target_sources=["human"], source_column="source", folds=3)
    assert {"chosen_target_prob", "rejected_target_prob", "dora_weight"} <= set(ds.column_names)
    assert report["n_responses"] == 400 and report["gamma"] == pytest.approx(300 / 100)
    again, _ = annotate(ds, target_sources=["human"], source_column="source", folds=3)  # re-run on its output
    np.testing.assert_array_equal(again["dora_weight"], ds["dora_weight"])
    lists = [
        {
            "prompt": f"q{i}",
            "responses": [f"a {i}", f"b {i} b", f"c {i} c c"],
            "scores": [1, 2, 3],
            "sources": ["human", "gpt", "gpt"],
        }
        for i in range(100)
    ]
    ds, _ = annotate(Dataset.from_list(lists), target_sources=["human"], folds=3)
    assert len(ds["target_probs"][0]) == 3 and "dora_weight" in ds.column_names


@pytest.mark.parametrize("rows,match", [
    ([{"prompt": "p", "response": "x", "source": "human"}] * 10, "one source only"),
    ([{"prompt": "p", "response": "x", "source": s} for s in ["a", "b"] * 5],
     r"unknown target source\(s\) \['human'\]"),
    ([{"prompt": "p", "response": "x" if i != 3 else " ", "source": "human" if i % 2 else "gpt"}
      for i in range(10)],
     "row 4, column 'response': missing or empty response"),
    ([{"prompt": "p", "response": "x", "origin": "human"}] * 10, "missing column 'source'"),
    ([{"prompt": "p", "responses": "abc" if i != 2 else None, "source": "human" if i % 2 else "gpt"}
      for i in range(10)],
     "row 1, column 'responses': needs a non-empty list of responses"),
    ([{"prompt": "p", "responses": ["a", "b"] if i != 2 else None, "source": "human" if i % 2 else "gpt"}
      for i in range(10)],
     "row 3, column 'responses': needs a non-empty list of responses"),
])  # fmt: skip
def test_bad_input(rows, match):
    with pytest.raises(ValueError, match=match):
        annotate(Dataset.from_list(rows), target_sources=["human"])


def test_no_target_source_is_named():
    """`--target-sources ","` gives an empty list: a clear error, not a one-class fold or a division by zero."""
    rows = style_rows(40, 0.9, 0.2)
    with pytest.raises(ValueError, match=r"^no target source given; the dataset's sources are \['gpt', 'human'\]$"):
        annotate(Dataset.from_list(rows), target_sources=[])


def test_tfidf_persistence_round_trip(tmp_path):
    """annotate's classifier, saved and reloaded, gives the fitted in-memory classifier's probabilities."""
    rows = style_rows(600, 0.9, 0.2)
    _, _, fitted = annotate(
        Dataset.from_list(rows),
        target_sources=["human"],
        output_dir=str(tmp_path),
        calibration="isotonic",
        return_classifier=True,
    )
    clf = load_classifier(str(tmp_path / "classifier"))
    new = style_rows(50, 0.9, 0.2, seed=9)
    p = [r["prompt"] for r in new]
    y = [r["response"] for r in new]
    expected = fitted.predict_proba(p, y)
    assert expected.std() > 0.05  # the check below compares informative probabilities, not constants
    np.testing.assert_allclose(clf.predict_proba(p, y), expected, rtol=1e-6, atol=1e-9)
    files = os.listdir(tmp_path / "classifier")
    assert not any(f.endswith((".pkl", ".pickle", ".bin", ".joblib")) for f in files)
    assert set(files) == {"classifier.json", "weights.safetensors", "vocabulary.json"}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = str(tmp_path_factory.mktemp("tiny_bert"))
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "foo",
        "question",
        *WORDS,
        *[str(i) for i in range(50)],
    ]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(path)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(path)
    return path


@pytest.mark.parametrize("backend", ["embedding", "transformer"])
def test_hf_backends_train_score_and_reload(tmp_path, tiny_bert, backend):
    rows = style_rows(160, 0.95, 0.05)
    extra = {"epochs": 4.0, "learning_rate": 3e-3, "batch_size": 32} if backend == "transformer" else {}
    ds, report, fitted = annotate(
        Dataset.from_list(rows),
        target_sources=["human"],
        backend=backend,
        folds=2,
        model_name_or_path=tiny_bert,
        output_dir=str(tmp_path),
        return_classifier=True,
        **extra,
    )
    assert 0.0 <= min(ds["target_prob"]) and max(ds["target_prob"]) <= 1.0
    assert report["roc_auc"] > 0.6  # 'foo' separates the classes
    clf = load_classifier(str(tmp_path / "classifier"))
    assert clf.backend == fitted.backend == backend
    new = style_rows(20, 0.95, 0.05, seed=7)
    p, y = [r["prompt"] for r in new], [r["response"] for r in new]
    expected = fitted.predict_proba(p, y)
    assert np.ptp(expected) > 1e-3
    np.testing.assert_allclose(clf.predict_proba(p, y), expected, rtol=1e-5, atol=1e-6)


def test_cli_end_to_end(tmp_path):
    data = tmp_path / "mix.jsonl"
    pairs = [
        {
            "prompt": f"q{i}",
            "chosen": "ok " + str(i) if i % 3 else "Sure! Here it is: " + str(i),
            "rejected": "Certainly! " + str(i + 1),
            "source": "human" if i % 3 else "gpt",
        }
        for i in range(120)
    ]
    data.write_text("\n".join(json.dumps(r) for r in pairs))
    out = tmp_path / "out"
    assert (
        main(
            [
                "classify",
                "--dataset",
                str(data),
                "--target-sources",
                "human",
                "--output",
                str(out),
                "--folds",
                "3",
                "--normalize",
            ]
        )
        == 0
    )
    written = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert len(written) == 120 and {"dora_weight", "chosen_target_prob"} <= set(written[0])
    assert np.mean([r["dora_weight"] for r in written]) == pytest.approx(1.0, abs=1e-4)
    for f in ("report.json", "report.md", "reliability.png", "weights.png", "classifier/classifier.json"):
        assert (out / f).exists(), f
    report = json.loads((out / "report.json").read_text())
    assert report["mean_weight_by_source"]["human"] > report["mean_weight_by_source"]["gpt"]


def test_listwise_sources_must_match_responses():
    """A `sources` list shorter than `responses` is an error naming the row, not a silently dropped response."""
    rows = [{"prompt": f"q{i}", "responses": ["a", "b b", "c c c"], "sources": ["human", "gpt", "gpt"]}
            for i in range(10)]
    rows[4]["sources"] = ["human", "gpt"]
    with pytest.raises(ValueError, match=r"row 5, column 'sources': 2 sources for 3 responses"):
        annotate(Dataset.from_list(rows), target_sources=["human"], folds=2)


def test_fitted_and_reloaded_classifier_agree(tmp_path):
    """fit -> save -> load: the reloaded classifier gives the in-memory one's probabilities."""
    from dora.classifier import TfidfClassifier

    rows = style_rows(400, 0.9, 0.2)
    p, y = [r["prompt"] for r in rows], [r["response"] for r in rows]
    labels = np.array([r["source"] == "human" for r in rows], dtype=int)
    for calibration in ("platt", "isotonic"):
        clf = TfidfClassifier(calibration=calibration).fit(p, y, labels)
        clf.calibrate(clf.predict_raw(p, y), labels)
        clf.save_pretrained(str(tmp_path / calibration))
        again = load_classifier(str(tmp_path / calibration))
        new = style_rows(60, 0.9, 0.2, seed=5)
        q, z = [r["prompt"] for r in new], [r["response"] for r in new]
        np.testing.assert_allclose(again.predict_proba(q, z), clf.predict_proba(q, z), rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------- the weights are dQ0/dP


def mix_rows(n: int, informative: bool, seed: int = 0) -> list[dict]:
    """Pairs, 20% human / 80% synthetic. Uninformative: every text is drawn from one distribution.
    Informative: 'foo' is in 80% of human chosen responses and 15% of synthetic ones."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        source = "human" if i % 5 == 0 else "synthetic"
        chosen = list(rng.choice(WORDS, 8))
        if informative and rng.random() < (0.8 if source == "human" else 0.15):
            chosen.insert(int(rng.integers(0, 8)), "foo")
        rows.append(
            {
                "prompt": f"question {rng.integers(300)}",
                "chosen": " ".join(chosen),
                "rejected": " ".join(rng.choice(WORDS, 6)),
                "source": source,
            }
        )
    return rows


def classify_cli(tmp_path, rows, *flags) -> tuple[list[dict], dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "mix.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    args = ["classify", "--dataset", str(data), "--target-sources", "human", "--output", str(out), *flags]
    assert main(args) == 0
    written = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    return written, json.loads((out / "report.json").read_text())


def test_same_distribution_gives_human_and_synthetic_the_same_weight(tmp_path):
    """The source label never enters the weight: a classifier that can tell nothing weighs both alike."""
    written, report = classify_cli(tmp_path, mix_rows(2000, informative=False))
    w = np.array([r["dora_weight"] for r in written])
    src = np.array([r["source"] for r in written])
    assert report["roc_auc"] == pytest.approx(0.5, abs=0.05)
    human, synthetic = w[src == "human"].mean(), w[src == "synthetic"].mean()
    assert human == pytest.approx(synthetic, rel=0.15)
    assert w.mean() == pytest.approx(1.0, abs=0.1)  # unnormalised, and still mean 1
    assert report["target_share"] == pytest.approx(0.2)  # 800 human of 4000 responses
    assert report["gamma"] == pytest.approx(4.0)


def test_informative_text_gives_mean_one_and_human_rows_more(tmp_path):
    written, report = classify_cli(tmp_path, mix_rows(2000, informative=True))
    w = np.array([r["dora_weight"] for r in written])
    src = np.array([r["source"] for r in written])
    assert report["roc_auc"] > 0.65
    assert w.mean() == pytest.approx(1.0, abs=0.1)  # E_P[dQ0/dP] = 1, no --normalize
    assert w[src == "human"].mean() > 1.3 * w[src == "synthetic"].mean()  # 1.58 at this seed
    # the written weight is DESIGN's formula of the written probabilities, a and gamma from the data
    a, gamma = report["target_share"], report["gamma"]
    c = np.clip(np.array([[r["chosen_target_prob"], r["rejected_target_prob"]] for r in written]), 1e-4, 1 - 1e-4)
    expected = (1.0 / (a + (1 - a) * (1 - c) / (gamma * c))).mean(axis=1)
    np.testing.assert_allclose(w, expected, rtol=1e-5)
    assert report["mean_weight_by_source"]["human"] == pytest.approx(w[src == "human"].mean(), rel=1e-9)


def test_weight_flags(tmp_path):
    rows = mix_rows(400, informative=True, seed=1)
    written, report = classify_cli(tmp_path / "a", rows, "--preset", "authors", "--folds", "3")
    c = np.array([[r["chosen_target_prob"], r["rejected_target_prob"]] for r in written])
    np.testing.assert_allclose([r["dora_weight"] for r in written], (2 * c).mean(axis=1), rtol=1e-5)
    assert report["preset"] == "authors"
    written, report = classify_cli(
        tmp_path / "b", rows, "--target-share", "0.5", "--stabilizer", "0.8", "--clip", "1.2", "--folds", "3"
    )
    c = np.clip(np.array([[r["chosen_target_prob"], r["rejected_target_prob"]] for r in written]), 1e-4, 1 - 1e-4)
    gamma = report["gamma"]
    expected = np.minimum(1.0 / (0.8 + 0.5 * (1 - c) / (gamma * c)), 1.2).mean(axis=1)
    np.testing.assert_allclose([r["dora_weight"] for r in written], expected, rtol=1e-5)
    assert report["target_share"] == 0.5 and report["stabilizer"] == 0.8


def test_identical_responses_get_identical_weights_whatever_their_label():
    """Rows duplicated under the other source label: same text, same fold, same probability, same weight."""
    rows = style_rows(600, 0.9, 0.2)
    twins = [dict(r, source="gpt" if r["source"] == "human" else "human") for r in rows[:100]]
    ds, _ = annotate(Dataset.from_list(rows + twins), target_sources=["human"])
    w = np.array(ds["dora_weight"])
    np.testing.assert_array_equal(w[:100], w[600:])


def test_no_prompt_column():
    """The prompt is optional: without one the tfidf backend uses the responses only, and the weights still
    follow the source's marker as with prompts."""
    rows = [{k: r[k] for k in ("response", "source")} for r in style_rows(1000, 0.9, 0.2)]
    ds, report = annotate(Dataset.from_list(rows), target_sources=["human"])
    w, has_foo = np.array(ds["dora_weight"]), np.array(["foo" in r["response"] for r in rows])
    assert report["roc_auc"] == pytest.approx(bayes_auc(0.9, 0.2), abs=0.05)
    assert w[has_foo].mean() > 2 * w[~has_foo].mean()


# --------------------------------------------------------------------------- folds and honest diagnostics


def test_folds_keep_prompts_and_identical_texts_together():
    rng = np.random.default_rng(0)
    prompts = np.repeat([f"p{rng.integers(200)}" for _ in range(1000)], 2).tolist()  # a pair shares its prompt
    texts = [f"t{rng.integers(50_000)}" for _ in range(2000)]  # a few identical texts across prompts
    rows = np.arange(2000) // 2
    assert len(set(texts)) < 2000
    fold, _, grouping = make_folds(prompts, texts, rows, 5, seed=0)
    assert grouping == "prompt and response text"  # 200 prompts: fine enough to group by
    for key in (prompts, texts, rows.tolist()):
        seen = {}
        for k, f in zip(key, fold):
            assert seen.setdefault(k, f) == f
    sizes = np.bincount(fold, minlength=5)
    assert sizes.min() > 0.6 * sizes.mean()
    # one prompt for every row (too coarse): identical texts still share a fold
    fold, _, grouping = make_folds(["p"] * 2000, texts, rows, 5, seed=0)
    assert grouping == "response text"
    seen = {}
    for t, f in zip(texts, fold):
        assert seen.setdefault(t, f) == f


def test_duplicated_rows_cannot_be_memorised_across_folds():
    """Each random, label-free text appears twice with the same label: if copies straddled folds, a
    memorising classifier would score its copy (AUC near 1); grouped by text, it can only guess."""
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(600):
        row = {
            "prompt": f"p{rng.integers(1e9)}",
            "response": " ".join(f"u{rng.integers(1e9)}" for _ in range(3)),
            "source": "human" if rng.random() < 0.5 else "gpt",
        }
        rows += [row, dict(row, prompt=f"p{rng.integers(1e9)}")]
    _, report = annotate(Dataset.from_list(rows), target_sources=["human"], calibration="none")
    assert report["fold_grouping"] == "prompt and response text"
    assert report["roc_auc"] == pytest.approx(0.5, abs=0.08)


def test_ece_is_out_of_fold():
    """Isotonic regression fitted on the very scores it is scored on is perfectly calibrated by construction
    (ECE 0 on pure noise); fitted out of fold, it shows its overfit."""
    from dora.classifier import Calibrator

    g = np.random.default_rng(0)
    raw, y = g.random(1000), (g.random(1000) < 0.3).astype(int)
    assert expected_calibration_error(Calibrator("isotonic").fit(raw, y)(raw), y) < 1e-9
    fold = g.integers(0, 5, 1000)
    oof = cross_calibrate("isotonic", raw, y, fold, groups=np.arange(1000))
    assert expected_calibration_error(oof, y) > 0.01
    # end to end on texts that carry no signal
    rows = style_rows(1000, 0.5, 0.5)
    _, report = annotate(Dataset.from_list(rows), target_sources=["human"], calibration="isotonic")
    assert report["ece"] > 0.01
    assert sum(b["count"] for b in report["reliability"]) == 1000


def test_report_and_plots_share_one_scale(tmp_path):
    _, report = annotate(
        Dataset.from_list(style_rows(400, 0.9, 0.2)), target_sources=["human"], normalize=True, output_dir=str(tmp_path)
    )
    md = (tmp_path / "report.md").read_text()
    assert "written per-row `dora_weight`, normalised to mean 1" in md
    assert report["weight_mean"] == pytest.approx(1.0, abs=1e-6)
    assert (tmp_path / "weights.png").exists() and (tmp_path / "reliability.png").exists()


@pytest.mark.parametrize("flags,match", [
    (["--preset", "authors", "--target-share", "0.3"], "--preset authors fixes the constants"),
    (["--target-share", "1.3"], r"--target-share must be in \(0, 1\], got 1.3"),
    (["--stabilizer", "-1"], "--stabilizer must be >= 0"),
    (["--clip", "0"], "--clip must be > 0"),
    (["--eps", "0.5"], r"--eps must be in \(0, 0.5\), got 0.5"),
])  # fmt: skip
def test_bad_weight_flags_fail_before_the_data_loads(tmp_path, capsys, flags, match):
    missing = str(tmp_path / "not_there.jsonl")  # never read: the flags are checked first
    args = ["classify", "--dataset", missing, "--target-sources", "human", "--output", str(tmp_path), *flags]
    assert main(args) == 2  # argparse's status for a bad flag
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match("dora classify: error: " + match, err), err


def test_cli_error_names_the_file_line_and_column(tmp_path, capsys):
    """Labelled mode, as no-label mode: a bad row of a jsonl file is named by the file and its 1-based line."""
    rows = style_rows(20, 0.9, 0.2)
    rows[3]["response"] = "  "  # line 4 of the file
    rows[6]["source"] = None
    data = tmp_path / "mix.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    argv = ["classify", "--dataset", str(data), "--target-sources", "human", "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"dora classify: error: {data}, line 4, column 'response': missing or empty response"
    rows[3]["response"] = "fine"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"dora classify: error: {data}, line 7, column 'source': no source for response 'response'"


def test_backends_are_listed_by_name():
    """The registry is one explicit table: each name is its class's backend, and an unknown name is refused with
    the choices."""
    from dora.classifier import BACKENDS, make_classifier

    assert {name: cls.backend for name, cls in BACKENDS.items()} == {
        "tfidf": "tfidf", "embedding": "embedding", "transformer": "transformer"
    }  # fmt: skip
    choices = r"\['embedding', 'tfidf', 'transformer'\]"
    with pytest.raises(ValueError, match=rf"unknown backend 'tfidff'; choose from {choices}"):
        make_classifier("tfidff")


# --------------------------------------------------------------------------- the regime sentence


@pytest.mark.parametrize("overlap,regime,words", [
    (0.0, "concentrated", "concentrate on 20% of rows"),  # weights 1/α on human rows, 0 elsewhere: ESS/N = α
    (0.9, "little", "expect DoRA ≈ KL-DRO"),  # 90% of synthetic text in the human template
])  # fmt: skip
def test_regime_sentence_at_the_two_ends_of_the_map(overlap, regime, words):
    """The demo world at a high synthetic share (0.8): separable sources (style overlap 0) against nearly
    indistinguishable ones (0.9) give the two ends of the regime map; both have 160 human rows of 800 (few)."""
    from dora.synthetic import WorldConfig, make_world

    train = make_world(WorldConfig(style_overlap=overlap, synthetic_share=0.8, n_train=800, seed=0))["train"]
    _, report = annotate(Dataset.from_list(train), target_sources=["human"], folds=3)
    assert report["regime"]["regime"] == regime
    assert words in report["regime"]["sentence"]
    assert report["regime"]["few_target_rows"] and report["regime"]["target_rows"] == 160
    assert "**Prediction:** " + report["regime"]["sentence"] in format_table(report)


def test_regime_thresholds():
    """The rule on hand-made reports: ESS fraction against LITTLE_ESS and CONCENTRATED_ESS, the weight share
    of the target rows, few target rows, and the calibration caveat."""
    from dora.classifier.regime import predict_regime

    base = {"n_rows": 1000, "target_sources": ["human"], "rows_by_source": {"human": 300, "gpt": 700}, "ece": 0.01}
    for ess, regime in ((0.85, "little"), (0.8, "little"), (0.6, "mixed"), (0.49, "concentrated")):
        out = predict_regime(dict(base, ess_fraction=ess, mean_weight_by_source={"human": 2.0, "gpt": 4 / 7}))
        assert out["regime"] == regime, ess
    assert out["weight_shares"]["human"] == pytest.approx(600 / (600 + 400))  # 300 rows x 2.0 of 1000 in all
    assert "the target rows carry 60% of the weight (30% of rows)" in out["sentence"]
    assert not out["few_target_rows"] and "poorly calibrated" not in out["sentence"]
    few = predict_regime(dict(base, ess_fraction=0.3, rows_by_source={"human": 50, "gpt": 950}, ece=0.2,
                              mean_weight_by_source={"human": 1.0, "gpt": 1.0}))  # fmt: skip
    assert few["few_target_rows"] and "The target rows are few (50)" in few["sentence"]
    assert "poorly calibrated (ECE 0.200)" in few["sentence"]
    no_labels = predict_regime({"mode": "no_labels", "n_trusted_rows": 150, "ess_fraction": 0.95, "n_rows": 900})
    assert no_labels["regime"] == "little" and no_labels["target_rows"] == 150 and no_labels["few_target_rows"]
