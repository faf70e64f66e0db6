"""Why DoRA lost on `larger-separable`: how many target rows each step sees, with the synthetic rows out of the way.

From a finished `dora demo --world larger-separable` run's SFT model of one seed, trains (150 steps, lr 1e-3, the
world's budget) Human-only at batch 32 and at batch 6 (about the human rows in a mixture batch of 32), Reweight
(the mixture with its dQ0/dP weights, no DRO) and DoRA at lambda 5, and scores each on the world's test pairs,
split by whether the wrong answer is the larger number, and on the human training pairs. docs/results.md reports it.

    OMP_NUM_THREADS=1 python examples/concentrated_weights.py --demo demo_out/ends/larger-separable --seed 1
"""

from __future__ import annotations

import argparse
import os

from datasets import Dataset

from dora import DoRAConfig, DoRATrainer
from dora.demo.stages import METHODS, classify, rows_for_method
from dora.worlds import BUDGETS, get_world, make_world, parse_answer

COLS = ("prompt", "chosen", "rejected", "source", "dora_weight")
RUNS = [("Human-only, batch 32", "Human-only", 32, {}), ("Human-only, batch 6", "Human-only", 6, {}),
        ("Reweight, batch 32", "Reweight", 32, {}),
        ("DoRA λ=5, batch 32", "DoRA", 32, {"dro_lambda": 5.0})]  # fmt: skip


def wrong_is_larger(r: dict) -> bool:
    chosen, rejected = parse_answer(r["chosen"]), parse_answer(r["rejected"])
    return (rejected if chosen == r["answer"] else chosen) > r["answer"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", required=True, help="a finished `dora demo --world WORLD` output folder")
    p.add_argument("--world", default="larger-separable")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output", default="demo_out/concentrated_weights")
    a = p.parse_args(argv)
    budget = BUDGETS[a.world]["full"]
    world = make_world(get_world(a.world, n_train=budget["n_train"], seed=a.seed))
    rows, _ = classify(world["train"], os.path.join(a.output, "classifier"), a.seed)
    steps = budget["epochs"] * -(-len(rows) // 32)
    test, human = world["test"], [r for r in rows if r["source"] == "human"]
    splits = {"test": test, "wrong larger": [r for r in test if wrong_is_larger(r)],
              "wrong smaller": [r for r in test if not wrong_is_larger(r)], "human training pairs": human}  # fmt: skip
    print("| run | " + " | ".join(splits) + " |\n|---" + "|---" * len(splits) + "|")
    for label, method, batch, extra in RUNS:
        args = DoRAConfig(
            output_dir=os.path.join(a.output, label.replace(" ", "_").replace(",", "")), beta=0.1,
            learning_rate=budget["lr"], lr_scheduler_type="linear", max_steps=steps, per_device_train_batch_size=batch,
            per_device_eval_batch_size=128, save_strategy="no", report_to=[], seed=a.seed, disable_tqdm=True,
            **{**METHODS[method], **extra},
        )  # fmt: skip
        train = Dataset.from_list([{k: r[k] for k in COLS} for r in rows_for_method(method, rows)])
        trainer = DoRATrainer(model=os.path.join(a.demo, f"seed{a.seed}", "sft"), args=args, train_dataset=train)
        trainer.train()
        acc = {name: trainer.evaluate(Dataset.from_list([{k: r[k] for k in COLS if k in r} for r in part]))[
            "eval_rewards/accuracies"] for name, part in splits.items()}  # fmt: skip
        print(f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in acc.values()) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
