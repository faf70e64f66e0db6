"""Evaluate a trained policy from Python: preference accuracy on the human rows of a held-out split, and the
distributional-alignment benchmark on your copy of its data. The CLI equivalent is `dora eval` (see
docs/evaluation.md).

    python examples/evaluate.py --model out/policy --ref-model mistralai/Mistral-7B-v0.1 \
        --dataset heldout.jsonl --distalign-data opinions_qa/.../SEX_data.json nytimes/data.json
"""

import argparse
import json

from transformers import AutoTokenizer

from dora.data import load_rows
from dora.eval import distalign, preference

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--ref-model", required=True)
parser.add_argument("--dataset", required=True, help="held-out pairwise rows with a 'source' column")
parser.add_argument("--reward-model", default=None)
parser.add_argument("--distalign-data", nargs="*", default=[])
args = parser.parse_args()

tokenizer = AutoTokenizer.from_pretrained(args.model)
tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
rows = load_rows(args.dataset)

# 1. Implicit-reward accuracy: overall on the human rows, and per source.
acc = preference.implicit_reward_accuracy(args.model, args.ref_model, tokenizer, rows, beta=0.1)
lo, hi = acc["accuracy_ci95"]
print(f"implicit-reward accuracy (human): {acc['accuracy']:.3f}  95% CI [{lo:.3f}, {hi:.3f}]")
for source, r in acc["by_source"].items():
    print(f"  {source:>12}: {r['accuracy']:.3f} (n={r['n']}, margin {r['margin']:+.3f})")

# 2. With a reward model: its accuracy, and the policy's win rate against the reference on 100 prompts.
if args.reward_model:
    rm = preference.RewardModel(args.reward_model)
    print("reward-model accuracy:", round(preference.reward_model_accuracy(rm, rows)["accuracy"], 3))
    human = rows.filter(lambda r: r["source"] == "human")
    prompts = list(dict.fromkeys(human["prompt"]))[:100]
    wr = preference.win_rate(args.model, args.ref_model, tokenizer, rm, prompts, max_new_tokens=128)
    lo, hi = wr["win_ci95"]
    print(f"win / tie / lose: {wr['win']:.3f} / {wr['tie']:.3f} / {wr['lose']:.3f}, win 95% CI [{lo:.3f}, {hi:.3f}]")

# 3. Distributional alignment: log-p and verbalized distributions under persona steering, 20 questions a file.
if args.distalign_data:
    items = []
    for path in args.distalign_data:
        loaded = distalign.load_benchmark(path)
        first = set(list(dict.fromkeys(it.qid for it in loaded))[:20])
        items += [it for it in loaded if it.qid in first]
    runner = distalign.ModelRunner(args.model, batch_size=8)
    report, _ = distalign.evaluate(runner, items, methods=["logprobs", "verbalize"], steerings=["persona"])
    print(distalign.markdown(report))
    with open("distalign.json", "w") as f:
        json.dump(report, f, indent=1)
