"""diffkit.flows: conditional and marginal fields against independent implementations (the oracles), the
continuity equation on exact flows, straightness on curves with closed forms, reflow pairs on a Gaussian whose
flow is known, the CFM/FM gradient identity, the logit-normal density against sampling, and the solvers' NFE."""

import math

import pytest
import torch
from torch import nn

from diffkit import flows, grids, losses, oracles, paths, samplers, stats
from diffkit.models import MLP

F64 = torch.float64
PATHS = [paths.LinearPath(), paths.LinearPath(0.1), paths.CosinePath(), paths.VPPath(), paths.VEPath(0.01, 5.0)]


def _points(n=7, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- conditional and marginal fields -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_conditional_velocity_is_the_path_velocity_on_the_path(path):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(64, 3, generator=g, dtype=F64)
    t = 0.05 + 0.9 * torch.rand(64, generator=g, dtype=F64)
    draw = path.sample(x0, t, generator=g)
    torch.testing.assert_close(flows.conditional_velocity(draw.x_t, x0, t, path), draw.velocity)


@pytest.mark.parametrize("path", PATHS, ids=repr)
@pytest.mark.parametrize("t", [0.05, 0.4, 0.9])
def test_marginal_field_equals_the_oracle_of_the_data_set(path, t):
    """Two routes to u_t: the posterior average of conditional fields here, E[x0|x] and the score in the oracle."""
    data = _points()
    weights = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.2], dtype=F64)
    oracle = oracles.GaussianMixture(data, stds=0.0, weights=weights)
    x = 2 * torch.randn(200, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    torch.testing.assert_close(flows.marginal_velocity(x, t, data, path, weights), oracle.velocity(x, t, path))
    torch.testing.assert_close(flows.marginal_log_prob(x, t, data, path, weights), oracle.log_prob(x, t, path))


def test_marginal_field_of_one_point_is_its_conditional_field():
    path, x0 = paths.LinearPath(0.1), _points(1)
    x = _points(50, seed=3)
    torch.testing.assert_close(flows.marginal_velocity(x, 0.3, x0, path),
                               flows.conditional_velocity(x, x0.expand(50, 2), 0.3, path))


# --- divergence and the continuity equation ----------------------------------------------------------------------
def test_divergence_of_a_linear_field_is_the_trace():
    A = torch.tensor([[0.3, -1.0, 2.0], [0.5, 1.5, 0.0], [4.0, 0.1, -0.7]], dtype=F64)
    x = _points(10).repeat(1, 2)[:, :3]
    torch.testing.assert_close(flows.divergence(lambda z: z @ A.T + 1.0, x), torch.full((10,), 1.1, dtype=F64))
    nonlinear = flows.divergence(lambda z: z**3, x)  # d/dx_i x_i^3 = 3 x_i^2
    torch.testing.assert_close(nonlinear, (3 * x**2).sum(1))


@pytest.mark.parametrize("path", [paths.LinearPath(0.05), paths.CosinePath(), paths.VPPath()], ids=repr)
def test_the_marginal_field_satisfies_the_continuity_equation(path):
    data = _points(5)
    x = 2.5 * torch.randn(300, 2, generator=torch.Generator().manual_seed(4), dtype=F64)

    def log_prob(z, t):
        return flows.marginal_log_prob(z, t, data, path)

    def field(z, t):
        return flows.marginal_velocity(z, t, data, path)

    def prior_weighted(z, t):  # conditional fields averaged with the prior weights, not the posterior
        return flows.conditional_velocity(z, data.mean(0).expand_as(z), t, path)

    for t in (0.2, 0.5, 0.8):
        coarse = flows.continuity_residual(log_prob, field, x, t, dt=4e-3).abs().max()
        half = flows.continuity_residual(log_prob, field, x, t, dt=2e-3).abs().max()
        assert 15 < coarse / half < 17  # residual = c dt^4: all of it is the five-point stencil's error
        fine = flows.continuity_residual(log_prob, field, x, t, dt=1e-4).abs().max()
        assert fine < 1e-7
        wrong_coarse = flows.continuity_residual(log_prob, prior_weighted, x, t, dt=4e-3).abs().max()
        wrong = flows.continuity_residual(log_prob, prior_weighted, x, t, dt=1e-4).abs().max()
        assert wrong > 1e5 * fine and wrong_coarse / wrong < 1.1  # a real residual does not shrink with dt


def test_the_oracle_velocity_of_a_gaussian_mixture_satisfies_the_continuity_equation():
    mix = oracles.eight_gaussians(radius=2.0, std=0.3)
    path = paths.VPPath()
    x = 3 * torch.randn(200, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    r = flows.continuity_residual(lambda z, t: mix.log_prob(z, t, path), lambda z, t: mix.velocity(z, t, path),
                                  x, 0.4, dt=1e-4)
    assert r.abs().max() < 1e-4


# --- straightness -------------------------------------------------------------------------------------------------
def _curve(fn, ts):  # states (K+1, 1, 2) of the curve fn(t) at the times ts
    return torch.stack([fn(t) for t in ts])[:, None, :]


def test_a_straight_path_at_constant_speed_has_straightness_zero_and_ratio_one():
    ts = torch.sort(torch.rand(20, dtype=F64), descending=True).values
    ts = torch.cat([torch.ones(1, dtype=F64), ts, torch.zeros(1, dtype=F64)])
    d, o = torch.tensor([1.5, -0.5], dtype=F64), torch.tensor([0.2, 0.3], dtype=F64)
    xs = _curve(lambda t: o + t * d, ts)
    assert flows.straightness(xs, ts).item() == pytest.approx(0.0, abs=1e-24)
    assert flows.path_length_ratio(xs, ts).item() == pytest.approx(1.0)


def test_straightness_of_closed_form_curves():
    ts = torch.linspace(1, 0, 4001, dtype=F64)
    d = torch.tensor([3.0, 4.0], dtype=F64)
    # straight, speed 2t: S = |d|^2 * int (1 - 2t)^2 dt = |d|^2 / 3, but the path is a line: ratio 1
    xs = _curve(lambda t: t**2 * d, ts)
    assert flows.straightness(xs, ts).item() == pytest.approx(25 / 3, rel=1e-5)
    assert flows.path_length_ratio(xs, ts).item() == pytest.approx(1.0)
    # a quarter circle at constant speed pi/2: S = (pi/2)^2 - |chord|^2 = pi^2/4 - 2, length ratio (pi/2)/sqrt(2)
    arc = _curve(lambda t: torch.stack([torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)]), ts)
    assert flows.straightness(arc, ts).item() == pytest.approx(math.pi**2 / 4 - 2, rel=1e-5)
    assert flows.path_length_ratio(arc, ts).item() == pytest.approx(math.pi / (2 * math.sqrt(2)), rel=1e-6)


def test_straightness_is_kinetic_energy_minus_transport_cost():
    g = torch.Generator().manual_seed(6)
    ts = torch.cat([torch.sort(torch.rand(9, generator=g, dtype=F64), descending=True).values, torch.zeros(1)])
    xs = torch.randn(10, 5, 1, 3, generator=g, dtype=F64)
    h = ts[:-1] - ts[1:]
    kinetic = (h[:, None] * ((xs[:-1] - xs[1:]) / h[:, None, None, None]).flatten(2).pow(2).sum(-1)).sum(0)
    chord = (xs[0] - xs[-1]).flatten(1).pow(2).sum(-1) / h.sum()
    torch.testing.assert_close(flows.straightness(xs, ts), kinetic - chord)
    assert (flows.path_length_ratio(xs, ts) >= 1).all()


def test_straightness_reads_a_sampler_trajectory():
    """One data point m: the exact flow on the linear path is x_t = (1 - t) m + t eps, straight at constant speed.
    Centred Gaussian data N(0, s^2 I): x_t = sigma(t) eps with sigma(t) = sqrt((1 - t)^2 s^2 + t^2), which falls
    to s / sqrt(1 + s^2) at t = s^2 / (1 + s^2) and rises again: a path along one ray that doubles back.  A
    mixture's flow bends."""
    path = paths.LinearPath()
    m = torch.tensor([[1.0, -2.0]], dtype=F64)
    noise = torch.randn(100, 2, generator=torch.Generator().manual_seed(7), dtype=F64)

    def trajectory(oracle):
        return samplers.rk4(oracle.as_model(path, "velocity"), noise, grids.uniform(50), path,
                            return_trajectory=True)

    point = trajectory(oracles.GaussianMixture(m, stds=0.0))
    assert flows.straightness(point).max() < 1e-20
    torch.testing.assert_close(point.samples, m.expand(100, 2))
    gauss = trajectory(oracles.GaussianMixture(torch.zeros(1, 2, dtype=F64), stds=0.5))
    lowest = 0.5 / math.sqrt(1.25)  # the path runs from radius 1 down to this and back up to s = 0.5
    ratio = (1 - lowest + 0.5 - lowest) / (1 - 0.5)
    torch.testing.assert_close(flows.path_length_ratio(gauss), torch.full((100,), ratio, dtype=F64), rtol=1e-4,
                               atol=0)
    # S = |eps|^2 (int_0^1 sigma'(t)^2 dt - (1 - s)^2) with sigma(t) = sqrt((1 - t)^2 s^2 + t^2)
    tt = torch.linspace(0, 1, 100_001, dtype=F64)
    d_sig = (tt - (1 - tt) * 0.25) / ((1 - tt) ** 2 * 0.25 + tt**2).sqrt()
    want = (noise**2).sum(1) * (torch.trapezoid(d_sig**2, tt) - 0.25)
    torch.testing.assert_close(flows.straightness(gauss), want, rtol=1e-3, atol=1e-6)
    mix = trajectory(oracles.eight_gaussians(radius=2.0, std=0.2))
    assert flows.straightness(mix).mean() > 0.1 and (flows.path_length_ratio(mix) > 1.001).float().mean() > 0.5


# --- reflow ---------------------------------------------------------------------------------------------------------
def test_reflow_pairs_of_a_gaussian_are_its_exact_flow_map():
    """The flow of N(m, s^2 I) on the linear path carries eps to m + s eps (the monotone map between Gaussians)."""
    gauss = oracles.GaussianMixture(torch.tensor([[1.0, -2.0]], dtype=F64), stds=0.5)
    path = paths.LinearPath()
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(8), dtype=F64)
    pairs = flows.reflow_pairs(gauss.as_model(path, "velocity"), noise, steps=64, batch_size=20)
    assert pairs.shape == (64, 2, 2)
    torch.testing.assert_close(pairs[:, 1], noise)
    torch.testing.assert_close(pairs[:, 0], gauss.means[0] + 0.5 * noise, rtol=0, atol=1e-7)
    coarse = flows.reflow_pairs(gauss.as_model(path, "velocity"), noise, steps=4, solver="euler")
    assert (coarse[:, 0] - pairs[:, 0]).abs().max() > 1e-3  # the solver and steps are used


