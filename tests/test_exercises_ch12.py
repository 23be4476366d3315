"""Chapter 12's exercises (diffkit.exercises.ch12): each reference solution agrees with the diffkit code the
chapter builds on — distillation.ddim_jump, samplers.ddim and distillation.progressive_target — so the exercises
teach exactly what diffkit ships."""

import torch

from diffkit import distillation, grids, oracles, paths, samplers
from diffkit.exercises import ch12

DDPM = paths.DiscretePath.from_schedule("linear", 1000)


def _coefs(t, s):
    ts = torch.tensor([t, s], dtype=torch.float64)
    (a_t, a_s), (s_t, s_s) = DDPM.alpha(ts), DDPM.sigma(ts)
    return a_t, s_t, a_s, s_s


def test_ddim_x0_step_is_diffkits_ddim():
    mix = oracles.eight_gaussians()
    oracle = mix.as_model(DDPM, "x0")
    x = samplers.prior(DDPM, (50, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0_hat = oracle(x, torch.ones(50, dtype=torch.float64))
    ours = ch12.ddim_x0_step(x, x0_hat, *_coefs(1.0, 0.5))
    torch.testing.assert_close(ours, samplers.ddim(oracle, x, grids.uniform(2), DDPM, return_trajectory=True).xs[1])
    torch.testing.assert_close(ours, distillation.ddim_jump(x, x0_hat, 1.0, 0.5, DDPM))


def test_progressive_target_is_diffkits_and_inverts_the_step():
    g = torch.Generator().manual_seed(1)
    x_t, x_s = torch.randn(20, 3, generator=g, dtype=torch.float64), torch.randn(20, 3, generator=g, dtype=torch.float64)
    coefs = _coefs(0.7, 0.4)
    target = ch12.progressive_target(x_t, x_s, *coefs)
    torch.testing.assert_close(target, distillation.progressive_target(x_t, x_s, 0.7, 0.4, DDPM))
    torch.testing.assert_close(ch12.ddim_x0_step(x_t, target, *coefs), x_s)
