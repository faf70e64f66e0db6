"""Stage 2: DPO losses inside the DoRA objective, with LoRA.

    python examples/train.py Qwen/Qwen2.5-0.5B-Instruct classified/data.jsonl policy/
    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml examples/train.py MODEL DATA OUT
"""

import sys

from datasets import load_dataset
from peft import LoraConfig

from dora import DoRAConfig, DoRATrainer

model, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
args = DoRAConfig(
    output_dir=out,
    loss_type="sigmoid",  # any per-sample loss: "ipo", "robust", "simpo", ...
    objective="dora",  # "mean" for the DPO baseline
    beta=0.1,
    dro_lambda=1.0,
    learning_rate=1e-5,
    per_device_train_batch_size=8,  # the robust batch: DRO's log-mean-exp sees 8 rows (fewer triggers a warning)
    gradient_accumulation_steps=4,
    num_train_epochs=1,
    report_to=[],
)
trainer = DoRATrainer(model=model, args=args, train_dataset=load_dataset("json", data_files=data, split="train"),
                      peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
trainer.train()
trainer.save_model(out)
