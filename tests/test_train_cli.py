"""`dora train`: YAML recipe + overrides, single process and under accelerate with two CPU processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import pair_rows

from dora.cli import main
from dora.train_cli import load_recipe, parse_overrides

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.fixture
def recipe(tmp_path, tiny_model_dir):
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in pair_rows(16)))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "model_name_or_path": tiny_model_dir, "dataset": str(data), "objective": "dora",
        "learning_rate": "1e-3", "per_device_train_batch_size": 4, "max_steps": 5, "report_to": [],
        "logging_steps": 1,
        "save_strategy": "no", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    }))  # fmt: skip
    return path


def test_overrides_parse_as_yaml_values():
    assert parse_overrides(["--a", "1e-5", "--b=x", "--flag", "--lst", "[1, 2]"]) == {
        "a": 1e-5,
        "b": "x",
        "flag": True,
        "lst": [1, 2],
    }


def test_recipe_keys_and_errors(recipe):
    cfg, extra = load_recipe(str(recipe), {"max_steps": 2})
    assert cfg["max_steps"] == 2 and cfg["learning_rate"] == 1e-3 and extra["lora"]["r"] == 4
    with pytest.raises(SystemExit, match="unknown key"):
        load_recipe(str(recipe), {"learning_rat": 1.0})


def test_train_command_with_lora(recipe, tmp_path):
    out = tmp_path / "out"
    assert main(["train", "--config", str(recipe), "--output_dir", str(out), "--max_steps", "2"]) == 0
    assert (out / "adapter_model.safetensors").exists() and (out / "tokenizer.json").exists()


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(recipe, tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    out = tmp_path / "ddp"
    cmd = [
        accelerate,
        "launch",
        "--config_file",
        os.path.join(ROOT, "recipes", "accelerate_configs", "cpu2.yaml"),
        "-m",
        "dora",
        "train",
        "--config",
        str(recipe),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
    ]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "adapter_model.safetensors").exists()
    # 16 rows, 2 processes x 4 rows a step: 2 steps are one epoch (one process would be at 0.5)
    assert "'epoch': '1'" in res.stdout, res.stdout[-2000:]
