"""Stage 3: implicit-reward accuracy of the policy on held-out human pairs, per source.

    python examples/evaluate.py policy/ Qwen/Qwen2.5-0.5B-Instruct heldout.jsonl
"""

import sys

from datasets import load_dataset
from transformers import AutoTokenizer

from dora.eval.preference import implicit_reward_accuracy, select_target_rows

policy, reference, data = sys.argv[1], sys.argv[2], sys.argv[3]
rows = select_target_rows(load_dataset("json", data_files=data, split="train"), ["human"])
tokenizer = AutoTokenizer.from_pretrained(reference)
result = implicit_reward_accuracy(policy, reference, tokenizer, rows, beta=0.1)
print(f"accuracy {result['accuracy']:.3f} (95% CI {result['accuracy_ci95'][0]:.3f}-{result['accuracy_ci95'][1]:.3f}), "
      f"margin {result['margin']:.4f}")
