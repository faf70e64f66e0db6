"""Two DoRATrainer steps reporting to tensorboard, wandb (offline) and trackio (local) at once, for
tests/test_trackers.py. The caller points WANDB_DIR, TRACKIO_DIR and TENSORBOARD_LOGGING_DIR at a temporary folder.

    trackers_run.py MODEL_DIR DATA_JSONL OUT_DIR

Writes OUT_DIR/log_history.json (rank 0's logged metrics)."""

import json
import os
import sys

from datasets import Dataset

from dora import DoRAConfig, DoRATrainer

model_dir, data_file, out_dir = sys.argv[1:4]
rows = [json.loads(line) for line in open(data_file)]
args = DoRAConfig(
    output_dir=out_dir, per_device_train_batch_size=4, max_steps=2, learning_rate=0.05, optim="sgd",
    report_to=["tensorboard", "wandb", "trackio"], project="dora-test", run_name="two-steps", logging_steps=1,
    save_strategy="no", disable_tqdm=True, seed=0,
)  # fmt: skip
trainer = DoRATrainer(model=model_dir, args=args, train_dataset=Dataset.from_list(rows))
trainer.train()
with open(os.path.join(out_dir, "log_history.json"), "w") as f:
    json.dump(trainer.state.log_history, f)
