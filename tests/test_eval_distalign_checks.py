"""`dora eval distalign`: predictions that cover only part of the questions, a run's own predictions.jsonl read back,
prompts longer than the model's context, and the eval margins' printed digits."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from dora.cli import main
from dora.eval.cli import _num

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "distalign", "questions.jsonl")


def _predictions(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_predictions_written_by_output_read_back(tmp_path, capsys):
    """Scored once from hand-written predictions, then from the predictions.jsonl that run wrote: the same TVDs;
    without --allow-partial a file covering 1 of 2 questions is refused, naming how many are missing."""
    items = [json.loads(line) for line in open(FIX)]
    dists = [{"A": 0.6, "B": 0.4}, {"A": 0.2, "B": 0.3, "C": 0.5}]
    rows = [{"dataset": it["dataset"], "question": it["qid"], "group": it["group"], "method": "verbalize",
             "steering": "persona", "distribution": d} for it, d in zip(items, dists)]  # fmt: skip
    _predictions(tmp_path / "p.jsonl", rows)
    base = ["eval", "distalign", "--data", FIX, "--bootstrap", "20", "--methods", "verbalize"]
    assert main([*base, "--predictions", str(tmp_path / "p.jsonl"), "--output", str(tmp_path / "a")]) == 0
    again = ["--predictions", str(tmp_path / "a" / "predictions.jsonl"), "--output", str(tmp_path / "b")]
    assert main([*base, *again]) == 0
    first, second = (json.loads((tmp_path / x / "results.json").read_text()) for x in "ab")
    # TVD of each item by hand: 0.5 * sum |p - truth|; truths from the fixture (coin 0.7/0.3, die uniform)
    expected = (0.5 * (0.1 + 0.1) + 0.5 * (abs(0.2 - 1 / 3) + abs(0.3 - 1 / 3) + abs(0.5 - 1 / 3))) / 2
    for report in (first, second):
        assert report["methods"]["verbalize"]["tvd"] == pytest.approx(expected, abs=1e-9)
    _predictions(tmp_path / "one.jsonl", rows[:1])
    capsys.readouterr()
    assert main([*base, "--predictions", str(tmp_path / "one.jsonl")]) == 2
    assert "1 of 2 loaded questions have no verbalize/persona prediction" in capsys.readouterr().err
    assert main([*base, "--predictions", str(tmp_path / "one.jsonl"), "--allow-partial"]) == 0
    # the earlier results are not replaced without --overwrite-output-dir
    before = (tmp_path / "a" / "results.json").read_bytes()
    assert main([*base, "--predictions", str(tmp_path / "p.jsonl"), "--output", str(tmp_path / "a")]) == 2
    assert (tmp_path / "a" / "results.json").read_bytes() == before
    assert main([*base, "--predictions", str(tmp_path / "p.jsonl"), "--output", str(tmp_path / "a"),
                 "--overwrite-output-dir"]) == 0  # fmt: skip


def test_prompts_longer_than_the_context_refused_before_the_weights_load(tmp_path, tiny_model_dir, capsys,
                                                                          monkeypatch):  # fmt: skip
    import transformers

    model = tmp_path / "short"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 16}))

    def refuse(cls, *a, **k):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    argv = ["eval", "distalign", "--model", str(model), "--data", FIX, "--methods", "logprobs", "--steering", "none"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "question 'coin'" in err and "longer than the model's context of 16 tokens" in err


@pytest.mark.parametrize("x,digits,text", [(4e-5, 4, "4.000e-05"), (0.12345, 4, "0.1235"), (0.0, 4, "0.0000"),
                                           (-2e-6, 3, "-2.00e-06"), (0.0004, 3, "4.00e-04")])  # fmt: skip
def test_small_margins_keep_their_digits(x, digits, text):
    assert _num(x, digits) == text


@pytest.mark.parametrize("settings,match", [({"beta": float("nan")}, "beta must be a finite number"),
                                            ({"beta": 0}, "beta must be > 0"),
                                            ({"bootstrap": -1}, "bootstrap must be >= 0"),
                                            ({"batch_size": 0}, "batch_size must be >= 1")])  # fmt: skip
def test_python_api_refuses_settings_before_any_model_loads(settings, match):
    """implicit_reward_accuracy checks its settings first: the model paths here do not exist."""
    from dora.eval.preference import implicit_reward_accuracy

    with pytest.raises(ValueError, match=match):
        implicit_reward_accuracy("no/such/policy", "no/such/ref", None, None, **settings)


def test_win_rate_refuses_nan_scores_and_settings():
    from dora.eval.preference import win_rate_from_scores

    with pytest.raises(ValueError, match="prompt 2 has a NaN or infinite score"):
        win_rate_from_scores([1.0, float("nan")], [0.0, 0.0], bootstrap=0)
    with pytest.raises(ValueError, match="tie_margin must be a finite number"):
        win_rate_from_scores([1.0], [0.0], tie_margin=float("inf"))
    # the shares by hand: +1 win, 0 tie (within the margin 0.5), -1 loss
    r = win_rate_from_scores([2.0, 1.2, 0.0], [1.0, 1.0, 1.0], tie_margin=0.5, bootstrap=0)
    assert (r["win"], r["tie"], r["lose"], r["win_rate"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3, 0.5))
