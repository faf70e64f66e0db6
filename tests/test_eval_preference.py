"""Preference evaluation: implicit-reward accuracy against an independent full-logits computation,
reward-model accuracy with a tiny sequence-classification model, the win rate's bootstrap interval against
numpy, and `dora eval preference` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import pair_rows
from datasets import Dataset

from dora.cli import main
from dora.eval.preference import (
    RewardModel,
    implicit_reward_accuracy,
    reward_model_accuracy,
    win_rate_from_scores,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_dir):
    """A policy (the shared tiny Llama), a reference with other weights, and a tiny Llama reward model
    (sequence classification, one label), each saved and loaded like a user's checkpoint."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ref_dir, rm_dir = str(tmp_path_factory.mktemp("ref")), str(tmp_path_factory.mktemp("rm"))
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    torch.manual_seed(7)
    LlamaForCausalLM(config).save_pretrained(ref_dir)
    tok.save_pretrained(ref_dir)
    torch.manual_seed(3)
    rm_config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, num_key_value_heads=2, num_labels=1,
                            pad_token_id=tok.pad_token_id)  # fmt: skip
    LlamaForSequenceClassification(rm_config).save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    return tiny_model_dir, ref_dir, rm_dir


def _full_logits_logp(model, tok, prompt: str, completion: str) -> float:
    """Independent: one unpadded sequence, full logits in float64, completion = the tokens after the prompt
    (plus EOS, as TRL appends it)."""
    p = tok(prompt)["input_ids"]
    ids = tok(prompt + completion + tok.eos_token)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return sum(lp[t - 1, ids[t]].item() for t in range(len(p), len(ids)))


