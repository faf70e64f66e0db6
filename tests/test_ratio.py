"""Calibration weights against the formula of DESIGN.md written out in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dora.ratio import calibration_weights, effective_sample_size, response_weights


def test_authors_constants_give_n_times_c():
    g = np.random.default_rng(0)
    for n in (1, 2, 4, 6):
        c = g.uniform(0.01, 0.99, (32, n))
        w = response_weights(torch.tensor(c), stabilizer=1 / n, mixture_shares=1 / n, imbalance=1.0)
        np.testing.assert_allclose(w.numpy(), n * c, rtol=1e-6)
        # defaults are the same constants
        np.testing.assert_allclose(response_weights(torch.tensor(c)).numpy(), n * c, rtol=1e-6)
        h = calibration_weights(torch.tensor(c))
        np.testing.assert_allclose(h.numpy(), (n * c).mean(axis=1), rtol=1e-6)


def test_general_formula_and_options():
    g = np.random.default_rng(1)
    c = g.uniform(0.0, 1.0, (50, 2))
    c[0] = [0.0, 1.0]  # clamped to [eps, 1 - eps]
    pi = np.array([0.3, 0.7])
    gamma = 2.5
    s = 0.2
    cc = np.clip(c, 1e-4, 1 - 1e-4)
    w = 1.0 / (s + pi * (1 - cc) / (gamma * cc))
    got = response_weights(torch.tensor(c), mixture_shares=torch.tensor(pi), imbalance=gamma, stabilizer=s)
    np.testing.assert_allclose(got.numpy(), w, rtol=1e-6)
    assert float(got.max()) <= 1 / s + 1e-6  # the stabiliser bounds every weight
    h = calibration_weights(
        torch.tensor(c),
        mixture_shares=torch.tensor(pi),
        imbalance=gamma,
        stabilizer=s,
        clip=3.0,
        normalize=True,
    )
    expected = np.minimum(w, 3.0).mean(axis=1)
    expected /= expected.mean()
    np.testing.assert_allclose(h.numpy(), expected, rtol=1e-6)
    assert h.dtype == torch.float32 and float(h.mean()) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize(
    "bad,where",
    [
        (float("nan"), "row 2, response 1"),
        (1.5, "row 2, response 1"),
        (-0.1, "row 2, response 1"),
        (float("inf"), "row 2, response 1"),
    ],
)
def test_bad_probabilities_name_the_row(bad, where):
    p = torch.full((4, 2), 0.5)
    p[2, 1] = bad
    with pytest.raises(ValueError, match=where):
        calibration_weights(p)
    with pytest.raises(ValueError, match="row 3:"):
        calibration_weights(torch.tensor([0.1, 0.2, 0.3, bad]))


def test_bad_options():
    with pytest.raises(ValueError, match="mixture_shares"):
        calibration_weights(torch.rand(3), mixture_shares=0.0)
    with pytest.raises(ValueError, match="imbalance"):
        calibration_weights(torch.rand(3), imbalance=float("nan"))
    with pytest.raises(ValueError, match="stabilizer"):
        calibration_weights(torch.rand(3), stabilizer=-1.0)
    with pytest.raises(ValueError, match="shape"):
        calibration_weights(torch.rand(2, 2, 2))


def test_effective_sample_size():
    assert effective_sample_size(torch.ones(10)) == pytest.approx(10.0)
    assert effective_sample_size(torch.tensor([1.0, 0, 0, 0])) == pytest.approx(1.0)
    w = np.array([0.5, 2.0, 1.0])
    assert effective_sample_size(torch.tensor(w)) == pytest.approx(w.sum() ** 2 / (w**2).sum())
