"""Profile a few optimizer steps of TRL's DPOTrainer and of DoRATrainer on `dora bench`'s model and rows.

    python examples/profile_trainers.py [--steps 3] [--vocab 32000 --hidden 256 --layers 4]

Prints, for each trainer, the batch shapes, the logged loss and log-probs (the two must agree), the wall time
of the profiled steps and the operations with the most self CPU time, by input shape: where the LM head runs
over every position (TRL) or over the completion tokens only (DoRATrainer) shows in the `[tokens, vocab]`
shapes. docs/benchmarks.md reads these tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def profile(folder: str, kind: str, steps: int, rows: int) -> None:
    from datasets import Dataset
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    from transformers import TrainerCallback

    with open(os.path.join(folder, "rows.json")) as f:
        data = json.load(f)[:rows]
    common = dict(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, max_steps=steps + 2, report_to=[],
        save_strategy="no", logging_steps=steps + 2, disable_tqdm=True, learning_rate=1e-5, bf16=False,
        gradient_checkpointing=False, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    if kind == "trl":
        from trl import DPOConfig, DPOTrainer

        ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in data])
        trainer = DPOTrainer(model=folder, args=DPOConfig(loss_type="sigmoid", beta=0.1, **common), train_dataset=ds)
    else:
        from dora import DoRAConfig, DoRATrainer

        args = DoRAConfig(loss_type="sigmoid", objective="mean", beta=0.1, **common)
        trainer = DoRATrainer(model=folder, args=args, train_dataset=Dataset.from_list(data))
    state: dict = {}

    class Profile(TrainerCallback):  # steps 2 .. steps + 2, after two warm-up steps
        def on_step_begin(self, args, st, control, **kw):
            if st.global_step == 2:
                state["prof"] = torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True)
                state["prof"].__enter__()
                state["t"] = time.perf_counter()

        def on_step_end(self, args, st, control, **kw):
            if st.global_step == steps + 2 and "prof" in state:
                state["prof"].__exit__(None, None, None)
                state["wall"] = time.perf_counter() - state["t"]

    trainer.add_callback(Profile())
    batch = next(iter(trainer.get_train_dataloader()))
    print(f"== {kind}: batch", {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")})
    trainer.train()
    logs = trainer.state.log_history[0]
    print(f"loss {logs['loss']:.4f}, logps/chosen {logs['logps/chosen']:.1f}, logps/rejected "
          f"{logs['logps/rejected']:.1f}; {steps} profiled steps in {state['wall']:.1f} s")  # fmt: skip
    table = state["prof"].key_averages(group_by_input_shape=True)
    print(table.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=32,
                      max_shapes_column_width=60))  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=192)
    p.add_argument("--worker", nargs=2, metavar=("FOLDER", "KIND"), help=argparse.SUPPRESS)
    args = p.parse_args()
    rows = 8 * (args.steps + 2)
    if args.worker:
        profile(args.worker[0], args.worker[1], args.steps, rows)
        return 0
    from dora.bench import build_assets

    with tempfile.TemporaryDirectory() as folder:
        build_assets(folder, args.vocab, args.hidden, args.layers, rows, args.seq_len)
        for kind in ("trl", "dora"):  # each in a fresh process
            subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--worker", folder, kind], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
