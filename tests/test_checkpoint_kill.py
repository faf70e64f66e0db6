"""A process killed while a checkpoint is written (os._exit inside the write, as kill -9) leaves a folder that
`--resume_from_checkpoint true` ignores: the run resumes from the last complete checkpoint and ends with the same
parameters as an uninterrupted run (group DRO's weights included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import pair_rows
from safetensors.torch import load_file

from dora.cli import main
from dora.trainer.checkpoint import COMPLETE, STATE_FILE, last_complete_checkpoint


def _argv(model: str, data: str, out: str) -> list[str]:
    return ["train", "--model_name_or_path", model, "--dataset", data, "--output_dir", out,
            "--objective", "group_dro", "--group_dro_eta", "0.5", "--learning_rate", "1e-2",
            "--per_device_train_batch_size", "4", "--max_steps", "6", "--save_steps", "2",
            "--lr_scheduler_type", "constant", "--report_to", "none", "--logging_steps", "1",
            "--disable_tqdm", "true"]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir, one_thread):
    folder = tmp_path_factory.mktemp("kill")
    rows = [dict(r, group="a" if i % 3 else "b") for i, r in enumerate(pair_rows(16))]
    data = folder / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    full = folder / "full"
    assert main(_argv(tiny_model_dir, str(data), str(full))) == 0
    return folder, str(data), load_file(str(full / "model.safetensors")), full


@pytest.mark.parametrize("point", ["before_optimizer", "before_state"])
def test_kill_inside_checkpoint_write_then_resume_is_exact(setup, tiny_model_dir, point, one_thread):
    folder, data, expected, full = setup
    out = folder / point
    env = dict(os.environ, DORA_CHECKPOINT_FAULT=f"{point}@4", OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    res = subprocess.run([sys.executable, "-m", "dora", *_argv(tiny_model_dir, data, str(out))],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert res.returncode == 137, res.stderr[-3000:]
    assert (out / "checkpoint-4").is_dir() and not (out / "checkpoint-4" / COMPLETE).exists()  # half-written
    assert not (out / "model.safetensors").exists()
    assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-2")
    assert main([*_argv(tiny_model_dir, data, str(out)), "--resume_from_checkpoint", "true"]) == 0
    got = load_file(str(out / "model.safetensors"))
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k  # the same parameters, bit for bit
    with open(out / "checkpoint-6" / STATE_FILE) as f, open(full / "checkpoint-6" / STATE_FILE) as g:
        assert json.load(f) == json.load(g)  # group DRO's weights too


def test_explicit_incomplete_checkpoint_is_refused(setup, tiny_model_dir, capsys, tmp_path):
    folder, data, _, full = setup
    ckpt = tmp_path / "run" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    assert main([*_argv(tiny_model_dir, data, str(tmp_path / "run")), "--resume_from_checkpoint", str(ckpt)]) == 2
    assert "incomplete" in capsys.readouterr().err
