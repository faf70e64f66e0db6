"""The global-batch rule: two gloo processes holding half a batch each give the same objective value and,
averaged as DDP averages, the same gradient as one process holding the whole batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dora.objectives import GroupDROState, evaluate_objective

OBJECTIVES = {
    "dora": {"dro_lambda": 0.5},
    "dora_outside": {"dora_placement": "outside"},
    "kl_dro": {"dro_lambda": 2.0},
    "reweight": {},
    "mean": {},
    "dr_dpo": {"dr_dpo_beta": 0.5},
    "kldpo": {"kldpo_tau": 0.7},
    "cvar": {"cvar_alpha": 0.3},
    "group_dro": {"group_dro_eta": 0.5},
}


def make_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 5, generator=g)
    y = torch.randn(10, generator=g)
    h = torch.rand(10, generator=g) * 2
    groups = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 2])
    theta = torch.randn(5, generator=g)
    return x, y, h, groups, theta


def losses_of(theta, x, y):
    return (x @ theta - y) ** 2  # per-sample losses, differentiable in theta


def run(name, theta, x, y, h, groups, process_group=None):
    kw = dict(OBJECTIVES[name])
    obj = "dora" if name.startswith("dora") else name
    if obj == "group_dro":
        kw["group_dro_state"] = GroupDROState(3, eta=kw.pop("group_dro_eta"))
    t = theta.clone().requires_grad_(True)
    out = evaluate_objective(
        obj, losses_of(t, x, y), weights=h, groups=groups, process_group=process_group, **kw
    )
    out.loss.backward()
    state = kw["group_dro_state"].alpha.clone() if obj == "group_dro" else None
    return out.loss.detach(), t.grad, out.sample_weights, out.ess, state


def worker(rank, world, init_file, split, result_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x, y, h, groups, theta = make_problem()
    lo, hi = (0, split) if rank == 0 else (split, len(y))
    results = {}
    for name in OBJECTIVES:
        loss, grad, sw, ess, state = run(
            name, theta, x[lo:hi], y[lo:hi], h[lo:hi], groups[lo:hi], dist.group.WORLD
        )
        dist.all_reduce(grad)
        grad /= world  # what DDP does
        results[name] = (loss, grad, sw, ess, state)
    torch.save(results, os.path.join(result_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("split", [5, 7])  # equal and unequal local batches
def test_two_processes_equal_one(tmp_path, split):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), split, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    x, y, h, groups, theta = make_problem()
    for name in OBJECTIVES:
        loss, grad, sw, ess, state = run(name, theta, x, y, h, groups)
        for r, part in ((r0, slice(0, split)), (r1, slice(split, None))):
            dloss, dgrad, dsw, dess, dstate = r[name]
            torch.testing.assert_close(dloss, loss, rtol=1e-6, atol=1e-6, msg=f"{name}: value")
            torch.testing.assert_close(dgrad, grad, rtol=1e-5, atol=1e-6, msg=f"{name}: gradient")
            torch.testing.assert_close(dsw, sw[part], rtol=1e-5, atol=1e-6, msg=f"{name}: sample weights")
            assert abs(dess - ess) < 1e-4, name
            if state is not None:
                torch.testing.assert_close(dstate, state, msg=f"{name}: group weights")


def test_local_batch_differs_from_global():
    """The check above can fail: DRO over each half alone is not DRO over the whole batch."""
    x, y, h, groups, theta = make_problem()
    whole = run("dora", theta, x, y, h, groups)[1]
    halves = (
        run("dora", theta, x[:5], y[:5], h[:5], groups[:5])[1]
        + run("dora", theta, x[5:], y[5:], h[5:], groups[5:])[1]
    ) / 2
    assert not torch.allclose(whole, halves, rtol=1e-3)
