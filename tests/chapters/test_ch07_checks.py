"""Chapter 7's checks, run at a fixed size against the planted bugs they guard against.

Each test writes the chapter's check as the notebook does, runs it on the correct formula (it must pass) and on
the plausible bug (it must fail), so that a check which a bug walks through is caught here and not only in a
quick-mode run of the notebook.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffkit import data, flows, grids, losses, paths, samplers, stats, targets

F64 = torch.float64
SIGMA_MIN = 0.05
OT_PATH = paths.LinearPath(SIGMA_MIN)


# -- 1. CFM and FM have the same gradient (eq-cfm-fm) ---------------------------------------------------------------
class SmallField(nn.Module):
    def __init__(self, width=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 2))

    def forward(self, x, t, y=None):
        return self.net(torch.cat([x, t[:, None]], 1))


@pytest.fixture(scope="module")
def draws():
    mix = data.toy_2d_oracle("8gaussians")
    gen = torch.Generator().manual_seed(1)
    n = 40_000
    x0 = mix.sample(n, generator=gen)
    t = torch.rand(n, generator=gen, dtype=F64)
    draw = OT_PATH.sample(x0, t, generator=gen)
    torch.manual_seed(0)
    return draw, t, mix.velocity(draw.x_t, t, OT_PATH), SmallField().double()


def gradient_check(draws, conditional_target):
    draw, t, u_marg, net = draws
    mean, se = flows.gradient_difference(net, draw.x_t, t, conditional_target(draw), u_marg, groups=200)
    return stats.check_close(mean, 0.0, se, name="grad CFM - grad FM")


def test_gradient_check_passes_on_the_conditional_field(draws):
    assert gradient_check(draws, lambda d: d.velocity) <= 5


@pytest.mark.parametrize("bug", [
    lambda d: -d.velocity,  # Lipman et al.'s time direction, not converted
    lambda d: d.eps - d.x0,  # rectified flow's target on the sigma_min path
    lambda d: (1 - SIGMA_MIN) * d.eps,  # the x0 term dropped
], ids=["time-not-flipped", "sigma-min-dropped", "x0-term-dropped"])
def test_gradient_check_fails_on_a_wrong_conditional_target(draws, bug):
    with pytest.raises(AssertionError, match="grad CFM - grad FM"):
        gradient_check(draws, bug)


# -- 2. the continuity equation on a grid (eq-continuity-log) ---------------------------------------------------------
POINTS = data.toy_2d("8gaussians", 12, generator=0).double()
G1, G2 = torch.meshgrid(torch.linspace(-2.5, 2.5, 21), torch.linspace(-2.5, 2.5, 21), indexing="xy")
GRID = torch.stack([G1.flatten(), G2.flatten()], 1).double()


TOL = 1e-6  # the five-point stencil's error at dt = 1e-4 is far below it, against terms of size ~1e3


def log_p(x, t):
    return flows.marginal_log_prob(x, t, POINTS, OT_PATH)


def continuity_check(field, dt=1e-4):
    """The notebook's check: the largest residual over the grid and five times is the five-point stencil's
    O(dt^4) error, below TOL."""
    worst = max(flows.continuity_residual(log_p, field, GRID, t, dt=dt).abs().max().item()
                for t in (0.1, 0.3, 0.5, 0.7, 0.9))
    assert worst < TOL, f"continuity residual {worst:.2e}"
    return worst


def test_continuity_check_passes_for_the_marginal_field():
    assert continuity_check(lambda x, t: flows.marginal_velocity(x, t, POINTS, OT_PATH)) < TOL


@pytest.mark.parametrize("bug", [
    lambda x, t: flows.conditional_velocity(x, POINTS.mean(0).expand_as(x), t, OT_PATH),  # prior weights
    lambda x, t: flows.marginal_velocity(x, t, POINTS, paths.LinearPath()),  # sigma_min dropped
    lambda x, t: -flows.marginal_velocity(x, t, POINTS, OT_PATH),  # the sampling direction, -u
], ids=["prior-weights", "sigma-min-dropped", "sign"])
def test_continuity_check_fails_on_wrong_fields(bug):
    with pytest.raises(AssertionError, match="continuity residual"):
        continuity_check(bug)


# -- 3. Lipman et al.'s OT field, converted to this book's time (eq-ot-field) -------------------------------------
def lipman_field(x, x1, s):
    return (x1 - (1 - SIGMA_MIN) * x) / (1 - (1 - SIGMA_MIN) * s)


def test_ot_field_is_lipmans_converted_and_not_unconverted():
    gen = torch.Generator().manual_seed(2)
    x, x0 = torch.randn(2, 300, 2, generator=gen, dtype=F64)
    t = 0.05 + 0.9 * torch.rand(300, generator=gen, dtype=F64)
    ours = flows.conditional_velocity(x, x0, t, OT_PATH)
    torch.testing.assert_close(ours, paths.flip_velocity(lipman_field(x, x0, paths.flip_time(t)[:, None])))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(ours, lipman_field(x, x0, t[:, None]))
    with pytest.raises(AssertionError):  # converted time, velocity sign kept
        torch.testing.assert_close(ours, lipman_field(x, x0, paths.flip_time(t)[:, None]))


# -- 4. logit-normal bin shares against eq-logit-normal ----------------------------------------------------------
def bin_share_check(cdf_fn, n=200_000):
    t = losses.sample_t(n, paths.LinearPath(), t_dist="logit_normal", dtype=F64,
                        generator=torch.Generator().manual_seed(4))
    edges = torch.linspace(0, 1, 21, dtype=F64)
    cdf = torch.cat([torch.zeros(1, dtype=F64), cdf_fn(edges[1:-1]), torch.ones(1, dtype=F64)])
    exact = cdf[1:] - cdf[:-1]
    drawn = torch.histc(t, bins=20, min=0, max=1) / n
    return stats.check_close(drawn, exact, (exact * (1 - exact) / n).sqrt(), name="bin shares")


def _cdf_of(pdf):  # the distribution function of a density on (0, 1), by cumulative trapezoid, normalised
    grid = torch.linspace(1e-7, 1 - 1e-7, 200_001, dtype=F64)
    dens = pdf(grid)
    cum = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum((dens[1:] + dens[:-1]) / 2 * (grid[1:] - grid[:-1]), 0)])
    cum = cum / cum[-1]
    return lambda x: torch.from_numpy(np.interp(x.numpy(), grid.numpy(), cum.numpy()))


def test_bin_shares_match_the_logit_normal_cdf_and_its_pdf():
    assert bin_share_check(flows.logit_normal_cdf) <= 5
    assert bin_share_check(_cdf_of(flows.logit_normal_pdf)) <= 5


@pytest.mark.parametrize("bug", [
    lambda t: torch.exp(-0.5 * torch.logit(t) ** 2),  # no Jacobian 1/(t(1-t))
    lambda t: torch.exp(-0.5 * torch.logit(t) ** 2) * t * (1 - t),  # Jacobian inverted
    lambda t: torch.exp(-torch.logit(t) ** 2) / (t * (1 - t)),  # the 1/2 of the exponent dropped
], ids=["no-jacobian", "jacobian-inverted", "half-dropped"])
def test_bin_share_check_fails_on_wrong_densities(bug):
    with pytest.raises(AssertionError, match="bin shares"):
        bin_share_check(_cdf_of(bug))


# -- 5. DDIM and Euler: one sampler on the linear path, two on the cosine path (eq-ddim-euler, eq-v-velocity) --
def test_ddim_equals_euler_on_linear_paths_only():
    mix = data.toy_2d_oracle("8gaussians")
    noise = torch.randn(300, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    for path in (paths.LinearPath(), paths.LinearPath(SIGMA_MIN)):
        model = mix.as_model(path, "velocity")
        a = samplers.ddim(model, noise, grids.uniform(10), path, return_trajectory=True).xs
        b = samplers.euler(model, noise, grids.uniform(10), path, return_trajectory=True).xs
        torch.testing.assert_close(a, b)
    cos = paths.CosinePath()
    v_model = mix.as_model(cos, "v")
    a = samplers.ddim(v_model, noise, grids.uniform(10), cos)
    b = samplers.euler(v_model, noise, grids.uniform(10), cos)
    assert (a - b).pow(2).mean().sqrt() > 1e-3


def test_v_is_velocity_times_pi_over_two_on_the_cosine_path_and_the_slip_never_converges():
    mix = data.toy_2d_oracle("8gaussians")
    cos = paths.CosinePath()
    v_model = mix.as_model(cos, "v")

    def as_velocity(x, t, y=None):
        return math.pi / 2 * v_model(x, t)

    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(7), dtype=F64)
    t = torch.full((200,), 0.4, dtype=F64)
    torch.testing.assert_close(targets.convert(v_model(x, t), "v", "velocity", x, t, cos), as_velocity(x, t))
    ref = samplers.rk4(as_velocity, x, grids.uniform(200), cos, target="velocity")
    good = samplers.euler(as_velocity, x, grids.uniform(100), cos, target="velocity")
    slip = samplers.euler(lambda z, s, y=None: v_model(z, s), x, grids.uniform(100), cos,
                          target="velocity")  # v read as the velocity
    assert (good - ref).pow(2).mean().sqrt() < 0.02
    assert (slip - ref).pow(2).mean().sqrt() > 10 * (good - ref).pow(2).mean().sqrt()
