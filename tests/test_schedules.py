import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as diffusers_rescale

from diffkit import schedules


def test_linear_matches_ddpm_and_diffusers():
    betas = schedules.linear_betas(1000)
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").betas.double()
    torch.testing.assert_close(betas, ref, rtol=1e-6, atol=1e-9)


def test_cosine_matches_diffusers():
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").betas.double()
    torch.testing.assert_close(schedules.cosine_betas(1000), ref, rtol=1e-5, atol=1e-7)


def test_sigmoid_follows_its_alpha_bar():
    N, start, end, tau = 500, -3.0, 3.0, 1.0
    ab = schedules.alpha_bar_from_betas(schedules.sigmoid_betas(N, start, end, tau))
    t = torch.arange(N + 1, dtype=torch.float64) / N
    v = lambda z: torch.sigmoid(torch.as_tensor(z, dtype=torch.float64) / tau)  # noqa: E731
    closed = (v(end) - v(t * (end - start) + start)) / (v(end) - v(start))
    closed = closed / closed[0]
    # betas are clipped at 0.999 only at the very end
    torch.testing.assert_close(ab[:-1], closed[1:-1], rtol=1e-10, atol=1e-12)
    assert (ab[1:] < ab[:-1]).all()


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_zero_terminal_snr(name):
    betas = schedules.make_betas(name, 1000)
    rescaled = schedules.make_betas(name, 1000, zero_terminal_snr=True)
    ab, ab_new = schedules.alpha_bar_from_betas(betas), schedules.alpha_bar_from_betas(rescaled)
    assert ab_new[-1].item() == 0.0 and rescaled[-1].item() == pytest.approx(1.0)
    assert ab_new[0].item() == pytest.approx(ab[0].item(), rel=1e-12)
    assert (ab_new[1:] < ab_new[:-1]).all()
    torch.testing.assert_close(rescaled, diffusers_rescale(betas.clone()), rtol=1e-9, atol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="name must be one of"):
        schedules.make_betas("quadratic", 10)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        schedules.linear_betas(0)
    with pytest.raises(ValueError, match="beta_max / n_steps must be < 1"):
        schedules.linear_betas(10, beta_max=20.0)
