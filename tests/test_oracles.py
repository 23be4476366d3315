import math

import pytest
import torch

from diffkit import oracles, paths
from tests.conftest import all_paths, path_id


def _mixture_full():
    means = torch.tensor([[0.0, 0.0], [3.0, 1.0], [-2.0, 2.5]], dtype=torch.float64)
    covs = torch.stack([torch.tensor([[1.0, 0.3], [0.3, 0.5]]), torch.tensor([[0.2, 0.0], [0.0, 0.8]]),
                        torch.tensor([[0.4, -0.1], [-0.1, 0.3]])]).double()
    return oracles.GaussianMixture(means, covs=covs, weights=torch.tensor([0.5, 0.3, 0.2]), labels=torch.tensor([0, 1, 1]))


@pytest.mark.parametrize("path", all_paths(), ids=path_id)
def test_score_is_gradient_of_log_density(path):
    gmm = _mixture_full()
    x = (3 * torch.randn(32, 2, dtype=torch.float64)).requires_grad_()
    t = 0.05 + 0.9 * torch.rand(32, dtype=torch.float64)
    (grad,) = torch.autograd.grad(gmm.log_prob(x, t, path).sum(), x)
    torch.testing.assert_close(gmm.score(x.detach(), t, path), grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("path", all_paths(), ids=path_id)
def test_denoiser_obeys_tweedie(path):
    gmm = _mixture_full()
    x = 3 * torch.randn(32, 2, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(32, dtype=torch.float64)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    tweedie = (x + s**2 * gmm.score(x, t, path)) / a
    torch.testing.assert_close(gmm.denoiser(x, t, path), tweedie, rtol=1e-8, atol=1e-8)


def test_denoiser_matches_monte_carlo_posterior_mean():
    gmm, path = _mixture_full(), paths.VPPath()
    g = torch.Generator().manual_seed(3)
    x0 = gmm.sample(400000, generator=g)
    t = 0.3
    xt = path.sample(x0, t, generator=g).x_t
    # condition on x_t falling in a small box around a query point
    q = torch.tensor([0.5, 0.5], dtype=torch.float64)
    near = ((xt - q).abs() < 0.1).all(-1)
    assert near.sum() > 1000
    mc = x0[near].mean(0)
    exact = gmm.denoiser(q[None], t, path)[0]
    assert (mc - exact).abs().max() < 0.05


def test_isotropic_and_full_covariance_agree():
    means = torch.randn(5, 2, dtype=torch.float64)
    stds = torch.rand(5, dtype=torch.float64) + 0.1
    iso = oracles.GaussianMixture(means, stds=stds)
    full = oracles.GaussianMixture(means, covs=stds[:, None, None] ** 2 * torch.eye(2, dtype=torch.float64))
    x, t, path = torch.randn(20, 2, dtype=torch.float64), 0.4, paths.LinearPath()
    for f in ("log_prob", "score", "denoiser"):
        torch.testing.assert_close(getattr(iso, f)(x, t, path), getattr(full, f)(x, t, path))


def test_sample_moments():
    gmm = _mixture_full()
    x = gmm.sample(200000, generator=torch.Generator().manual_seed(0))
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    assert (x.mean(0) - mean).abs().max() < 0.02
    second = sum(w * (c + torch.outer(m, m)) for w, m, c in zip(gmm.weights, gmm.means, gmm.covs))
    assert (torch.cov(x.T) - (second - torch.outer(mean, mean))).abs().max() < 0.05


def test_ideal_denoiser_memorises():
    data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [4.0, -1.0]], dtype=torch.float64)
    gmm = oracles.GaussianMixture.from_data(data)
    x = torch.tensor([[0.9, 1.2], [3.0, -0.5]], dtype=torch.float64)
    path = paths.VPPath()
    torch.testing.assert_close(gmm.denoiser(x, 0.01, path), data[[1, 2]], rtol=0, atol=1e-6)
    # where the signal is gone (alpha_1 = 0 on the linear path) it returns the data mean
    torch.testing.assert_close(gmm.denoiser(x, 1.0, paths.LinearPath()), data.mean(0).expand(2, 2))


def test_class_conditioning_and_null_label():
    gmm = _mixture_full()
    path, x, t = paths.VPPath(), torch.randn(6, 2, dtype=torch.float64), 0.3
    y = torch.tensor([0, 0, 1, 1, 2, 2])  # 2 is the null label (num_classes)
    r = gmm.responsibilities(x, t, path, y)
    assert torch.equal(r[:2, 1:], torch.zeros(2, 2, dtype=torch.float64))
    assert torch.equal(r[2:4, 0], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(r[4:], gmm.responsibilities(x[4:], t, path))
    s = gmm.sample(1000, y=torch.ones(1000, dtype=torch.long), generator=torch.Generator().manual_seed(0),
                   return_labels=True)
    assert torch.equal(s[1], torch.ones(1000, dtype=torch.long))


def test_eight_gaussians_log_prob_normalises():
    gmm = oracles.eight_gaussians()
    grid = torch.linspace(-7, 7, 561, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], -1)
    mass = gmm.log_prob(pts, 0.0 + 1e-9, paths.LinearPath()).exp().sum() * (grid[1] - grid[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-3)
    assert math.isclose(gmm.num_classes, 8)


def test_bad_input():
    with pytest.raises(ValueError, match="give exactly one of covs"):
        oracles.GaussianMixture(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="covs must be symmetric positive semi-definite"):
        oracles.GaussianMixture(torch.zeros(1, 2), covs=torch.tensor([[[1.0, 0.0], [0.0, -1.0]]]))
    gmm = oracles.eight_gaussians()
    with pytest.raises(ValueError, match="x must have 2 columns"):
        gmm.score(torch.zeros(3, 3), 0.5, paths.VPPath())
    with pytest.raises(ValueError, match="y must be a class in 0..7 or the null label 8"):
        gmm.score(torch.zeros(1, 2), 0.5, paths.VPPath(), y=torch.tensor([9]))
