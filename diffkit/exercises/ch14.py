"""Chapter 14's exercises: the unified view — the score from a denoiser, a point moved to the rectified-flow path
at the same signal-to-noise ratio, the velocity of any path from a denoiser."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, compare_pair, randn, uniform


def score_from_x0(x_t: Tensor, x0_hat: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (alpha * x0_hat - x_t) / sigma**2  # grad log N(x_t; alpha x0, sigma^2 I) at x0 = x0_hat


def _diagnose_score_from_x0(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(141)
    cases = [(randn(g, 4, 3), randn(g, 4, 3), uniform(g, 0.2, 0.95, 4, 1), uniform(g, 0.15, 0.9, 4, 1))
             for _ in range(4)]
    return compare(fn, score_from_x0, cases, {
        "divided by the standard deviation: a Gaussian's score divides the distance to its mean by the "
        "variance (a sigma where a sigma squared belongs)": lambda x, x0, a, s: (a * x0 - x) / s,
        "that is the noise prediction eps_hat, not the score: Tweedie relates the two by a factor and a sign":
            lambda x, x0, a, s: (x - a * x0) / s,
        "the sign is flipped: the score points from x_t towards the (scaled) denoised point":
            lambda x, x0, a, s: (x - a * x0) / s**2,
        "x0_hat is not scaled: given x0, the mean of x_t is alpha_t x0, not x0":
            lambda x, x0, a, s: (x0 - x) / s**2,
        "that is the score of the rescaled point x_t / alpha: the density of x_t itself has its mean at "
        "alpha x0 and its variance sigma^2": lambda x, x0, a, s: (x0 - x / a) / s**2,
    })


def to_flow_time(x_t: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    k = 1 / (alpha + sigma)  # the rectified-flow path has coefficients (1 - s, s), which add up to 1
    return k * x_t, k * sigma  # (x on the flow path, its time s): the same SNR alpha / sigma


def _diagnose_to_flow_time(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(142)
    cases = [(randn(g, 4, 3), uniform(g, 0.1, 1.0, 4, 1), uniform(g, 0.05, 1.0, 4, 1)) for _ in range(4)]
    return compare_pair(fn, to_flow_time, cases, {
        "x_t is not rescaled: on the rectified-flow path the two coefficients add up to 1, and on yours they "
        "need not": lambda x, a, s: (x, s / (a + s)),
        "the time is sigma itself: the flow path's time is its noise coefficient after the rescaling":
            lambda x, a, s: (x / (a + s), s),
        "the time runs the wrong way: s is the noise's share, 0 at the data and 1 at pure noise":
            lambda x, a, s: (x / (a + s), a / (a + s)),
        "those are DDIM's coordinates x / alpha and sigma / alpha (a variance-exploding path), not the "
        "rectified-flow path, whose coefficients add up to 1": lambda x, a, s: (x / a, s / a),
        "normalised by the length sqrt(alpha^2 + sigma^2): that gives a variance-preserving path, not the "
        "rectified-flow one": lambda x, a, s: (x / (a**2 + s**2).sqrt(), s / (a**2 + s**2).sqrt()),
    }, names="(x_flow, s)")


def velocity_from_x0(x_t: Tensor, x0_hat: Tensor, alpha: Tensor, sigma: Tensor, d_alpha: Tensor,
                     d_sigma: Tensor) -> Tensor:
    eps_hat = (x_t - alpha * x0_hat) / sigma  # the noise that the denoiser implies
    return d_alpha * x0_hat + d_sigma * eps_hat  # d/dt of alpha_t x0 + sigma_t eps


def _diagnose_velocity_from_x0(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(143)
    cases = [(randn(g, 4, 3), randn(g, 4, 3), uniform(g, 0.2, 0.95, 4, 1), uniform(g, 0.15, 0.9, 4, 1),
              uniform(g, -2.0, -0.3, 4, 1), uniform(g, 0.3, 2.0, 4, 1)) for _ in range(4)]

    def eps(x, x0, a, s):
        return (x - a * x0) / s

    return compare(fn, velocity_from_x0, cases, {
        "x_t is used in place of the noise: eps_hat is what is left of x_t once alpha x0_hat is removed, "
        "divided by sigma": lambda x, x0, a, s, da, ds: da * x0 + ds * x,
        "the derivatives are swapped: x0's coefficient alpha_t changes at the rate d_alpha, eps's at d_sigma":
            lambda x, x0, a, s, da, ds: ds * x0 + da * eps(x, x0, a, s),
        "the sign is flipped: with t = 0 the data, the velocity points from the data towards the noise":
            lambda x, x0, a, s, da, ds: -(da * x0 + ds * eps(x, x0, a, s)),
        "the implied noise is divided by the variance: it carries one factor of sigma, not two":
            lambda x, x0, a, s, da, ds: da * x0 + ds * (x - a * x0) / s**2,
        "that is x_t itself, rebuilt from x0_hat and eps_hat: the velocity is its time derivative":
            lambda x, x0, a, s, da, ds: x + 0 * da * ds,
    })


EXERCISES = [
    Exercise("score_from_x0", 14, "the score of x_t from a denoiser's x0_hat (B, D), given alpha_t and sigma_t "
             "(B, 1)", score_from_x0, _diagnose_score_from_x0, (
                 "Given x0, x_t is Gaussian: what are its mean and covariance, and what is a Gaussian's score?",
                 "The score of N(m, v I) at x is (m - x) / v; Tweedie says plugging in the denoised x0_hat "
                 "gives the score of p_t.",
             )),
    Exercise("to_flow_time", 14, "a point x_t (B, D) of a path with coefficients alpha_t, sigma_t (B, 1) moved "
             "to the rectified-flow path at the same signal-to-noise ratio: return the pair (x_flow, s)",
             to_flow_time, _diagnose_to_flow_time, (
                 "The rectified-flow path at time s is (1 - s) x0 + s eps. Multiply x_t by a number k: which k "
                 "makes its two coefficients add up to 1?",
                 "After the rescaling the coefficient of eps is the flow path's time, and the ratio of the two "
                 "coefficients (the SNR) has not changed.",
             )),
    Exercise("velocity_from_x0", 14, "the velocity dx_t/dt of any Gaussian path from a denoiser's x0_hat (B, D), "
             "given x_t (B, D) and alpha_t, sigma_t and their time derivatives d_alpha, d_sigma (B, 1)",
             velocity_from_x0, _diagnose_velocity_from_x0, (
                 "Differentiate x_t = alpha_t x0 + sigma_t eps in t with x0 and eps held fixed; then replace "
                 "them by what the denoiser says.",
                 "The denoiser gives x0_hat; the noise it implies is found by solving the path's equation "
                 "for eps at the given x_t.",
             )),
]
