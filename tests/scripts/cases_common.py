"""What tests/scripts/fsdp_cases.py and deepspeed_cases.py share: the command line (MODEL_DIR DATA_JSONL OUT_DIR),
a case's DoRAConfig (a global batch of 8 rows per optimizer step, whatever the process count), what rank 0 records
of a trained case, and the end of the script (results saved, the process group torn down)."""

import gc
import json
import os
import sys

import torch

from dora import DoRAConfig

model_dir, data_file, out_dir = sys.argv[1:4]
rows = [json.loads(line) for line in open(data_file)]
world = int(os.environ.get("WORLD_SIZE", "1"))
results = {}


def config(name, **kw):
    base = dict(
        output_dir=os.path.join(out_dir, name), per_device_train_batch_size=8 // world, max_steps=2,
        learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", objective="dora", dro_lambda=0.5,
        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
    )  # fmt: skip
    base.update(kw)
    return DoRAConfig(**base)


def local_share(params) -> float:
    """The share of a model's parameters this process holds: FSDP2 keeps its shard in a DTensor's local tensor,
    ZeRO-3 in ``ds_tensor`` (of ``ds_numel``)."""
    full = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    local = sum(
        p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.to_local().numel() if hasattr(p, "to_local")
        else p.numel()
        for p in params
    )  # fmt: skip
    return local / max(1, full)


def finish(name, trainer, adapter_only=False):
    """Rank 0 records the case: logged losses, the parameters gathered from every shard (all ranks call the
    gather), the engine, and the share of the frozen reference this process holds (None without one)."""
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    ref = list(trainer.ref_model.parameters()) if trainer.ref_model is not None else []
    if trainer.accelerator.is_main_process:
        params = {k: v.detach().cpu().clone() for k, v in state.items() if not adapter_only or "lora_" in k}
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        results[name] = {"losses": losses, "params": params, "fsdp": trainer.is_fsdp_enabled,
                         "deepspeed": trainer.is_deepspeed_enabled,
                         "ref_local_share": local_share(ref) if ref else None}  # fmt: skip


def save_and_exit(deepspeed: bool = False) -> None:
    """Rank 0 writes OUT_DIR/results.pt; then a clean teardown, so that no process aborts at exit."""
    if results:
        torch.save(results, os.path.join(out_dir, "results.pt"))
    gc.collect()  # the cases' sharded modules, freed while the process group still lives
    if torch.distributed.is_initialized():
        if deepspeed:
            import deepspeed.comm as dist
        else:
            dist = torch.distributed
        dist.barrier()
        dist.destroy_process_group()
