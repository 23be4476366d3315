"""Chapter 12's checks, run at a fixed size against the planted bugs they guard against.

Each test writes the chapter's check as the notebook does, runs it on the correct ingredient (it must pass) and on
a plausible bug (it must fail), so that a check which a bug walks through is caught here and not only in a
quick-mode run of the notebook.
"""

import pytest
import torch

from diffkit import distillation, grids, oracles, paths, samplers

F64 = torch.float64
MIX = oracles.eight_gaussians()
DDPM = paths.DiscretePath.from_schedule("linear", 1000)
ORACLE = MIX.as_model(DDPM, "x0")


# -- 1. eq-pd-target: one student step lands on two teacher steps ------------------------------------------------
def right_target(two, x_t, a_t, a_s, s_t, s_s):
    r = s_s / s_t
    return (two - r * x_t) / (a_s - r * a_t)


SLIPS = {
    "ratio upside down": lambda two, x_t, a_t, a_s, s_t, s_s: (two - s_t / s_s * x_t) / (a_s - s_t / s_s * a_t),
    "alpha_t term dropped": lambda two, x_t, a_t, a_s, s_t, s_s: (two - s_s / s_t * x_t) / a_s,
    "the teacher's point itself": lambda two, x_t, a_t, a_s, s_t, s_s: two,
    "variances for the ratio": lambda two, x_t, a_t, a_s, s_t, s_s: (two - (s_s / s_t) ** 2 * x_t) / (
        a_s - (s_s / s_t) ** 2 * a_t),
}


def target_check(target_fn, teacher_two_steps=True):
    x0 = MIX.sample(2000, generator=torch.Generator().manual_seed(1)).double()
    errors = []
    for n, i in [(1, 1), (4, 4), (4, 2), (8, 1)]:
        t, s = i / n, (i - 1) / n
        x_t = DDPM.sample(x0, t, generator=torch.Generator().manual_seed(2)).x_t
        times = [t, (t + s) / 2, s] if teacher_two_steps else [t, s]
        two = distillation.teacher_steps(ORACLE, x_t, times, DDPM)
        ts = torch.tensor([t, s], dtype=F64)
        (a_t, a_s), (s_t, s_s) = DDPM.alpha(ts), DDPM.sigma(ts)
        target = target_fn(two, x_t, a_t, a_s, s_t, s_s)
        one = a_s * target + s_s / s_t * (x_t - a_t * target)  # eq-ddim-x0
        errors.append((one - two).abs().max().item())
    assert max(errors) < 1e-9, f"eq-pd-target: {max(errors):.1e}"
    if teacher_two_steps:  # the notebook also compares with what diffkit ships
        torch.testing.assert_close(target, distillation.progressive_target(x_t, two, t, s, DDPM))


def test_target_check_passes():
    target_check(right_target)


@pytest.mark.parametrize("slip", list(SLIPS))
def test_target_check_fails_on_a_slip(slip):
    with pytest.raises(AssertionError):
        target_check(SLIPS[slip])


def test_the_check_is_not_trivial_the_teachers_two_steps_differ_from_one():
    """Were two teacher steps the same as one (a midpoint never used), any target would pass trivially."""
    x0 = MIX.sample(500, generator=torch.Generator().manual_seed(1)).double()
    x_t = DDPM.sample(x0, 0.5, generator=torch.Generator().manual_seed(2)).x_t
    one = distillation.teacher_steps(ORACLE, x_t, [0.5, 0.25], DDPM)
    two = distillation.teacher_steps(ORACLE, x_t, [0.5, 0.375, 0.25], DDPM)
    assert (one - two).abs().max() > 1e-2


# -- 2. the reference endpoint and the first-order error ---------------------------------------------------------
def test_ddim_error_falls_like_one_over_the_steps_and_the_reference_converges():
    z = samplers.prior(DDPM, (500, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = samplers.ddim(ORACLE, z, grids.uniform(1024), DDPM)
    half = samplers.ddim(ORACLE, z, grids.uniform(512), DDPM)
    err = {n: (samplers.ddim(ORACLE, z, grids.uniform(n), DDPM) - ref).norm(dim=1).mean().item()
           for n in (16, 32, 64)}
    assert (half - ref).norm(dim=1).mean() < 0.1 * err[64]
    assert 1.5 < err[16] / err[32] < 2.7 and 1.5 < err[32] / err[64] < 2.7, err


def test_one_step_from_pure_noise_gives_the_mean():
    """eq-ddim-exact's stale first guess: one DDIM step from t = 1 returns E[x0 | x_1], near the mixture's mean."""
    z = samplers.prior(DDPM, (500, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    one = samplers.ddim(ORACLE, z, grids.uniform(1), DDPM)
    assert one.norm(dim=1).max() < 0.5 < 2.5 < MIX.sample(500).norm(dim=1).min()
