"""Chapter 11's exercises (diffkit.exercises.ch11): each reference solution agrees with the diffkit code the
chapter uses — autoencoder.gaussian_kl, autoencoder.reparameterize's draw, autoencoder.latent_scale — so the
exercises teach exactly what diffkit ships."""

import torch

from diffkit import autoencoder
from diffkit.exercises import ch11
from diffkit.exercises._checking import run_check

EXERCISES = {e.name: e for e in ch11.EXERCISES}


def test_kl_reference_is_diffkits_gaussian_kl():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g,
                                                                                    dtype=torch.float64)
    torch.testing.assert_close(ch11.kl_to_prior(mean, logvar), autoencoder.gaussian_kl(mean, logvar))


def test_reparameterize_reference_is_diffkits_draw():
    mean, logvar = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    eps = torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    drawn = autoencoder.reparameterize(mean, logvar, torch.Generator().manual_seed(5))
    torch.testing.assert_close(ch11.reparameterize(mean, logvar, eps), drawn)


def test_scale_reference_is_diffkits_latent_scale():
    z = 2.5 * torch.randn(200, 4, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(ch11.latent_scale_factor(z).item() - autoencoder.latent_scale(z)) < 1e-12


def test_a_biased_std_and_a_float32_solution_pass():
    """n or n-1 in the variance is not a mistake at these sizes; neither is float32."""
    assert run_check(EXERCISES["latent_scale_factor"], lambda z: 1 / z.float().std(unbiased=False)).passed
    assert run_check(EXERCISES["kl_to_prior"], lambda m, lv: autoencoder.gaussian_kl(m.float(), lv.float())).passed