def test_implicit_reward_accuracy_matches_full_logits(models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy_dir, ref_dir, _ = models
    tok = AutoTokenizer.from_pretrained(policy_dir)
    rows = pair_rows(12)
    got = implicit_reward_accuracy(policy_dir, ref_dir, tok, Dataset.from_list(rows), beta=0.5, batch_size=5,
                                   bootstrap=100)  # fmt: skip
    pol, ref = AutoModelForCausalLM.from_pretrained(policy_dir), AutoModelForCausalLM.from_pretrained(ref_dir)
    margins, sources = [], []
    for r in rows:
        rc = 0.5 * (
            _full_logits_logp(pol, tok, r["prompt"], r["chosen"])
            - _full_logits_logp(ref, tok, r["prompt"], r["chosen"])
        )
        rr = 0.5 * (
            _full_logits_logp(pol, tok, r["prompt"], r["rejected"])
            - _full_logits_logp(ref, tok, r["prompt"], r["rejected"])
        )
        margins.append(rc - rr)
        sources.append(r["source"])
    margins, sources = np.array(margins), np.array(sources)
    human = sources == "human"
    # overall = the target (human) rows; by_source = every source
    assert got["n"] == human.sum() and got["target_sources"] == ["human"]
    assert got["accuracy"] == pytest.approx(float((margins[human] > 0).mean()))
    assert got["margin"] == pytest.approx(float(margins[human].mean()), rel=1e-4, abs=1e-5)
    assert set(got["by_source"]) == {"human", "gpt"}
    gpt = got["by_source"]["gpt"]
    assert gpt["accuracy"] == pytest.approx(float((margins[~human] > 0).mean()))
    assert gpt["margin"] == pytest.approx(float(margins[~human].mean()), rel=1e-4, abs=1e-5)
    lo, hi = got["accuracy_ci95"]
    assert lo <= got["accuracy"] <= hi

    # reference-free (SimPO): beta * logp / |y|, |y| counting the EOS token
    free = implicit_reward_accuracy(
        policy_dir, None, tok, Dataset.from_list(rows), beta=2.0, target_sources=None, bootstrap=0
    )

    def r_free(prompt, completion):
        n = len(tok(prompt + completion + tok.eos_token)["input_ids"]) - len(tok(prompt)["input_ids"])
        return 2.0 * _full_logits_logp(pol, tok, prompt, completion) / n

    m = np.array([r_free(r["prompt"], r["chosen"]) - r_free(r["prompt"], r["rejected"]) for r in rows])
    assert free["n"] == 12 and free["target_sources"] == "all"
    assert free["margin"] == pytest.approx(float(m.mean()), rel=1e-4, abs=1e-5)
    assert free["accuracy"] == pytest.approx(float((m > 0).mean()))


def test_reward_model_accuracy_with_a_tiny_classifier(models):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, _, rm_dir = models
    rows = pair_rows(10, seed=3)
    got = reward_model_accuracy(RewardModel(rm_dir, batch_size=4), Dataset.from_list(rows), bootstrap=100)
    tok, model = (
        AutoTokenizer.from_pretrained(rm_dir),
        AutoModelForSequenceClassification.from_pretrained(rm_dir),
    )

    def score(text):  # independent: one unpadded sequence, the logit at its last token
        with torch.no_grad():
            return model(**tok(text, return_tensors="pt")).logits[0, 0].item()

    margins = np.array([score(r["prompt"] + r["chosen"]) - score(r["prompt"] + r["rejected"]) for r in rows])
    human = np.array([r["source"] == "human" for r in rows])
    assert got["n"] == human.sum()
    assert got["accuracy"] == pytest.approx(float((margins[human] > 0).mean()))
    assert got["margin"] == pytest.approx(float(margins[human].mean()), rel=1e-4, abs=1e-5)
    assert got["by_source"]["gpt"]["accuracy"] == pytest.approx(float((margins[~human] > 0).mean()))
    with pytest.raises(ValueError, match="no row has source in"):
        reward_model_accuracy(RewardModel(rm_dir), Dataset.from_list(rows), target_sources=["nobody"])


def test_win_rate_bootstrap_matches_numpy():
    policy = [1.0, 2.0, 0.0, 5.0, 3.0, 0.1]
    reference = [0.5, 2.0, 1.0, 1.0, 3.05, 0.0]
    r = win_rate_from_scores(policy, reference, tie_margin=0.1, bootstrap=400, seed=3)
    # d = [0.5, 0, -1, 4, -0.05, 0.1]: wins 0, 3; ties 1, 4, 5 (|d| <= 0.1); loss 2
    assert (r["win"], r["tie"], r["lose"]) == pytest.approx((2 / 6, 3 / 6, 1 / 6))
    assert r["win_rate"] == pytest.approx(2 / 6 + 0.5 * 3 / 6)
    wins = np.array([1.0, 0, 0, 1, 0, 0])
    ties = np.array([0.0, 1, 0, 0, 1, 1])
    rng = np.random.default_rng(3)
    idx = [rng.integers(0, 6, 6) for _ in range(400)]
    w = [wins[i].mean() for i in idx]
    wr = [wins[i].mean() + 0.5 * ties[i].mean() for i in idx]
    assert r["win_ci95"] == pytest.approx(tuple(np.quantile(w, [0.025, 0.975])))
    assert r["win_rate_ci95"] == pytest.approx(tuple(np.quantile(wr, [0.025, 0.975])))
    for k in ("win", "tie", "lose", "win_rate"):
        assert r[f"{k}_ci95"][0] <= r[k] <= r[f"{k}_ci95"][1]


def test_preference_cli_end_to_end(tmp_path, models, capsys):
    policy_dir, ref_dir, rm_dir = models
    data = tmp_path / "heldout.jsonl"
    rows = pair_rows(8, seed=1)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    argv = ["eval", "preference", "--model", policy_dir, "--ref-model", ref_dir, "--dataset", str(data),
            "--reward-model", rm_dir, "--win-rate", "--max-prompts", "3", "--max-new-tokens", "4",
            "--batch-size", "2", "--bootstrap", "50", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["implicit_reward"]["n"] == 4 and result["reward_model"]["n"] == 4  # the human rows
    w = result["win_rate"]
    assert w["n"] == 3 and len(w["examples"]) == 3
    assert w["win"] + w["tie"] + w["lose"] == pytest.approx(1.0)
    assert w["win_ci95"][0] <= w["win"] <= w["win_ci95"][1]
    ex = w["examples"][0]
    assert ex["prompt"] == rows[0]["prompt"]  # pair_rows puts human at even positions
    rm = RewardModel(rm_dir)
    scores = rm.score([ex["prompt"]] * 2, [ex["policy"], ex["reference"]])
    assert scores == pytest.approx([ex["policy_score"], ex["reference_score"]], abs=1e-4)
    assert "win rate (tie = ½)" in (out / "results.md").read_text()

    capsys.readouterr()
    assert main(["eval", "preference", "--model", policy_dir, "--dataset", str(data)]) == 2
    assert capsys.readouterr().err.startswith("dora eval: error: nothing to evaluate")
    assert main(["eval", "preference", "--model", policy_dir, "--ref-model", ref_dir, "--dataset", str(data),
                 "--win-rate"]) == 2  # fmt: skip
    assert capsys.readouterr().err == "dora eval: error: --win-rate needs --reward-model and --ref-model\n"


def test_default_reference_is_the_adapter_base(tmp_path):
    from dora.eval.preference import default_reference

    assert default_reference(str(tmp_path)) is None
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base-7b"}))
    assert default_reference(str(tmp_path)) == "org/base-7b"


def test_console_table_precision_and_labels():
    from dora.eval.cli import _preference_table

    r = {"n": 40, "accuracy": 0.625, "accuracy_ci95": (0.47512, 0.775), "margin": 0.00081,
         "margin_ci95": (0.00051, 0.00123), "target_sources": ["human", "expert"], "by_source": {}}  # fmt: skip
    table = _preference_table({"implicit_reward": r})
    assert "| implicit-reward accuracy (human, expert) | 40 | 0.625 | [0.475, 0.775] |" in table
    # the interval at the estimate's precision (was 0.0008 [0.001, 0.001])
    assert "| implicit-reward margin | 40 | 0.0008 | [0.0005, 0.0012] |" in table
    assert "['human'" not in _preference_table({"implicit_reward": {**r, "target_sources": ["human"]}})


def test_no_warning_about_a_weight_column_evaluation_does_not_use(models, caplog):
    import logging

    from transformers import AutoTokenizer

    policy_dir, ref_dir, _ = models
    rows = [{k: v for k, v in r.items() if k != "dora_weight"} for r in pair_rows(4)]
    with caplog.at_level(logging.WARNING):
        implicit_reward_accuracy(policy_dir, ref_dir, AutoTokenizer.from_pretrained(policy_dir),
                                 Dataset.from_list(rows), bootstrap=0)  # fmt: skip
    assert "dora_weight" not in caplog.text


def test_preference_cli_checks_flags_paths_and_rows_before_loading(tmp_path, capsys, monkeypatch):
    """Out-of-range flags, a mistyped model folder, a reference that a reference-free run would ignore, and bad
    rows: one line each, exit status 2, before any model loads (none exists here: the paths are fake)."""
    data = tmp_path / "heldout.jsonl"
    rows = pair_rows(4, seed=1)
    rows[1]["chosen"] = None
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy").mkdir()
    for name in ("config.json", "tokenizer_config.json"):  # a model folder by its files; nothing loadable
        (tmp_path / "policy" / name).write_text("{}")

    def error(*extra) -> str:
        assert main(["eval", "preference", "--dataset", str(data), *extra]) == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    base = ["--model", "./policy", "--ref-model", "./policy"]
    for flag, value, msg in [("--beta", "0", "--beta must be > 0, got 0.0"),
                             ("--bootstrap", "0", "--bootstrap must be >= 1, got 0"),
                             ("--tie-margin", "-1", "--tie-margin must be >= 0, got -1.0"),
                             ("--max-prompts", "-1", "--max-prompts must be >= 1, got -1"),
                             ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
                             ("--top-p", "1.5", "--top-p must be <= 1, got 1.5")]:  # fmt: skip
        assert error(*base, flag, value) == f"dora eval: error: {msg}"
    assert error("--model", "./polcy", "--ref-model", "./policy").startswith(
        "dora eval: error: model './polcy' not found: no file or folder"
    )
    assert error(*base, "--reference-free") == (
        "dora eval: error: --reference-free uses no reference model: drop --ref-model (only --win-rate uses it then)"
    )
    err = capsys.readouterr()
    assert main(["eval", "preference", "--dataset", str(data), *base]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"eval dataset {data}" in err and "--skip-invalid-rows" in err
    assert "line 2, column 'chosen': missing (null or absent)" in err
