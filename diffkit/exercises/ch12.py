"""Chapter 12's exercises: few-step generation — DDIM's step written with a prediction of x0, and the target of
progressive distillation that makes one step land where two teacher steps land."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, randn, uniform


def ddim_x0_step(x_t: Tensor, x0_hat: Tensor, alpha_t: Tensor, sigma_t: Tensor, alpha_s: Tensor,
                 sigma_s: Tensor) -> Tensor:
    eps_hat = (x_t - alpha_t * x0_hat) / sigma_t  # the noise that x0_hat implies at (x_t, t)
    return alpha_s * x0_hat + sigma_s * eps_hat  # both put back at noise level s


def _cases(seed: int) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(4):
        a_t, s_t = uniform(g, 0.1, 0.7, 5, 1), uniform(g, 0.6, 0.99, 5, 1)
        a_s, s_s = a_t + uniform(g, 0.05, 0.3, 5, 1), s_t * uniform(g, 0.3, 0.8, 5, 1)
        cases.append((2 * randn(g, 5, 3), randn(g, 5, 3), a_t, s_t, a_s, s_s))
    return cases


def _diagnose_ddim_x0_step(fn: Callable) -> list[str]:
    return compare(fn, ddim_x0_step, _cases(121), {
        "the implied noise is not divided by sigma_t: x_t - alpha_t x0_hat is sigma_t times the noise":
            lambda x, x0, at, st, as_, ss: as_ * x0 + ss * (x - at * x0),
        "sigma_t and sigma_s are swapped: the implied noise divides by the noise level at t, and the step "
        "puts it back with the noise level at s": lambda x, x0, at, st, as_, ss: as_ * x0 + st / ss * (x - at * x0),
        "x0_hat is not scaled by alpha_t in the implied noise: given x0, the mean of x_t is alpha_t x0":
            lambda x, x0, at, st, as_, ss: as_ * x0 + ss / st * (x - x0),
        "the whole of x_t is kept as noise: subtract the signal alpha_t x0_hat first":
            lambda x, x0, at, st, as_, ss: as_ * x0 + ss / st * x,
        "the prediction is not rescaled to the new time: its weight at time s is alpha_s":
            lambda x, x0, at, st, as_, ss: x0 + ss / st * (x - at * x0),
    })


def progressive_target(x_t: Tensor, x_s: Tensor, alpha_t: Tensor, sigma_t: Tensor, alpha_s: Tensor,
                       sigma_s: Tensor) -> Tensor:
    ratio = sigma_s / sigma_t  # how much of x_t one DDIM step keeps
    return (x_s - ratio * x_t) / (alpha_s - ratio * alpha_t)  # solve x_s = step(x_t, x0) for x0


def _diagnose_progressive_target(fn: Callable) -> list[str]:
    return compare(fn, progressive_target, _cases(122), {
        "that is the teacher's landing point itself: the student predicts a clean image, from which its own "
        "step must reproduce that point": lambda x, xs, at, st, as_, ss: xs,
        "the part of x_t that the student's step keeps is ignored: one DDIM step mixes x0 with the noise "
        "implied at x_t": lambda x, xs, at, st, as_, ss: xs / as_,
        "the ratio of noise levels is upside down: one step shrinks the implied noise by the new noise level "
        "over the old one":
            lambda x, xs, at, st, as_, ss: (xs - st / ss * x) / (as_ - st / ss * at),
        "the denominator misses a term: x0 enters the step twice, once directly and once through the implied "
        "noise": lambda x, xs, at, st, as_, ss: (xs - ss / st * x) / as_,
        "a sign is flipped: the implied noise subtracts the signal from x_t":
            lambda x, xs, at, st, as_, ss: (xs + ss / st * x) / (as_ + ss / st * at),
    })


EXERCISES = [
    Exercise("ddim_x0_step", 12, "DDIM's deterministic step from time t to s < t written with a prediction "
             "x0_hat of the clean data: x_s from x_t, x0_hat and the path's alpha, sigma at t and at s",
             ddim_x0_step, _diagnose_ddim_x0_step, (
                 "A prediction of x0 at (x_t, t) also fixes a prediction of the noise: solve "
                 "x_t = alpha_t x0 + sigma_t eps for eps.",
                 "DDIM keeps both predictions and puts them back together at the new time s, with that "
                 "time's signal and noise weights.",
             )),
    Exercise("progressive_target", 12, "progressive distillation's target: the x0 for which one DDIM step from "
             "(x_t, t) lands exactly on x_s (where two teacher steps land) at time s",
             progressive_target, _diagnose_progressive_target, (
                 "Write the student's single DDIM step with an unknown x0 (exercise 1) and set it equal to x_s.",
                 "The step is linear in x0: collect the terms in x0 on one side; x0 appears in the signal part "
                 "and again inside the implied noise.",
             )),
]
