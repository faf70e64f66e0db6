"""DeepSpeed ZeRO-3 and ZeRO-2 on two CPU processes (recipes/accelerate_configs/zero3_cpu2.yaml, ZeRO-2 with
`--zero_stage 2`) against one process with the same global batch: objective "dora" with the default frozen-copy
reference (under ZeRO-3 loaded again from the policy's path and sharded by TRL's ``prepare_deepspeed``), LoRA with
the disabled-adapter reference, and the reference log-probs precomputed before training, with and without LoRA.
One `accelerate launch` per stage runs every case (tests/scripts/deepspeed_cases.py)."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from conftest import accelerate_launch, assert_same_params, launch_cases

HERE = os.path.dirname(__file__)
SCRIPT = os.path.join(HERE, "scripts", "deepspeed_cases.py")
CONFIG = os.path.join(HERE, "..", "recipes", "accelerate_configs", "zero3_cpu2.yaml")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    launchers = {
        "one": [sys.executable],
        "zero3": accelerate_launch(CONFIG),
        "zero2": accelerate_launch(CONFIG, "--zero_stage", "2"),
    }
    return launch_cases(SCRIPT, launchers, tiny_model_dir, tmp_path_factory.mktemp("deepspeed"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero3", "zero2"])
def test_deepspeed_two_processes_equal_one(runs, tiny_model_dir, stage):
    from transformers import AutoModelForCausalLM

    one, two = runs["one"]["copy"], runs[stage]["copy"]
    assert two["deepspeed"] and not one["deepspeed"]
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-6)  # step 2: reference != policy
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert max(float((one["params"][k] - start[k]).abs().max()) for k in start) > 1e-3  # the steps moved it
    assert_same_params(one["params"], two["params"], rtol=1e-5, atol=1e-7)
    # ZeRO-3 shards the frozen reference (each of 2 processes holds half); ZeRO-2 keeps it whole (as TRL)
    assert two["ref_local_share"] == pytest.approx(0.5 if stage == "zero3" else 1.0, abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["zero3", "zero2"])
def test_deepspeed_lora_and_precomputed_reference(runs, stage):
    one, two = runs["one"], runs[stage]
    assert two["lora"]["losses"] == pytest.approx(one["lora"]["losses"], rel=1e-6)
    assert_same_params(one["lora"]["params"], two["lora"]["params"], rtol=1e-5, atol=1e-7)
    assert one["precompute"].shape == (7, 2)  # 7 rows: shares of 4 and 3 (+1 repeated) on two processes
    torch.testing.assert_close(two["precompute"], one["precompute"], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(two["precompute_lora"], one["precompute_lora"], rtol=1e-6, atol=1e-5)
    for name in ("precompute_train", "precompute_lora_train"):  # training on the column afterwards
        assert two[name]["losses"] == pytest.approx(one[name]["losses"], rel=1e-6)
        assert_same_params(one[name]["params"], two[name]["params"], rtol=1e-5, atol=1e-7)