def test_coupled_cfm_loss_is_cfm_on_the_given_pairs():
    torch.manual_seed(0)
    model = MLP(dim=2, hidden=16, depth=2).double()
    g = torch.Generator().manual_seed(9)
    x0, eps = torch.randn(32, 2, generator=g, dtype=F64), torch.randn(32, 2, generator=g, dtype=F64)
    got = flows.coupled_cfm_loss(model, torch.stack([x0, eps], 1), generator=torch.Generator().manual_seed(3))
    want = losses.cfm_loss(model, x0, eps=eps, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, want)

    class Exact(nn.Module):  # knows the pairs' straight-line velocity: eps - x0 = eps - A eps for x0 = A eps
        def forward(self, x, t, y=None):
            # x_t = (1 - t) A eps + t eps = ((1 - t) A + t) eps, so eps = x_t / ((1 - t) A + t)
            a = 0.5
            return (1 - a) * x / ((1 - t[:, None]) * a + t[:, None])

    pairs = torch.stack([0.5 * eps, eps], 1)
    assert flows.coupled_cfm_loss(Exact(), pairs, generator=g).item() == pytest.approx(0.0, abs=1e-20)


# --- the CFM / FM gradient identity --------------------------------------------------------------------------------
def test_gradient_difference_groups_average_to_the_full_gradient():
    torch.manual_seed(1)
    model = MLP(dim=2, hidden=8, depth=2).double()
    g = torch.Generator().manual_seed(10)
    x, a, b = (torch.randn(60, 2, generator=g, dtype=F64) for _ in range(3))
    t = torch.rand(60, generator=g, dtype=F64)
    mean, se = flows.gradient_difference(model, x, t, a, b, groups=6)
    loss = ((model(x, t) - a) ** 2).sum(1).mean() - ((model(x, t) - b) ** 2).sum(1).mean()
    full = torch.cat([p.flatten() for p in torch.autograd.grad(loss, list(model.parameters()))])
    torch.testing.assert_close(mean, full)
    assert (se > 0).all()
    zero, _ = flows.gradient_difference(model, x, t, a, a.clone(), groups=6)
    assert torch.equal(zero, torch.zeros_like(zero))


