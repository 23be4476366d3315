"""Chapter 3's exercises: DDPM — the Gaussian KL of the bound, the posterior mean, the mean from eps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, close, compare, randn, uniform


def gaussian_kl(mu1: Tensor, var1: Tensor, mu2: Tensor, var2: Tensor) -> Tensor:
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1).sum(-1)


def _kl_terms(m1, v1, m2, v2, log=1.0, ratio=1.0, one=1.0, half=0.5):
    """The per-dimension KL with each of its terms scaled: one knob per plausible slip."""
    return half * (log * torch.log(v2 / v1) + ratio * (v1 + (m1 - m2) ** 2) / v2 - one)


def _diagnose_gaussian_kl(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(3)
    cases = [(randn(g, 4, 3), uniform(g, 0.2, 1.2, 4, 3), randn(g, 4, 3), uniform(g, 0.2, 1.2, 4, 3))
             for _ in range(4)]
    problems = compare(fn, gaussian_kl, cases, {
        "missing the factor 1/2 in front of the sum": lambda *a: 2 * gaussian_kl(*a),
        "the arguments are variances, not standard deviations: they were squared again":
            lambda m1, v1, m2, v2: gaussian_kl(m1, v1**2, m2, v2**2),
        "the arguments are variances: a standard deviation (the square root of one) is used somewhere":
            lambda m1, v1, m2, v2: gaussian_kl(m1, v1.sqrt(), m2, v2.sqrt()),
        "that is KL(q2 || q1): the KL divergence is not symmetric, and the first distribution is the one the "
        "expectation is taken under": lambda m1, v1, m2, v2: gaussian_kl(m2, v2, m1, v1),
        "the log term is upside down: it is the log of the second variance over the first":
            lambda *a: _kl_terms(*a, log=-1.0).sum(-1),
        "the log-ratio term of the variances is missing": lambda *a: _kl_terms(*a, log=0.0).sum(-1),
        "the constant -1 per dimension is missing (it makes KL(q || q) = 0)":
            lambda *a: _kl_terms(*a, one=0.0).sum(-1),
        "the log term lacks the factor 1/2: the log of a ratio of standard deviations is half the log of the "
        "ratio of variances": lambda *a: _kl_terms(*a, log=2.0).sum(-1),
        "the mean difference must be squared: it enters like a variance":
            lambda m1, v1, m2, v2: 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2)) / v2 - 1).sum(-1),
        "the squared mean difference is divided by var1: the expectation is under q1, but the quadratic comes "
        "from log q2, so it is over var2":
            lambda m1, v1, m2, v2: 0.5 * (torch.log(v2 / v1) + v1 / v2 + (m1 - m2) ** 2 / v1 - 1).sum(-1),
        "the log term has the factor 1/2 twice: the 1/2 in front of the bracket already covers it":
            lambda *a: _kl_terms(*a, log=0.5).sum(-1),
        "that is the mean over the dimensions: the KL of a diagonal Gaussian is the sum of the per-dimension KLs":
            lambda *a: _kl_terms(*a).mean(-1),
        "sum over the last dimension: one KL per row": lambda *a: gaussian_kl(*a).sum(),
    })
    if not problems:
        x = torch.randn(2, 3, dtype=torch.float64)
        if not close(fn(x, torch.ones_like(x), x, torch.ones_like(x)), torch.zeros(2, dtype=torch.float64)):
            problems.append("KL(q || q) must be exactly 0")
    return problems


def _step_cases(seed: int) -> list[tuple[Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(4):
        ab_prev = uniform(g, 0.1, 0.95, 4, 1)
        ab = ab_prev * (1 - uniform(g, 0.02, 0.32, 4, 1))
        out.append((randn(g, 4, 3), randn(g, 4, 3), ab, ab_prev))
    return out


def posterior_mean(x0: Tensor, x_n: Tensor, alpha_bar: Tensor, alpha_bar_prev: Tensor) -> Tensor:
    beta = 1 - alpha_bar / alpha_bar_prev  # beta_n, since alpha_bar_n = (1 - beta_n) alpha_bar_{n-1}
    coef_x0 = alpha_bar_prev.sqrt() * beta / (1 - alpha_bar)
    coef_xn = (1 - beta).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
    return coef_x0 * x0 + coef_xn * x_n


def _posterior(x0, xn, ab, abp, beta=None, root=Tensor.sqrt, alpha_xn=None, denominator=None):
    """The posterior mean with one ingredient replaced: one knob per plausible slip."""
    beta = 1 - ab / abp if beta is None else beta
    alpha_xn = 1 - beta if alpha_xn is None else alpha_xn
    denominator = 1 - ab if denominator is None else denominator
    return (root(abp) * beta * x0 + root(alpha_xn) * (1 - abp) * xn) / denominator


def _diagnose_posterior_mean(fn: Callable) -> list[str]:
    return compare(fn, posterior_mean, _step_cases(11), {
        "the coefficients of x0 and x_n are swapped: the x0 term carries beta_n, the x_n term 1 - alpha_bar_prev":
            lambda x0, xn, ab, abp: posterior_mean(xn, x0, ab, abp),
        "the coefficients need square roots where they scale a sample (sqrt of alpha_bar_prev and of alpha_n), "
        "not where they are variances": lambda *a: _posterior(*a, root=lambda v: v),
        "beta_n is the noise added by step n alone, not 1 - alpha_bar_n (the noise of all n steps): divide by "
        "alpha_bar_prev": lambda x0, xn, ab, abp: _posterior(x0, xn, ab, abp, beta=1 - ab),
        "x_n's coefficient scales by alpha_n of the last step only, not by alpha_bar_n of all steps":
            lambda x0, xn, ab, abp: _posterior(x0, xn, ab, abp, alpha_xn=ab),
        "the shared denominator is 1 - alpha_bar_n (the noise of x_n), not 1 - alpha_bar_prev":
            lambda x0, xn, ab, abp: _posterior(x0, xn, ab, abp, denominator=1 - abp),
        "that is the forward step's mean from x_n alone; the posterior mixes x0 and x_n":
            lambda x0, xn, ab, abp: (ab / abp).sqrt() * xn,
    })


def mean_from_eps(x_n: Tensor, eps_hat: Tensor, alpha_bar: Tensor, alpha_bar_prev: Tensor) -> Tensor:
    alpha = alpha_bar / alpha_bar_prev  # alpha_n = 1 - beta_n
    return (x_n - (1 - alpha) / (1 - alpha_bar).sqrt() * eps_hat) / alpha.sqrt()


def _eps_mean(xn, e, ab, abp, noise=None, divisor=None, sign=-1.0):
    """The eps-parameterised mean with one ingredient replaced: one knob per plausible slip."""
    alpha = ab / abp
    noise = (1 - alpha) / (1 - ab).sqrt() if noise is None else noise
    return (xn + sign * noise * e) / (alpha.sqrt() if divisor is None else divisor)


def _diagnose_mean_from_eps(fn: Callable) -> list[str]:
    return compare(fn, mean_from_eps, _step_cases(12), {
        "that is x0-hat, the clean-data estimate: the reverse step only goes one step back, to x_{n-1}":
            lambda xn, e, ab, abp: (xn - (1 - ab).sqrt() * e) / ab.sqrt(),
        "the noise coefficient is that of x0-hat (the noise of all n steps); one step removes only the share "
        "of step n": lambda xn, e, ab, abp: _eps_mean(xn, e, ab, abp, noise=(1 - ab).sqrt()),
        "the noise coefficient lacks the noise scale of x_n below beta_n: eps_hat has unit variance, the noise "
        "in x_n does not": lambda xn, e, ab, abp: _eps_mean(xn, e, ab, abp, noise=1 - ab / abp),
        "the noise scale of x_n below beta_n is a standard deviation: take the square root of the noise "
        "variance": lambda xn, e, ab, abp: _eps_mean(xn, e, ab, abp, noise=(1 - ab / abp) / (1 - ab)),
        "x_n is divided by alpha_n itself: it scales a sample, so take its square root":
            lambda xn, e, ab, abp: _eps_mean(xn, e, ab, abp, divisor=ab / abp),
        "x_n is divided by the square root of alpha_bar_n (all n steps); one step back undoes only step n's "
        "scaling": lambda xn, e, ab, abp: _eps_mean(xn, e, ab, abp, divisor=ab.sqrt()),
        "the predicted noise is added: subtract it (the sign is flipped)":
            lambda xn, e, ab, abp: _eps_mean(xn, e, ab, abp, sign=1.0),
    })


EXERCISES = [
    Exercise("gaussian_kl", 3, "KL(N(mu1, diag var1) || N(mu2, diag var2)) per row, for (B, D) inputs",
             gaussian_kl, _diagnose_gaussian_kl, (
                 "A diagonal Gaussian is a product of 1-D Gaussians, so its KL is a sum over dimensions of 1-D "
                 "KLs. Start from the definition E_q1[log q1(x) - log q2(x)] in one dimension.",
                 "In 1-D, log q1 - log q2 is half the log of var2 / var1, minus (x - mu1)^2 / (2 var1), plus "
                 "(x - mu2)^2 / (2 var2). Under q1, E[(x - mu1)^2] is var1, and E[(x - mu2)^2] is var1 plus the "
                 "squared mean difference.",
                 "Collect the expectation: a log-ratio of the variances, a ratio with var2 below, and a constant "
                 "that makes KL(q || q) = 0, all halved; then sum over the last dimension.",
             )),
    Exercise("posterior_mean", 3, "the mean of q(x_{n-1} | x_n, x0) from x0, x_n (B, D) and alpha_bar_n, "
             "alpha_bar_{n-1} (B, 1)", posterior_mean, _diagnose_posterior_mean, (
                 "First recover the one-step quantities beta_n and alpha_n from the two alpha_bars.",
                 "The mean is a weighted sum of x0 and x_n with a shared denominator 1 - alpha_bar_n. The weight "
                 "of x0 contains beta_n, that of x_n contains 1 - alpha_bar_{n-1}.",
                 "Each weight also has a square root of a signal share: of alpha_bar_{n-1} for x0 (how much of "
                 "x0 x_{n-1} carries), of alpha_n for x_n (the last step's scaling).",
             )),
    Exercise("mean_from_eps", 3, "the reverse-step mean mu_theta(x_n) from x_n, a noise prediction eps_hat (B, D) "
             "and alpha_bar_n, alpha_bar_{n-1} (B, 1)", mean_from_eps, _diagnose_mean_from_eps, (
                 "Express x0-hat through x_n and eps_hat, and put it into the posterior mean.",
                 "Collect the terms in x_n: what is left is x_n minus a multiple of eps_hat, all divided by the "
                 "square root of alpha_n.",
                 "The multiple of eps_hat has beta_n on top and the noise scale of x_n, sqrt(1 - alpha_bar_n), "
                 "below.",
             )),
]
