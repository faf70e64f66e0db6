"""`dora iterate`'s recipe path run from Python under `accelerate launch`, with a weights function that logs
which process called it and gives each process other weights (as a non-deterministic classifier could)."""

import os
import sys

import torch

from dora.iterate import iterate, load_iterate_recipe

recipe, calls_file = sys.argv[1:3]


def weights(rows, output_dir):
    rank = int(os.environ.get("RANK", "0"))
    with open(calls_file, "a") as f:
        f.write(f"{rank}\n")
    return [dict(r, dora_weight=1.0 + rank) for r in rows], {}


cfg, data = load_iterate_recipe(recipe)
iterate(cfg, pool=data["pool"], judge=data["judge"], weights_fn=weights)
if torch.distributed.is_initialized():  # a clean gloo teardown: no process aborts at exit
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