def test_cfm_and_fm_gradients_agree_within_standard_errors_and_a_wrong_target_does_not():
    torch.manual_seed(2)
    model = MLP(dim=2, hidden=16, depth=2).double()
    mix, path = oracles.eight_gaussians(radius=2.0, std=0.3), paths.LinearPath(0.1)
    g = torch.Generator().manual_seed(11)
    x0 = mix.sample(20_000, generator=g)
    t = torch.rand(20_000, generator=g, dtype=F64)
    draw = path.sample(x0, t, generator=g)
    marginal = mix.velocity(draw.x_t, t, path)
    mean, se = flows.gradient_difference(model, draw.x_t, t, draw.velocity, marginal, groups=200)
    assert stats.check_close(mean, 0.0, se, name="CFM - FM gradient") <= 5
    flipped, se_f = flows.gradient_difference(model, draw.x_t, t, -draw.velocity, marginal, groups=200)
    with pytest.raises(AssertionError, match="CFM - FM gradient"):
        stats.check_close(flipped, 0.0, se_f, name="CFM - FM gradient")


# --- logit-normal times ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loc, scale", [(0.0, 1.0), (0.5, 0.6), (-1.0, 1.6)])
def test_logit_normal_pdf_integrates_to_one_and_matches_the_sampler(loc, scale):
    t = torch.linspace(1e-6, 1 - 1e-6, 200_001, dtype=F64)
    assert torch.trapezoid(flows.logit_normal_pdf(t, loc, scale), t).item() == pytest.approx(1.0, abs=1e-5)
    edges = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95], dtype=F64)
    cdf = flows.logit_normal_cdf(edges, loc, scale)
    n = 200_000
    draws = losses.sample_t(n, paths.LinearPath(), t_dist="logit_normal", loc=loc, scale=scale,
                            generator=torch.Generator().manual_seed(12), dtype=F64)
    frac = (draws[:, None] <= edges).double().mean(0)
    stats.check_close(frac, cdf, (cdf * (1 - cdf) / n).sqrt(), name="logit-normal cdf")
    mid = torch.tensor([0.3], dtype=F64)  # the pdf is the derivative of the cdf
    slope = (flows.logit_normal_cdf(mid + 1e-6, loc, scale) - flows.logit_normal_cdf(mid - 1e-6, loc, scale)) / 2e-6
    torch.testing.assert_close(flows.logit_normal_pdf(mid, loc, scale), slope)


