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
    exact = likelihood.log_likelihood(model, x, path, target="velocity", n_steps=50)
    est = likelihood.log_likelihood(model, x, path, target="velocity", n_steps=50, method="hutchinson",
                                    n_probes=64, generator=torch.Generator().manual_seed(0))
    assert (est - exact).abs().max().item() < 0.5  # 16 dims: the estimator's noise, averaged over probes and steps
    torch.testing.assert_close(exact, _closed_form(x, 1e-3, path), atol=5e-2, rtol=0)


def test_bits_per_dim():
    # a uniform density on [-1, 1]^D has log p = -D log 2: 1 bit/dim
    D = 10
    log_p = torch.tensor([-D * math.log(2)])
    assert likelihood.bits_per_dim(log_p, D).item() == pytest.approx(1.0)


_BINARY = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize("path,target", [(paths.VPPath(), "eps"), (paths.LinearPath(), "velocity")], ids=["vp", "linear"])
def test_dequantized_bits_per_dim_bounds_the_entropy(path, target):
    """Four equiprobable binary 2-pixel images have entropy exactly 1 bit/dim. Dequantized, they are uniform on
    [-1, 1]^2, whose exact score (UniformBox) gives the exact model; blurring it by tau gives worse models.
    The reported bits/dim must never fall below 1 (beyond Monte-Carlo error), and approach 1 as tau -> 0."""
    x = _BINARY.repeat(16, 1)
    results = {}
    for blur in (0.4, 0.1, 0.0):
        model = oracles.UniformBox(2, blur=blur).as_model(path, target)
        bpd = likelihood.dequantized_bits_per_dim(model, x, path, levels=2, target=target, n_dequant=2,
                                                  generator=torch.Generator().manual_seed(0))
        mean, se = bpd.mean().item(), bpd.std().item() / math.sqrt(bpd.numel())
        assert mean > 1.0 - 3 * se - 1e-3, f"blur {blur}: {mean:.4f} +- {se:.4f} is below the entropy"
        results[blur] = mean
    assert results[0.4] > results[0.1] > results[0.0]
    assert results[0.0] == pytest.approx(1.0, abs=0.02)
    # a model concentrated on the four levels: its density *at the levels* says 'below 1 bit/dim' (no bound),
    # dequantized it pays for the mass it does not put on the cells: far above 1
    corners = oracles.GaussianMixture(_BINARY, stds=0.05).as_model(path, target)
    at_levels = likelihood.bits_per_dim(likelihood.log_likelihood(corners, x[:4], path, target=target), 2)
    assert at_levels.mean().item() < 0.0  # what adding a constant to the density of undequantized data reports
    dequantized = likelihood.dequantized_bits_per_dim(corners, x[:4], path, levels=2, target=target,
                                                      generator=torch.Generator().manual_seed(0))
    assert dequantized.mean().item() > 2.0


def test_dequantized_bits_per_dim_scales_to_8_bit_images():
    """Uniformly random bytes have 8 bits/dim; the exact model (uniform on the data range) must report 8 for
    data on [-1, 1] and on [0, 1]: the log-determinant of the scaling and the log2(256) are counted once each."""
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 256, (32, 3), generator=g).double()
    path = paths.VPPath()
    for low, high in ((-1.0, 1.0), (0.0, 1.0)):
        x = low + (high - low) * k / 255
        model = oracles.UniformBox(3, low=low, high=high).as_model(path, "eps")
        bpd = likelihood.dequantized_bits_per_dim(model, x, path, levels=256, data_range=(low, high), t0=1e-4,
                                                  generator=g)
        assert bpd.mean().item() == pytest.approx(8.0, abs=0.03), (low, high)


