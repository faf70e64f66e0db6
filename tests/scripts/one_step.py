"""One optimizer step of DoRATrainer, run alone or under `accelerate launch`; saves the parameters."""

import json
import sys

import torch
from datasets import Dataset

from dora import DoRAConfig, DoRATrainer

model_dir, data_file, out_file, batch, objective = sys.argv[1:6]
rows = [json.loads(line) for line in open(data_file)]
args = DoRAConfig(
    output_dir=out_file + ".run",
    per_device_train_batch_size=int(batch),
    max_steps=1,
    learning_rate=0.5,
    optim="sgd",
    lr_scheduler_type="constant",
    objective=objective,
    dro_lambda=0.5,
    report_to=[],
    save_strategy="no",
    logging_steps=1,
    disable_tqdm=True,
    seed=0,
)
trainer = DoRATrainer(model=model_dir, args=args, train_dataset=Dataset.from_list(rows))
trainer.train()
if trainer.accelerator.is_main_process:
    state = {
        k: v.detach().cpu() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()
    }
    torch.save({"params": state, "loss": trainer.state.log_history[0]["loss"]}, out_file)
trainer.accelerator.wait_for_everyone()
if torch.distributed.is_initialized():  # a clean gloo teardown: no process aborts at exit
    torch.distributed.destroy_process_group()
