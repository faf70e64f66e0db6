"""DoRATrainer cases for tests/test_fsdp.py, run in one process or under `accelerate launch` (FSDP2 on CPU).

    fsdp_cases.py MODEL_DIR DATA_JSONL OUT_DIR

Each case trains on a global batch of 8 rows per optimizer step, whatever the process count, and rank 0 saves
what it saw to OUT_DIR/results.pt: per case the logged losses and the parameters after training (gathered from
the shards), and the precomputed reference column.
The command line, each case's config and what is recorded come from cases_common.py.
"""

import os

import torch
from cases_common import config, finish, model_dir, out_dir, results, rows, save_and_exit, world
from datasets import Dataset
from peft import LoraConfig

from dora import DoRATrainer

# objective "dora" over the global batch, 2 accumulation steps, a frozen-copy reference (step 2: ref != policy)
for acc in ("micro_batch", "full"):
    t = DoRATrainer(model=model_dir, args=config(acc, per_device_train_batch_size=4 // world,
                                                  gradient_accumulation_steps=2, dro_accumulation=acc),
                    train_dataset=Dataset.from_list(rows))  # fmt: skip
    t.train()
    finish(acc, t)

# RPO's "sft" term beside the sigmoid loss: its token mean is over the global batch, as on one process
t = DoRATrainer(model=model_dir, args=config("sft", loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0]),
                train_dataset=Dataset.from_list(rows))  # fmt: skip
t.train()
finish("sft", t)

# LoRA: the reference is the sharded policy with its adapter off
lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.05)
t = DoRATrainer(model=model_dir, args=config("lora", learning_rate=0.05), train_dataset=Dataset.from_list(rows),
                peft_config=lora)  # fmt: skip
t.train()
finish("lora", t, adapter_only=True)

# precomputed reference log-probs: each process computes its share of an odd number of rows
t = DoRATrainer(model=model_dir, args=config("pre", precompute_ref_log_probs=True, objective="mean"),
                train_dataset=Dataset.from_list(rows[:7]))  # fmt: skip
if t.accelerator.is_main_process:
    results["precompute"] = torch.tensor(t.train_dataset["ref_logps"])
t = DoRATrainer(model=model_dir, args=config("pre_lora", precompute_ref_log_probs=True, objective="mean"),
                train_dataset=Dataset.from_list(rows[:7]), peft_config=lora)  # fmt: skip
if t.accelerator.is_main_process:
    results["precompute_lora"] = torch.tensor(t.train_dataset["ref_logps"])

if world > 1:  # checkpoint and resume under FSDP2 (AdamW: the optimizer state is sharded too), trackers on
    kw = dict(optim="adamw_torch", learning_rate=1e-2, save_strategy="steps", save_steps=1, report_to=["tensorboard"])
    full = DoRATrainer(model=model_dir, args=config("ckpt", **kw), train_dataset=Dataset.from_list(rows))
    full.train()
    finish("uninterrupted", full)
    full.save_model(os.path.join(out_dir, "saved"))
    resumed = DoRATrainer(model=model_dir, args=config("resumed", **{**kw, "report_to": []}),
                          train_dataset=Dataset.from_list(rows))  # fmt: skip
    resumed.train(resume_from_checkpoint=os.path.join(out_dir, "ckpt", "checkpoint-1"))
    finish("resumed", resumed)

save_and_exit()
