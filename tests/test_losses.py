"""Per-sample losses against formulas written out here in float64 (numpy), and against TRL 1.16."""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dora.losses import (
    LISTWISE_LOSSES,
    PAIRWISE_LOSSES,
    implicit_rewards,
    listwise_loss,
    loss_kwargs,
    pairwise_loss,
)


def nls(x):  # -log sigmoid(x), stable, float64
    return np.logaddexp(0.0, -x)


def sig(x):
    return np.exp(-np.logaddexp(0.0, -x))


@pytest.fixture
def batch():
    g = np.random.default_rng(0)
    n = 64
    cw, cl = g.normal(-40, 15, n), g.normal(-40, 15, n)
    rw, rl = g.normal(-40, 15, n), g.normal(-40, 15, n)
    # extreme margins in the first rows: |delta| of 1e3 and 1e4
    cw[:4] = [1e3, -1e3, 5e3, -5e3]
    lw, ll = g.integers(1, 60, n).astype(float), g.integers(1, 60, n).astype(float)
    return cw, cl, rw, rl, lw, ll


def run(name, b, **kw):
    cw, cl, rw, rl, lw, ll = (torch.tensor(x, dtype=torch.float64) for x in b)
    out = pairwise_loss(name, cw, cl, rw, rl, chosen_lengths=lw, rejected_lengths=ll, **kw)
    assert out.shape == (len(b[0]),) and out.dtype == torch.float64
    assert torch.isfinite(out).all(), name
    return out.numpy()


BETA = 0.1


def reference(name, b, beta=BETA, eps=0.0, gamma=0.5, alpha=0.01):
    cw, cl, rw, rl, lw, ll = b
    uw, ul = cw - rw, cl - rl
    d = uw - ul
    z = beta * d
    if name in ("sigmoid", "dpo"):
        return nls(z)
    if name == "cdpo":
        return (1 - eps) * nls(z) + eps * nls(-z)
    if name == "robust":
        return ((1 - eps) * nls(z) - eps * nls(-z)) / (1 - 2 * eps)
    if name == "ipo":
        return (uw / lw - ul / ll - 1 / (2 * beta)) ** 2
    if name == "hinge":
        return np.maximum(0.0, 1 - z)
    if name == "exo_pair":
        e = eps if eps > 0 else 1e-3
        return sig(z) * (-nls(z) - np.log(1 - e)) + sig(-z) * (-nls(-z) - np.log(e))
    if name == "sigmoid_norm":
        return nls(beta * (uw / lw - ul / ll))
    if name == "nca_pair":
        return nls(beta * uw) + 0.5 * nls(-beta * uw) + 0.5 * nls(-beta * ul)
    if name == "bco_pair":
        return nls(beta * uw) + nls(-beta * ul)
    if name == "sppo_hard":
        return (uw - 0.5 / beta) ** 2 + (ul + 0.5 / beta) ** 2
    if name == "apo_zero":
        return 1 - sig(beta * uw) + sig(beta * ul)
    if name == "apo_down":
        return sig(beta * uw) + 1 - sig(beta * d)
    if name == "rdpo_length":
        return nls(z - alpha * (lw - ll))
    if name == "simpo":
        x = beta * (cw / lw - cl / ll) - gamma
        return (1 - eps) * nls(x) + eps * nls(-x)
    if name == "discopop":  # DiscoPOP Eq. 5, tau = 0.05; m * exp(-z) as exp(log m - z)
        tau = 0.05
        return nls(z) * sig(-z / tau) + np.exp(-nls(z / tau) - z)
    if name == "aot":  # sorted policy log-ratios against sorted reference log-ratios
        x = beta * (np.sort(cw - cl) - np.sort(rw - rl))
        return (1 - eps) * nls(x) + eps * nls(-x)
    if name == "aot_unpaired":
        x = beta * (np.sort(uw) - np.sort(ul))
        return (1 - eps) * nls(x) + eps * nls(-x)
    if name == "sft":  # the batch's mean NLL per chosen token, split over pairs by their tokens
        return -cw * len(cw) / lw.sum()
    raise KeyError(name)


@pytest.mark.parametrize("name", sorted(PAIRWISE_LOSSES))
def test_pairwise_matches_formula(name, batch):
    np.testing.assert_allclose(run(name, batch), reference(name, batch), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["cdpo", "robust", "exo_pair", "simpo"])
def test_label_smoothing(name, batch):
    got = run(name, batch, label_smoothing=0.2)
    np.testing.assert_allclose(got, reference(name, batch, eps=0.2), rtol=1e-10, atol=1e-10)


