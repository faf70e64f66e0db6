"""DoRATrainer cases for tests/test_deepspeed.py, run in one process or under `accelerate launch` with DeepSpeed
(ZeRO-2 or ZeRO-3 on two CPU processes).

    deepspeed_cases.py MODEL_DIR DATA_JSONL OUT_DIR

Each case trains on a global batch of 8 rows per optimizer step, whatever the process count; rank 0 saves to
OUT_DIR/results.pt per case the logged losses, the parameters after training (gathered from the shards) and the
share of the frozen reference each process holds, and the precomputed reference columns.
"""

import json
import os
import sys

import torch
from datasets import Dataset
from peft import LoraConfig

from dora import DoRAConfig, DoRATrainer

model_dir, data_file, out_dir = sys.argv[1:4]
rows = [json.loads(line) for line in open(data_file)]
world = int(os.environ.get("WORLD_SIZE", "1"))
results = {}


def config(name, **kw):
    base = dict(
        output_dir=os.path.join(out_dir, name), per_device_train_batch_size=8 // world, max_steps=2,
        learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", objective="dora", dro_lambda=0.5,
        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
    )  # fmt: skip
    base.update(kw)
    return DoRAConfig(**base)


def local_share(params) -> float:
    """The share of a model's parameters this process holds (ZeRO-3 keeps 1/N of each in ``ds_tensor``)."""
    full = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    local = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
    return local / max(1, full)


def finish(name, trainer, adapter_only=False):
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # ZeRO-3: gathered (all ranks call it)
    ref = list(trainer.ref_model.parameters()) if trainer.ref_model is not None else []
    if trainer.accelerator.is_main_process:
        params = {k: v.detach().cpu().clone() for k, v in state.items() if not adapter_only or "lora_" in k}
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        results[name] = {"losses": losses, "params": params, "deepspeed": trainer.is_deepspeed_enabled,
                         "ref_local_share": local_share(ref) if ref else None}  # fmt: skip


# objective "dora" over the global batch, the default reference: a frozen copy of the initial policy
t = DoRATrainer(model=model_dir, args=config("copy"), train_dataset=Dataset.from_list(rows))
t.train()
finish("copy", t)

# LoRA: the reference is the policy with its adapter off
lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.05)
t = DoRATrainer(model=model_dir, args=config("lora", learning_rate=0.05), train_dataset=Dataset.from_list(rows),
                peft_config=lora)  # fmt: skip
t.train()
finish("lora", t, adapter_only=True)

# precomputed reference log-probs before train(): each process scores its share of an odd number of rows
for name, peft in (("precompute", None), ("precompute_lora", lora)):
    t = DoRATrainer(model=model_dir, args=config(name, precompute_ref_log_probs=True, objective="mean"),
                    train_dataset=Dataset.from_list(rows[:7]), peft_config=peft)  # fmt: skip
    if t.accelerator.is_main_process:
        results[name] = torch.tensor(t.train_dataset["ref_logps"])
    # then two steps on the column of 8 rows (one global batch): training after the precompute engine
    lr = 0.05 if peft is not None else 0.5
    t = DoRATrainer(model=model_dir, args=config(f"{name}_train", precompute_ref_log_probs=True, learning_rate=lr),
                    train_dataset=Dataset.from_list(rows[:8]), peft_config=peft)  # fmt: skip
    t.train()
    finish(f"{name}_train", t, adapter_only=peft is not None)

if int(os.environ.get("RANK", "0")) == 0:
    torch.save(results, os.path.join(out_dir, "results.pt"))
if torch.distributed.is_initialized():  # a clean teardown: no process aborts at exit
    import deepspeed.comm

    deepspeed.comm.barrier()
    deepspeed.comm.destroy_process_group()
