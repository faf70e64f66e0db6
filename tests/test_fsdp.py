"""FSDP2 on two CPU processes (recipes/accelerate_configs/fsdp_cpu2.yaml) against one process with the same global
batch: objective "dora" with both accumulation modes and a frozen reference sharded like the policy, LoRA with the
disabled-adapter reference inside the sharded model, precomputed reference log-probs split across the processes,
a checkpoint resumed to the uninterrupted run's parameters, a saved model that `from_pretrained` loads, and
tensorboard written by rank 0 once per step. One `accelerate launch` runs every case (tests/scripts/fsdp_cases.py)."""

from __future__ import annotations

import glob
import os
import sys

import pytest
import torch
from conftest import accelerate_launch, assert_same_params, launch_cases, pair_rows

HERE = os.path.dirname(__file__)
SCRIPT = os.path.join(HERE, "scripts", "fsdp_cases.py")
CONFIG = os.path.join(HERE, "..", "recipes", "accelerate_configs", "fsdp_cpu2.yaml")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("fsdp")
    out = launch_cases(SCRIPT, {"one": [sys.executable], "two": accelerate_launch(CONFIG)}, tiny_model_dir, d)
    return d, out["one"], out["two"]


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", ["micro_batch", "full"])
def test_fsdp2_two_processes_equal_one(runs, tiny_model_dir, accumulation):
    from transformers import AutoModelForCausalLM

    _, one, two = runs
    a, b = one[accumulation], two[accumulation]
    assert b["fsdp"] and not a["fsdp"]
    assert a["ref_local_share"] == 1.0 and b["ref_local_share"] < 0.6  # each process holds about half the ref
    assert b["losses"] == pytest.approx(a["losses"], rel=1e-6)  # step 2: reference != policy
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert max(float((a["params"][k] - start[k]).abs().max()) for k in start) > 1e-3  # the steps moved it
    assert_same_params(a["params"], b["params"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fsdp2_accumulation_modes_differ(runs):
    """micro_batch and full are different objectives: the test above would not tell them apart otherwise."""
    _, one, _ = runs
    assert one["micro_batch"]["losses"][1] != pytest.approx(one["full"]["losses"][1], rel=1e-4)


@pytest.mark.slow
def test_fsdp2_lora(runs):
    _, one, two = runs
    a, b = one["lora"], two["lora"]
    assert b["fsdp"] and a["params"] and all("lora_" in k for k in a["params"])
    assert b["losses"] == pytest.approx(a["losses"], rel=1e-6)
    assert a["losses"][1] != pytest.approx(a["losses"][0], rel=1e-4)  # the adapter moved away from the reference
    assert_same_params(a["params"], b["params"], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_fsdp2_sft_term_is_a_global_token_mean(runs):
    """loss_type ["sigmoid", "sft"]: the "sft" NLL is divided by the global batch's chosen tokens, so two
    processes with 4 rows each equal one with 8 (a per-process token mean would not, rows differing in length)."""
    _, one, two = runs
    assert two["sft"]["losses"] == pytest.approx(one["sft"]["losses"], rel=1e-6)
    assert_same_params(one["sft"]["params"], two["sft"]["params"], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_fsdp2_precomputed_reference_split_across_processes(runs):
    _, one, two = runs
    assert one["precompute"].shape == (7, 2)  # 7 rows: shares of 4 and 3 (+1 repeated) on two processes
    torch.testing.assert_close(two["precompute"], one["precompute"], rtol=1e-6, atol=1e-5)
    # with LoRA: one process scores with the adapter disabled, FSDP2 with a sharded copy of the base
    torch.testing.assert_close(two["precompute_lora"], one["precompute_lora"], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(two["precompute_lora"], two["precompute"], rtol=1e-6, atol=1e-5)


@pytest.mark.slow
def test_fsdp2_checkpoint_resume_and_from_pretrained(runs):
    from transformers import AutoModelForCausalLM

    d, _, two = runs
    full, resumed = two["uninterrupted"], two["resumed"]
    assert os.path.exists(d / "two" / "ckpt" / "checkpoint-1" / "trainer_state.json")
    assert_same_params(full["params"], resumed["params"], rtol=0, atol=1e-7)
    saved = AutoModelForCausalLM.from_pretrained(d / "two" / "saved").state_dict()
    assert_same_params({k: v for k, v in full["params"].items() if k in saved}, saved, rtol=0, atol=0)
    assert set(full["params"]) - set(saved) <= {"lm_head.weight"}  # tied to the embeddings


@pytest.mark.slow
def test_fsdp2_tracker_written_once_per_step_by_rank_0(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    d, _, two = runs
    files = glob.glob(str(d / "two" / "ckpt" / "runs" / "*" / "events.out.tfevents.*"))
    assert len(files) == 1  # one writer: rank 0
    ea = EventAccumulator(files[0], size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    for tag in ("train/loss", "train/rewards/margins", "train/dora/ess"):
        assert [e.step for e in ea.Scalars(tag)] == [1, 2], tag
    assert [e.value for e in ea.Scalars("train/loss")] == pytest.approx(two["uninterrupted"]["losses"], rel=1e-6)
    hist = ea.Histograms("train/dora/weights")
    assert [e.step for e in hist] == [1, 2] and [e.histogram_value.num for e in hist] == [8, 8]
    weights = [r["dora_weight"] for r in pair_rows(16)]
    assert sum(e.histogram_value.sum for e in hist) == pytest.approx(sum(weights), rel=1e-5)  # one epoch
