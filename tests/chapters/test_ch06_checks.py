"""Chapter 6's checks, run at a fixed size against the planted bugs they guard against.

Each test writes the chapter's check as the notebook does, runs it on the correct formula (it must pass) and on
the plausible bug (it must fail).
"""

import math

import pytest
import torch

from diffkit import likelihood, oracles, paths, samplers, stats

F64 = torch.float64
VP = paths.VPPath()
DDPM = paths.DiscretePath.from_schedule("linear", 1000)


def _order(ns, errors):  # least-squares slope of log(error) against log(n), sign flipped
    x, y = torch.tensor(ns, dtype=F64).log(), torch.tensor(errors, dtype=F64).log()
    return -(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()


def _chain_gaps(rate_scale=1.0):
    """|log alpha-bar of DDPM's chain - log alpha_1^2 of the VP-SDE| at t = 1 (eq-vp-sde, eq-vp-marginal);
    ``rate_scale`` != 1 plants a chain whose betas are not beta(t) dt."""
    ns = [100, 300, 1000, 3000, 10_000, 30_000]
    exact = 2 * math.log(VP.alpha(torch.tensor(1.0, dtype=F64)).item())
    gaps = []
    for n in ns:
        t = torch.arange(1, n + 1, dtype=F64) / n
        gaps.append(abs(torch.log1p(-rate_scale * VP.beta(t) / n).sum().item() - exact))
    return ns, gaps


def test_ddpm_chain_converges_to_the_vp_sde_at_first_order():
    assert abs(_order(*_chain_gaps()) - 1) < 0.05
    assert abs(_order(*_chain_gaps(rate_scale=1.01)) - 1) > 0.5  # a chain with the wrong rate never converges


@pytest.mark.parametrize("path", [VP, paths.SubVPPath(), paths.VEPath(0.01, 5.0)], ids=["vp", "subvp", "ve"])
def test_pf_ode_velocity_is_f_x_minus_half_g2_score(path):
    ring = oracles.eight_gaussians()
    x = 5 * torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    den = samplers.Denoiser(ring.as_model(path, "score"), path)
    for t in (0.1, 0.5, 0.9):
        tt = torch.tensor(t, dtype=F64)
        f, g2, score = path.drift(tt).item(), path.diffusion_sq(tt).item(), ring.score(x, t, path)
        torch.testing.assert_close(den.velocity(x, t), f * x - 0.5 * g2 * score)
        assert (den.velocity(x, t) - (f * x - g2 * score)).abs().max() > 0.1  # the reverse SDE's drift


def _jump_width(t, s=0.1, n=40_000, seed=0):
    """Width of N(0, s^2 I)'s samples after the jump x_0 = E[x0 | x_t] from exact samples of p_t."""
    gen = torch.Generator().manual_seed(seed)
    mode = oracles.GaussianMixture(torch.zeros(1, 2, dtype=F64), stds=s)
    x0 = mode.sample(n, generator=gen)
    x_t = DDPM.sample(x0, torch.full((n,), t, dtype=F64), torch.randn(n, 2, generator=gen, dtype=F64)).x_t
    return mode.denoiser(x_t, t, DDPM).std(0).mean().item()


@pytest.mark.parametrize("t", [0.01, 0.05, 0.2])
def test_the_last_jump_shrinks_a_mode_as_derived(t):
    """eq-last-jump: sd(x0_hat) = s / sqrt(1 + sigma^2 / (alpha^2 s^2)); the variance-for-sd slip fails."""
    s, n = 0.1, 40_000
    a, sg = DDPM.alpha(torch.tensor(t, dtype=F64)).item(), DDPM.sigma(torch.tensor(t, dtype=F64)).item()
    predicted = s / math.sqrt(1 + sg**2 / (a**2 * s**2))
    measured = _jump_width(t, s, n)
    se = predicted / math.sqrt(4 * n)  # std of a Gaussian sample's std, averaged over 2 coordinates
    stats.check_close(measured, predicted, se, name="width after the jump")
    slip = s / (1 + sg**2 / (a**2 * s**2))  # the square root forgotten
    with pytest.raises(AssertionError):
        stats.check_close(measured, slip, se, name="width after the jump")


def test_ode_likelihood_needs_its_divergence_term():
    cosine = paths.CosinePath()
    gauss = oracles.GaussianMixture(torch.tensor([[0.7, -0.3]], dtype=F64), stds=0.6)
    x = gauss.sample(200, generator=torch.Generator().manual_seed(1))
    exact = gauss.log_prob(x, 1e-3, cosine)
    model = gauss.as_model(cosine, "x0")
    x1, delta, nfe = likelihood.flow_to_prior(model, x, cosine, t0=1e-3, rtol=1e-8, atol=1e-8)
    full = likelihood.prior_log_prob(x1, cosine) + delta
    assert (full - exact).abs().max() < 1e-5 and nfe > 0
    assert (likelihood.prior_log_prob(x1, cosine) - exact).abs().max() > 0.5  # divergence dropped
