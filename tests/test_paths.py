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
    assert path.sigma_at_data == pytest.approx(expected_sigma0, abs=1e-12)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    torch.testing.assert_close(path.log_snr(t), path.snr(t).log())
    assert (path.log_snr(t)[1:] < path.log_snr(t)[:-1]).all(), "log-SNR must decrease in t (t = 0 is data)"


def _snr_by_hand(path, t):
    """SNR(t) from each path's definition, written out without the code under test."""
    if isinstance(path, paths.SubVPPath):
        B = 0.1 * t + 0.5 * (20.0 - 0.1) * t**2
        return torch.exp(-B) / (1 - torch.exp(-B)) ** 2
    if isinstance(path, paths.VPPath):
        B = 0.1 * t + 0.5 * (20.0 - 0.1) * t**2
        return 1 / torch.expm1(B)
    if isinstance(path, paths.VEPath):
        return 1 / (0.01**2 * ((50.0 / 0.01) ** (2 * t) - 1))
    if isinstance(path, paths.LinearPath):
        return ((1 - t) / (path.sigma_min + (1 - path.sigma_min) * t)) ** 2
    if isinstance(path, paths.CosinePath):
        return 1 / torch.tan(math.pi * t / 2) ** 2
    ab = torch.cumprod(1 - path.betas, 0)[(t * path.n_steps).round().long() - 1]  # on the grid
    return ab / (1 - ab)


@pytest.mark.parametrize("path", all_paths(), ids=path_id)
def test_snr_against_formulas_written_by_hand(path):
    t = torch.arange(1, 20, dtype=torch.float64) / 20  # on every DDPM grid of 1000 steps
    torch.testing.assert_close(path.snr(t), _snr_by_hand(path, t), rtol=1e-9, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("path", [paths.LinearPath(), paths.LinearPath(0.1), paths.CosinePath(),
                                  paths.DiscretePath.from_schedule("linear", 1000, zero_terminal_snr=True),
                                  paths.DiscretePath.from_schedule("cosine", 50, zero_terminal_snr=True)], ids=path_id)
def test_alpha_is_exactly_zero_at_the_noise_end_in_every_dtype(path, dtype):
    """cos(pi/2) is 6e-17 in float64 and -4e-8 in float32: a path whose alpha reaches 0 must give 0 exactly,
    or the zero-SNR guard of the conversions never fires."""
    one, zero = torch.tensor(1.0, dtype=dtype), torch.tensor(0.0, dtype=dtype)
    assert path.alpha(one).item() == 0.0 and path.snr(one).item() == 0.0
    assert path.alpha(zero).item() == 1.0 and path.sigma(one).item() == 1.0
    assert path.alpha(one).dtype == dtype
    assert torch.isfinite(path.d_alpha(one)) and torch.isfinite(path.d_sigma(one))


@pytest.mark.parametrize("path", [paths.VPPath(), paths.CosinePath(), paths.DiscretePath.from_schedule("cosine", 100)],
                         ids=path_id)
def test_variance_preserving(path):
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)  # on and between the grid points of the discrete path
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


@pytest.mark.parametrize("path,t_end", [(paths.VPPath(), 1.0), (paths.SubVPPath(), 1.0), (paths.VEPath(0.01, 5.0), 1.0),
                                         (paths.LinearPath(), 0.9), (paths.CosinePath(), 0.9)],
                         ids=["vp", "subvp", "ve", "linear", "cosine"])
def test_forward_sde_simulation_matches_marginal(path, t_end):
    """Euler-Maruyama on dx = f x dt + g dW from a fixed x0 reproduces mean alpha_t x0 and std sigma_t at
    intermediate times too (at t = 1 the start is forgotten: sub-VP with VP's g^2 would pass there)."""
    g = torch.Generator().manual_seed(1)
    n, steps, x0 = 20000, 2000, 1.5
    checkpoints = {int(steps * q) for q in (0.25, 0.5, 1.0)}
    x = torch.full((n,), x0, dtype=torch.float64)
    for i in range(steps):
        t = torch.tensor(i / steps * t_end, dtype=torch.float64)
        t_mid = t + 0.5 * t_end / steps
        dt = t_end / steps
        x = x + path.drift(t_mid) * x * dt + (path.diffusion_sq(t_mid) * dt).sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
        if i + 1 in checkpoints:
            tq = torch.tensor((i + 1) / steps * t_end, dtype=torch.float64)
            se = path.sigma(tq).item() / math.sqrt(n)
            assert x.mean().item() == pytest.approx(path.alpha(tq).item() * x0, abs=5 * se + 2e-3), tq
            assert x.std().item() == pytest.approx(path.sigma(tq).item(), rel=0.03), tq


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


