"""Chapter 11's checks, run at a fixed size against the planted bugs they guard against.

The closed-form KL of the encoder's Gaussian to N(0, I) against a Monte Carlo average of log q - log p (in
standard errors), which must pass and must fail on the standard deviation written for the variance and on
log(sigma^2) read as log(sigma); and the scale factor's effect on the effective SNR.
"""

import torch

from diffkit import autoencoder, paths

F64 = torch.float64
N_MC = 20_000


def mc_z(closed_form):
    """The notebook's check: (Monte Carlo - closed form) / standard error, for 6 random encoder outputs."""
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(6, 4, generator=g, dtype=F64), torch.randn(6, 4, generator=g, dtype=F64)
    z = torch.stack([autoencoder.reparameterize(mean, logvar, g) for _ in range(N_MC)])
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    ratio = (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(-1)
    return (ratio.mean(0) - closed_form(mean, logvar)) / (ratio.std(0) / N_MC**0.5)


def test_the_closed_form_passes():
    assert mc_z(autoencoder.gaussian_kl).abs().max() < 5


def test_the_check_fails_on_the_std_for_the_variance():
    assert mc_z(lambda m, lv: 0.5 * (m**2 + (0.5 * lv).exp() - 1 - lv).sum(-1)).abs().max() > 5


def test_the_check_fails_on_logvar_read_as_log_sigma():
    assert mc_z(lambda m, lv: 0.5 * (m**2 + (2 * lv).exp() - 1 - 2 * lv).sum(-1)).abs().max() > 5


def test_the_check_fails_without_the_half():
    assert mc_z(lambda m, lv: (m**2 + lv.exp() - 1 - lv).sum(-1)).abs().max() > 5


def test_scaling_a_latent_shifts_the_effective_snr_by_twice_the_log_scale():
    """eq-effective-snr: measured SNR of x_t = alpha z + sigma eps for latents of std s is s^2 SNR(t)."""
    ddpm = paths.DiscretePath.from_schedule("linear", 1000)
    g = torch.Generator().manual_seed(1)
    for s in (0.3, 1.0, 4.0):
        z = s * torch.randn(20_000, 16, generator=g, dtype=F64)
        t = torch.tensor([0.5], dtype=F64)
        alpha, sigma = ddpm.alpha(t).item(), ddpm.sigma(t).item()
        measured = (alpha * z).var() / (sigma**2)
        expected = s**2 * alpha**2 / sigma**2
        assert abs(measured / expected - 1) < 0.02
        scaled = autoencoder.latent_scale(z) * z
        assert abs(((alpha * scaled).var() / sigma**2) / (alpha**2 / sigma**2) - 1) < 1e-9
