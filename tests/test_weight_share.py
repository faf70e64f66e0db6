"""``source/<name>/weight_share``: each source's share of the calibration weight h over a logging window, a ratio
of sums (a row's weight split evenly over its responses' sources), for training and evaluation."""

from __future__ import annotations

from itertools import combinations

import pytest
from conftest import pair_rows, trainer_config, write_jsonl

from dora import DoRATrainer
from dora.data import load_rows

SOURCES = [("human", "human"), ("human", "human"), ("human", "gpt"), ("gpt", "gpt"), ("human", "human"),
           ("gpt", "human")]  # fmt: skip
WEIGHTS = [0.25, 0.5, 1.5, 3.0, 0.75, 2.2]


def _rows() -> list[dict]:
    return [dict(r, chosen_source=c, rejected_source=rj, dora_weight=h)
            for r, (c, rj), h in zip(pair_rows(6), SOURCES, WEIGHTS)]  # fmt: skip


def _share(rows: list[dict]) -> dict[str, float]:
    """By hand, in float64: half of each row's weight to its chosen response's source, half to its rejected's."""
    total = sum(float(r["dora_weight"]) for r in rows)
    names = {r[k] for r in rows for k in ("chosen_source", "rejected_source")}
    return {s: sum(float(r["dora_weight"]) * ((r["chosen_source"] == s) + (r["rejected_source"] == s)) / 2
                   for r in rows) / total for s in names}  # fmt: skip


def _trainer(tmp_path, model_dir, **kw) -> DoRATrainer:
    data = load_rows(write_jsonl(tmp_path / "rows.jsonl", _rows()))
    return DoRATrainer(model=model_dir, args=trainer_config(tmp_path, **kw), train_dataset=data, eval_dataset=data)


def _train_and_check(t, want: dict) -> dict:
    """Train, then check the first logged window's and the evaluation's share per source against ``want``."""
    t.train()
    logs = t.state.log_history[0]
    evals = t.evaluate()
    for source, share in want.items():
        assert logs[f"source/{source}/weight_share"] == pytest.approx(share, rel=1e-6)
        assert evals[f"eval_source/{source}/weight_share"] == pytest.approx(share, rel=1e-6)
    return logs


def test_weight_share_of_one_batch(tmp_path, tiny_model_dir, one_thread):
    rows, want = _rows(), _share(_rows())
    assert sum(want.values()) == pytest.approx(1.0, abs=1e-12)
    # the wrong shares differ from the right one: per response counted, per row counted, mean weight per source
    assert want["human"] != pytest.approx(8 / 12, abs=0.05) and want["human"] != pytest.approx(4 / 6, abs=0.05)
    human_rows = [r["dora_weight"] for r in rows if r["chosen_source"] == "human"]
    assert want["human"] != pytest.approx(sum(human_rows) / len(human_rows), abs=0.05)
    t = _trainer(tmp_path, tiny_model_dir, per_device_train_batch_size=6, per_device_eval_batch_size=6)
    logs = _train_and_check(t, want)
    assert sum(logs[f"source/{s}/weight_share"] for s in want) == pytest.approx(1.0, rel=1e-6)


def test_weight_share_is_a_ratio_of_sums_over_the_window(tmp_path, tiny_model_dir, one_thread):
    rows, want = _rows(), _share(_rows())
    # over a window of two batches of 3 rows (one epoch, in any order) the ratio of sums is the whole data's
    # share; the mean of the two batches' shares is not, whichever 3 rows the first batch holds
    for first in combinations(range(6), 3):
        second = [i for i in range(6) if i not in first]
        halves = [_share([rows[i] for i in part]).get("human", 0.0) for part in (first, second)]
        assert abs(sum(halves) / 2 - want["human"]) > 1e-3, first
    t = _trainer(tmp_path, tiny_model_dir, per_device_train_batch_size=3, per_device_eval_batch_size=3,
                 max_steps=2, logging_steps=2)  # fmt: skip
    _train_and_check(t, want)
