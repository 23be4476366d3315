"""Chapter 2's checks, run at the chapter's sample sizes against the planted bugs they guard against.

Zero terminal SNR: the chapter asserts that the rescaled path ends at alpha_bar_N = 0 exactly, and measures the
correlation between x_N and x_0 over 6.4 million (pixel, noise) pairs of MNIST digits in both modes: against
the leak rho_N predicted by eq-forward-marginal for the linear schedule, and against zero (the promise of the
rescaling, not a prediction from the path's own alpha_bar_N) for the rescaled one, within 5 standard errors.
A "rescaling" that returns the betas unchanged, and a prediction of no leak for the linear schedule, must
both fail. The old check compared each path with its own alpha_bar_N, which the identity rescaling passes.
"""

import math

import pytest
import torch

from diffkit import data, paths, schedules, stats

N = 1000
N_PAIRS = 6_400_000  # the chapter's n_pairs, the same in quick and full mode


@pytest.fixture(scope="module")
def pixels():
    digits, _ = data.mnist_tensors("train", n=4000)  # the chapter's full-mode digits
    x0_pix = digits.flatten().double()
    x0_rep = x0_pix.repeat(-(-N_PAIRS // x0_pix.numel()))[:N_PAIRS]
    return x0_rep, x0_rep.std().item(), 1 / x0_rep.numel() ** 0.5


def predicted_leak(alpha_bar_n, pix_sd):  # rho_N of the chapter
    return alpha_bar_n**0.5 * pix_sd / (alpha_bar_n * pix_sd**2 + 1 - alpha_bar_n) ** 0.5


def leak_check(p, expected, pixels, seed=1):
    """The chapter's leak check for one path: corr(x_N, x_0) within 5 s.e. of ``expected``."""
    x0_rep, _, se = pixels
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0_rep.shape, generator=g, dtype=torch.float64)
    x_end = p.alpha(1.0) * x0_rep + p.sigma(1.0) * eps  # x_N: path.alpha(1.0) is sqrt(alpha_bar_N)
    corr = torch.corrcoef(torch.stack([x_end, x0_rep]))[0, 1].item()
    return stats.check_close(corr, expected, se, name="leak")


def zero_terminal_check(p):
    assert p.alpha_bar[-1] == 0  # the chapter's exact assert


LINEAR = paths.DiscretePath.from_schedule("linear", N)
RESCALED = paths.DiscretePath.from_schedule("linear", N, zero_terminal_snr=True)
IDENTITY = paths.DiscretePath(schedules.linear_betas(N))  # a "rescaling" that returns the betas unchanged


def test_the_correct_paths_pass(pixels):
    zero_terminal_check(RESCALED)
    assert leak_check(LINEAR, predicted_leak(LINEAR.alpha_bar[-1].item(), pixels[1]), pixels) < 5
    assert leak_check(RESCALED, 0.0, pixels) < 5


def test_an_identity_rescaling_fails_both_checks(pixels):
    with pytest.raises(AssertionError):
        zero_terminal_check(IDENTITY)
    with pytest.raises(AssertionError):
        leak_check(IDENTITY, 0.0, pixels)


def test_the_old_check_let_the_identity_rescaling_through(pixels):
    own = predicted_leak(IDENTITY.alpha_bar[-1].item(), pixels[1])  # from the path's own alpha_bar_N
    assert leak_check(IDENTITY, own, pixels) < 5


def test_predicting_no_leak_for_the_linear_schedule_fails(pixels):
    with pytest.raises(AssertionError):
        leak_check(LINEAR, 0.0, pixels)


def test_the_false_alarm_rate_of_twelve_gaps_at_five_standard_errors():
    p_false = 1 - (1 - math.erfc(5 / 2**0.5)) ** 12  # the chapter's glued rate
    assert round(1 / p_false, -3) == 145_000
    assert p_false <= 12 * math.erfc(5 / 2**0.5)  # the union bound, valid for correlated gaps


def test_the_chain_check_rejects_alpha_bar_where_its_square_root_belongs():
    """The chapter's Monte-Carlo check of eq-forward-marginal at its quick-mode size (20,000 chains): the
    correct mean passes within 5 s.e. and the mean written as alpha_bar * x0 misses by far more."""
    betas, x0, n_chains = schedules.linear_betas(N), 1.5, 20_000
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    g = torch.Generator().manual_seed(0)
    x = torch.full((n_chains,), x0, dtype=torch.float64)
    z_right, z_wrong = [], []
    for n, beta in enumerate(betas, start=1):
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(n_chains, generator=g, dtype=torch.float64)
        if n in (1, 10, 100, 250, 500, 1000):
            ab = alpha_bar[n - 1].item()
            se = ((1 - ab) / n_chains) ** 0.5
            z_right.append(abs(x.mean().item() - ab**0.5 * x0) / se)
            z_wrong.append(abs(x.mean().item() - ab * x0) / se)
    assert max(z_right) < 5 and max(z_wrong) > 20
