"""Chapter 5's checks, run at a fixed size against the planted bugs they guard against.

Each test writes the chapter's check as the notebook does, runs it on the correct formula (it must pass) and on
the plausible bug (it must fail), so that a check which a bug walks through is caught here and not only in a
quick-mode run of the notebook, whose smaller samples shrink every margin.
"""

import math

import pytest
import torch
from torch import nn

from diffkit import distances, oracles, paths, stats
from diffkit import score_matching as sm

F64 = torch.float64
MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=F64)
STD = 0.3
AT_DATA = paths.VEPath()  # sigma_0 = 0: the clean density


def mixture(w_right=0.2, std=STD):  # the chapter's running example, right-hand weight w_right
    return oracles.GaussianMixture(MEANS, stds=std, weights=torch.tensor([1 - w_right, w_right], dtype=F64))


# -- 1. Vincent's identity draw by draw (eq-vincent, eq-dsm-cross) ----------------------------------------------

SIGMA = 0.5


def dsm_correct(score_fn, x0, sigma, eps):  # eq-dsm: 1/2 |s + eps / sigma|^2
    return sm.denoising_score_matching(score_fn, x0, sigma, eps=eps, reduce=False)


def dsm_no_half(score_fn, x0, sigma, eps):  # the 1/2 dropped
    return 2 * dsm_correct(score_fn, x0, sigma, eps)


def dsm_sigma_squared(score_fn, x0, sigma, eps):  # target -eps / sigma^2: grad log q with the wrong power
    return 0.5 * (score_fn(x0 + sigma * eps) + eps / sigma**2).pow(2).sum(1)


