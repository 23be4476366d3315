"""Chapter 2's exercises: the forward process — alpha_bar from the betas, one forward sample, the SNR = 1 time."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import VALUES_OFF, Exercise, close, compare, diagnose, randn, uniform


def alpha_bar_from_betas(betas: Tensor) -> Tensor:
    return torch.cumprod(1 - betas, dim=0)  # alpha_bar_n = (1 - beta_1) ... (1 - beta_n)


def _diagnose_alpha_bar_from_betas(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(8)
    cases = [(uniform(g, 0.01, 0.31, n),) for n in (3, 7, 50)]
    return compare(fn, alpha_bar_from_betas, cases, {
        "that is a first-order approximation (a running sum of the betas); alpha_bar is exact: a running product":
            lambda b: 1 - torch.cumsum(b, 0),
        "that is exp(-sum of the betas), an approximation for small betas; alpha_bar is an exact running product":
            lambda b: torch.exp(-torch.cumsum(b, 0)),
        "that is the product of the betas: alpha_bar multiplies the alphas, the signal kept at each step":
            lambda b: torch.cumprod(b, 0),
        "that is one minus the right product: alpha_bar is the signal variance kept, not the noise added":
            lambda b: 1 - torch.cumprod(1 - b, 0),
        "the result is shifted by one step: alpha_bar_1 already includes the first step's noise":
            lambda b: torch.cat([b.new_ones(1), torch.cumprod(1 - b, 0)[:-1]]),
        "every entry is the product over all N steps: alpha_bar_n multiplies only the first n factors":
            lambda b: torch.prod(1 - b).expand_as(b),
        "those are square roots: the product runs over the alphas themselves (variances, not scales)":
            lambda b: torch.cumprod((1 - b).sqrt(), 0),
    })


def forward_sample(x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps


def _diagnose_forward_sample(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(0)
    cases = [(randn(g, 4, 3), randn(g, 4, 3), uniform(g, 0.05, 0.95, 4, 1)) for _ in range(5)]
    return compare(fn, forward_sample, cases, {
        "alpha_bar and 1 - alpha_bar are variances: the coefficients that scale x0 and eps are their square "
        "roots": lambda x0, e, ab: ab * x0 + (1 - ab) * e,
        "the coefficients of x0 and eps are swapped: alpha_bar is the share of x0's variance that is kept":
            lambda x0, e, ab: (1 - ab).sqrt() * x0 + ab.sqrt() * e,
        "the noise coefficient was taken as one minus the signal coefficient; the two variances add up to 1, "
        "not the two coefficients": lambda x0, e, ab: ab.sqrt() * x0 + (1 - ab.sqrt()) * e,
        "x0 must be scaled down too, or the variance of x_t grows above 1 (that is a variance-exploding step)":
            lambda x0, e, ab: x0 + (1 - ab).sqrt() * e,
        "the noise got the signal's coefficient: the two variances add up to 1, so the noise's is what the "
        "signal leaves": lambda x0, e, ab: ab.sqrt() * (x0 + e),
        "the noise coefficient has no square root: 1 - alpha_bar is the noise's variance":
            lambda x0, e, ab: ab.sqrt() * x0 + (1 - ab) * e,
    })


def snr_one_time(alpha_bar: Tensor) -> Tensor:
    snr = alpha_bar / (1 - alpha_bar)  # signal variance over noise variance
    n = int((snr <= 1).nonzero()[0]) + 1  # the first step n (1-based) with SNR <= 1
    return torch.tensor(n / alpha_bar.shape[0], dtype=torch.float64)


def _diagnose_snr_one_time(fn: Callable) -> list[str]:
    def at(mask: Tensor, shift: int = 1, scale: bool = True) -> Tensor:
        n = int(mask.nonzero()[0]) + shift
        return torch.tensor(n / mask.shape[0] if scale else float(n), dtype=torch.float64)

    wrong = {
        "one step early: that is the last step with SNR above 1 (or a 0-based index divided by N); step n = 1 "
        "sits at t = 1/N": lambda ab: at(ab <= 0.5, shift=0),
        "return the time t = n/N, not the step n": lambda ab: at(ab <= 0.5, scale=False),
        "SNR is a ratio of variances, alpha_bar over 1 - alpha_bar; that is where sqrt(alpha_bar) is 1/2":
            lambda ab: at(ab <= 0.25),
        "that is t = 1/N, the very first step, where the SNR is still large: the condition holds from the start "
        "(is it alpha_bar alone, or the noise-to-signal ratio?)": lambda ab: at(ab <= 1),
        "that is the fraction of steps with SNR <= 1, not the time where it first happens":
            lambda ab: torch.tensor(float((ab <= 0.5).double().mean()), dtype=torch.float64),
    }
    t = torch.arange(1, 201, dtype=torch.float64) / 200
    runs = []
    for ab in (torch.exp(-6 * t), torch.exp(-1.5 * t**2), torch.linspace(0.9, 0.05, 37, dtype=torch.float64),
               torch.cos(t * torch.pi / 2) ** 2):
        got = fn(ab)
        if isinstance(got, (int, float)):
            return ["return a 0-dimensional tensor, e.g. torch.tensor(n / N)"]
        if not isinstance(got, Tensor) or got.numel() != 1:
            return ["return one number as a 0-dimensional tensor, the time t = n/N"]
        runs.append(((ab,), got.reshape(()), snr_one_time(ab)))
    problems = diagnose(runs, wrong, close, lambda got, want: abs(got.item() - want.item()))
    if problems and problems[0].startswith(VALUES_OFF):
        (ab,), got, want = next(run for run in runs if not close(run[1], run[2]))
        return [f"{VALUES_OFF}: expected t = {want.item():.4f}, got {got.item():.4f} (for a schedule of "
                f"N = {ab.shape[0]} steps)"]
    return problems


EXERCISES = [
    Exercise("alpha_bar_from_betas", 2, "alpha_bar_1 ... alpha_bar_N from a schedule betas (N,): alpha_bar_n "
             "is the product of (1 - beta_i) for i <= n", alpha_bar_from_betas, _diagnose_alpha_bar_from_betas, (
                 "Each step keeps a fraction alpha_i = 1 - beta_i of the signal's variance. What is kept after "
                 "n steps?",
                 "A running product over the steps; torch has one that keeps every partial product.",
             )),
    Exercise("forward_sample", 2, "x_t = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps, for tensors x0, eps "
             "(B, D) and alpha_bar (B, 1)", forward_sample, _diagnose_forward_sample, (
                 "alpha_bar is the variance kept from x0, 1 - alpha_bar the variance of the noise. A variance "
                 "or a scale: which one multiplies a sample?",
                 "The coefficients are the square roots of those two variances (tensor.sqrt()); alpha_bar has "
                 "shape (B, 1), so it broadcasts over the D columns.",
             )),
    Exercise("snr_one_time", 2, "the time t = n/N of the first step whose SNR = alpha_bar / (1 - alpha_bar) is "
             "at most 1, from alpha_bar_1 ... alpha_bar_N (N,), as a 0-dimensional tensor", snr_one_time,
             _diagnose_snr_one_time, (
                 "SNR <= 1 means the signal's variance is at most the noise's. What does that say about "
                 "alpha_bar alone?",
                 "Find the first index where the condition holds (nonzero() gives 0-based indices), turn it into "
                 "the 1-based step n, and divide by N.",
             )),
]
