"""Chapter 1's exercises: the optimal discriminator, and steps on the bilinear game min_x max_y x y."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, close, compare, compare_pair, randn


def optimal_discriminator_logit(log_p_data: Tensor, log_p_g: Tensor) -> Tensor:
    return log_p_data - log_p_g


def _diagnose_optimal_discriminator_logit(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(5)

    def log_density() -> Tensor:
        return -3 * torch.rand(6, generator=g, dtype=torch.float64)

    cases = [(log_density(), log_density()) for _ in range(4)]
    problems = compare(fn, optimal_discriminator_logit, cases, {
        "the sign is flipped: that is the logit of 1 - D*, the probability that x is fake":
            lambda lp, lq: lq - lp,
        "that is D* itself, a probability; the exercise asks for its logit log(D* / (1 - D*))":
            lambda lp, lq: torch.sigmoid(lp - lq),
        "that is the density ratio D* / (1 - D*) itself; the logit is its log":
            lambda lp, lq: torch.exp(lp - lq),
        "that is log D*, not the logit: divide D* by 1 - D* before taking the log":
            lambda lp, lq: lp - torch.logaddexp(lp, lq),
        "the inputs are already log densities: do not take their log again":
            lambda lp, lq: torch.log(lp.abs()) - torch.log(lq.abs()),
        "that is a ratio of log densities; the log of a ratio of densities is something else":
            lambda lp, lq: lp / lq,
    })
    if not problems:  # densities far in the tails: exp(-800) is 0 in float64, the difference of logs is not
        lp, lq = torch.tensor([-800.0, -1.0], dtype=torch.float64), torch.tensor([-805.0, -1.0], dtype=torch.float64)
        if not close(fn(lp, lq), torch.tensor([5.0, 0.0], dtype=torch.float64)):
            problems.append("far in the tails (log densities near -800) exp underflows to 0: stay in log space")
    return problems


def _bilinear_cases(seed: int) -> list[tuple[Tensor, Tensor, float]]:
    g = torch.Generator().manual_seed(seed)
    return [(randn(g, 5), randn(g, 5), lr) for lr in (0.1, 0.3, 0.7)]


_ROLES = "x minimises f = x y and y maximises it: each player's step has the wrong sign"


def alternating_step(x: Tensor, y: Tensor, lr: float) -> tuple[Tensor, Tensor]:
    x_new = x - lr * y  # x descends on f = x y: df/dx = y
    y_new = y + lr * x_new  # y ascends (df/dy = x), at the x it now faces
    return x_new, y_new


def _diagnose_alternating_step(fn: Callable) -> list[str]:
    return compare_pair(fn, alternating_step, _bilinear_cases(6), {
        "that is the simultaneous step: in the alternating one, y responds to the x that has already moved":
            lambda x, y, lr: (x - lr * y, y + lr * x),
        _ROLES: lambda x, y, lr: (x + lr * y, y - lr * (x + lr * y)),
        "each player followed the gradient with respect to the other one: x's gradient df/dx is y, not x":
            lambda x, y, lr: (x - lr * x, y + lr * (x - lr * x)),
        "y stepped along its own value: its gradient df/dy is x (the moved x)":
            lambda x, y, lr: (x - lr * y, y + lr * y),
        "the order is reversed: x moves first, then y answers it":
            lambda x, y, lr: (x - lr * (y + lr * x), y + lr * x),
    })


def extragradient_step(x: Tensor, y: Tensor, lr: float) -> tuple[Tensor, Tensor]:
    x_look, y_look = x - lr * y, y + lr * x  # a simultaneous step to look ahead
    return x - lr * y_look, y + lr * x_look  # step from (x, y) with the gradients found there


def _diagnose_extragradient_step(fn: Callable) -> list[str]:
    return compare_pair(fn, extragradient_step, _bilinear_cases(7), {
        "that is one plain simultaneous step: the look-ahead point is only where the gradients are read":
            lambda x, y, lr: (x - lr * y, y + lr * x),
        "the second step must start from (x, y), not from the look-ahead point; only its gradients come from there":
            lambda x, y, lr: (x - lr * y - lr * (y + lr * x), y + lr * x + lr * (x - lr * y)),
        "that is the alternating step; extragradient looks ahead with a simultaneous step and steps again from (x, y)":
            lambda x, y, lr: (x - lr * y, y + lr * (x - lr * y)),
        _ROLES: lambda x, y, lr: (x + lr * (y - lr * x), y - lr * (x + lr * y)),
        "the look-ahead step is alternating (y looked ahead from the moved x); look ahead with both players at once":
            lambda x, y, lr: (x - lr * (y + lr * (x - lr * y)), y + lr * (x - lr * y)),
    })


EXERCISES = [
    Exercise("optimal_discriminator_logit", 1, "the logit log(D*/(1 - D*)) of the optimal discriminator, from "
             "the log densities log_p_data and log_p_g (B,) at the same points", optimal_discriminator_logit,
             _diagnose_optimal_discriminator_logit, (
                 "Write D* and 1 - D* in terms of p_data and p_g: both have the same denominator.",
                 "In the ratio D* / (1 - D*) the denominator cancels; the log of what is left needs no exp "
                 "(and exp underflows far in the tails).",
             )),
    Exercise("alternating_step", 1, "one alternating gradient step on min_x max_y x*y: x first, then y against the "
             "new x; x, y tensors (B,), lr a number; return (x_new, y_new)", alternating_step,
             _diagnose_alternating_step, (
                 "Which player descends, which ascends, and which gradient does each follow on f = x y?",
                 "df/dx = y and df/dy = x. The minimising player moves against its gradient, the maximising one "
                 "along it, and the second mover uses the first one's new value.",
             )),
    Exercise("extragradient_step", 1, "one extragradient step on min_x max_y x*y: a simultaneous look-ahead step, "
             "then a step from (x, y) with the gradients at the look-ahead point; return (x_new, y_new)",
             extragradient_step, _diagnose_extragradient_step, (
                 "Two simultaneous steps, both starting at (x, y); they differ only in where the gradients are "
                 "read.",
                 "The first step gives a look-ahead point (x_half, y_half). The second step starts again at "
                 "(x, y) and uses df/dx = y_half and df/dy = x_half.",
             )),
]
