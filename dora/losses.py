"""Per-sample preference losses: pure functions of sequence log-probabilities, and their registry.

Every loss returns one value per sample (no reduction); the robust objective (``dora.objectives``)
aggregates them. Inputs are *summed* completion log-probs ``logp(y) = sum_t log pi(y_t | x, y_<t)``;
length-normalised losses divide by the token counts given in ``*_lengths``. Notation:
``u = logp - ref``, ``delta = u_w - u_l``. Names follow TRL 1.16 where TRL has the loss, and the
numbers match TRL's ``DPOTrainer`` (and ``CPOTrainer`` for SimPO) on the same inputs.

A new loss is one function and one ``@register_pairwise`` / ``@register_listwise`` line.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Pair",
    "Listwise",
    "pairwise_loss",
    "listwise_loss",
    "implicit_rewards",
    "ranked",
    "loss_kwargs",
    "check_loss_settings",
    "PAIRWISE_LOSSES",
    "LISTWISE_LOSSES",
    "loss_spec",
    "register_pairwise",
    "register_listwise",
]


@dataclass
class LossSpec:
    """A registry entry. ``hyper``: the keywords the loss takes besides the log-probs and beta (read from the
    function's signature; a pairwise loss of the reward difference also takes the f-divergence pair)."""

    fn: Callable[..., Tensor]
    needs_ref: bool
    needs_lengths: bool
    listwise: bool
    hyper: tuple[str, ...] = ()


PAIRWISE_LOSSES: dict[str, LossSpec] = {}
LISTWISE_LOSSES: dict[str, LossSpec] = {}
F_DIVERGENCE_KEYWORDS = ("f_divergence_type", "f_alpha_divergence_coef")  # pairwise_loss's own, for the delta losses


def _keywords(fn) -> tuple[str, ...]:
    """The named parameters of a loss after its first two (the batch and beta)."""
    params = list(inspect.signature(fn).parameters.values())[2:]
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def register_pairwise(*names: str, needs_ref: bool = True, needs_lengths: bool = False):
    def wrap(fn):
        for name in names:
            extra = F_DIVERGENCE_KEYWORDS if name in F_DIVERGENCE_LOSSES else ()
            PAIRWISE_LOSSES[name] = LossSpec(fn, needs_ref, needs_lengths, False, _keywords(fn) + extra)
        return fn

    return wrap


def register_listwise(*names: str, needs_ref: bool = True, needs_lengths: bool = False):
    def wrap(fn):
        for name in names:
            LISTWISE_LOSSES[name] = LossSpec(fn, needs_ref, needs_lengths, True, _keywords(fn))
        return fn

    return wrap


def loss_spec(name: str) -> LossSpec:
    """The registry entry of a pairwise or listwise loss; a clear error for an unknown name."""
    if name in PAIRWISE_LOSSES:
        return PAIRWISE_LOSSES[name]
    if name in LISTWISE_LOSSES:
        return LISTWISE_LOSSES[name]
    known = sorted(PAIRWISE_LOSSES) + sorted(LISTWISE_LOSSES)
    raise ValueError(f"unknown loss_type {name!r}; known: {', '.join(known)}")


def loss_kwargs(name: str, values: dict) -> dict:
    """The entries of ``values`` (every hyper-parameter a run has, by name) that loss ``name`` takes."""
    return {k: values[k] for k in loss_spec(name).hyper if k in values}


def ranked(scores: Tensor, *columns: Tensor | None) -> tuple[Tensor | None, ...]:
    """``columns`` ([B, n] or None) reordered best score first (stable: ties keep their order)."""
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    return tuple(None if c is None else torch.gather(c, -1, order) for c in columns)


F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
# Losses of the chosen-rejected reward difference: the only ones an f-divergence generalises (f-DPO's
# beta log Z(x) term cancels in the difference), as TRL 1.16; plus this library's delta-based cdpo, rdpo_length.
F_DIVERGENCE_LOSSES = frozenset(
    {"sigmoid", "dpo", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft", "cdpo", "rdpo_length"}
)


def f_divergence_score(u: Tensor, kind: str = "reverse_kl", alpha: float = 0.5) -> Tensor:
    """f'(t) at t = pi/ref = exp(u) (f-DPO, Wang et al. 2023, arXiv 2309.16240, Table 1): reverse KL log t = u;
    forward KL 1 - 1/t; Jensen-Shannon log(2t / (1 + t)); alpha-divergence (t^(alpha-1) - 1) / (alpha - 1)."""
    if kind == "reverse_kl":
        return u
    if kind == "forward_kl":
        return 1 - torch.exp(-u)
    if kind == "js_divergence":
        return math.log(2) + F.logsigmoid(u)
    if kind == "alpha_divergence":
        if abs(alpha - 1.0) < 1e-6:  # the limit alpha -> 1 is the reverse KL
            return u
        clamp = 11.0 if u.dtype == torch.float16 else 80.0  # exp stays finite
        return (torch.exp(torch.clamp(((alpha - 1.0) * u).float(), max=clamp)) - 1.0).to(u.dtype) / (alpha - 1.0)
    raise ValueError(f"unknown f_divergence_type {kind!r}; known: {', '.join(F_DIVERGENCES)}")


@dataclass
class Pair:
    """The log-prob tensors of a batch of pairs ([B] each)."""

    chosen: Tensor
    rejected: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None
    chosen_lengths: Tensor | None = None
    rejected_lengths: Tensor | None = None
    chosen_full: Tensor | None = None  # chosen log-prob over every token (differs from ``chosen`` under LD-DPO)
    f_divergence_type: str = "reverse_kl"
    f_alpha_divergence_coef: float = 0.5

    @property
    def u_w(self) -> Tensor:
        return self.chosen - self.ref_chosen

    @property
    def u_l(self) -> Tensor:
        return self.rejected - self.ref_rejected

    @property
    def s_w(self) -> Tensor:
        """f'(pi/ref) of the chosen response (f-DPO, Wang et al. 2023, Eq. 9); u_w for the reverse KL."""
        return f_divergence_score(self.u_w, self.f_divergence_type, self.f_alpha_divergence_coef)

    @property
    def s_l(self) -> Tensor:
        return f_divergence_score(self.u_l, self.f_divergence_type, self.f_alpha_divergence_coef)

    @property
    def delta(self) -> Tensor:
        """The reward difference the delta-based losses see: s_w - s_l (u_w - u_l for the reverse KL)."""
        return self.s_w - self.s_l

    def per_token(self, chosen: Tensor, rejected: Tensor) -> tuple[Tensor, Tensor]:
        return chosen / self.chosen_lengths.clamp(min=1), rejected / self.rejected_lengths.clamp(min=1)


@dataclass
class Listwise:
    """A batch of ranked lists: log-probs [B, n], scores [B, n] (higher is better), lengths [B, n]."""

    logps: Tensor
    scores: Tensor
    ref_logps: Tensor | None = None
    lengths: Tensor | None = None


# --------------------------------------------------------------------------- pairwise, reference-based


def _bce(z: Tensor, eps: float) -> Tensor:
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


@register_pairwise("sigmoid", "dpo")
def dpo_loss(p: Pair, beta: float) -> Tensor:
    """DPO (Rafailov et al. 2023, Eq. 7): -log sigmoid(beta * delta)."""
    return -F.logsigmoid(beta * p.delta)


@register_pairwise("cdpo")
def cdpo_loss(p: Pair, beta: float, *, label_smoothing: float = 0.0) -> Tensor:
    """Conservative DPO (Mitchell 2023): -(1-eps) log sigmoid(beta*delta) - eps log sigmoid(-beta*delta)."""
    return _bce(beta * p.delta, label_smoothing)


@register_pairwise("robust")
def robust_dpo_loss(p: Pair, beta: float, *, label_smoothing: float = 0.0) -> Tensor:
    """Provably robust DPO (Chowdhury et al. 2024, arXiv 2403.00409), unbiased under flip rate eps < 0.5:

    [-(1-eps) log sigmoid(beta*delta) + eps log sigmoid(-beta*delta)] / (1 - 2 eps)."""
    z = beta * p.delta
    return (-(1 - label_smoothing) * F.logsigmoid(z) + label_smoothing * F.logsigmoid(-z)) / (
        1 - 2 * label_smoothing
    )


@register_pairwise("ipo", needs_lengths=True)
def ipo_loss(p: Pair, beta: float) -> Tensor:
    """IPO (Azar et al. 2023, Eq. 17), length-normalised as TRL: (u_w/|y_w| - u_l/|y_l| - 1/(2 beta))^2."""
    uw, ul = p.per_token(p.s_w, p.s_l)
    return (uw - ul - 1 / (2 * beta)) ** 2


@register_pairwise("hinge")
def hinge_loss(p: Pair, beta: float) -> Tensor:
    """SLiC-HF hinge (Zhao et al. 2023), on the reference-normalised margin: max(0, 1 - beta * delta)."""
    return torch.relu(1 - beta * p.delta)


@register_pairwise("exo_pair")
def exo_pair_loss(p: Pair, beta: float, *, label_smoothing: float = 0.0) -> Tensor:
    """EXO-pref (Ji et al. 2024, Eq. 16, K = 2): KL(softmax(beta*u) || [1-eps, eps]).

    eps = label_smoothing, or 1e-3 (the paper's value) when it is 0, where the KL is undefined."""
    eps = label_smoothing if label_smoothing > 0 else 1e-3
    z = beta * p.delta
    return torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps)) + torch.sigmoid(-z) * (
        F.logsigmoid(-z) - math.log(eps)
    )