def test_hyperparameters(batch):
    np.testing.assert_allclose(
        run("simpo", batch, beta=2.0, simpo_gamma=1.3), reference("simpo", batch, 2.0, gamma=1.3)
    )
    np.testing.assert_allclose(
        run("rdpo_length", batch, rdpo_alpha=0.3), reference("rdpo_length", batch, alpha=0.3)
    )
    np.testing.assert_allclose(run("ipo", batch, beta=0.5), reference("ipo", batch, beta=0.5))


def test_robust_rejects_bad_epsilon(batch):
    with pytest.raises(ValueError, match="label_smoothing"):
        run("robust", batch, label_smoothing=0.5)


@pytest.mark.parametrize(
    "name,with_ref,match",
    [
        ("sigmoid", False, "reference log-probs"),
        ("ipo", True, "completion lengths"),
        ("simpo", False, "completion lengths"),
        ("nope", True, "unknown loss_type 'nope'"),
        ("dpo_pl", True, "listwise"),
    ],
)
def test_missing_inputs_raise_clear_errors(name, with_ref, match):
    x = torch.zeros(3)
    with pytest.raises(ValueError, match=match):
        pairwise_loss(name, x, x, *((x, x) if with_ref else ()))


# ----------------------------------------------------------------------------- TRL 1.16


# The DPO-family losses are checked against TRL's own DPOTrainer._compute_loss in test_trl_parity.py.


