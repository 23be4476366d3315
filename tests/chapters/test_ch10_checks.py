"""Chapter 10's checks, run at a fixed size against the planted bugs they guard against.

Each test writes the chapter's check as the notebook does, runs it on the correct ingredient (it must pass) and on
a plausible bug (it must fail), so that a check which a bug walks through is caught here and not only in a
quick-mode run of the notebook.
"""

import math

import pytest
import torch

from diffkit import grids, losses, oracles, pca, recipes

F64 = torch.float64
MIX = oracles.eight_gaussians()
DDPM, FLOW = recipes.get_recipe("dit").path, recipes.get_recipe("flux").path


# -- 10a: the conversions x0 -> eps (eq-eps-from-x0) and x0 -> velocity on the flow path (eq-velocity-from-x0-rf) --
def conversion_check(eps_from_x0, velocity_from_x0):
    gen = torch.Generator().manual_seed(0)
    x0 = MIX.sample(500, generator=gen).double()
    t = 0.05 + 0.9 * torch.rand(500, generator=gen, dtype=F64)
    for path in (DDPM, FLOW):
        x_t = path.sample(x0, t, generator=gen).x_t
        a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
        exact = -s * MIX.score(x_t, t, path)  # Tweedie: independent of the denoiser
        err = (eps_from_x0(x_t, MIX.denoiser(x_t, t, path), a, s) - exact).abs().max().item()
        assert err < 1e-8, f"eq-eps-from-x0: {err:.1e}"
    x_t = FLOW.sample(x0, t, generator=gen).x_t
    err = (velocity_from_x0(x_t, MIX.denoiser(x_t, t, FLOW), t[:, None]) - MIX.velocity(x_t, t, FLOW)).abs().max()
    assert err.item() < 1e-8, f"eq-velocity-from-x0-rf: {err:.1e}"


def right_eps(x_t, x0, a, s):
    return (x_t - a * x0) / s


def right_velocity(x_t, x0, t):
    return (x_t - x0) / t


CONVERSION_SLIPS = {
    "x0 not scaled": (lambda x_t, x0, a, s: (x_t - x0) / s, right_velocity),
    "eps sign flipped": (lambda x_t, x0, a, s: (a * x0 - x_t) / s, right_velocity),
    "velocity direction flipped": (right_eps, lambda x_t, x0, t: (x0 - x_t) / t),
    "velocity over 1 - t": (right_eps, lambda x_t, x0, t: (x_t - x0) / (1 - t)),
}


def test_conversion_check_passes():
    conversion_check(right_eps, right_velocity)


@pytest.mark.parametrize("slip", list(CONVERSION_SLIPS))
def test_conversion_check_fails_on_a_slip(slip):
    with pytest.raises(AssertionError):
        conversion_check(*CONVERSION_SLIPS[slip])


# -- 10b: the eps-loss is SNR times the x0 error of the implied x0_hat (eq-weights), digit by digit ----------------
def weights_check(weight, net):
    x0 = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    for snr in (1.0, 0.001):
        t = grids.time_at_log_snr(DDPM, torch.tensor(math.log(snr))).float()
        t_b = t.expand(len(x0))
        eps_loss = losses.diffusion_loss(net, x0, DDPM, target="eps", t=t_b, eps=eps, reduce=False)
        a, s = DDPM.alpha(t), DDPM.sigma(t)
        x_t = a * x0 + s * eps
        x0_err = ((x_t - s * net(x_t, t_b)) / a - x0).square().flatten(1).mean(1)
        torch.testing.assert_close(eps_loss, weight(DDPM.snr(t)) * x0_err, rtol=1e-4, atol=0.0)


def a_network(x, t, y=None):  # any network: a fixed nonlinear map of x_t
    return torch.tanh(0.7 * x) + 0.1


def test_weights_check_passes():
    weights_check(lambda snr: snr, a_network)


@pytest.mark.parametrize("weight", [lambda snr: snr + 1, lambda snr: snr.sqrt(), lambda snr: 1 / snr],
                         ids=["v-loss weight", "sqrt SNR", "upside down"])
def test_weights_check_fails_on_a_slip(weight):
    with pytest.raises(AssertionError):
        weights_check(weight, a_network)


# -- 10c: noise patches stay on k/16 within the Marchenko-Pastur band; digit-like patches far above it ----------
def spectrum_check(patches, n_noise=5):
    share = pca.explained_variance(patches)
    gen = torch.Generator().manual_seed(1)
    noise = torch.stack([pca.explained_variance(torch.randn(len(patches), 16, generator=gen, dtype=F64))
                         for _ in range(n_noise)])
    k = torch.arange(1, 17, dtype=F64)
    assert (noise - k / 16).abs().max() < 2 * (16 / len(patches)) ** 0.5
    assert (share[:4] > k[:4] / 16 + 0.2).all()


def test_spectrum_check_passes_on_low_rank_patches():
    g = torch.Generator().manual_seed(2)
    spectrum_check(torch.randn(20_000, 3, generator=g, dtype=F64) @ torch.randn(3, 16, generator=g, dtype=F64)
                   + 0.1 * torch.randn(20_000, 16, generator=g, dtype=F64))


def test_spectrum_check_fails_on_noise_patches():
    """Patches that fill all 16 directions, as noise does, are caught."""
    with pytest.raises(AssertionError):
        spectrum_check(torch.randn(20_000, 16, generator=torch.Generator().manual_seed(3), dtype=F64))