def test_discrete_path_between_and_at_grid_points():
    """One rule: alpha and sigma are exact on the grid and rotate at constant angular speed between grid points;
    at a grid point the derivatives are those of the segment below it (t = 0: the first segment)."""
    path = paths.DiscretePath.from_schedule("cosine", 10, zero_terminal_snr=True)
    phi = torch.atan2((1 - path.alpha_bar).sqrt(), path.alpha_bar.sqrt())  # (N + 1,) grid angles
    t = torch.tensor([0.0, 0.03, 0.1, 0.47, 0.5, 0.95, 1.0], dtype=torch.float64)
    pos = t * 10
    seg = (pos.ceil() - 1).clamp(0, 9).long()
    frac = pos - pos.floor().clamp(max=9)
    lower = pos.floor().clamp(max=9).long()
    angle = phi[lower] + frac * (phi[lower + 1] - phi[lower])
    torch.testing.assert_close(path.alpha(t), angle.cos(), rtol=0, atol=1e-14)
    torch.testing.assert_close(path.sigma(t), angle.sin(), rtol=0, atol=1e-14)
    speed = (phi[seg + 1] - phi[seg]) * 10
    torch.testing.assert_close(path.d_alpha(t), -angle.sin() * speed, rtol=0, atol=1e-12)
    torch.testing.assert_close(path.d_sigma(t), angle.cos() * speed, rtol=0, atol=1e-12)
    # the derivative at an interior grid point is the one-sided derivative from below
    h = 1e-7
    for grid_t in (0.3, 0.6, 1.0):
        tt = torch.tensor(grid_t, dtype=torch.float64)
        from_below = (path.alpha(tt) - path.alpha(tt - h)) / h
        assert path.d_alpha(tt).item() == pytest.approx(from_below.item(), rel=1e-5)
    assert path.alpha(torch.tensor(1.0)).item() == 0.0 and math.isfinite(path.d_alpha(torch.tensor(1.0)).item())


def test_training_times():
    """Continuous paths draw t uniformly on (0, 1]; the discrete path draws every grid time 1/N .. 1 and never 0."""
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    t = paths.VPPath().sample_t(20000, generator=g(), dtype=torch.float64)
    assert t.dtype == torch.float64 and t.min() > 0 and t.max() <= 1
    assert abs(t.mean().item() - 0.5) < 0.01 and abs(t.var().item() - 1 / 12) < 0.003
    assert torch.equal(t, paths.VPPath().sample_t(20000, generator=g(), dtype=torch.float64))  # the generator is used
    assert paths.VPPath().sample_t(3).dtype == torch.float32
    assert (t != t.float().double()).any()  # drawn in float64, not float32 rounded up
    d = paths.DiscretePath.from_schedule("linear", 50)
    s = d.sample_t(20000, generator=g(), dtype=torch.float64)
    steps = (s * 50).round()
    assert s.dtype == torch.float64 and steps.min() == 1 and steps.max() == 50 and len(steps.unique()) == 50
    assert torch.equal(s, d.sample_t(20000, generator=g(), dtype=torch.float64))
    assert d.sample_t(3).dtype == torch.float32


def test_sample_draws_fresh_noise_from_the_generator():
    path = paths.CosinePath()
    x0 = torch.full((20000, 2), 0.5, dtype=torch.float64)
    s = path.sample(x0, 0.3, generator=torch.Generator().manual_seed(0))
    assert s.x0 is x0 and s.t.shape == (20000,) and s.t[0].item() == pytest.approx(0.3)
    torch.testing.assert_close(s.x_t, path.alpha(s.t)[:, None] * x0 + path.sigma(s.t)[:, None] * s.eps)
    assert abs(s.eps.mean().item()) < 0.02 and abs(s.eps.std().item() - 1) < 0.02
    again = path.sample(x0, 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s.eps, again.eps)


