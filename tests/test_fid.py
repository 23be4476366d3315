import pytest
import scipy.linalg
import torch

from diffkit import fid


def _random_cov(d, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_identical_sets_give_zero():
    f = torch.randn(500, 16, dtype=torch.float64)
    assert fid.frechet_distance_from_features(f, f).item() == pytest.approx(0.0, abs=1e-8)


def test_closed_form_for_commuting_covariances():
    # diagonal covariances: d^2 = |mu1 - mu2|^2 + sum (s1 - s2)^2
    s1, s2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([2.0, 1.0, 0.25])
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    d2 = fid.frechet_distance(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2))
    assert d2.item() == pytest.approx((5.0 + ((s1 - s2) ** 2).sum()).item(), rel=1e-10)


def test_agrees_with_scipy_sqrtm_on_well_conditioned_input():
    c1, c2 = _random_cov(8, 0), _random_cov(8, 1)
    mu1, mu2 = torch.zeros(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
    ref = ((mu1 - mu2) ** 2).sum() + torch.trace(c1) + torch.trace(c2) \
        - 2 * torch.tensor(scipy.linalg.sqrtm((c1 @ c2).numpy()).real.trace())
    assert fid.frechet_distance(mu1, c1, mu2, c2).item() == pytest.approx(ref.item(), rel=1e-8)


def test_stable_for_singular_covariances():
    # rank-deficient covariances (fewer samples than dimensions): finite, non-negative, ~0 for equal sets
    f = torch.randn(10, 64, dtype=torch.float64)
    d = fid.frechet_distance_from_features(f, f)
    assert torch.isfinite(d) and d.item() == pytest.approx(0.0, abs=1e-6)


def test_sample_estimate_converges_to_the_gaussian_value():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    b = 2 * torch.randn(20000, 4, generator=g, dtype=torch.float64) + 1
    # N(0, I) vs N(1, 4I) in 4-D: 4 * 1 + 4 * (2 - 1)^2 = 8
    assert fid.frechet_distance_from_features(a, b).item() == pytest.approx(8.0, rel=0.03)


def test_bad_input():
    with pytest.raises(ValueError, match="cov1 must have shape"):
        fid.frechet_distance(torch.zeros(3), torch.eye(2), torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match="features must hold at least 2 rows"):
        fid.gaussian_stats(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="features contains NaN"):
        fid.gaussian_stats(torch.full((4, 2), float("nan")))