@register_pairwise("sigmoid_norm", needs_lengths=True)
def sigmoid_norm_loss(p: Pair, beta: float) -> Tensor:
    """Length-normalised DPO (as TRL's "sigmoid_norm"): -log sigmoid(beta (u_w/|y_w| - u_l/|y_l|))."""
    uw, ul = p.per_token(p.s_w, p.s_l)
    return -F.logsigmoid(beta * (uw - ul))


@register_pairwise("nca_pair")
def nca_pair_loss(p: Pair, beta: float) -> Tensor:
    """NCA (Chen et al. 2024, arXiv 2402.05369), pairwise as TRL:
    -log s(r_w) - 0.5 log s(-r_w) - 0.5 log s(-r_l)."""
    rw, rl = beta * p.u_w, beta * p.u_l
    return -F.logsigmoid(rw) - 0.5 * F.logsigmoid(-rw) - 0.5 * F.logsigmoid(-rl)


@register_pairwise("bco_pair")
def bco_pair_loss(p: Pair, beta: float) -> Tensor:
    """BCO (Jung et al. 2024), pairwise form as TRL 1.16: -log s(beta u_w) - log s(-beta u_l)."""
    return -F.logsigmoid(beta * p.u_w) - F.logsigmoid(-beta * p.u_l)