def test_constructors_defaults_and_repr():
    assert repr(paths.VPPath()) == "VPPath(beta_min=0.1, beta_max=20.0)"
    assert repr(paths.VEPath()) == "VEPath(sigma_min=0.01, sigma_max=50.0)"
    assert repr(paths.LinearPath()) == "LinearPath(sigma_min=0.0)" and repr(paths.CosinePath()) == "CosinePath()"
    d = paths.DiscretePath.from_schedule("linear")
    assert d.n_steps == 1000 and d.alpha_bar[-1] > 0  # 1000 steps, not rescaled to zero terminal SNR
    assert torch.equal(d.betas, paths.DiscretePath(linear_betas(1000)).betas)
    assert paths.index_from_t(torch.tensor(0.999, dtype=torch.float32), 1000).item() == 998
    assert torch.equal(paths.flip_velocity(torch.tensor([1.0, -2.0])), torch.tensor([-1.0, 2.0]))
    assert paths.VPPath().alpha(0.3).dtype == torch.float64  # a Python number is read in float64


def test_discrete_path_derivatives_at_every_grid_point_follow_the_rule():
    """t = n / N computed in floating point (sometimes a hair above the grid point) must still take the segment
    below, and alpha_bar_at must give the grid values."""
    path = paths.DiscretePath.from_schedule("cosine", 1000)
    n = torch.arange(1, 1001)
    t = n.double() / 1000
    phi = torch.atan2((1 - path.alpha_bar).sqrt(), path.alpha_bar.sqrt())
    speed = (phi[n] - phi[n - 1]) * 1000
    torch.testing.assert_close(path.d_sigma(t), path.alpha_bar[n].sqrt() * speed, rtol=1e-12, atol=0)
    torch.testing.assert_close(path.alpha_bar_at(t), path.alpha_bar[n], rtol=1e-14, atol=0)
    assert path.alpha_bar_at(torch.tensor(0.0)).item() == 1.0
    assert path.alpha_bar_at(torch.tensor(0.5)).dtype == torch.float32  # the dtype of t, like alpha and sigma
    # times a hair above their grid point (0.001 n is not n / 1000 in floating point) still take the segment below
    t_above = n.double() * 0.001
    assert ((t_above * 1000 - n) > 0).any()
    torch.testing.assert_close(path.d_sigma(t_above), path.alpha_bar[n].sqrt() * speed, rtol=1e-9, atol=0)


BAD_INPUT = [
    (lambda: paths.LinearPath(sigma_min=1.0), ValueError, "sigma_min must be < 1"),
    (lambda: paths.LinearPath(sigma_min=-0.1), ValueError, "sigma_min must be >= 0.0"),
    (lambda: paths.LinearPath(sigma_min=1.5), ValueError, "sigma_min must be <= 1.0"),
    (lambda: paths.VPPath(beta_min=0.0), ValueError, "beta_min must be > 0.0"),
    (lambda: paths.VEPath(sigma_min=0.0), ValueError, "sigma_min must be > 0.0"),
    (lambda: paths.VEPath(sigma_min=1.0, sigma_max=1.0), ValueError, "sigma_max must be > 1.0"),
    (lambda: paths.DiscretePath(torch.tensor([0.1, 0.0], dtype=torch.float64)), ValueError, "betas must lie in (0, 1]"),
    (lambda: paths.DiscretePath(torch.tensor([0.1, 1.5], dtype=torch.float64)), ValueError, "betas must lie in (0, 1]"),
    (lambda: paths.DiscretePath(torch.tensor([0.1, float("nan")], dtype=torch.float64)), ValueError, "betas must lie in"),
    (lambda: paths.DiscretePath(torch.full((2, 2), 0.1)), ValueError, "betas must have 1 dimensions"),
    (lambda: paths.DiscretePath([0.1, 0.2]), TypeError, "betas must be a torch.Tensor"),
    (lambda: paths.make_path("ddpm-quadratic"), ValueError, "name must be one of 'ddpm-linear', 'ddpm-cosine', 'ddpm-sigmoid'"),
    (lambda: paths.make_path("edm"), ValueError, "name must be one of 'vp', 'subvp', 've', 'linear', 'rectified_flow', 'cosine', 'ddpm-linear', 'ddpm-cosine', 'ddpm-sigmoid'"),
    (lambda: paths.VPPath().alpha("0.5"), TypeError, "t must be a number or a torch.Tensor"),
    (lambda: paths.VPPath(beta_max=float("inf")), ValueError, "beta_max must be finite"),
    (lambda: paths.VEPath(sigma_max=float("inf")), ValueError, "sigma_max must be finite"),
    (lambda: paths.DiscretePath.from_schedule("cosine", 100, max_beta=1.5), ValueError, "max_beta must be <= 1.0"),
]


