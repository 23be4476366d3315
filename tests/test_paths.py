import math

import pytest
import torch

from diffkit import paths
from diffkit.schedules import alpha_bar_from_betas, linear_betas
from tests.conftest import all_paths, path_id


@pytest.mark.parametrize("path", all_paths(), ids=path_id)
def test_derivatives_match_finite_differences(path):
    if path.discrete:  # piecewise linear in alpha_bar: differentiate inside one grid interval
        t = (torch.arange(50, 950, 37, dtype=torch.float64) + 0.5) / path.n_steps
        h = 0.1 / path.n_steps
    else:
        t = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
        h = 1e-6
    for f, df in [(path.alpha, path.d_alpha), (path.sigma, path.d_sigma)]:
        fd = (f(t + h) - f(t - h)) / (2 * h)
        torch.testing.assert_close(df(t), fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("path", all_paths(), ids=path_id)
def test_endpoints_and_snr(path):
    t0 = torch.tensor(0.0, dtype=torch.float64)
    assert path.alpha(t0).item() == pytest.approx(1.0)
    expected_sigma0 = getattr(path, "sigma_min", 0.0) if isinstance(path, paths.LinearPath) else 0.0
    assert path.sigma(t0).item() == pytest.approx(expected_sigma0, abs=1e-12)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    torch.testing.assert_close(path.snr(t), path.alpha(t) ** 2 / path.sigma(t) ** 2)
    torch.testing.assert_close(path.log_snr(t), path.snr(t).log())
    assert (path.log_snr(t)[1:] < path.log_snr(t)[:-1]).all(), "log-SNR must decrease in t (t = 0 is data)"


@pytest.mark.parametrize("path", [paths.VPPath(), paths.CosinePath(), paths.DiscretePath.from_schedule("cosine", 100)],
                         ids=path_id)
def test_variance_preserving(path):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t))


def test_sde_coefficients_closed_form():
    vp, sub = paths.VPPath(0.1, 20.0), paths.SubVPPath(0.1, 20.0)
    t = torch.linspace(0.01, 1, 50, dtype=torch.float64)
    torch.testing.assert_close(vp.diffusion_sq(t), vp.beta(t))
    torch.testing.assert_close(vp.drift(t), -0.5 * vp.beta(t))
    # Song et al. (2021), eq. (11): sub-VP g^2 = beta(t) (1 - exp(-2 int beta))
    torch.testing.assert_close(sub.diffusion_sq(t), sub.beta(t) * (1 - torch.exp(-2 * sub.integral_beta(t))))
    ve = paths.VEPath(0.01, 50.0)
    r = 50.0 / 0.01
    torch.testing.assert_close(ve.diffusion_sq(t), 0.01**2 * 2 * math.log(r) * r ** (2 * t))


@pytest.mark.parametrize("path", [paths.VPPath(), paths.SubVPPath(), paths.VEPath(0.01, 5.0)], ids=path_id)
def test_forward_sde_simulation_matches_marginal(path):
    """Euler-Maruyama on dx = f x dt + g dW from a fixed x0 reproduces mean alpha_t x0 and std sigma_t."""
    g = torch.Generator().manual_seed(1)
    n, steps, x0 = 20000, 2000, 1.5
    x = torch.full((n,), x0, dtype=torch.float64)
    for i in range(steps):
        t = torch.tensor(i / steps, dtype=torch.float64)
        t_mid = t + 0.5 / steps
        x = x + path.drift(t_mid) * x / steps + (path.diffusion_sq(t_mid) / steps).sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    t1 = torch.tensor(1.0, dtype=torch.float64)
    se = path.sigma(t1).item() / math.sqrt(n)
    assert x.mean().item() == pytest.approx(path.alpha(t1).item() * x0, abs=5 * se + 1e-3)
    assert x.std().item() == pytest.approx(path.sigma(t1).item(), rel=0.03)


def test_ddpm_alpha_bar_converges_to_vp_marginal():
    vp = paths.VPPath(0.1, 20.0)
    errors = []
    for N in (100, 1000, 10000):
        ab = alpha_bar_from_betas(linear_betas(N, 0.1, 20.0))
        t = torch.arange(1, N + 1, dtype=torch.float64) / N
        errors.append((ab - vp.alpha(t) ** 2).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3 and errors[1] / errors[2] > 5  # first-order convergence


def test_discrete_path_is_exact_on_the_grid():
    path = paths.DiscretePath.from_schedule("linear", 1000)
    n = torch.tensor([1, 10, 500, 999, 1000])
    t = n.double() / 1000
    torch.testing.assert_close(path.alpha(t) ** 2, path.alpha_bar[n], rtol=1e-14, atol=0)
    s = path.sample_t(10000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    steps = s * 1000
    assert torch.equal(steps, steps.round()) and steps.min() >= 1 and steps.max() <= 1000


def test_sample_draws_the_path():
    path = paths.LinearPath()
    x0 = torch.randn(5, 3, dtype=torch.float64)
    eps = torch.randn(5, 3, dtype=torch.float64)
    s = path.sample(x0, 0.25, eps)
    torch.testing.assert_close(s.x_t, 0.75 * x0 + 0.25 * eps)
    torch.testing.assert_close(s.velocity, eps - x0)


def test_time_conversions():
    assert paths.flip_time(0.2).item() == pytest.approx(0.8)
    k = torch.arange(1000)
    assert torch.equal(paths.index_from_t(paths.t_from_index(k, 1000), 1000), k)
    assert paths.t_from_index(999, 1000).item() == 1.0 and paths.t_from_index(0, 1000).item() == 0.001


def test_make_path_and_bad_input():
    assert isinstance(paths.make_path("rectified_flow"), paths.LinearPath)
    assert paths.make_path("ddpm-cosine", n_steps=50).n_steps == 50
    with pytest.raises(ValueError, match="name must be one of"):
        paths.make_path("edm")
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        paths.VPPath().sample(torch.zeros(2, 2), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"t must be a number or a tensor of shape \(2,\)"):
        paths.VPPath().sample(torch.zeros(2, 2), torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="beta_max must be >="):
        paths.VPPath(beta_min=1.0, beta_max=0.5)
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        paths.VPPath().sample([[0.0]], 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\] \(0 = data, 1 = noise\)"):
        paths.LinearPath().alpha(torch.tensor([0.5, 1.2]))
    with pytest.raises(ValueError, match="t must lie in"):
        paths.DiscretePath.from_schedule("cosine", 10).sigma(float("nan"))
    with pytest.raises(ValueError, match=r"k must be a timestep index in 0..999"):
        paths.t_from_index(1000, 1000)
    with pytest.raises(TypeError, match="path must be a diffkit.paths.GaussianPath"):
        paths.check_path("vp")
