import math

import pytest
import torch

from diffkit.distances import energy_distance, mmd, sliced_wasserstein, with_noise_floor


def _gaussians(n, shift, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64) + shift
    return x, y


def test_mmd_matches_closed_form_for_shifted_gaussians():
    """For N(0, I) vs N(m, I) in d dims and one RBF bandwidth h:
    MMD^2 = 2 (h^2 / (h^2 + 2))^(d/2) (1 - exp(-|m|^2 / (2 (h^2 + 2))))."""
    d, h = 2, 1.0
    m = torch.tensor([1.0, 0.5], dtype=torch.float64)
    x, y = _gaussians(4000, m, d)
    closed = 2 * (h**2 / (h**2 + 2)) ** (d / 2) * (1 - math.exp(-(m**2).sum().item() / (2 * (h**2 + 2))))
    assert mmd(x, y, bandwidths=(h,)).item() == pytest.approx(closed, rel=0.05)
    x2, _ = _gaussians(4000, 0.0, d, seed=1)
    assert abs(mmd(x, x2, bandwidths=(h,)).item()) < 0.01 * closed * 10  # same law: ~0 (unbiased, may dip below)


def test_sliced_wasserstein_closed_form():
    """Same covariance, shifted by m: W2 along direction theta is |theta . m|, so SW^2 = |m|^2 / d."""
    m = torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    x, y = _gaussians(20000, m, 3)
    sw = sliced_wasserstein(x, y, n_projections=2000, generator=torch.Generator().manual_seed(0))
    assert sw.item() ** 2 == pytest.approx(4.0 / 3, rel=0.05)


def test_energy_distance_closed_form_in_1d():
    """X ~ N(0,1), Y ~ N(mu,1): E|X-Y| = E|N(mu, 2)|, E|X-X'| = E|Y-Y'| = 2/sqrt(pi)."""
    mu = 1.0
    x, y = _gaussians(6000, mu, 1)
    s = math.sqrt(2)
    e_xy = s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * (1 - 2 * 0.5 * (1 + math.erf(-mu / (s * math.sqrt(2)))))
    closed = 2 * e_xy - 2 * 2 / math.sqrt(math.pi)
    assert energy_distance(x, y).item() == pytest.approx(closed, rel=0.05)


def test_identical_sets():
    x = torch.randn(500, 2, dtype=torch.float64)
    assert mmd(x, x, unbiased=False).item() == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(x, x).item() == pytest.approx(0.0, abs=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="same number of columns"):
        mmd(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        energy_distance(torch.zeros(1, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="equally many samples"):
        sliced_wasserstein(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="x contains NaN"):
        mmd(torch.full((4, 2), float("nan")), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="bandwidths must be"):
        mmd(torch.randn(4, 2), torch.randn(4, 2), bandwidths=(0.0,))


def _true(n, g):
    return torch.randn(n, 2, generator=g, dtype=torch.float64)


def test_noise_floor_is_the_distance_between_two_fresh_true_sets():
    samples = torch.randn(300, 2, dtype=torch.float64) + 0.5
    report = with_noise_floor(mmd, samples, _true, 200, seed=3)
    g = [torch.Generator().manual_seed(3 + k) for k in range(3)]
    truth, a, b = (_true(200, gk) for gk in g)
    assert report.distance == mmd(samples[:200], truth).item() and report.floor == mmd(a, b).item()
    assert report.n == 200 and report.metric == "mmd" and "noise floor" in str(report)
    assert report.distance > 10 * abs(report.floor)  # a shifted model is far above the floor


def test_a_perfect_model_sits_at_the_floor_which_can_be_negative():
    floors = [with_noise_floor(energy_distance, _true(100, torch.Generator().manual_seed(99)), _true, seed=s)
              for s in range(0, 30, 3)]
    assert any(f.floor < 0 for f in floors) and any(f.floor > 0 for f in floors)  # unbiased: no clamping at 0
    for f in floors:  # samples from the true distribution: the distance is of the size of the floor
        assert abs(f.distance) < 0.1 and abs(f.floor) < 0.1


def test_noise_floor_bad_input():
    x = torch.randn(10, 2)
    with pytest.raises(TypeError, match="metric must be a function"):
        with_noise_floor("mmd", x, _true)
    with pytest.raises(ValueError, match="n must be at most the number of samples"):
        with_noise_floor(mmd, x, _true, 20)
    with pytest.raises(ValueError, match=r"must return \(10, 2\), got \(10, 3\)"):
        with_noise_floor(mmd, x, lambda n, g: torch.randn(n, 3, generator=g))
