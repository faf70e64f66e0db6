"""DoRATrainer cases for tests/test_deepspeed.py, run in one process or under `accelerate launch` with DeepSpeed
(ZeRO-2 or ZeRO-3 on two CPU processes).

    deepspeed_cases.py MODEL_DIR DATA_JSONL OUT_DIR

Each case trains on a global batch of 8 rows per optimizer step, whatever the process count; rank 0 saves to
OUT_DIR/results.pt per case the logged losses, the parameters after training (gathered from the shards) and the
share of the frozen reference each process holds, and the precomputed reference columns.
The command line, each case's config and what is recorded come from cases_common.py.
"""


import torch
from cases_common import config, finish, model_dir, results, rows, save_and_exit
from datasets import Dataset
from peft import LoraConfig

from dora import DoRATrainer

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

save_and_exit(deepspeed=True)
