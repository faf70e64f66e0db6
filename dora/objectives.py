"""Robust objectives: aggregations of per-sample losses l_i (and calibration weights h_i) over the batch.

Every objective is a scalar function of the *global* batch, computed in float32 with logsumexp:

    mean       mean l                                          (ERM)
    reweight   mean h*l                                        (importance weighting)
    kl_dro     lam * log mean exp(l / lam)                     (KL-DRO, dual form)
    dora       lam * log mean exp(h*l / lam)                   (DoRA, Zhu et al. 2025, arXiv 2504.05831)
               placement "outside": mean(h) * lam * log mean exp(l / lam)   (the authors' LIRE path)
    dr_dpo     -b * log mean exp(-l / b)                       (Dr. DPO, Wu et al. 2024, arXiv 2407.07880)
    kldpo      mean sg[clamp(exp((l - mean l)/tau), max=10)] * l   (KLDPO, Xu et al. 2025, arXiv 2502.01930)
    cvar       mean of the top ceil(alpha*N) of l (or h*l)     (CVaR-DRO, Rockafellar & Uryasev 2000)
    group_dro  sum_g a_g L_g, a_g <- a_g exp(eta L_g) / Z      (GRPO, Ramesh et al. 2024, arXiv 2405.20304)

Distributed rule. With a process group, the detached (l, h, groups) are all-gathered, the objective and
its gradient dL/dl_i are computed on the global batch, and each rank returns the surrogate

    L_rank = L(global) + R * sum_{i local} sg(dL/dl_i) * (l_i - sg(l_i))

whose value is the global objective and whose gradient, averaged over the R ranks as DDP does, equals the
gradient of the global objective. One process on 2B samples and two on B each agree to float precision.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from dora.ratio import effective_sample_size

__all__ = [
    "OBJECTIVES",
    "ObjectiveSpec",
    "objective_spec",
    "check_objective_settings",
    "describe_objective",
    "ObjectiveOutput",
    "GroupDROState",
    "robust_objective",
    "evaluate_objective",
    "objective_gradients",
    "surrogate_loss",
    "gather_variable",
    "gather_batch",
    "resolve_group",
]


# --------------------------------------------------------------------------- the objectives


def _log_mean_exp(x: Tensor) -> Tensor:
    """log mean exp(x), shifted by m = max x. The value is taken as m + log1p(mean(expm1(x - m))), which
    stays exact when x is spread over a tiny range (a large lambda), where logsumexp - log N cancels
    catastrophically in float32; the gradient is the softmax of the usual form, exact for small weights."""
    m = x.detach().max()
    d = x - m
    usual = torch.log(torch.exp(d).mean())
    precise = torch.log1p(torch.expm1(d.detach()).mean())
    return m + precise + (usual - usual.detach())


def mean_objective(l: Tensor, h: Tensor) -> Tensor:
    """ERM: mean l."""
    return l.mean()


def reweight_objective(l: Tensor, h: Tensor) -> Tensor:
    """Importance weighting: mean h*l (the DoRA ablation's "reweighting only")."""
    return (h * l).mean()


def kl_dro_objective(l: Tensor, h: Tensor, *, dro_lambda: float = 1.0) -> Tensor:
    """KL-DRO dual (Hu & Hong 2013): lam log mean exp(l/lam) (the DoRA ablation's "DRO only")."""
    return dro_lambda * _log_mean_exp(l / dro_lambda)


def dora_objective(l: Tensor, h: Tensor, *, dro_lambda: float = 1.0, dora_placement: str = "inside") -> Tensor:
    """DoRA (Zhu et al. 2025): lam log mean exp(h l / lam); "outside": mean(h) lam log mean exp(l / lam)."""
    if dora_placement == "outside":
        return h.mean() * dro_lambda * _log_mean_exp(l / dro_lambda)
    return dro_lambda * _log_mean_exp(h * l / dro_lambda)  # "inside" (check_objective_settings allows no other)


def dr_dpo_objective(l: Tensor, h: Tensor, *, dr_dpo_beta: float = 1.0) -> Tensor:
    """Dr. DPO (Wu et al. 2024): -b log mean exp(-l/b), a soft minimum that down-weights noisy pairs."""
    return -dr_dpo_beta * _log_mean_exp(-l / dr_dpo_beta)


def kldpo_objective(l: Tensor, h: Tensor, *, kldpo_tau: float = 1.0) -> Tensor:
    """KLDPO (Xu et al. 2025): mean of detached clamp(exp((l - mean l)/tau), max=10) * l."""
    w = torch.exp((l.detach() - l.detach().mean()) / kldpo_tau).clamp(max=10.0)
    return (w * l).mean()


def cvar_objective(l: Tensor, h: Tensor, *, cvar_alpha: float = 0.2) -> Tensor:
    """CVaR at level alpha: the mean of the ceil(alpha N) largest h*l."""
    x = h * l
    k = max(1, math.ceil(cvar_alpha * x.numel()))
    return torch.topk(x, k).values.mean()


class GroupDROState:
    """Group weights a_g of group DRO, updated by mirror ascent (Ramesh et al. 2024):
    a_g <- a_g exp(eta L_g), renormalised. Saved in checkpoints with ``state_dict``."""

    def __init__(self, num_groups: int, eta: float = 0.01, names: list[str] | None = None):
        if num_groups < 1:
            raise ValueError("group_dro needs at least one group")
        self.eta = float(eta)
        self.alpha = torch.full((num_groups,), 1.0 / num_groups, dtype=torch.float64)
        self.names = list(names) if names is not None else [str(i) for i in range(num_groups)]

    def update(self, group_losses: Tensor, present: Tensor) -> Tensor:
        """One mirror-ascent step with the groups present in the batch; returns the new weights."""
        step = torch.where(present, self.eta * group_losses.double().cpu(), torch.zeros_like(self.alpha))
        logits = torch.log(self.alpha) + step
        self.alpha = torch.softmax(logits, dim=0)
        return self.alpha

    def state_dict(self) -> dict:
        return {"alpha": self.alpha.tolist(), "eta": self.eta, "names": self.names}

    def load_state_dict(self, state: dict) -> None:
        self.alpha = torch.tensor(state["alpha"], dtype=torch.float64)
        self.eta = float(state["eta"])
        self.names = list(state.get("names", self.names))


def group_dro_objective(
    l: Tensor,
    h: Tensor,
    *,
    groups: Tensor | None = None,
    group_dro_state: GroupDROState | None = None,
    group_dro_eta: float = 0.01,
    update: bool = True,
) -> Tensor:
    """Group DRO (Ramesh et al. 2024): sum_g a_g L_g, L_g the mean of h*l over group g, a updated first."""
    if groups is None:
        raise ValueError("objective 'group_dro' needs a group id per sample (the `group` column)")
    groups = groups.long()
    num = int(groups.max().item()) + 1
    state = group_dro_state or GroupDROState(num, group_dro_eta)
    if num > state.alpha.numel():
        raise ValueError(f"group id {num - 1} out of range for a state with {state.alpha.numel()} groups")
    g = state.alpha.numel()
    x = h * l
    sums = torch.zeros(g, dtype=x.dtype, device=x.device).index_add(0, groups, x)
    counts = torch.zeros(g, dtype=x.dtype, device=x.device).index_add(0, groups, torch.ones_like(x))
    present = counts > 0
    group_losses = sums / counts.clamp(min=1)
    alpha = state.update(group_losses.detach(), present.cpu()) if update else state.alpha
    alpha = alpha.to(device=x.device, dtype=x.dtype)
    return (alpha * group_losses * present).sum()


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registry entry: the function, what it computes and reduces to (the start-up summary's words; ``{loss}`` is
    the base loss), whether it reads the calibration weights h and the group ids, and its keywords (``hyper``, read
    from the function's signature)."""

    fn: Callable[..., Tensor]
    title: str
    weighted: bool = False
    needs_groups: bool = False
    equal_weights: str | None = None  # what a weighted objective reduces to when every weight is equal
    unit_weights: str | None = None  # ... when every weight is 1, where that says more
    weighted_form: str | None = None  # the objective that is this one with the calibration weights
    hyper: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        params = list(inspect.signature(self.fn).parameters.values())[2:]  # after (l, h)
        object.__setattr__(self, "hyper", tuple(p.name for p in params))


_KL_DRO_UNWEIGHTED = "KL-DRO (objective kl_dro): every weight is 1, no '{column}' column or all 1"
OBJECTIVES: dict[str, ObjectiveSpec] = {
    "mean": ObjectiveSpec(mean_objective, "{loss} (ERM)"),
    "erm": ObjectiveSpec(mean_objective, "{loss} (ERM)"),
    "reweight": ObjectiveSpec(
        reweight_objective, "importance-weighted mean of the losses", weighted=True,
        equal_weights="{loss} (objective mean): every weight is equal",
    ),  # fmt: skip
    "kl_dro": ObjectiveSpec(kl_dro_objective, "KL-DRO", weighted_form="dora"),
    "dora": ObjectiveSpec(
        dora_objective, "DoRA: KL-DRO over the calibrated losses", weighted=True,
        equal_weights="KL-DRO on a constant multiple of the losses: every weight is equal",
        unit_weights=_KL_DRO_UNWEIGHTED,
    ),  # fmt: skip
    "dr_dpo": ObjectiveSpec(dr_dpo_objective, "Dr. DPO: a soft minimum of the losses"),
    "kldpo": ObjectiveSpec(kldpo_objective, "KLDPO: the losses reweighted by their exponentiated deviation"),
    "cvar": ObjectiveSpec(cvar_objective, "CVaR", weighted=True),
    "group_dro": ObjectiveSpec(group_dro_objective, "group DRO", weighted=True, needs_groups=True),
}
def objective_spec(name: str) -> ObjectiveSpec:
    """The registry entry of an objective; a clear error for an unknown name."""
    if name not in OBJECTIVES:
        near = difflib.get_close_matches(str(name).replace("-", "_").lower(), sorted(OBJECTIVES), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ValueError(f"unknown objective {name!r}{hint}; known: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def check_objective_settings(
    *,
    dro_lambda: float | None = None,
    dora_placement: str | None = None,
    dr_dpo_beta: float | None = None,
    kldpo_tau: float | None = None,
    cvar_alpha: float | None = None,
) -> None:
    """The rules of the objectives' settings, in one place: ``DoRAConfig`` applies them when a run's settings
    enter, and ``evaluate_objective`` when a caller passes values directly. None: not given, nothing to check."""
    if dro_lambda is not None and not 0 < dro_lambda < math.inf:
        raise ValueError(f"dro_lambda must be a finite number > 0, got {dro_lambda}")
    if dora_placement is not None and dora_placement not in ("inside", "outside"):
        raise ValueError(f"dora_placement must be 'inside' or 'outside', got {dora_placement!r}")
    for name, value in (("dr_dpo_beta", dr_dpo_beta), ("kldpo_tau", kldpo_tau)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if cvar_alpha is not None and not 0.0 < cvar_alpha <= 1.0:
        raise ValueError(f"cvar_alpha must be in (0, 1], got {cvar_alpha}")


def describe_objective(name: str, weights: str, *, num_groups: int, cvar_alpha: float, loss: str, column: str) -> str:
    """What objective ``name`` computes on this data, for the start-up summary. ``weights``: "ones" (none, or all
    1), "equal" (all the same) or "differ"; ``loss`` names the base loss; ``column`` the weight column."""
    spec = objective_spec(name)
    if name == "cvar" and cvar_alpha >= 1:  # the tail is the whole batch: the (weighted) mean
        if weights == "differ":
            return "importance-weighted mean of the losses: cvar_alpha 1 keeps every sample"
        return f"{loss} (ERM): cvar_alpha 1 keeps every sample"
    if spec.needs_groups and num_groups <= 1:
        return f"{loss} (ERM): one group"
    text = spec.title
    if weights == "ones" and (spec.unit_weights or spec.equal_weights):
        text = spec.unit_weights or spec.equal_weights
    elif weights in ("ones", "equal") and spec.equal_weights:
        text = spec.equal_weights
    elif weights == "differ" and not spec.weighted:
        text += f"; the '{column}' weights are not used"
        if spec.weighted_form:
            text += f" (objective {spec.weighted_form} uses them)"
    return text.format(loss=loss, column=column)


# --------------------------------------------------------------------------- the global batch


def resolve_group(process_group):
    """None -> single process. An accelerate ``Accelerator`` (or its state) -> the default group when it
    runs more than one process. A torch ``ProcessGroup`` -> itself. Returns (group, world_size, rank)."""
    if process_group is None:
        return None, 1, 0
    if hasattr(process_group, "num_processes"):  # Accelerator / PartialState
        if process_group.num_processes <= 1:
            return None, 1, 0
        process_group = dist.group.WORLD
    if not dist.is_available() or not dist.is_initialized():
        return None, 1, 0
    world = dist.get_world_size(process_group)
    return (process_group, world, dist.get_rank(process_group)) if world > 1 else (None, 1, 0)


def gather_variable(t: Tensor, group) -> tuple[Tensor, int]:
    """All-gather a 1-D tensor whose length may differ across ranks; returns (global tensor, local offset)."""
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    n = torch.tensor([t.numel()], device=t.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    sizes = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(sizes), dtype=t.dtype, device=t.device)
    padded[: t.numel()] = t
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]), sum(sizes[:rank])


def gather_batch(losses: Tensor, weights: Tensor, groups: Tensor | None, process_group=None):
    """The detached (losses, weights, groups) of the global batch, this rank's offset in it, and the world
    size; with no process group (or one process), the local tensors themselves."""
    group, world, _ = resolve_group(process_group)
    if world == 1:
        return losses, weights, groups, 0, 1
    l_all, offset = gather_variable(losses, group)
    h_all, _ = gather_variable(weights, group)
    g_all = None if groups is None else gather_variable(groups.long(), group)[0]
    return l_all, h_all, g_all, offset, world


@dataclass
class ObjectiveOutput:
    """``loss``: the (local surrogate of the) objective, differentiable in the local losses.
    ``sample_weights``: N * dL/dl_i for the local samples (all 1 for ERM), detached.
    ``ess``: Kish effective sample size of dL/dl over the global batch. ``value``: the global objective."""

    loss: Tensor
    sample_weights: Tensor
    ess: float
    value: float


def objective_gradients(
    name: str,
    losses: Tensor,
    weights: Tensor,
    groups: Tensor | None = None,
    *,
    dro_lambda: float | None = None,
    dora_placement: str | None = None,
    dr_dpo_beta: float | None = None,
    kldpo_tau: float | None = None,
    cvar_alpha: float | None = None,
    group_dro_eta: float | None = None,
    group_dro_state: GroupDROState | None = None,
    update: bool | None = None,
):
    """Value and gradient dL/dl of objective ``name`` at detached float32 ``losses`` (the global batch). Each
    keyword (None: the objective's default) reaches the objectives that take it; a misspelt one is a TypeError."""
    spec = objective_spec(name)
    given = dict(dro_lambda=dro_lambda, dora_placement=dora_placement, dr_dpo_beta=dr_dpo_beta, kldpo_tau=kldpo_tau,
                 cvar_alpha=cvar_alpha, group_dro_eta=group_dro_eta, group_dro_state=group_dro_state, update=update,
                 groups=groups)  # fmt: skip
    own = {k: v for k, v in given.items() if v is not None and k in spec.hyper}
    with torch.enable_grad():
        leaf = losses.detach().float().requires_grad_(True)
        value = spec.fn(leaf, weights.detach().float(), **own)
        (grad,) = torch.autograd.grad(value, leaf, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(leaf)
    return value.detach(), grad.detach()


def surrogate_loss(local_losses: Tensor, local_grads: Tensor, value: Tensor, world_size: int = 1) -> Tensor:
    """value + R * sum_i g_i (l_i - sg(l_i)): the objective's value and (averaged over R ranks) gradient."""
    l = local_losses.float()
    return value + world_size * (local_grads * (l - l.detach())).sum()


def _check_inputs(losses: Tensor, weights: Tensor | None, groups: Tensor | None) -> Tensor:
    if losses.dim() != 1:
        raise ValueError(f"losses must be a 1-D tensor of per-sample losses, got shape {tuple(losses.shape)}")
    if weights is None:
        return torch.ones_like(losses, dtype=torch.float32)
    weights = torch.as_tensor(weights, device=losses.device).float()
    if weights.shape != losses.shape:
        raise ValueError(f"weights shape {tuple(weights.shape)} != losses shape {tuple(losses.shape)}")
    bad = ~torch.isfinite(weights) | (weights < 0)
    if bad.any():
        i = int(torch.nonzero(bad)[0].item())
        raise ValueError(f"sample {i}: weight {weights[i].item()!r} is not a finite non-negative number")
    if groups is not None and groups.shape != losses.shape:
        raise ValueError(f"groups shape {tuple(groups.shape)} != losses shape {tuple(losses.shape)}")
    return weights


def evaluate_objective(
    name: str,
    losses: Tensor,
    *,
    weights: Tensor | None = None,
    groups: Tensor | None = None,
    process_group=None,
    dro_lambda: float | None = None,
    dora_placement: str | None = None,
    dr_dpo_beta: float | None = None,
    kldpo_tau: float | None = None,
    cvar_alpha: float | None = None,
    group_dro_eta: float | None = None,
    group_dro_state: GroupDROState | None = None,
    update: bool | None = None,
) -> ObjectiveOutput:
    """The objective over the global batch, with the weights the gradient gives each sample (for logging).

    ``process_group``: None (this process's batch is the batch), a torch ProcessGroup, or an accelerate
    ``Accelerator``. The hyper-parameters (None: the objective's default) reach the objectives that take them
    (``objective_spec(name).hyper``), so one set serves any objective; a misspelt one is a TypeError.
    ``group_dro_state``: a ``GroupDROState``; ``update``: group_dro, False to leave the state as it is."""
    hyper = dict(dro_lambda=dro_lambda, dora_placement=dora_placement, dr_dpo_beta=dr_dpo_beta, kldpo_tau=kldpo_tau,
                 cvar_alpha=cvar_alpha, group_dro_eta=group_dro_eta, group_dro_state=group_dro_state, update=update)
    objective_spec(name)
    check_objective_settings(dro_lambda=dro_lambda, dora_placement=dora_placement, dr_dpo_beta=dr_dpo_beta,
                             kldpo_tau=kldpo_tau, cvar_alpha=cvar_alpha)  # fmt: skip
    h = _check_inputs(losses, weights, groups)
    l_all, h_all, g_all, offset, world = gather_batch(losses.detach().float(), h, groups, process_group)
    value, grad = objective_gradients(name, l_all, h_all, g_all, **hyper)
    local = grad[offset : offset + losses.numel()]
    return ObjectiveOutput(
        loss=surrogate_loss(losses, local, value, world),
        sample_weights=local * l_all.numel(),
        ess=effective_sample_size(grad),
        value=float(value),
    )


def robust_objective(
    name: str,
    losses: Tensor,
    *,
    weights: Tensor | None = None,
    groups: Tensor | None = None,
    process_group=None,
    dro_lambda: float | None = None,
    dora_placement: str | None = None,
    dr_dpo_beta: float | None = None,
    kldpo_tau: float | None = None,
    cvar_alpha: float | None = None,
    group_dro_eta: float | None = None,
    group_dro_state: GroupDROState | None = None,
    update: bool | None = None,
) -> Tensor:
    """A scalar objective whose gradient flows through ``losses``; see ``evaluate_objective``."""
    return evaluate_objective(
        name, losses, weights=weights, groups=groups, process_group=process_group, dro_lambda=dro_lambda,
        dora_placement=dora_placement, dr_dpo_beta=dr_dpo_beta, kldpo_tau=kldpo_tau, cvar_alpha=cvar_alpha,
        group_dro_eta=group_dro_eta, group_dro_state=group_dro_state, update=update,
    ).loss  # fmt: skip