# --- NFE -------------------------------------------------------------------------------------------------------------
class _Counting:
    def __init__(self, model):
        self.model, self.calls = model, 0

    @property
    def diffkit_objective(self):
        return self.model.diffkit_objective

    def __call__(self, x, t, y=None):
        self.calls += 1
        return self.model(x, t, y)


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4", "ddim"])
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_nfe_counts_the_network_calls_of_the_solvers(solver, steps):
    path = paths.LinearPath()
    model = _Counting(oracles.eight_gaussians().as_model(path, "velocity"))
    samplers.get_sampler(solver)(model, torch.randn(4, 2, dtype=F64), grids.uniform(steps), path)
    assert model.calls == flows.nfe(solver, steps)


# --- bad input -------------------------------------------------------------------------------------------------------
def test_bad_input_names_the_argument():
    path, x = paths.LinearPath(), torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="x0 must have the shape of x"):
        flows.conditional_velocity(x, torch.zeros(4, 3, dtype=F64), 0.5, path)
    with pytest.raises(ValueError, match="sigma_t = 0"):
        flows.conditional_velocity(x, x, 0.0, path)
    with pytest.raises(ValueError, match="x must have 2 columns"):
        flows.marginal_velocity(torch.zeros(4, 3, dtype=F64), 0.5, x, path)
    with pytest.raises(ValueError, match="weights must be 4 non-negative"):
        flows.marginal_velocity(x, 0.5, x, path, weights=torch.ones(3))
    with pytest.raises(ValueError, match=r"t must lie in \[2 dt, 1 - 2 dt\]"):
        flows.continuity_residual(lambda z, t: z.sum(1), lambda z, t: z, x, 1.0)
    with pytest.raises(ValueError, match="ts must be strictly decreasing"):
        flows.straightness(torch.zeros(3, 4, 2), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="one time per state"):
        flows.straightness(torch.zeros(3, 4, 2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"pairs must have shape \(B, 2, ...\)"):
        flows.coupled_cfm_loss(lambda x, t, y=None: x, torch.zeros(4, 3, 2))
    with pytest.raises(ValueError, match="groups must divide"):
        flows.gradient_difference(nn.Linear(2, 2), x, torch.zeros(4), x, x, groups=3)
    with pytest.raises(ValueError, match="t must lie strictly inside"):
        flows.logit_normal_pdf(torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="solver must be one of"):
        flows.nfe("dpm", 3)
    with pytest.raises(ValueError, match="solver must be one of"):
        flows.reflow_pairs(lambda x, t, y=None: x, x, solver="ddpm")


# --- chapter 7's exercises: the reference solutions are what diffkit.flows ships -----------------------------------
def test_the_exercise_references_agree_with_diffkit_flows():
    from diffkit.exercises import ch07

    g = torch.Generator().manual_seed(13)
    x, x0 = torch.randn(2, 50, 3, generator=g, dtype=F64)
    t = 0.05 + 0.9 * torch.rand(50, generator=g, dtype=F64)
    for sigma_min in (0.0, 0.1):
        path = paths.LinearPath(sigma_min)
        torch.testing.assert_close(ch07.ot_conditional_velocity(x, x0, t[:, None], sigma_min),
                                   flows.conditional_velocity(x, x0, t, path))
    draw = paths.LinearPath().sample(x0, t, generator=g)
    torch.testing.assert_close(ch07.rectified_flow_target(x0, draw.eps), draw.velocity)
    tt = torch.rand(40, dtype=F64).clamp(0.01, 0.99)
    torch.testing.assert_close(ch07.logit_normal_pdf(tt, 0.3, 0.8), flows.logit_normal_pdf(tt, 0.3, 0.8))
    ts = torch.cat([torch.ones(1, dtype=F64), torch.sort(torch.rand(6, generator=g, dtype=F64), descending=True).values,
                    torch.zeros(1, dtype=F64)])
    xs = torch.randn(8, 5, 2, generator=g, dtype=F64)
    torch.testing.assert_close(ch07.straightness(xs, ts), flows.straightness(xs, ts))