@pytest.mark.parametrize("eps", [0.0, 0.15])
def test_simpo_matches_trl_cpo(batch, eps):
    from trl.experimental.cpo import CPOTrainer

    cw, cl, _, _, lw, ll = (torch.tensor(x, dtype=torch.float32) for x in batch)
    fake = SimpleNamespace(
        alpha=0.0,
        loss_type="simpo",
        simpo_gamma=0.5,
        beta=2.0,
        label_smoothing=eps,
        accelerator=SimpleNamespace(device=torch.device("cpu")),
    )
    # CPOTrainer feeds SimPO the average per-token log-probs.
    trl_losses, _, _ = CPOTrainer.cpo_loss(fake, cw / lw, cl / ll)
    ours = pairwise_loss(
        "simpo",
        cw,
        cl,
        chosen_lengths=lw,
        rejected_lengths=ll,
        beta=2.0,
        simpo_gamma=0.5,
        label_smoothing=eps,
    )
    torch.testing.assert_close(ours, trl_losses, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- listwise


@pytest.fixture
def lists():
    g = np.random.default_rng(1)
    b, n = 8, 4
    logps = g.normal(-30, 10, (b, n))
    ref = g.normal(-30, 10, (b, n))
    scores = g.normal(0, 1, (b, n))
    lengths = g.integers(1, 40, (b, n)).astype(float)
    return logps, ref, scores, lengths


def _lw(name, lists, **kw):
    logps, ref, scores, lengths = (torch.tensor(x, dtype=torch.float64) for x in lists)
    return listwise_loss(name, logps, ref, scores=scores, lengths=lengths, **kw).numpy()


def test_dpo_pl_matches_plackett_luce(lists):
    logps, ref, scores, _ = lists
    expected = []
    for i in range(len(logps)):
        order = np.argsort(-scores[i], kind="stable")
        r = BETA * (logps[i] - ref[i])[order]
        n = len(r)
        ll = sum(r[k] - np.log(np.sum(np.exp(r[k:]))) for k in range(n))
        expected.append(-ll / n)
    np.testing.assert_allclose(_lw("dpo_pl", lists), expected, rtol=1e-10)


def test_dpo_pl_with_two_responses_is_half_dpo(lists):
    logps, ref, scores, lengths = (x[:, :2] for x in lists)
    got = _lw("dpo_pl", (logps, ref, scores, lengths))
    w = np.where(scores[:, 0] >= scores[:, 1], 0, 1)
    rows = np.arange(len(w))
    u = logps - ref
    d = u[rows, w] - u[rows, 1 - w]
    np.testing.assert_allclose(got, nls(BETA * d) / 2, rtol=1e-10)


def test_rrhf_matches_formula(lists):
    logps, _, scores, lengths = lists
    p = logps / lengths
    expected = []
    for i in range(len(p)):
        n = p.shape[1]
        rank = sum(
            max(0.0, p[i, a] - p[i, b]) for a in range(n) for b in range(n) if scores[i, a] < scores[i, b]
        )
        expected.append(rank / n - p[i, np.argmax(scores[i])])
    np.testing.assert_allclose(_lw("rrhf", lists), expected, rtol=1e-10)


def test_lire_matches_formula(lists):
    logps, _, scores, _ = lists
    T = 2.0
    expected = []
    for i in range(len(logps)):
        q = np.exp(logps[i] / T - np.logaddexp.reduce(logps[i] / T))
        s = np.exp(scores[i] - np.logaddexp.reduce(scores[i]))
        expected.append(-(q * s).mean())
    np.testing.assert_allclose(_lw("lire", lists), expected, rtol=1e-10)
    np.testing.assert_allclose(
        _lw("lire", lists, lire_temperature=0.5)[0],
        -(
            np.exp(logps[0] / 0.5 - np.logaddexp.reduce(logps[0] / 0.5))
            * np.exp(scores[0] - np.logaddexp.reduce(scores[0]))
        ).mean(),
        rtol=1e-10,
    )


def test_pairwise_loss_through_listwise_entry(lists):
    logps, ref, scores, lengths = (x[:, :2] for x in lists)
    got = _lw("sigmoid", (logps, ref, scores, lengths))
    w = np.where(scores[:, 0] >= scores[:, 1], 0, 1)
    rows = np.arange(len(w))
    u = logps - ref
    np.testing.assert_allclose(got, nls(BETA * (u[rows, w] - u[rows, 1 - w])), rtol=1e-10)


def test_listwise_registry_and_gradients(lists):
    assert set(LISTWISE_LOSSES) == {"dpo_pl", "rrhf", "lire"}
    logps = torch.tensor(lists[0], requires_grad=True)
    loss = listwise_loss("dpo_pl", logps, torch.tensor(lists[1]), scores=torch.tensor(lists[2])).sum()
    loss.backward()
    assert torch.isfinite(logps.grad).all() and logps.grad.abs().sum() > 0


def test_gradient_of_dpo_is_closed_form():
    cw = torch.tensor([-10.0, -3.0], dtype=torch.float64, requires_grad=True)
    cl, rw, rl = (torch.tensor([-12.0, -1.0], dtype=torch.float64) for _ in range(3))
    pairwise_loss("sigmoid", cw, cl, rw, rl, beta=0.5).sum().backward()
    d = (cw.detach() - rw) - (cl - rl)
    expected = -0.5 * torch.sigmoid(-0.5 * d)  # d/dx -log s(b x) = -b s(-b x)
    torch.testing.assert_close(cw.grad, expected)


def test_implicit_rewards():
    lp, ref, n = torch.tensor([-4.0, -6.0]), torch.tensor([-5.0, -5.0]), torch.tensor([2.0, 3.0])
    torch.testing.assert_close(implicit_rewards(lp, ref, beta=0.1), torch.tensor([0.1, -0.1]))
    torch.testing.assert_close(implicit_rewards(lp, lengths=n, beta=2.0), torch.tensor([-4.0, -4.0]))
    with pytest.raises(ValueError):
        implicit_rewards(lp)
    assert math.isclose(float(implicit_rewards(lp, ref)[0]), 0.1, rel_tol=1e-6)


def test_a_misspelt_loss_keyword_is_a_type_error_naming_it():
    x, n = torch.tensor([-1.0, -2.0]), torch.tensor([3.0, 3.0])
    with pytest.raises(TypeError, match="simpo_gama"):
        pairwise_loss("simpo", x, x - 1, beta=2.0, chosen_lengths=n, rejected_lengths=n, simpo_gama=3.0)
    with pytest.raises(TypeError, match="lire_temp"):
        listwise_loss("lire", x.view(1, 2), scores=torch.tensor([[1.0, 0.0]]), lire_temp=1.0)


@pytest.mark.parametrize("name", sorted({**PAIRWISE_LOSSES, **LISTWISE_LOSSES}))
def test_every_loss_takes_explicit_keywords_only(name):
    """No catch-all: a keyword a loss does not name reaches it as a TypeError."""
    spec = {**PAIRWISE_LOSSES, **LISTWISE_LOSSES}[name]
    kinds = {p.kind for p in inspect.signature(spec.fn).parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds
    with pytest.raises(TypeError, match="not_a_setting"):
        spec.fn(None, 0.1, not_a_setting=1.0)


def test_a_hyper_parameter_reaches_only_the_losses_that_take_it(batch):
    """One set of settings serves a combination of losses: simpo_gamma moves SimPO and leaves DPO as it is."""
    np.testing.assert_allclose(run("sigmoid", batch, simpo_gamma=9.0), reference("sigmoid", batch))
    simpo = run("simpo", batch, beta=2.0, simpo_gamma=9.0)
    np.testing.assert_allclose(simpo, reference("simpo", batch, 2.0, gamma=9.0))
    assert loss_kwargs("simpo", {"simpo_gamma": 1.0, "rdpo_alpha": 2.0, "label_smoothing": 0.1}) == {
        "simpo_gamma": 1.0, "label_smoothing": 0.1,
    }
    assert loss_kwargs("sigmoid", {"f_divergence_type": "js_divergence", "simpo_gamma": 1.0}) == {
        "f_divergence_type": "js_divergence"
    }
