"""Robust objectives: values and gradients against closed forms written out here (float64)."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from dora.objectives import OBJECTIVES, GroupDROState, describe_objective, evaluate_objective, robust_objective


def grad_of(name, l, h=None, **kw):
    x = torch.tensor(l, dtype=torch.float32, requires_grad=True)
    w = None if h is None else torch.tensor(h, dtype=torch.float32)
    out = robust_objective(name, x, weights=w, **kw)
    out.backward()
    return float(out), x.grad.double().numpy()


@pytest.fixture
def lh():
    g = np.random.default_rng(3)
    return g.uniform(0.05, 3.0, 16), g.uniform(0.0, 2.0, 16)


def lme(x):  # log mean exp, float64
    return np.logaddexp.reduce(x) - np.log(len(x))


def softmax(x):
    return np.exp(x - np.logaddexp.reduce(x))


def test_mean_and_reweight(lh):
    l, h = lh
    v, g = grad_of("mean", l)
    assert v == pytest.approx(l.mean(), rel=1e-6)
    np.testing.assert_allclose(g, np.full_like(l, 1 / len(l)), rtol=1e-6)
    v, g = grad_of("reweight", l, h)
    assert v == pytest.approx((h * l).mean(), rel=1e-6)
    np.testing.assert_allclose(g, h / len(l), rtol=1e-6)
    v1, g1 = grad_of("reweight", l, np.ones_like(l))
    v0, g0 = grad_of("mean", l)
    assert v1 == pytest.approx(v0, rel=1e-7)
    np.testing.assert_allclose(g1, g0, rtol=1e-7)


@pytest.mark.parametrize("lam", [0.3, 1.0, 4.0])
def test_dora_value_and_gradient(lh, lam):
    l, h = lh
    v, g = grad_of("dora", l, h, dro_lambda=lam)
    assert v == pytest.approx(lam * lme(h * l / lam), rel=1e-6)
    # d/dl_i [lam log mean exp(h l / lam)] = softmax(h l / lam)_i * h_i
    np.testing.assert_allclose(g, softmax(h * l / lam) * h, rtol=1e-5, atol=1e-8)


def test_dora_outside_placement(lh):
    l, h = lh
    v, g = grad_of("dora", l, h, dora_placement="outside")
    assert v == pytest.approx(h.mean() * lme(l), rel=1e-6)
    np.testing.assert_allclose(g, h.mean() * softmax(l), rtol=1e-5)
    with pytest.raises(ValueError, match="dora_placement"):
        grad_of("dora", l, h, dora_placement="sideways")


def test_kl_dro_limits(lh):
    l, _ = lh
    v, g = grad_of("kl_dro", l, dro_lambda=1.0)
    assert v == pytest.approx(lme(l), rel=1e-6)
    np.testing.assert_allclose(g, softmax(l), rtol=1e-5)
    big, _ = grad_of("kl_dro", l, dro_lambda=1e4)
    assert big == pytest.approx(l.mean() + np.var(l) / (2 * 1e4), rel=1e-6)  # second-order expansion
    small, gs = grad_of("kl_dro", l, dro_lambda=1e-3)
    assert small == pytest.approx(l.max(), abs=1e-2)
    assert gs[np.argmax(l)] == pytest.approx(1.0, abs=1e-4)
    assert v > l.mean() and v < l.max()


def test_dr_dpo_downweights_high_losses(lh):
    l, _ = lh
    v, g = grad_of("dr_dpo", l, dr_dpo_beta=0.7)
    assert v == pytest.approx(-0.7 * lme(-l / 0.7), rel=1e-6)
    np.testing.assert_allclose(g, softmax(-l / 0.7), rtol=1e-5)
    order = np.argsort(l)
    assert np.all(np.diff(g[order]) < 0), "a higher loss must get a smaller weight"
    assert v < l.mean()


def test_kldpo(lh):
    l, _ = lh
    v, g = grad_of("kldpo", l, kldpo_tau=0.5)
    w = np.minimum(np.exp((l - l.mean()) / 0.5), 10.0)
    assert v == pytest.approx((w * l).mean(), rel=1e-6)
    np.testing.assert_allclose(g, w / len(l), rtol=1e-5)  # the weights are detached
    assert w.max() == 10.0  # the clamp is active in this batch


def test_cvar(lh):
    l, h = lh
    v, g = grad_of("cvar", l, cvar_alpha=0.25)
    top = np.sort(l)[-4:]
    assert v == pytest.approx(top.mean(), rel=1e-6)
    assert (g > 0).sum() == 4 and g[g > 0] == pytest.approx(np.full(4, 0.25))
    v, _ = grad_of("cvar", l, h, cvar_alpha=0.25)
    assert v == pytest.approx(np.sort(h * l)[-4:].mean(), rel=1e-6)


def test_group_dro_mirror_ascent_and_state():
    l = np.array([1.0, 2.0, 0.5, 0.1, 3.0])
    groups = torch.tensor([0, 0, 1, 1, 2])
    st = GroupDROState(3, eta=0.5)
    x = torch.tensor(l, requires_grad=True)
    out = robust_objective("group_dro", x, groups=groups, group_dro_state=st)
    out.backward()
    lg = np.array([1.5, 0.3, 3.0])
    a = np.full(3, 1 / 3) * np.exp(0.5 * lg)
    a /= a.sum()
    np.testing.assert_allclose(st.alpha.numpy(), a, rtol=1e-6)  # float32 group losses
    assert float(out) == pytest.approx((a * lg).sum(), rel=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), [a[0] / 2, a[0] / 2, a[1] / 2, a[1] / 2, a[2]], rtol=1e-5)
    # a group absent from the batch keeps its (relative) weight; state round-trips
    saved = st.state_dict()
    robust_objective("group_dro", torch.tensor([1.0, 1.0]), groups=torch.tensor([0, 0]), group_dro_state=st)
    after = a * np.exp(0.5 * np.array([1.0, 0.0, 0.0]))  # only the present group's loss moves its weight
    np.testing.assert_allclose(st.alpha.numpy(), after / after.sum(), rtol=1e-6)
    assert float(st.alpha[1] / st.alpha[2]) == pytest.approx(a[1] / a[2], rel=1e-6)
    st2 = GroupDROState(3)
    st2.load_state_dict(saved)
    np.testing.assert_allclose(st2.alpha.numpy(), a)
    assert st2.eta == 0.5
    with pytest.raises(ValueError, match="group"):
        robust_objective("group_dro", torch.tensor([1.0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("name", ["dora", "kl_dro", "dr_dpo", "kldpo", "mean", "reweight", "cvar"])
def test_finite_at_extremes(name, dtype):
    l = torch.tensor([1e4, 1e4 - 1, 0.0, 5.0], dtype=dtype, requires_grad=True)
    h = torch.tensor([2.0, 0.5, 1.0, 0.0], dtype=dtype)
    out = evaluate_objective(name, l, weights=h, dro_lambda=1e-3, dr_dpo_beta=1e-3, kldpo_tau=1e-3)
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert math.isfinite(float(out.loss)) and torch.isfinite(l.grad.float()).all()
    assert math.isfinite(out.ess)
    if name == "dora":  # lam -> 0: the max of h*l, all gradient on that sample
        assert float(out.loss) == pytest.approx(2 * float(l[0]), rel=1e-4)
        assert float(l.grad[0]) == pytest.approx(2.0, rel=1e-2)


def test_sample_weights_and_ess(lh):
    l, h = lh
    out = evaluate_objective(
        "dora", torch.tensor(l, dtype=torch.float32), weights=torch.tensor(h, dtype=torch.float32)
    )
    p = softmax(h * l) * h
    np.testing.assert_allclose(out.sample_weights.numpy(), len(l) * p, rtol=1e-5)
    assert out.ess == pytest.approx(p.sum() ** 2 / (p**2).sum(), rel=1e-5)
    erm = evaluate_objective("mean", torch.tensor(l))
    assert erm.ess == pytest.approx(len(l)) and torch.allclose(erm.sample_weights, torch.ones(len(l)))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda l: robust_objective("dora", l, weights=torch.tensor([1.0, float("nan"), 1.0])), "sample 1: weight nan"),
        (lambda l: robust_objective("dora", l, weights=torch.ones(2)), "shape"),
        (lambda l: robust_objective("max", l), "unknown objective"),
        (lambda l: robust_objective("dora", l, dro_lambda=0.0), "dro_lambda"),
        (lambda l: robust_objective("mean", torch.ones(2, 2)), "1-D"),
    ],
    ids=["nan-weight", "weight-shape", "unknown-name", "dro_lambda-0", "not-1-D"],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.ones(3))


def test_a_misspelt_objective_keyword_is_a_type_error_naming_it():
    l, h = torch.tensor([0.5, 0.7]), torch.tensor([1.0, 1.0])
    with pytest.raises(TypeError, match="dro_lamda"):
        robust_objective("dora", l, weights=h, dro_lamda=0.01)
    with pytest.raises(TypeError, match="cvar_alfa"):
        evaluate_objective("cvar", l, weights=h, cvar_alfa=0.5)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_takes_explicit_keywords_only(name):
    fn = OBJECTIVES[name].fn
    kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds
    with pytest.raises(TypeError, match="not_a_setting"):
        fn(torch.ones(2), torch.ones(2), not_a_setting=1.0)


def test_a_setting_reaches_only_the_objectives_that_take_it(lh):
    """cvar_alpha moves CVaR and leaves the mean as it is (one set of settings serves any objective)."""
    l, h = lh
    v, _ = grad_of("mean", l, h, cvar_alpha=0.25, dro_lambda=3.0)
    assert v == pytest.approx(float(np.mean(l)), rel=1e-6)


@pytest.mark.parametrize(
    "name,weights,cvar_alpha,groups,expected",
    [
        ("dora", "ones", 0.2, 1, "KL-DRO (objective kl_dro): every weight is 1, no 'w' column or all 1"),
        ("dora", "equal", 0.2, 1, "KL-DRO on a constant multiple of the losses: every weight is equal"),
        ("dora", "differ", 0.2, 1, "DoRA: KL-DRO over the calibrated losses"),
        ("reweight", "equal", 0.2, 1, "DPO (objective mean): every weight is equal"),
        ("mean", "differ", 0.2, 1, "DPO (ERM); the 'w' weights are not used"),
        ("kl_dro", "differ", 0.2, 1, "KL-DRO; the 'w' weights are not used (objective dora uses them)"),
        ("cvar", "differ", 1.0, 1, "importance-weighted mean of the losses: cvar_alpha 1 keeps every sample"),
        ("cvar", "differ", 0.2, 1, "CVaR"),
        ("group_dro", "differ", 0.2, 1, "DPO (ERM): one group"),
        ("group_dro", "differ", 0.2, 3, "group DRO"),
    ],
)
def test_the_registry_says_what_an_objective_reduces_to(name, weights, cvar_alpha, groups, expected):
    text = describe_objective(name, weights, num_groups=groups, cvar_alpha=cvar_alpha, loss="DPO", column="w")
    assert text == expected


def test_the_registry_says_which_objectives_read_weights_and_groups():
    """Checked against each objective's value: one that reads h changes when h does; group_dro needs groups."""
    l = torch.tensor([0.3, 1.2, 2.0, 0.7])
    h1, h2 = torch.ones(4), torch.tensor([0.2, 3.0, 0.5, 1.5])
    for name, spec in OBJECTIVES.items():
        if spec.needs_groups:
            with pytest.raises(ValueError, match="group"):
                robust_objective(name, l, weights=h2)
            continue
        moved = float(robust_objective(name, l, weights=h1)) != float(robust_objective(name, l, weights=h2))
        assert moved == spec.weighted, name
