"""The GPU check's FSDP2 / DeepSpeed ZeRO-3 smoke steps, run under ``accelerate launch`` (scripts/gpu_check.py writes
the accelerate config: FSDP2 or ZeRO-3, bf16, one process on a GPU; two CPU processes with ``--smoke-cpu``).

    accelerate launch --config_file CFG scripts/gpu_smoke.py ASSETS_FOLDER RESULT_JSON

On the assets of scripts/gpu_bench.py (a tiny Qwen2 and its rows): DoRATrainer, objective "dora", full fine-tuning
(the frozen reference copy sharded like the policy), two AdamW steps with a checkpoint after each; then a second
trainer resumed from checkpoint-1 must reach the uninterrupted run's parameters, and the saved model's weights
(safetensors) must be the gathered parameters. Rank 0 writes what it saw and one boolean per check.
"""

import gc
import glob
import json
import math
import os
import sys
import tempfile

import torch
from datasets import Dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gpu_bench import load_tokenizer  # noqa: E402

from dora import DoRAConfig, DoRATrainer  # noqa: E402

folder, result_file = sys.argv[1:3]
world = int(os.environ.get("WORLD_SIZE", "1"))
rows = json.load(open(os.path.join(folder, "rows.json")))[:16]


def trainer(name: str) -> DoRATrainer:
    out = os.path.join(os.environ["GPU_SMOKE_DIR"], name)  # one folder for every rank
    args = DoRAConfig(
        output_dir=out,
        per_device_train_batch_size=8 // world,
        max_steps=2,
        learning_rate=1e-2,
        optim="adamw_torch",
        lr_scheduler_type="constant",
        objective="dora",
        report_to=[],
        save_strategy="steps",
        save_steps=1,
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        bf16=torch.cuda.is_available(),
        max_length=64,
    )
    return DoRATrainer(
        model=folder, args=args, train_dataset=Dataset.from_list(rows), processing_class=load_tokenizer(folder)
    )


def sharded(params) -> bool:
    """FSDP2 keeps parameters as DTensors, ZeRO-3 as partitioned tensors with ``ds_tensor``."""
    from torch.distributed.tensor import DTensor

    params = list(params)
    return bool(params) and all(isinstance(p, DTensor) or hasattr(p, "ds_tensor") for p in params)


def gathered(t: DoRATrainer) -> dict:
    state = t.accelerator.get_state_dict(t.model_wrapped)  # every rank takes part in the gather
    return {k: v.detach().float().cpu() for k, v in (state or {}).items()}


def read_weights(path: str) -> dict:
    """A saved model's weights as written (safetensors), read on rank 0 alone: ``from_pretrained`` under ZeRO-3
    would partition them, a collective the other ranks never join."""
    from safetensors.torch import load_file

    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {path}")
    return {k: v.float() for f in files for k, v in load_file(f).items()}


def mean_diff(a: dict, b: dict) -> float:
    """Mean |a - b| over every parameter of ``a`` (a mean, so that a few bf16 rounding flips do not count)."""
    total = sum(float((a[k] - b[k]).abs().sum()) for k in a)
    return total / sum(a[k].numel() for k in a)


os.environ.setdefault("GPU_SMOKE_DIR", tempfile.mkdtemp(prefix="gpu_smoke_"))
full = trainer("full")
ref_sharded = sharded(full.ref_model.parameters()) if full.ref_model is not None else False
full.train()
policy_sharded = sharded(full.model_wrapped.parameters()) or sharded(full.model.parameters())
final = gathered(full)
saved = os.path.join(full.args.output_dir, "saved")
full.save_model(saved)
resumed = trainer("resumed")
resumed.train(resume_from_checkpoint=os.path.join(full.args.output_dir, "checkpoint-1"))
again = gathered(resumed)

if full.accelerator.is_main_process:
    start, loaded = read_weights(folder), read_weights(saved)
    losses = [h["loss"] for h in full.state.log_history if "loss" in h]
    keys = [k for k in final if k in start and k in loaded]
    final = {k: final[k] for k in keys}
    moved = mean_diff(final, start)
    info = {
        "engine": "fsdp" if full.is_fsdp_enabled else "deepspeed" if full.is_deepspeed_enabled else "none",
        "wrapped_type": type(full.model_wrapped).__name__,
        "world_size": world,
        "device": str(full.accelerator.device),
        "losses": losses,
        "moved": moved,
        "resumed_diff": mean_diff(final, again),
        "saved_diff": mean_diff(final, loaded),
        "mean_abs_param": mean_diff(final, {k: torch.zeros_like(v) for k, v in final.items()}),
    }
    info["checks"] = {
        "wrapped": info["engine"] != "none" and policy_sharded,
        "reference_sharded": ref_sharded,
        "losses_finite": len(losses) == 2 and all(math.isfinite(x) for x in losses),
        "checkpoint_saved": os.path.isdir(os.path.join(full.args.output_dir, "checkpoint-1")),
        "resumed_matches": moved > 0 and info["resumed_diff"] <= 0.1 * moved,  # a lost step would leave ~moved / 2
        "saved_model_matches": bool(keys) and info["saved_diff"] <= 0.005 * info["mean_abs_param"],  # bf16 rounding
    }
    with open(result_file, "w") as f:
        json.dump(info, f, indent=1)

del full, resumed
gc.collect()  # the sharded modules, freed while the process group still lives
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
