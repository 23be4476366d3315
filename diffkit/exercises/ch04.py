"""Chapter 4's exercises: DDIM — eps from a v-prediction, one DDIM step, the min-SNR-gamma weight."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, randn, uniform


def v_to_eps(v: Tensor, x_t: Tensor, alpha: Tensor) -> Tensor:
    sigma = (1 - alpha**2).sqrt()
    return alpha * v + sigma * x_t


def _diagnose_v_to_eps(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(1)
    cases = [(randn(g, 4, 3), randn(g, 4, 3), uniform(g, 0.05, 0.95, 4, 1)) for _ in range(5)]

    def sigma(a):
        return (1 - a**2).sqrt()

    return compare(fn, v_to_eps, cases, {
        "alpha and sigma are swapped — a bug found in published code: check your result at alpha = 1, where "
        "x_t = x0 and v = eps": lambda v, x, a: sigma(a) * v + a * x,
        "that is x0, not eps: the two eliminations (of eps, of x0) give different combinations":
            lambda v, x, a: a * x - sigma(a) * v,
        "one sign is flipped: eliminate x0 again and follow the minus sign in v = alpha eps - sigma x0":
            lambda v, x, a: a * v - sigma(a) * x,
        "v is not x0: that solves x_t = alpha x0 + sigma eps for eps with v in x0's place; eliminate x0 using "
        "both equations": lambda v, x, a: (x - a * v) / sigma(a),
        "x_t is not x0: that solves v = alpha eps - sigma x0 for eps with x_t in x0's place; eliminate x0 using "
        "both equations": lambda v, x, a: (v + sigma(a) * x) / a,
        "sigma is the square root of 1 - alpha^2 on a variance-preserving path, not 1 - alpha":
            lambda v, x, a: a * v + (1 - a) * x,
        "sigma is a standard deviation: 1 - alpha^2 is its square (the noise's variance)":
            lambda v, x, a: a * v + (1 - a**2) * x,
    })


def ddim_step(x_n, eps_hat, alpha_bar, alpha_bar_prev, eta, z):  # tensors, eta a number
    x0_hat = (x_n - (1 - alpha_bar).sqrt() * eps_hat) / alpha_bar.sqrt()  # x0 from eps
    beta = 1 - alpha_bar / alpha_bar_prev  # one step of the chain
    beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta  # DDPM's posterior variance
    sigma = eta * beta_tilde.sqrt()  # a standard deviation: eta scales it once
    direction = (1 - alpha_bar_prev - sigma**2).sqrt() * eps_hat  # points back to x_n
    return alpha_bar_prev.sqrt() * x0_hat + direction + sigma * z


def _ddim(x, e, ab, abp, eta, z, var_as_std=False, no_sqrt=False, eta_twice=False, forward_beta=False,
          no_noise=False, signal=Tensor.sqrt):
    """One DDIM step with one plausible slip switched on."""
    x0 = (x - (1 - ab).sqrt() * e) / ab.sqrt()
    var = (1 - ab / abp) if forward_beta else (1 - abp) / (1 - ab) * (1 - ab / abp)
    sigma = eta * (var if no_sqrt else var.sqrt())
    direction = (1 - abp - (sigma if var_as_std else sigma**2)).sqrt() * e
    noise = 0 if no_noise else (eta * sigma if eta_twice else sigma)
    return signal(abp) * x0 + direction + noise * z


def _ddim_cases(seed: int = 9) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for eta in (0.0, 1.0, 0.5):  # eta = 0 first: mistakes in the noise level only show for eta > 0
        abp = uniform(g, 0.05, 0.6, 4, 1)
        ab = abp * (1 - uniform(g, 0.01, 0.1, 4, 1))
        out.append((randn(g, 4, 3), randn(g, 4, 3), ab, abp, eta, randn(g, 4, 3)))
    return out


def _diagnose_ddim_step(fn: Callable) -> list[str]:
    return compare(fn, ddim_step, _ddim_cases(), {
        "sigma is a standard deviation, but the eps coefficient treats it as a variance: the variances of the "
        "direction and of the noise must add up to 1 - alpha_bar_prev": lambda *a: _ddim(*a, var_as_std=True),
        "the noise level needs a square root: beta_tilde is a variance, sigma a standard deviation":
            lambda *a: _ddim(*a, no_sqrt=True),
        "eta is applied twice: sigma already holds it, the noise term is just sigma times z":
            lambda *a: _ddim(*a, eta_twice=True),
        "that noise level is DDPM's forward beta_n; eta scales the posterior's variance beta_tilde":
            lambda *a: _ddim(*a, forward_beta=True),
        "the fresh noise term is missing (it only matters for eta > 0)": lambda *a: _ddim(*a, no_noise=True),
        "x0-hat is scaled by alpha_bar_prev itself; it scales a sample, so take its square root":
            lambda *a: _ddim(*a, signal=lambda v: v),
        "that is x0-hat, only the first ingredient: the step goes on to x_{n-1}":
            lambda x, e, ab, abp, eta, z: (x - (1 - ab).sqrt() * e) / ab.sqrt(),
    })


def min_snr_weight(alpha_bar: Tensor, gamma: float) -> Tensor:
    snr = alpha_bar / (1 - alpha_bar)  # a ratio of variances
    return snr.clamp(max=gamma) / snr  # x0-scale min(SNR, gamma) / the SNR of the eps-MSE


def _diagnose_min_snr_weight(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(10)
    cases = [(uniform(g, 0.001, 0.999, 6), gamma) for gamma in (5.0, 1.0, 20.0)]

    def snr(ab):
        return ab / (1 - ab)

    return compare(fn, min_snr_weight, cases, {
        "that is the weight on the x0 scale; the eps-MSE already weights the x0 error by the SNR, so that factor "
        "has to come out": lambda ab, gm: snr(ab).clamp(max=gm),
        "min-SNR caps the SNR at gamma; that takes the larger of the two instead":
            lambda ab, gm: snr(ab).clamp(min=gm) / snr(ab),
        "SNR is a ratio of variances, not of standard deviations":
            lambda ab, gm: snr(ab).sqrt().clamp(max=gm) / snr(ab).sqrt(),
        "that weight is never capped: for SNR < gamma it exceeds 1, but the capped weight is 1 there":
            lambda ab, gm: gm / snr(ab),
        "the SNR is upside down: that is the noise's variance over the signal's":
            lambda ab, gm: (1 / snr(ab)).clamp(max=gm) * snr(ab),
        "that is the weight for a v-prediction loss (SNR + 1 below); the exercise weights the eps-MSE":
            lambda ab, gm: snr(ab).clamp(max=gm) / (snr(ab) + 1),
    })


EXERCISES = [
    Exercise("v_to_eps", 4, "eps from a v-prediction on a variance-preserving path: inputs v, x_t (B, D) and alpha "
             "(B, 1), with sigma = sqrt(1 - alpha^2)", v_to_eps, _diagnose_v_to_eps, (
                 "Write both v and x_t as combinations of x0 and eps; you know v and x_t, you want eps.",
                 "v = alpha eps - sigma x0 and x_t = alpha x0 + sigma eps. Eliminate x0: multiply each by the "
                 "coefficient that makes the x0 terms cancel, and add; alpha^2 + sigma^2 = 1 does the rest.",
             )),
    Exercise("ddim_step", 4, "one DDIM step from x_n to x_{n-1}: x_n, eps_hat, z (B, D), alpha_bar, alpha_bar_prev "
             "(B, 1) and eta a number; the noise level is sigma = eta * sqrt(beta_tilde)", ddim_step,
             _diagnose_ddim_step, (
                 "Three terms: the predicted signal at the noise level of step n-1, a part pointing back along "
                 "eps_hat, and fresh noise.",
                 "First x0-hat from x_n and eps_hat; then beta_tilde, chapter 3's posterior variance, from the two "
                 "alpha_bars; sigma = eta * sqrt(beta_tilde).",
                 "x_{n-1} must have noise variance 1 - alpha_bar_prev: the fresh noise takes sigma^2 of it, the "
                 "direction along eps_hat the rest (its coefficient is a square root).",
             )),
    Exercise("min_snr_weight", 4, "the min-SNR-gamma weight that multiplies the eps-MSE, from alpha_bar (B,) and "
             "gamma a number (Hang et al., 2023)", min_snr_weight, _diagnose_min_snr_weight, (
                 "Min-SNR-gamma is defined on the x0 scale: there the weight is the SNR, capped at gamma.",
                 "The eps-MSE already equals SNR times the x0-MSE. What must multiply the eps-MSE so that the "
                 "total is the capped weight times the x0-MSE?",
             )),
]
