"""Chapter 11's exercises: latent diffusion — the KL of an encoder's Gaussian to N(0, I), the reparameterised draw
of a latent, and latent diffusion's scale factor."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, diagnose, randn


def kl_to_prior(mean: Tensor, logvar: Tensor) -> Tensor:
    var = logvar.exp()  # logvar is log(sigma^2): the variance, not the standard deviation
    per_dim = 0.5 * (mean**2 + var - 1 - logvar)  # KL of N(mu, var) to N(0, 1), one dimension
    return per_dim.sum(dim=-1)  # independent dimensions: the KLs add up -> (B,)


def _diagnose_kl_to_prior(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(111)
    cases = [(randn(g, 4, 6), randn(g, 4, 6)), (2 * randn(g, 3, 5), 0.5 * randn(g, 3, 5) - 1),
             (randn(g, 2, 9), randn(g, 2, 9) + 1)]

    def kl(mean: Tensor, logvar: Tensor, var: Tensor, half: float = 0.5, one: float = 1.0) -> Tensor:
        return (half * (mean**2 + var - one - logvar)).sum(-1)

    return _wrong_shape(fn, cases) or compare(fn, kl_to_prior, cases, {
        "logvar is read as log sigma: it is the log of the variance sigma^2, so the variance is its exponential "
        "as it stands, not that squared": lambda m, lv: (0.5 * (m**2 + (2 * lv).exp() - 1 - 2 * lv)).sum(-1),
        "the standard deviation stands where the variance belongs: the KL has sigma^2 in it, and logvar is "
        "already its log": lambda m, lv: kl(m, lv, (0.5 * lv).exp()),
        "the factor 1/2 in front is missing": lambda m, lv: kl(m, lv, lv.exp(), half=1.0),
        "the -1 per dimension is missing: the KL of N(0, I) to itself must be 0":
            lambda m, lv: kl(m, lv, lv.exp(), one=0.0),
        "the dimensions are averaged: the KL of independent dimensions is their sum":
            lambda m, lv: (0.5 * (m**2 + lv.exp() - 1 - lv)).mean(-1, keepdim=False),
        "the log-variance enters with the wrong sign": lambda m, lv: (0.5 * (m**2 + lv.exp() - 1 + lv)).sum(-1),
    })


def _wrong_shape(fn: Callable, cases: list[tuple]) -> list[str]:
    for args in cases:
        got = fn(*args)
        if isinstance(got, Tensor) and got.shape != (args[0].shape[0],):
            return [f"the result should have one KL per row, shape (B,) = ({args[0].shape[0]},); got "
                    f"{tuple(got.shape)}"]
    return []


def reparameterize(mean: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    std = torch.exp(0.5 * logvar)  # sigma = exp(log(sigma^2) / 2)
    return mean + std * eps  # a draw of N(mean, sigma^2), differentiable in mean and logvar


def _diagnose_reparameterize(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(112)
    cases = [(randn(g, 4, 6), randn(g, 4, 6), randn(g, 4, 6)),
             (2 * randn(g, 3, 5), 0.5 * randn(g, 3, 5) - 1, randn(g, 3, 5)),
             (randn(g, 2, 9), randn(g, 2, 9) + 1, randn(g, 2, 9))]
    return compare(fn, reparameterize, cases, {
        "the noise is scaled by the variance: it must be scaled by the standard deviation, the square root of the "
        "variance": lambda m, lv, e: m + lv.exp() * e,
        "the noise is scaled by logvar itself: logvar is a logarithm, undo it first":
            lambda m, lv, e: m + lv * e,
        "the noise is scaled by 1/sigma: exp(-logvar/2) is the reciprocal of the standard deviation":
            lambda m, lv, e: m + (-0.5 * lv).exp() * e,
        "the noise is not scaled at all: every latent would get the same unit spread":
            lambda m, lv, e: m + e,
        "the mean is missing: the draw must be centred on the encoder's mean":
            lambda m, lv, e: (0.5 * lv).exp() * e,
    })


def latent_scale_factor(z: Tensor) -> Tensor:
    return 1.0 / z.std()  # one number for every entry: s z has unit variance


def _diagnose_latent_scale_factor(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(113)
    cases = [(3.0 * randn(g, 400, 4, 3, 3) + 0.5,), (0.2 * randn(g, 300, 2, 4, 4),),
             (torch.cat([randn(g, 200, 1, 3, 3), 5 * randn(g, 200, 1, 3, 3)], 1),)]
    if not all(isinstance(fn(*c), Tensor) and fn(*c).numel() == 1 for c in cases):
        return ["return one number as a tensor (shape () or (1,)): a single scale factor for every entry"]
    wrong = {
        "this is the standard deviation itself: the factor divides by it, so that s z has unit variance":
            lambda z: z.std(),
        "this is one over the variance: scaling by it leaves a standard deviation of 1/std, not 1":
            lambda z: 1.0 / z.var(),
        "this is one over the root mean square, which counts the mean as spread: use the standard deviation":
            lambda z: 1.0 / z.square().mean().sqrt(),
        "this averages the channels' standard deviations before inverting: take the spread of all entries "
        "together": lambda z: 1.0 / z.transpose(0, 1).flatten(1).std(1).mean(),
        "this is one over the mean absolute value, not the standard deviation":
            lambda z: 1.0 / z.abs().mean(),
    }
    runs = [(c, fn(*c).reshape(()).double(), latent_scale_factor(*c)) for c in cases]

    def same(a: object, b: object) -> bool:  # n-1 or n in the variance: both are fine at these sizes
        return isinstance(a, Tensor) and bool(torch.allclose(a.double().reshape(()), b.double().reshape(()),
                                                             rtol=1e-3, atol=0))

    return diagnose(runs, wrong, same, lambda a, b: (a.double() - b.double()).abs().max().item())


EXERCISES = [
    Exercise("kl_to_prior", 11, "the KL divergence of N(mean, diag exp(logvar)) to N(0, I), one per row: mean and "
             "logvar (B, D) -> (B,)", kl_to_prior, _diagnose_kl_to_prior, (
                 "Work out one dimension first: the KL of N(mu, s^2) to N(0, 1) is the chapter's eq-kl-prior with "
                 "one term; then ask how the KLs of independent dimensions combine.",
                 "Which quantity does logvar hold — sigma, sigma^2, or the log of one of them? Write the variance "
                 "from it before anything else, and check your answer is 0 when mean = 0 and logvar = 0.",
             )),
    Exercise("reparameterize", 11, "a draw of N(mean, diag exp(logvar)) from the standard normal noise eps (all "
             "(B, D)), written so that gradients reach mean and logvar", reparameterize, _diagnose_reparameterize, (
                 "A normal variable with mean mu and spread s is mu plus s times a standard normal one.",
                 "logvar is the log of the variance: which power of exp(logvar) is the spread that multiplies "
                 "the noise?",
             )),
    Exercise("latent_scale_factor", 11, "latent diffusion's scale factor: the one number s that makes the entries "
             "of s * z have unit variance, for latents z (N, C, h, w)", latent_scale_factor,
             _diagnose_latent_scale_factor, (
                 "Multiplying every entry by s multiplies their standard deviation by |s|: what s brings it to 1?",
                 "One factor for the whole latent, as in latent diffusion: compute the spread over all entries "
                 "at once, not per channel or per image.",
             )),
]
