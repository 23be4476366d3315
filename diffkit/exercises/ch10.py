"""Chapter 10's exercises: the recipes side by side — the noise a clean-image prediction implies (how DDIM samples
an x0-network), the clean-image error a noise error implies (the ε-loss's weighting), the variance a patch's principal components explain (why a patch token predicts a clean patch
more easily than its noise), and the rectified-flow time at a given signal-to-noise ratio (how paths are
compared)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, randn, uniform


def eps_from_x0(x_t: Tensor, x0_hat: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (x_t - alpha * x0_hat) / sigma  # solve x_t = alpha x0 + sigma eps for eps


def _diagnose_eps_from_x0(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(101)
    cases = [(randn(g, 4, 3), randn(g, 4, 3), uniform(g, 0.2, 0.95, 4, 1), uniform(g, 0.15, 0.9, 4, 1))
             for _ in range(4)]
    return compare(fn, eps_from_x0, cases, {
        "x0_hat is not scaled: the clean part of x_t is alpha_t x0, not x0": lambda x, x0, a, s: (x - x0) / s,
        "the sign is flipped: eps points from the scaled clean image towards x_t":
            lambda x, x0, a, s: (a * x0 - x) / s,
        "divided by the variance: x_t's noise part is sigma_t eps, so one sigma undoes it":
            lambda x, x0, a, s: (x - a * x0) / s**2,
        "alpha and sigma are swapped: alpha_t multiplies the clean image, sigma_t the noise":
            lambda x, x0, a, s: (x - s * x0) / a,
        "not divided by sigma: that is sigma_t eps, the noise part of x_t, not eps itself":
            lambda x, x0, a, s: x - a * x0,
    })


def x0_mse_from_eps_mse(eps_mse: Tensor, snr: Tensor) -> Tensor:
    return eps_mse / snr  # x0_hat - x0 = -(sigma / alpha)(eps_hat - eps): square, and sigma^2 / alpha^2 = 1 / SNR


def _diagnose_x0_mse_from_eps_mse(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(104)
    cases = [(uniform(g, 0.01, 2.0, 6), 10 ** uniform(g, -3.0, 2.0, 6)) for _ in range(3)]
    return compare(fn, x0_mse_from_eps_mse, cases, {
        "multiplied by the SNR: that turns an x0 error into an eps error, the other way round":
            lambda e, snr: e * snr,
        "divided by the square root of the SNR: that is the factor between the errors themselves; squared "
        "errors take its square": lambda e, snr: e / snr.sqrt(),
        "that is the eps error plus the x0 error of v-prediction's weight (SNR + 1): for eps the weight is "
        "the SNR alone": lambda e, snr: e / (snr + 1),
    })


def explained_variance(patches: Tensor) -> Tensor:
    centred = patches - patches.mean(0)  # principal components describe the spread about the mean
    variances = torch.linalg.svdvals(centred) ** 2  # the covariance's eigenvalues, times (N - 1), largest first
    return variances.cumsum(0) / variances.sum()  # share of the variance in the top k components, k = 1 ... D


def _patches(g: torch.Generator, n: int, d: int, rank: int) -> Tensor:
    """n points near a rank-`rank` subspace of R^d, off the origin (a mean that matters), unequal spreads."""
    basis = randn(g, rank, d)
    coords = randn(g, n, rank) * torch.linspace(3.0, 1.0, rank, dtype=torch.float64)
    return 2.0 + coords @ basis + 0.1 * randn(g, n, d)


def _diagnose_explained_variance(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(102)
    cases = [(_patches(g, 200, 16, 4),), (_patches(g, 100, 9, 2),), (_patches(g, 300, 16, 8),)]

    def spectrum(p: Tensor, centre: bool = True) -> Tensor:
        return torch.linalg.svdvals(p - p.mean(0) if centre else p)

    return compare(fn, explained_variance, cases, {
        "the patches are not centred: the first component then points at the mean patch, and the shares "
        "describe the second moment about 0, not the variance": lambda p: (spectrum(p, False) ** 2).cumsum(0)
        / (spectrum(p, False) ** 2).sum(),
        "the singular values are not squared: a component's variance is its singular value squared":
            lambda p: spectrum(p).cumsum(0) / spectrum(p).sum(),
        "not cumulative: entry k should be the share of the top k components together, reaching 1 at D":
            lambda p: spectrum(p) ** 2 / (spectrum(p) ** 2).sum(),
        "the components are taken smallest first: sort by variance, largest first":
            lambda p: (spectrum(p).flip(0) ** 2).cumsum(0) / (spectrum(p) ** 2).sum(),
    })


def rf_time_at_snr(snr: Tensor) -> Tensor:
    return 1 / (1 + snr.sqrt())  # SNR = ((1 - t) / t)^2 on x_t = (1 - t) x0 + t eps, solved for t


def _diagnose_rf_time_at_snr(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(103)
    cases = [(10 ** uniform(g, -3.0, 2.0, 8),) for _ in range(3)]
    return compare(fn, rf_time_at_snr, cases, {
        "the SNR is a ratio of variances, ((1 - t) / t)^2: its square root is the ratio of the coefficients":
            lambda snr: 1 / (1 + snr),
        "the time runs the wrong way: t is the noise's share, near 1 where the SNR is small":
            lambda snr: snr.sqrt() / (1 + snr.sqrt()),
        "that is sigma of the variance-preserving path at this SNR (alpha^2 + sigma^2 = 1); on the rectified-flow "
        "path the coefficients add up to 1 instead": lambda snr: 1 / (1 + snr).sqrt(),
        "that is t / (1 - t), the ratio of the noise's coefficient to the signal's, not t itself: one more "
        "step of algebra": lambda snr: 1 / snr.sqrt(),
    })


EXERCISES = [
    Exercise("eps_from_x0", 10, "the noise eps_hat implied by a clean-image prediction x0_hat at x_t = alpha x0 + "
             "sigma eps (alpha, sigma broadcast against x_t)", eps_from_x0, _diagnose_eps_from_x0, (
                 "x_t is alpha_t times the clean image plus sigma_t times the noise: solve that for the noise.",
                 "Take the clean part away from x_t first, then undo the noise's coefficient.",
             )),
    Exercise("x0_mse_from_eps_mse", 10, "the mean squared error of x0_hat implied by a noise prediction's mean "
             "squared error eps_mse at signal-to-noise ratio snr (both tensors)", x0_mse_from_eps_mse,
             _diagnose_x0_mse_from_eps_mse, (
                 "Solve x_t = alpha x0 + sigma eps for x0 with eps_hat in place of eps: how does an error in "
                 "eps_hat move x0_hat?",
                 "The errors scale by sigma / alpha; their squares by sigma^2 / alpha^2. Write that with the SNR.",
             )),
    Exercise("explained_variance", 10, "for patches (N, D), the share of their variance that the top k principal "
             "components explain together, k = 1 ... D -> (D,)", explained_variance, _diagnose_explained_variance,
             (
                 "Principal components are the right singular vectors of the centred data matrix; the variance "
                 "along each is its singular value squared, over N - 1.",
                 "torch.linalg.svdvals returns the singular values largest first; square them, add them up "
                 "cumulatively, divide by the total.",
             )),
    Exercise("rf_time_at_snr", 10, "the time t at which the rectified-flow path x_t = (1 - t) x0 + t eps has "
             "signal-to-noise ratio snr (a tensor)", rf_time_at_snr, _diagnose_rf_time_at_snr, (
                 "Write the SNR of the path: the square of the ratio of the two coefficients.",
                 "sqrt(SNR) = (1 - t) / t; solve that for t.",
             )),
]
