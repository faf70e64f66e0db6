"""Source classifiers: AUC against the Bayes AUC, cross-fitting, density-ratio recovery, persistence, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from datasets import Dataset
from scipy.stats import spearmanr

from dora.classifier import annotate, load_classifier, make_classifier
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
     "row 3, column 'response': empty response"),
    ([{"prompt": "p", "response": "x", "origin": "human"}] * 10, "missing column 'source'"),
])  # fmt: skip
def test_bad_input(rows, match):
    with pytest.raises(ValueError, match=match):
        annotate(Dataset.from_list(rows), target_sources=["human"])


def test_tfidf_persistence_round_trip(tmp_path):
    rows = style_rows(600, 0.9, 0.2)
    _, _ = annotate(
        Dataset.from_list(rows), target_sources=["human"], output_dir=str(tmp_path), calibration="isotonic"
    )
    clf = load_classifier(str(tmp_path / "classifier"))
    again = load_classifier(str(tmp_path / "classifier"))
    new = style_rows(50, 0.9, 0.2, seed=9)
    p = [r["prompt"] for r in new]
    y = [r["response"] for r in new]
    np.testing.assert_array_equal(clf.predict_proba(p, y), again.predict_proba(p, y))
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
    ds, report = annotate(
        Dataset.from_list(rows),
        target_sources=["human"],
        backend=backend,
        folds=2,
        model_name_or_path=tiny_bert,
        output_dir=str(tmp_path),
        **extra,
    )
    assert 0.0 <= min(ds["target_prob"]) and max(ds["target_prob"]) <= 1.0
    assert report["roc_auc"] > 0.6  # 'foo' separates the classes
    clf = load_classifier(str(tmp_path / "classifier"))
    p, y = [r["prompt"] for r in rows[:20]], [r["response"] for r in rows[:20]]
    final = make_classifier(backend, model_name_or_path=tiny_bert, **extra)
    assert final.backend == clf.backend
    np.testing.assert_allclose(
        clf.predict_proba(p, y), load_classifier(str(tmp_path / "classifier")).predict_proba(p, y)
    )


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
    assert report["mean_response_weight_by_source"]["human"] > report["mean_response_weight_by_source"]["gpt"]


def test_listwise_sources_must_match_responses():
    """A `sources` list shorter than `responses` is an error naming the row, not a silently dropped response."""
    rows = [{"prompt": f"q{i}", "responses": ["a", "b b", "c c c"], "sources": ["human", "gpt", "gpt"]}
            for i in range(10)]
    rows[4]["sources"] = ["human", "gpt"]
    with pytest.raises(ValueError, match=r"row 4, column 'sources': 2 sources for 3 responses"):
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