@register_pairwise("sppo_hard")
def sppo_hard_loss(p: Pair, beta: float) -> Tensor:
    """SPPO with hard probabilities (Wu et al. 2024, Eq. 4.7, P = 1 / 0): (u_w - 1/2b)^2 + (u_l + 1/2b)^2."""
    return (p.u_w - 0.5 / beta) ** 2 + (p.u_l + 0.5 / beta) ** 2


@register_pairwise("apo_zero")
def apo_zero_loss(p: Pair, beta: float) -> Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, Eq. 7): 1 - s(beta u_w) + s(beta u_l)."""
    return 1 - torch.sigmoid(beta * p.u_w) + torch.sigmoid(beta * p.u_l)


@register_pairwise("apo_down")
def apo_down_loss(p: Pair, beta: float) -> Tensor:
    """APO-down (D'Oosterlinck et al. 2024, Eq. 8): s(beta u_w) + 1 - s(beta (u_w - u_l))."""
    return torch.sigmoid(beta * p.u_w) + 1 - torch.sigmoid(beta * p.delta)


@register_pairwise("discopop")
def discopop_loss(p: Pair, beta: float, *, discopop_tau: float = 0.05) -> Tensor:
    """DiscoPOP (Chris Lu et al. 2024, arXiv 2406.08414, Eq. 5), log-ratio modulated: with z = beta delta and
    m = sigmoid(z / tau), (1 - m) * (-log sigmoid(z)) + m * exp(-z). The second term is evaluated as
    exp(log sigmoid(z / tau) - z), finite where TRL's exp(-z) * m overflows (z < -88 in float32)."""
    z = beta * p.delta
    return -F.logsigmoid(z) * torch.sigmoid(-z / discopop_tau) + torch.exp(F.logsigmoid(z / discopop_tau) - z)


@register_pairwise("aot")
def aot_loss(p: Pair, beta: float, *, label_smoothing: float = 0.0) -> Tensor:
    """AOT, paired (Melnyk et al. 2024, arXiv 2406.05882, Eq. 9), as TRL: the batch's sorted policy log-ratios
    log pi(y_w) - log pi(y_l) against the sorted reference ones, in a smoothed logistic loss. The i-th value
    belongs to the i-th order statistic, not to pair i: only objectives that ignore sample identity apply."""
    policy, _ = torch.sort(p.chosen - p.rejected, dim=0)
    ref, _ = torch.sort(p.ref_chosen - p.ref_rejected, dim=0)
    return _bce(beta * (policy - ref), label_smoothing)


@register_pairwise("aot_unpaired")
def aot_unpaired_loss(p: Pair, beta: float, *, label_smoothing: float = 0.0) -> Tensor:
    """AOT, unpaired (Melnyk et al. 2024, Eq. 8), as TRL: sorted u_w against sorted u_l over the batch."""
    uw, _ = torch.sort(p.u_w, dim=0)
    ul, _ = torch.sort(p.u_l, dim=0)
    return _bce(beta * (uw - ul), label_smoothing)


@register_pairwise("rdpo_length")
def rdpo_length_loss(p: Pair, beta: float, *, rdpo_alpha: float = 0.01) -> Tensor:
    """R-DPO (Park et al. 2024, arXiv 2403.19159): -log sigmoid(beta delta - alpha (|y_w| - |y_l|))."""
    if p.chosen_lengths is None or p.rejected_lengths is None:
        raise ValueError("loss 'rdpo_length' needs chosen_lengths and rejected_lengths")
    return -F.logsigmoid(beta * p.delta - rdpo_alpha * (p.chosen_lengths - p.rejected_lengths))


# --------------------------------------------------------------------------- pairwise, reference-free


@register_pairwise("simpo", needs_ref=False, needs_lengths=True)
def simpo_loss(p: Pair, beta: float, *, simpo_gamma: float = 0.5, label_smoothing: float = 0.0) -> Tensor:
    """SimPO (Meng et al. 2024, Eq. 6): -log sigmoid(beta (logp_w/|y_w| - logp_l/|y_l|) - gamma).

    ``simpo_gamma`` is the absolute margin gamma, as TRL's CPOTrainer; label smoothing as CPO."""
    lw, ll = p.per_token(p.chosen, p.rejected)
    return _bce(beta * (lw - ll) - simpo_gamma, label_smoothing)


@register_pairwise("sft", needs_ref=False, needs_lengths=True)
def sft_loss(p: Pair, beta: float, *, sft_scale: float | None = None) -> Tensor:
    """Negative log-likelihood of the chosen responses (RPO, Pang et al. 2024, arXiv 2404.19733, Eq. 3, with
    loss_type=["sigmoid", "sft"]). TRL 1.16 takes the mean over the batch's chosen tokens; here that mean is split
    over the pairs in proportion to their tokens, -B logp(y_w,i) / sum_j |y_w,j|, so its batch mean is TRL's.
    ``sft_scale``: B / sum_j |y_w,j| over a larger batch than these rows (the trainer's global batch)."""
    chosen = p.chosen if p.chosen_full is None else p.chosen_full
    if sft_scale is not None:
        return -chosen * sft_scale
    return -chosen * chosen.shape[0] / p.chosen_lengths.sum().clamp(min=1)


# --------------------------------------------------------------------------- listwise


@register_listwise("dpo_pl")
def plackett_luce_dpo_loss(lst: Listwise, beta: float) -> Tensor:
    """Plackett-Luce DPO (Rafailov et al. 2023, App. A.3), averaged over the n ranks as the DoRA code:

    -(1/n) sum_k [ r_(k) - logsumexp_{j >= k} r_(j) ],  r = beta (logp - ref), sorted by score."""
    (r,) = ranked(lst.scores, beta * (lst.logps - lst.ref_logps))
    # logsumexp over the suffix j >= k: a reversed cumulative logsumexp.
    suffix = torch.logcumsumexp(r.flip(-1), dim=-1).flip(-1)
    return -(r - suffix).mean(dim=-1)


@register_listwise("rrhf", needs_ref=False, needs_lengths=True)
def rrhf_loss(
    lst: Listwise,
    beta: float,
    *,
    rrhf_sft_weight: float = 1.0,
    rrhf_sft: str = "best",
    padded_length: float | None = None,
) -> Tensor:
    """RRHF (Yuan et al. 2023, arXiv 2304.05302, Eq. 2-4): with p_i = logp_i / |y_i|,
    (1/n) sum_{s_i < s_j} max(0, p_i - p_j)  +  rrhf_sft_weight * L_sft.

    ``rrhf_sft="best"`` (default): L_sft = -p_best, the best-scored response (Eq. 3's argmax), normalised by its
    own length. ``rrhf_sft="authors"``: the DoRA code's term, the response at list index -2, its summed log-prob
    divided by the batch's padded sequence length ``padded_length``."""
    p = lst.logps / lst.lengths.clamp(min=1)
    n = p.shape[-1]
    worse = lst.scores.unsqueeze(-1) < lst.scores.unsqueeze(-2)  # [B, i, j]: s_i < s_j
    rank = (torch.relu(p.unsqueeze(-1) - p.unsqueeze(-2)) * worse).sum(dim=(-1, -2)) / n
    if rrhf_sft == "authors":
        if padded_length is None or n < 2:
            raise ValueError("rrhf_sft='authors' needs lists of >= 2 responses and the batch's padded_length")
        sft = -lst.logps[:, -2] / float(padded_length)
    else:  # "best" (check_loss_settings allows no other value)
        sft = -torch.gather(p, -1, lst.scores.argmax(dim=-1, keepdim=True)).squeeze(-1)
    return rank + rrhf_sft_weight * sft


@register_listwise("lire", needs_ref=False)
def lire_loss(lst: Listwise, beta: float, *, lire_temperature: float = 2.0) -> Tensor:
    """LIRE (Zhu et al. 2024, arXiv 2405.13516) as the DoRA code:
    -(1/n) sum_j softmax(logp / T)_j softmax(s)_j."""
    q = torch.softmax(lst.logps / lire_temperature, dim=-1)
    return -(q * torch.softmax(lst.scores, dim=-1)).mean(dim=-1)


# --------------------------------------------------------------------------- entry points


def _need(spec_name: str, what: str, value):
    if value is None:
        raise ValueError(f"loss {spec_name!r} needs {what}")
    return value


def check_loss_settings(
    loss_types: list[str],
    *,
    label_smoothing: float | None = None,
    rrhf_sft: str | None = None,
    lire_temperature: float | None = None,
    f_divergence_type: str | None = None,
) -> None:
    """The rules of the losses' settings, in one place: ``DoRAConfig`` applies them when a run's settings enter, and
    ``pairwise_loss`` / ``listwise_loss`` when a caller passes values directly. None: not given, nothing to check."""
    if label_smoothing is not None:
        top = 0.5 if "robust" in loss_types else 1.0  # rDPO divides by 1 - 2 eps
        if not 0.0 <= label_smoothing < top:
            raise ValueError(
                f"label_smoothing must be in [0, {top})" + (" with loss 'robust'" if top < 1 else "")
                + f", got {label_smoothing}"
            )
    if rrhf_sft is not None and rrhf_sft not in ("best", "authors"):
        raise ValueError(f"rrhf_sft must be 'best' or 'authors', got {rrhf_sft!r}")
    if lire_temperature is not None and not lire_temperature > 0:
        raise ValueError(f"lire_temperature must be > 0, got {lire_temperature}")
    if f_divergence_type is not None:
        if f_divergence_type not in F_DIVERGENCES:
            raise ValueError(f"unknown f_divergence_type {f_divergence_type!r}; known: {', '.join(F_DIVERGENCES)}")
        other = [n for n in loss_types if n not in F_DIVERGENCE_LOSSES]
        if f_divergence_type != "reverse_kl" and other:
            raise ValueError(
                f"f_divergence_type={f_divergence_type!r} applies only to the losses of the reward difference "
                f"({', '.join(sorted(F_DIVERGENCE_LOSSES))}), not {other}: use f_divergence_type='reverse_kl'"
            )


def _call(spec: LossSpec, batch, beta: float, given: dict) -> Tensor:
    """The loss on ``batch`` with the given (not None) hyper-parameters it takes; other losses' are left out."""
    own = {k: v for k, v in given.items() if v is not None and k in spec.hyper and k not in F_DIVERGENCE_KEYWORDS}
    return spec.fn(batch, beta, **own)


def pairwise_loss(
    name: str,
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    *,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    chosen_full: Tensor | None = None,
    beta: float = 0.1,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    label_smoothing: float | None = None,
    simpo_gamma: float | None = None,
    rdpo_alpha: float | None = None,
    discopop_tau: float | None = None,
    sft_scale: float | None = None,
) -> Tensor:
    """One loss per pair, shape [B]. The hyper-parameters (None: the loss's own default) reach the losses that take
    them (``loss_spec(name).hyper``) and are left out of the others, so that one set serves a combination of losses;
    a misspelt one is a TypeError. ``f_divergence_type`` replaces u = logp - ref by f'(exp(u)) in the delta-based
    losses (TRL's set)."""
    spec = loss_spec(name)
    if spec.listwise:
        raise ValueError(f"loss {name!r} is listwise: call listwise_loss")
    check_loss_settings([name], label_smoothing=label_smoothing, f_divergence_type=f_divergence_type)
    if spec.needs_ref:
        _need(name, "reference log-probs (ref_chosen_logps, ref_rejected_logps)", ref_chosen_logps)
        _need(name, "reference log-probs (ref_chosen_logps, ref_rejected_logps)", ref_rejected_logps)
    if spec.needs_lengths:
        _need(name, "completion lengths (chosen_lengths, rejected_lengths)", chosen_lengths)
        _need(name, "completion lengths (chosen_lengths, rejected_lengths)", rejected_lengths)
    pair = Pair(
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_lengths, rejected_lengths,
        chosen_full, f_divergence_type, f_alpha_divergence_coef,
    )  # fmt: skip
    given = dict(label_smoothing=label_smoothing, simpo_gamma=simpo_gamma, rdpo_alpha=rdpo_alpha,
                 discopop_tau=discopop_tau, sft_scale=sft_scale)  # fmt: skip
    return _call(spec, pair, beta, given)


def listwise_loss(
    name: str,
    logps: Tensor,
    ref_logps: Tensor | None = None,
    *,
    scores: Tensor,
    lengths: Tensor | None = None,
    full_logps: Tensor | None = None,
    beta: float = 0.1,
    rrhf_sft_weight: float | None = None,
    rrhf_sft: str | None = None,
    padded_length: float | None = None,
    lire_temperature: float | None = None,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    label_smoothing: float | None = None,
    simpo_gamma: float | None = None,
    rdpo_alpha: float | None = None,
    discopop_tau: float | None = None,
    sft_scale: float | None = None,
) -> Tensor:
    """One loss per list, shape [B]; ``logps``, ``ref_logps``, ``scores``, ``lengths`` are [B, n]
    (``full_logps``: log-probs over every token where ``logps`` are LD-DPO weighted; read by "sft").
    Hyper-parameters as ``pairwise_loss``'s: each reaches the losses that take it.

    A pairwise loss is accepted for n = 2 when ``scores`` rank the two responses: this is the one path from a
    batch of ranked responses to any loss."""
    spec = loss_spec(name)
    if logps.dim() != 2 or scores.shape != logps.shape:
        raise ValueError(
            f"logps and scores must both be [B, n], got {tuple(logps.shape)} and {tuple(scores.shape)}"
        )
    if spec.needs_ref:
        _need(name, "reference log-probs (ref_logps)", ref_logps)
    if spec.needs_lengths:
        _need(name, "completion lengths (lengths)", lengths)
    if not spec.listwise:
        if logps.shape[-1] != 2:
            raise ValueError(f"pairwise loss {name!r} takes lists of 2 responses, got {logps.shape[-1]}")
        lp, rp, ln, fp = ranked(scores, logps, ref_logps, lengths, full_logps)
        return pairwise_loss(
            name,
            lp[:, 0],
            lp[:, 1],
            None if rp is None else rp[:, 0],
            None if rp is None else rp[:, 1],
            chosen_lengths=None if ln is None else ln[:, 0],
            rejected_lengths=None if ln is None else ln[:, 1],
            chosen_full=None if fp is None else fp[:, 0],
            beta=beta,
            f_divergence_type=f_divergence_type,
            f_alpha_divergence_coef=f_alpha_divergence_coef,
            label_smoothing=label_smoothing,
            simpo_gamma=simpo_gamma,
            rdpo_alpha=rdpo_alpha,
            discopop_tau=discopop_tau,
            sft_scale=sft_scale,
        )
    check_loss_settings([name], rrhf_sft=rrhf_sft, lire_temperature=lire_temperature)
    given = dict(rrhf_sft_weight=rrhf_sft_weight, rrhf_sft=rrhf_sft, padded_length=padded_length,
                 lire_temperature=lire_temperature)  # fmt: skip
    return _call(spec, Listwise(logps, scores, ref_logps, lengths), beta, given)


def implicit_rewards(
    logps: Tensor, ref_logps: Tensor | None = None, *, lengths: Tensor | None = None, beta: float = 0.1
) -> Tensor:
    """Implicit rewards for metrics: beta * (logp - ref) (DPO), or beta * logp / |y| when reference-free
    (SimPO, Eq. 4). Any shape; detached."""
    with torch.no_grad():
        if ref_logps is not None:
            return beta * (logps - ref_logps)
        if lengths is None:
            raise ValueError("reference-free rewards need the completion lengths")
        return beta * logps / lengths.clamp(min=1)
