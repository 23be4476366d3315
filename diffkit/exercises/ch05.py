"""Chapter 5's exercises: score matching — a Gaussian's score, one Langevin step, Tweedie's denoiser."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, randn, uniform


def gaussian_score(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    return -(x - mean) / var  # grad of -|x - mean|^2 / (2 var); the normaliser has no x in it


def _diagnose_gaussian_score(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(14)
    cases = [(randn(g, 4, 3), randn(g, 4, 3), uniform(g, 0.1, 2.1, 4, 1)) for _ in range(4)]
    return compare(fn, gaussian_score, cases, {
        "divided by the standard deviation: the exponent has the variance below": lambda x, m, v: -(x - m) / v.sqrt(),
        "the sign is flipped: your score points away from the mean, but the density rises towards it":
            lambda x, m, v: (x - m) / v,
        "a factor 1/2 too many: differentiating the square brings down a 2 that cancels it":
            lambda x, m, v: -(x - m) / (2 * v),
        "that is the log-density's exponent itself, not its gradient": lambda x, m, v: -(x - m) ** 2 / (2 * v),
        "divided by the variance squared: the exponent has the variance itself below":
            lambda x, m, v: -(x - m) / v**2,
        "multiplied by the variance instead of dividing by it": lambda x, m, v: -(x - m) * v,
        "that is the gradient of the density, not of its log (it carries the density as a factor)":
            lambda x, m, v: -(x - m) / v * torch.exp(-(x - m) ** 2 / (2 * v)) / (2 * torch.pi * v).sqrt(),
    })


def langevin_step(x: Tensor, score: Tensor, step_size: Tensor, z: Tensor) -> Tensor:
    return x + step_size * score + (2 * step_size).sqrt() * z  # drift delta * score, noise variance 2 delta


def _diagnose_langevin_step(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(13)
    cases = [(randn(g, 4, 2), randn(g, 4, 2), uniform(g, 0.01, 0.51, 4, 1), randn(g, 4, 2)) for _ in range(4)]
    return compare(fn, langevin_step, cases, {
        "the noise is too small by a factor sqrt(2): the chain would sample p^2, a density too narrow":
            lambda x, s, d, z: x + d * s + d.sqrt() * z,
        "the noise's variance multiplies z: z is scaled by a standard deviation":
            lambda x, s, d, z: x + d * s + 2 * d * z,
        "the drift goes down the score: move up it, towards higher density":
            lambda x, s, d, z: x - d * s + (2 * d).sqrt() * z,
        "that is the other convention, a step twice as large written with half the drift; the exercise's "
        "step size delta multiplies the score itself": lambda x, s, d, z: x + d / 2 * s + d.sqrt() * z,
        "the fresh noise is missing: without it the chain climbs to a mode and stops (gradient ascent)":
            lambda x, s, d, z: x + d * s,
        "the drift is missing the step size: the score is multiplied by delta":
            lambda x, s, d, z: x + s + (2 * d).sqrt() * z,
        "the drift has a factor 1/2 that this noise level does not allow: with noise variance 2 delta the drift "
        "is delta times the score": lambda x, s, d, z: x + d / 2 * s + (2 * d).sqrt() * z,
        "the noise's scale needs a square root of the step size (Brownian motion spreads like sqrt(time))":
            lambda x, s, d, z: x + d * s + 2 * d.sqrt() * z,
    })


def tweedie_x0(x_t: Tensor, score: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (x_t + sigma**2 * score) / alpha  # E[x0 | x_t], from x_t = alpha x0 + sigma eps


def _diagnose_tweedie_x0(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(15)
    cases = []
    for _ in range(4):
        alpha = uniform(g, 0.2, 0.9, 4, 1)
        cases.append((randn(g, 4, 3), randn(g, 4, 3), alpha, (1 - alpha**2).sqrt()))
    return compare(fn, tweedie_x0, cases, {
        "the score is multiplied by sigma, a standard deviation: Tweedie's correction scales it by the noise's "
        "variance": lambda x, s, a, sg: (x + sg * s) / a,
        "the correction goes against the score: the score points towards the data, and so does the denoiser":
            lambda x, s, a, sg: (x - sg**2 * s) / a,
        "that is E[alpha x0 | x_t], the denoised point still scaled by alpha: undo the scaling":
            lambda x, s, a, sg: x + sg**2 * s,
        "divided by alpha^2: x_t carries alpha x0, a single factor alpha":
            lambda x, s, a, sg: (x + sg**2 * s) / a**2,
        "multiplied by alpha: x_t carries alpha x0, so undo that scaling by dividing":
            lambda x, s, a, sg: (x + sg**2 * s) * a,
        "the score is used without a factor: Tweedie's correction scales it by the noise's variance":
            lambda x, s, a, sg: (x + s) / a,
        "only x_t is unscaled: the score correction belongs inside, before dividing":
            lambda x, s, a, sg: x / a + sg**2 * s,
        "that is the estimate of eps, not of x0 (the noise the denoiser removes)":
            lambda x, s, a, sg: -sg * s,
    })


EXERCISES = [
    Exercise("gaussian_score", 5, "the score grad_x log N(x; mean, var I) for x, mean (B, D) and var (B, 1)",
             gaussian_score, _diagnose_gaussian_score, (
                 "Take the log of the density first: which parts of it depend on x?",
                 "The normaliser has no x in it; only the exponent, minus the squared distance to the mean over "
                 "twice the variance, is differentiated. The derivative of a square brings down a factor 2.",
             )),
    Exercise("langevin_step", 5, "one unadjusted Langevin step from x with the score at x, the step size delta "
             "(B, 1) and fresh standard normal noise z (B, D)", langevin_step, _diagnose_langevin_step, (
                 "A Langevin step is a drift up the score plus a random kick; the two are balanced so that p "
                 "itself is stationary.",
                 "The drift is delta times the score. The kick has variance 2 delta per step: multiply z by its "
                 "standard deviation.",
             )),
    Exercise("tweedie_x0", 5, "E[x0 | x_t] from x_t, the score of p_t at x_t (B, D), alpha and sigma (B, 1), "
             "where x_t = alpha x0 + sigma eps", tweedie_x0, _diagnose_tweedie_x0, (
                 "Tweedie's formula denoises alpha x0 (the scaled signal) first; x0 comes after.",
                 "E[alpha x0 | x_t] is x_t moved along the score, by the noise's variance times the score. Then "
                 "undo the scaling by alpha.",
             )),
]