@pytest.mark.parametrize("path,target", [(paths.VPPath(), "eps"), (paths.LinearPath(), "velocity")], ids=["vp", "linear"])
def test_ode_likelihood_is_accurate_on_sharp_edged_data(path, target):
    """Against the closed-form log-density of the uniform box at t0 (steps uniform in log t; a uniform grid of
    100 steps is off by up to 0.9 nats here)."""
    box = oracles.UniformBox(2)
    z = -1 + 2 * torch.rand(128, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logp = likelihood.log_likelihood(box.as_model(path, target), z, path, target=target, n_steps=100, t0=1e-3)
    assert (logp - box.log_prob(z, 1e-3, path)).abs().max().item() < 0.03


def test_uniform_box_oracle_is_exact():
    """UniformBox's log-density and score against numerical integration of the box convolved with a Gaussian."""
    box, path = oracles.UniformBox(1, low=-1.0, high=2.0, blur=0.2), paths.CosinePath()
    x = torch.linspace(-3, 4, 15, dtype=torch.float64)[:, None]
    for t in (0.05, 0.5, 0.97):
        a, s = path.alpha(torch.tensor(t, dtype=torch.float64)), path.sigma(torch.tensor(t, dtype=torch.float64))
        u = -1 + 3 * (torch.arange(30000, dtype=torch.float64) + 0.5) / 30000  # midpoints; x_t ~ a u + N(0, a^2 .04 + s^2)
        var = a**2 * 0.04 + s**2
        dens = (torch.exp(-0.5 * (x - a * u) ** 2 / var) / torch.sqrt(2 * math.pi * var)).mean(1)  # uniform u
        torch.testing.assert_close(box.log_prob(x, t, path), dens.log(), rtol=0, atol=1e-6)
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(box.log_prob(xr, t, path).sum(), xr)
        torch.testing.assert_close(box.score(x, t, path), grad, rtol=1e-6, atol=1e-8)


def test_hutchinson_on_a_field_with_a_general_jacobian():
    """f(x) = A x with a non-symmetric A: the estimate z^T A z (Rademacher z) has mean tr A and variance
    sum_{i<j} (A_ij + A_ji)^2 -- zero for a multiple of the identity, which is why that case cannot test it."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, generator=g, dtype=torch.float64)
    x = torch.randn(1, 5, dtype=torch.float64).expand(40000, 5).contiguous()  # one probe per row
    out, div = likelihood.divergence(lambda z: z @ A.T, x, "hutchinson", generator=g)
    torch.testing.assert_close(out, x @ A.T)
    expected_var = sum((A[i, j] + A[j, i]) ** 2 for i in range(5) for j in range(i + 1, 5)).item()
    se = math.sqrt(expected_var / 40000)
    assert div.mean().item() == pytest.approx(torch.trace(A).item(), abs=4 * se)
    assert div.var().item() == pytest.approx(expected_var, rel=0.05)
    _, exact = likelihood.divergence(lambda z: z @ A.T, x[:3], "exact")
    torch.testing.assert_close(exact, torch.trace(A).expand(3))
    # a nonlinear field: the average of many probes agrees with the exact divergence at each point
    field = lambda z: torch.sin(z @ A.T) + z.roll(1, dims=1) ** 2  # noqa: E731
    pts = torch.randn(4, 5, generator=g, dtype=torch.float64)
    _, exact = likelihood.divergence(field, pts, "exact")
    _, est = likelihood.divergence(field, pts, "hutchinson", generator=g, n_probes=4000)
    torch.testing.assert_close(est, exact, rtol=0, atol=0.15)


def test_bad_input():
    gmm, path = _gaussian(2), paths.LinearPath()
    with pytest.raises(ValueError, match="method must be one of"):
        likelihood.log_likelihood(gmm.as_model(path, "velocity"), torch.zeros(2, 2, dtype=torch.float64), path,
                                  target="velocity", method="skilling")
    with pytest.raises(ValueError, match="t0 must be > 0"):
        likelihood.log_likelihood(gmm.as_model(path, "velocity"), torch.zeros(2, 2), path, t0=0.0)
    with pytest.raises(ValueError, match="x must hold quantized data"):
        likelihood.dequantized_bits_per_dim(gmm.as_model(path, "velocity"), torch.full((2, 2), 0.3), path,
                                            target="velocity")
    with pytest.raises(ValueError, match="data_range must have high > low"):
        likelihood.dequantized_bits_per_dim(gmm.as_model(path, "velocity"), torch.zeros(2, 2), path,
                                            target="velocity", data_range=(1.0, -1.0))


def test_divergence_with_create_graph_is_differentiable_in_the_parameters():
    """create_graph=True (chapter 5's implicit score matching) keeps div f attached: for f(x) = a * tanh(x),
    div f = a * sum(1 - tanh(x)^2), so d(div f)/da is that sum."""
    a = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 3, dtype=torch.float64)
    for method in ("exact", "hutchinson"):  # Rademacher probes are exact for a diagonal Jacobian
        _, div = likelihood.divergence(lambda z: a * torch.tanh(z), x, method, create_graph=True)
        (grad,) = torch.autograd.grad(div.sum(), a)
        torch.testing.assert_close(grad, (1 - torch.tanh(x) ** 2).sum())
    _, detached = likelihood.divergence(lambda z: a * torch.tanh(z), x)
    assert not detached.requires_grad
