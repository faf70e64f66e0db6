"""What reaches the trackers, read back from what they wrote: a two-step run reporting to tensorboard, wandb
(offline) and trackio (local store) at once. Each holds the logged `rewards/margins` and `dora/ess` of both
steps and a `dora/weights` histogram per step whose counts and sums are those of the rows the steps saw."""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys

import pytest
from conftest import pair_rows

HERE = os.path.dirname(__file__)
ROWS = pair_rows(8)  # 2 steps x 4 rows: one epoch, every row seen once


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("trackers")
    data = d / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS))
    env = {k: v for k, v in os.environ.items() if k != "WANDB_DISABLED"}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(d / "wandb"), WANDB_SILENT="true", TRACKIO_DIR=str(d / "trackio"),
               TENSORBOARD_LOGGING_DIR=str(d / "tb"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")  # fmt: skip
    (d / "wandb").mkdir()
    script = os.path.join(HERE, "scripts", "trackers_run.py")
    res = subprocess.run([sys.executable, script, tiny_model_dir, str(data), str(d / "out")], capture_output=True,
                         text=True, env=env, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    history = json.loads((d / "out" / "log_history.json").read_text())
    logged = {h["step"]: h for h in history if "loss" in h}
    assert sorted(logged) == [1, 2]
    return d, logged


def _check_binned(hist: dict[int, tuple[list, list]]):
    """Per step (bin counts, bin edges) of a tracker's binned histogram: 4 rows a step, the edges spanning the
    weights seen, and the bin midpoints summing to the weights' sum within half a bin per row."""
    weights = [r["dora_weight"] for r in ROWS]
    assert sorted(hist) == [1, 2] and [sum(c) for c, _ in hist.values()] == [4, 4]
    assert min(b[0] for _, b in hist.values()) == pytest.approx(min(weights), rel=1e-5)
    assert max(b[-1] for _, b in hist.values()) == pytest.approx(max(weights), rel=1e-5)
    mid = sum(n * (a + b) / 2 for c, e in hist.values() for n, a, b in zip(c, e, e[1:]))
    half_bin = max((e[-1] - e[0]) / (len(e) - 1) for _, e in hist.values()) / 2
    assert mid == pytest.approx(sum(weights), abs=len(weights) * half_bin + 1e-6)


def test_tensorboard_event_file(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    d, logged = run
    files = glob.glob(str(d / "tb" / "events.out.tfevents.*"))
    assert len(files) == 1
    ea = EventAccumulator(files[0], size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    for name in ("rewards/margins", "dora/ess", "dora/weight_mean"):
        events = ea.Scalars(f"train/{name}")
        assert [e.step for e in events] == [1, 2], name  # once per step
        assert [e.value for e in events] == pytest.approx([logged[1][name], logged[2][name]], rel=1e-6), name
    assert logged[2]["rewards/margins"] != 0.0  # the policy moved at step 1
    hist = {e.step: e.histogram_value for e in ea.Histograms("train/dora/weights")}
    weights = [r["dora_weight"] for r in ROWS]
    assert sorted(hist) == [1, 2] and [h.num for h in hist.values()] == [4, 4]
    assert sum(h.sum for h in hist.values()) == pytest.approx(sum(weights), rel=1e-5)  # every row once
    assert min(h.min for h in hist.values()) == pytest.approx(min(weights), rel=1e-5)
    assert max(h.max for h in hist.values()) == pytest.approx(max(weights), rel=1e-5)


def _wandb_records(path):
    """Records of a .wandb transaction log (LevelDB log framing: 32 KiB blocks, 7-byte chunk headers), decoded
    with wandb's own protobuf schema."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of a FIRST/MIDDLE/LAST sequence
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def test_wandb_offline_run(run):
    d, logged = run
    files = glob.glob(str(d / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1
    rows = []
    for r in _wandb_records(files[0]):
        if r.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item})
    for name in ("rewards/margins", "dora/ess"):
        got = [(row["train/global_step"], row[f"train/{name}"]) for row in rows if f"train/{name}" in row]
        assert [s for s, _ in got] == [1, 2], name
        assert [v for _, v in got] == pytest.approx([logged[1][name], logged[2][name]], rel=1e-6), name
    hist = {row["train/global_step"]: row for row in rows if "train/dora/weights/values" in row}
    assert all(row["train/dora/weights/_type"] == "histogram" for row in hist.values())
    _check_binned({s: (h["train/dora/weights/values"], h["train/dora/weights/bins"]) for s, h in hist.items()})


def test_trackio_local_store(run, monkeypatch):
    from trackio import sqlite_storage

    d, logged = run
    monkeypatch.setattr(sqlite_storage, "TRACKIO_DIR", d / "trackio")
    assert sqlite_storage.SQLiteStorage.get_runs("dora-test") == ["two-steps"]
    rows = sqlite_storage.SQLiteStorage.get_logs("dora-test", "two-steps")
    for name in ("rewards/margins", "dora/ess"):
        got = [(row["train/global_step"], row[f"train/{name}"]) for row in rows if f"train/{name}" in row]
        assert [s for s, _ in got] == [1, 2], name
        assert [v for _, v in got] == pytest.approx([logged[1][name], logged[2][name]], rel=1e-6), name
    hist = {row["train/global_step"]: row["train/dora/weights"] for row in rows if "train/dora/weights" in row}
    assert all(h["_type"] == "trackio.histogram" for h in hist.values())
    _check_binned({s: (h["values"], h["bins"]) for s, h in hist.items()})