def vincent_z(dsm, n=20_000, seed=5):
    """The notebook's check: DSM - ESM_sigma - C_sigma per draw, mean within 5 standard errors of 0."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 2)).double()
    noised = oracles.GaussianMixture(MEANS, stds=math.sqrt(STD**2 + SIGMA**2),
                                     weights=torch.tensor([0.8, 0.2], dtype=F64))
    gen = torch.Generator().manual_seed(seed)
    x0 = mixture().sample(n, generator=gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=F64)
    x_noisy = x0 + SIGMA * eps

    def noised_score(x):
        return noised.score(x, 0.0, AT_DATA)

    c_draw = 0.5 * ((eps / SIGMA) ** 2).sum(1) - 0.5 * (noised_score(x_noisy) ** 2).sum(1)
    with torch.no_grad():
        esm = sm.explicit_score_matching(net, x_noisy, noised_score, reduce=False)
        gap, se = stats.mean_se(dsm(net, x0, SIGMA, eps) - esm - c_draw)
    return stats.check_close(gap, 0.0, se, name="eq-vincent")


def test_vincent_check_passes_on_eq_dsm():
    assert vincent_z(dsm_correct) <= 5


@pytest.mark.parametrize("bug", [dsm_no_half, dsm_sigma_squared])
def test_vincent_check_fails_on_planted_bugs(bug):
    with pytest.raises(AssertionError, match="eq-vincent"):
        vincent_z(bug)


# -- 2. plain Langevin's within-mode variance against eq-langevin-bias -----------------------------------------

DELTA = 0.01


def langevin_chains(noise_scale=math.sqrt(2 * DELTA), n=20_000, steps=200, seed=1):
    mix = mixture()
    gen = torch.Generator().manual_seed(seed)
    x = 8 * torch.rand(n, 2, generator=gen, dtype=F64) - 4
    for _ in range(steps):  # (1 - delta / 0.09)^400 < 1e-20: the start is forgotten within a mode
        z = torch.randn(x.shape, generator=gen, dtype=F64)
        x = x + DELTA * mix.score(x, 0.0, AT_DATA) + noise_scale * z
    return x


def within_mode_variance(x):
    dev = x - MEANS[(x[:, 0] > 0).long()]  # each chain minus its mode's centre
    return stats.mean_se(dev.pow(2).flatten())


VAR_PRED = STD**2 / (1 - DELTA / (2 * STD**2))  # eq-langevin-bias: 5.9% above 0.09


@pytest.fixture(scope="module")
def chains():
    return langevin_chains()


def test_variance_check_passes_on_eq_langevin_bias(chains):
    var_hat, var_se = within_mode_variance(chains)
    assert stats.check_close(var_hat, VAR_PRED, var_se, name="within-mode variance") <= 5


def test_variance_check_sees_the_step_size_bias(chains):
    """The claim the MMD could not test: a sampler without the bias (variance 0.09) fails the check."""
    var_hat, var_se = within_mode_variance(chains)
    with pytest.raises(AssertionError, match="within-mode variance"):
        stats.check_close(var_hat, STD**2, var_se, name="within-mode variance")


def test_variance_check_fails_on_sqrt_delta_noise():
    var_hat, var_se = within_mode_variance(langevin_chains(noise_scale=math.sqrt(DELTA), n=4000))
    with pytest.raises(AssertionError, match="within-mode variance"):
        stats.check_close(var_hat, VAR_PRED, var_se, name="within-mode variance")


# -- 3. the right-hand fraction, in binomial standard errors ------------------------------------------------------

def fraction_check(w_right, n=4000, seed=11):
    x = mixture(w_right).sample(n, generator=torch.Generator().manual_seed(seed))
    frac = (x[:, 0] > 0).double().mean().item()
    return stats.check_close(frac, 0.2, math.sqrt(0.2 * 0.8 / n), name="right-hand fraction")


def test_fraction_check_passes_at_the_true_weight():
    assert fraction_check(0.2) <= 5


@pytest.mark.parametrize("w_right", [0.25, 0.15, 0.5])
def test_fraction_check_fails_on_a_wrong_weight(w_right):
    with pytest.raises(AssertionError, match="right-hand fraction"):
        fraction_check(w_right)


# -- 4. the exact expected MMD of a weight or variance error (eq-kernel-mean) ---------------------------------

BANDWIDTHS = distances.mmd.__defaults__[0]


def kernel_mean(a, b, d2, D=2):  # the notebook's eq-kernel-mean, summed over the widths of distances.mmd
    return sum((h**2 / (h**2 + a + b)) ** (D / 2) * math.exp(-d2 / (2 * (h**2 + a + b))) for h in BANDWIDTHS)


def mmd_weight_error(dw, v=STD**2, d2=16.0):
    return dw**2 * (2 * kernel_mean(v, v, 0.0) - 2 * kernel_mean(v, v, d2))


def mmd_variance_error(a, b):
    return kernel_mean(a, a, 0.0) + kernel_mean(b, b, 0.0) - 2 * kernel_mean(a, b, 0.0)


def simulated_mmd(model, truth, n=400, pairs=25):
    vals = torch.stack([distances.mmd(model.sample(n, generator=torch.Generator().manual_seed(2 * k)),
                                      truth.sample(n, generator=torch.Generator().manual_seed(2 * k + 1)))
                        for k in range(pairs)])
    return stats.mean_se(vals)


def test_expected_mmd_of_a_weight_error_matches_simulation():
    mean, se = simulated_mmd(mixture(0.35), mixture(0.2))
    assert stats.check_close(mean, mmd_weight_error(0.15), se, name="weight-error MMD") <= 5
    with pytest.raises(AssertionError):  # the same formula without the square of dw
        stats.check_close(mean, mmd_weight_error(0.15) / 0.15, se, name="weight-error MMD")


def test_expected_mmd_of_a_variance_error_matches_simulation():
    one_mode = oracles.GaussianMixture(MEANS[:1], stds=STD)
    wide = oracles.GaussianMixture(MEANS[:1], stds=0.45)
    mean, se = simulated_mmd(wide, one_mode)
    assert stats.check_close(mean, mmd_variance_error(STD**2, 0.45**2), se, name="variance-error MMD") <= 5
    with pytest.raises(AssertionError):  # standard deviations written where the variances belong
        stats.check_close(mean, mmd_variance_error(STD, 0.45), se, name="variance-error MMD")


# -- 5. Tweedie's formula in bins of x_t (eq-tweedie) ------------------------------------------------------------

def tweedie_worst_z(power=2, n=200_000):
    path = paths.DiscretePath.from_schedule("linear", 1000)
    mix1 = oracles.GaussianMixture(torch.tensor([[-1.5], [0.5], [2.0]]), stds=torch.tensor([0.3, 0.2, 0.5]),
                                   weights=torch.tensor([0.3, 0.5, 0.2]))
    gen = torch.Generator().manual_seed(9)
    x0 = mix1.sample(n, generator=gen)
    a, s = (f(torch.tensor(0.3)).item() for f in (path.alpha, path.sigma))
    xt = a * x0 + s * torch.randn(x0.shape, generator=gen, dtype=F64)
    tweedie = (xt + s**power * mix1.score(xt, 0.3, path)) / a  # power 2 is eq-tweedie
    bins = torch.bucketize(xt[:, 0], torch.linspace(-2.5, 2.5, 41))
    zs = []
    for b in bins.unique():
        sel = bins == b
        if sel.sum() >= 200:
            diff = x0[sel, 0] - tweedie[sel, 0]
            zs.append((diff.mean() / (diff.std() / sel.sum().sqrt())).abs().item())
    return max(zs)


def test_tweedie_check_passes_and_fails_on_sigma_for_sigma_squared():
    assert tweedie_worst_z(2) < 5
    assert tweedie_worst_z(1) > 5
