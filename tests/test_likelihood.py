import math

import pytest
import torch

from diffkit import likelihood, oracles, paths


def _gaussian(dim, mean=0.7, std=0.5):
    return oracles.GaussianMixture(torch.full((1, dim), mean, dtype=torch.float64), stds=std)


def _closed_form(x, t0, path, mean=0.7, std=0.5):
    a, s = path.alpha(torch.tensor(t0, dtype=torch.float64)), path.sigma(torch.tensor(t0, dtype=torch.float64))
    var = (a * std) ** 2 + s**2
    D = x.shape[1]
    return (-0.5 * ((x - a * mean) ** 2).sum(1) / var - 0.5 * D * torch.log(2 * math.pi * var)).double()


@pytest.mark.parametrize("path,target", [(paths.LinearPath(), "velocity"), (paths.VPPath(), "eps")], ids=["linear", "vp"])
def test_exact_divergence_recovers_the_gaussian_log_density(path, target):
    gmm = _gaussian(2)
    x = gmm.sample(64, generator=torch.Generator().manual_seed(0))
    logp = likelihood.log_likelihood(gmm.as_model(path, target), x, path, target=target, n_steps=100, t0=1e-3)
    expected = _closed_form(x, 1e-3, path)
    assert (logp - expected).abs().max().item() < 2e-2
    # and it can fail: a model of another Gaussian gives a clearly different answer
    wrong = oracles.GaussianMixture(torch.full((1, 2), 0.0, dtype=torch.float64), stds=0.5)
    bad = likelihood.log_likelihood(wrong.as_model(path, target), x, path, target=target, n_steps=100, t0=1e-3)
    assert (bad - expected).abs().mean().item() > 0.3


def test_hutchinson_is_unbiased():
    gmm, path = _gaussian(16), paths.LinearPath()
    x = gmm.sample(4, generator=torch.Generator().manual_seed(1))
    model = gmm.as_model(path, "velocity")
    exact = likelihood.log_likelihood(model, x, path, target="velocity", n_steps=40)
    est = likelihood.log_likelihood(model, x, path, target="velocity", n_steps=40, method="hutchinson",
                                    n_probes=64, generator=torch.Generator().manual_seed(0))
    assert (est - exact).abs().max().item() < 0.5  # 16 dims: the estimator's noise, averaged over probes and steps
    torch.testing.assert_close(exact, _closed_form(x, 1e-3, path), atol=5e-2, rtol=0)


def test_bits_per_dim():
    # a uniform density on [-1, 1]^D has log p = -D log 2: 1 bit/dim continuous, 8 bits for 8-bit pixels
    D = 10
    log_p = torch.tensor([-D * math.log(2)])
    assert likelihood.bits_per_dim(log_p, D, pixel_levels=None).item() == pytest.approx(1.0)
    assert likelihood.bits_per_dim(log_p, D).item() == pytest.approx(1.0 + math.log2(127.5))


def test_bad_input():
    gmm, path = _gaussian(2), paths.LinearPath()
    with pytest.raises(ValueError, match="method must be one of"):
        likelihood.log_likelihood(gmm.as_model(path, "velocity"), torch.zeros(2, 2, dtype=torch.float64), path,
                                  target="velocity", method="skilling")
    with pytest.raises(ValueError, match="t0 must be > 0"):
        likelihood.log_likelihood(gmm.as_model(path, "velocity"), torch.zeros(2, 2), path, t0=0.0)
