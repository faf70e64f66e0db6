"""Calibration weights against the formula of DESIGN.md written out in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dora.ratio import calibration_weights, effective_sample_size, response_weights


def test_authors_preset_is_n_times_c():
    g = np.random.default_rng(0)
    for n in (1, 2, 4, 6):
        c = g.uniform(0.01, 0.99, (32, n))
        w = response_weights(torch.tensor(c), preset="authors")
        np.testing.assert_allclose(w.numpy(), n * c, rtol=1e-6)
        h = calibration_weights(torch.tensor(c), preset="authors")
        np.testing.assert_allclose(h.numpy(), (n * c).mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize("a", [0.05, 0.2, 0.5, 0.9])
def test_classifier_trained_on_the_same_mixture_gives_c_over_a(a):
    """gamma = (1 - a)/a (the classifier saw the mixture itself): w = c/a, h = mean c/a."""
    c = np.random.default_rng(1).uniform(0.001, 0.999, (40, 2))
    h = calibration_weights(torch.tensor(c), target_share=a, imbalance=(1 - a) / a)
    np.testing.assert_allclose(h.numpy(), (c / a).mean(axis=1), rtol=1e-6)
    w1 = calibration_weights(torch.tensor(c[:, 0]), target_share=a, imbalance=(1 - a) / a)
    np.testing.assert_allclose(w1.numpy(), c[:, 0] / a, rtol=1e-6)


def test_general_formula_and_options():
    g = np.random.default_rng(1)
    c = g.uniform(0.0, 1.0, (50, 2))
    c[0] = [0.0, 1.0]  # clamped to [eps, 1 - eps]
    a, gamma = 0.3, 2.5
    cc = np.clip(c, 1e-4, 1 - 1e-4)
    dq = 1.0 / (a + (1 - a) * (1 - cc) / (gamma * cc))  # dQ0/dP, the default s = a
    got = response_weights(torch.tensor(c), target_share=a, imbalance=gamma)
    np.testing.assert_allclose(got.numpy(), dq, rtol=1e-6)
    assert float(got.max()) <= 1 / a + 1e-5
    s = 0.6  # a larger stabiliser bounds every weight by 1/s
    w = 1.0 / (s + (1 - a) * (1 - cc) / (gamma * cc))
    got = response_weights(torch.tensor(c), target_share=a, imbalance=gamma, stabilizer=s)
    np.testing.assert_allclose(got.numpy(), w, rtol=1e-6)
    assert float(got.max()) <= 1 / s + 1e-6
    h = calibration_weights(torch.tensor(c), target_share=a, imbalance=gamma, stabilizer=s, clip=1.5, normalize=True)
    expected = np.minimum(w, 1.5).mean(axis=1)
    expected /= expected.mean()
    np.testing.assert_allclose(h.numpy(), expected, rtol=1e-6)
    assert h.dtype == torch.float32 and float(h.mean()) == pytest.approx(1.0, rel=1e-6)
    # target_share = 1: the data is all target, every weight is 1
    np.testing.assert_allclose(calibration_weights(torch.tensor(c), target_share=1.0).numpy(), 1.0, rtol=1e-6)


def test_calibrated_weights_have_mean_one_under_the_mixture():
    """E_P[w] = 1 for a calibrated classifier: draw labels from c itself (so c is calibrated)."""
    g = np.random.default_rng(3)
    c = g.beta(0.5, 2.0, 200_000)
    y = g.random(c.size) < c  # P(target | c) = c
    assert y.mean() == pytest.approx(c.mean(), abs=0.003)
    share = float(y.mean())
    w = calibration_weights(torch.tensor(c), target_share=share, imbalance=(1 - share) / share).numpy()
    assert w.mean() == pytest.approx(1.0, abs=0.01)
    assert w[y].mean() > 2 * w[~y].mean()


def test_missing_target_share_and_bad_options():
    with pytest.raises(ValueError, match="needs target_share"):
        calibration_weights(torch.rand(3))
    with pytest.raises(ValueError, match="needs target_share"):
        response_weights(torch.rand(3, 2))
    with pytest.raises(ValueError, match="target_share must be in"):
        calibration_weights(torch.rand(3), target_share=0.0)
    with pytest.raises(ValueError, match="target_share must be in"):
        calibration_weights(torch.rand(3), target_share=1.5)
    with pytest.raises(ValueError, match="imbalance"):
        calibration_weights(torch.rand(3), target_share=0.5, imbalance=float("nan"))
    with pytest.raises(ValueError, match="stabilizer"):
        calibration_weights(torch.rand(3), target_share=0.5, stabilizer=-1.0)
    with pytest.raises(ValueError, match="preset must be"):
        calibration_weights(torch.rand(3), preset="paper")
    with pytest.raises(ValueError, match="do not pass target_share"):
        calibration_weights(torch.rand(3), preset="authors", target_share=0.2)
    with pytest.raises(ValueError, match="clip"):
        calibration_weights(torch.rand(3), target_share=0.5, clip=0.0)
    with pytest.raises(ValueError, match="shape"):
        calibration_weights(torch.rand(2, 2, 2), target_share=0.5)
    with pytest.raises(ValueError, match=r"eps must be in \[0, 0.5\), got 0.7"):  # clamp(0.7, 0.3) is silent
        calibration_weights(torch.rand(3), target_share=0.5, eps=0.7)


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
        calibration_weights(p, target_share=0.2)
    with pytest.raises(ValueError, match="row 3:"):
        calibration_weights(torch.tensor([0.1, 0.2, 0.3, bad]), preset="authors")


def test_effective_sample_size():
    assert effective_sample_size(torch.ones(10)) == pytest.approx(10.0)
    assert effective_sample_size(torch.tensor([1.0, 0, 0, 0])) == pytest.approx(1.0)
    w = np.array([0.5, 2.0, 1.0])
    assert effective_sample_size(torch.tensor(w)) == pytest.approx(w.sum() ** 2 / (w**2).sum())