@pytest.mark.parametrize("call,error,match", BAD_INPUT, ids=[m[:40] for _, _, m in BAD_INPUT])
def test_bad_input_table(call, error, match):
    import re

    with pytest.raises(error, match=re.escape(match)):
        call()


@pytest.mark.parametrize("name", ["ddpm-linear", "ddpm-cosine", "ddpm-sigmoid"])
def test_make_path_builds_each_ddpm_schedule(name):
    path = paths.make_path(name, n_steps=50)
    assert isinstance(path, paths.DiscretePath) and path.n_steps == 50
    assert torch.equal(path.betas, paths.DiscretePath.from_schedule(name[5:], 50).betas)


def test_discrete_path_keeps_its_tables_in_float64():
    path = paths.DiscretePath(linear_betas(100).float())
    assert path.betas.dtype == torch.float64 and path.alpha_bar.dtype == torch.float64


def test_ve_path_for_data_takes_sigma_max_from_the_largest_distance():
    """sigma_max = the largest pairwise distance (Song & Ermon, 2020): exact on a small set, a subsample's on a
    large one (never more than the true one), and sigma_min is kept."""
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    path = paths.VEPath.for_data(x, sigma_min=0.02)
    assert path.sigma_max == pytest.approx(5.0) and path.sigma_min == 0.02
    assert float(path.sigma(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(5.0, rel=1e-3)
    g = torch.Generator().manual_seed(0)
    big = torch.cat([torch.randn(5000, 2, generator=g), torch.tensor([[-10.0, 0.0], [10.0, 0.0]])])
    full = torch.cdist(big.double(), big.double()).max().item()
    sub = paths.VEPath.for_data(big, max_points=500, generator=torch.Generator().manual_seed(1)).sigma_max
    assert 4.0 < sub <= full  # a subsample of 500 sees the bulk, not necessarily the two outliers
    assert paths.VEPath.for_data(big, max_points=6000).sigma_max == pytest.approx(full)
    images = torch.zeros(3, 1, 4, 4)
    images[1, 0, 0, 0] = 2.0
    assert paths.VEPath.for_data(images).sigma_max == pytest.approx(2.0)  # images: distances between flattened rows
    with pytest.raises(ValueError, match="x must hold at least 2 data points"):
        paths.VEPath.for_data(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="are all the rows equal"):
        paths.VEPath.for_data(torch.ones(5, 2))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        paths.VEPath.for_data([[0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="max_points must be an integer >= 2"):
        paths.VEPath.for_data(x, max_points=1)


@pytest.mark.parametrize("path", all_paths(), ids=path_id)
def test_sigma_d_sigma_is_the_product_and_finite_at_the_data_end(path):
    t = torch.tensor([1e-3, 0.3, 0.9], dtype=torch.float64)
    torch.testing.assert_close(path.sigma_d_sigma(t), path.sigma(t) * path.d_sigma(t))
    zero = torch.tensor([0.0], dtype=torch.float64)
    assert torch.isfinite(path.sigma_d_sigma(zero)).all() and torch.isfinite(path.diffusion_sq(zero)).all()
    tiny = torch.tensor([1e-9], dtype=torch.float64)
    torch.testing.assert_close(path.diffusion_sq(zero), path.diffusion_sq(tiny), rtol=1e-6, atol=1e-6)
