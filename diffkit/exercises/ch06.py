"""Chapter 6's exercises: SDEs and the probability-flow ODE — the VP-SDE's marginal variance, the probability-flow
velocity, Hutchinson's divergence estimate."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, randn, uniform


def vp_marginal_variance(integral_beta: Tensor) -> Tensor:
    return 1 - torch.exp(-integral_beta)  # sigma_t^2, with alpha_t^2 = exp(-integral of beta)


def _diagnose_vp_marginal_variance(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(16)
    cases = [(uniform(g, 0.01, 8.0, 5, 1),) for _ in range(4)]
    return compare(fn, vp_marginal_variance, cases, {
        "that is the signal's scale alpha_t^2, not the noise's variance: the two add up to one":
            lambda b: torch.exp(-b),
        "a factor 1/2 in the exponent: that gives the variance of alpha_t, whose square is the kept signal":
            lambda b: 1 - torch.exp(-b / 2),
        "that is a standard deviation: the exercise asks for the variance":
            lambda b: (1 - torch.exp(-b)).sqrt(),
        "that is the sub-VP SDE's variance, whose diffusion carries an extra factor":
            lambda b: (1 - torch.exp(-b)) ** 2,
        "the variance grows without limit there: a drift of -beta x / 2 pulls it back towards one":
            lambda b: b,
        "a factor 2 in the exponent: the drift -beta x / 2 shrinks the mean by exp(-integral / 2), so its square "
        "is exp(-integral)": lambda b: 1 - torch.exp(-2 * b),
    })


def pf_ode_velocity(x: Tensor, score: Tensor, f: Tensor, g2: Tensor) -> Tensor:
    return f * x - 0.5 * g2 * score  # the drift that moves p_t exactly as the SDE does, without noise


def _diagnose_pf_ode_velocity(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(17)
    cases = [(randn(g, 4, 2), randn(g, 4, 2), -uniform(g, 0.05, 5.0, 4, 1), uniform(g, 0.1, 10.0, 4, 1))
             for _ in range(4)]
    return compare(fn, pf_ode_velocity, cases, {
        "that is the reverse SDE's drift, with the whole g^2: without the noise only half of it is needed":
            lambda x, s, f, g2: f * x - g2 * s,
        "the score term has the wrong sign: diffusion spreads the density out, so the noise-free velocity moves "
        "down the score, away from the modes": lambda x, s, f, g2: f * x + 0.5 * g2 * s,
        "that uses g, the square root of g2: the Fokker-Planck equation has g^2":
            lambda x, s, f, g2: f * x - 0.5 * g2.sqrt() * s,
        "the drift of the forward SDE is missing": lambda x, s, f, g2: -0.5 * g2 * s,
        "the drift's sign is flipped: the ODE keeps the forward SDE's f x":
            lambda x, s, f, g2: -f * x - 0.5 * g2 * s,
        "that is the forward SDE's drift alone: the score term is missing": lambda x, s, f, g2: f * x,
    })


def hutchinson(jacobian: Tensor, z: Tensor) -> Tensor:
    return torch.einsum("bi,bij,bj->b", z, jacobian, z)  # z^T J z: its mean over z is the trace


def _diagnose_hutchinson(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(18)
    cases = [(randn(g, 4, 3, 3), torch.randint(0, 2, (4, 3), generator=g).double() * 2 - 1) for _ in range(4)]
    return compare(fn, hutchinson, cases, {
        "that is the exact trace: the estimate uses only the probe z (in a network the Jacobian is never built)":
            lambda J, z: J.diagonal(dim1=1, dim2=2).sum(-1),
        "that is |J z|^2, the squared length of the Jacobian-vector product: its mean over z is not the trace":
            lambda J, z: (J @ z.unsqueeze(-1)).squeeze(-1).pow(2).sum(-1),
        "that sums the entries of J z: the probe appears only once there, and that sum's mean is not the trace":
            lambda J, z: (J @ z.unsqueeze(-1)).squeeze(-1).sum(-1),
        "that is z^T z, the probe's length: the Jacobian belongs between the two z":
            lambda J, z: (z * z).sum(-1),
        "that sums over the whole batch: return one value per sample":
            lambda J, z: torch.einsum("bi,bij,bj->", z, J, z).expand(z.shape[0]),
    })


EXERCISES = [
    Exercise("vp_marginal_variance", 6, "the VP-SDE's marginal variance sigma_t^2 from the integral of beta from 0 "
             "to t, of shape (B, 1)", vp_marginal_variance, _diagnose_vp_marginal_variance, (
                 "Solve for the mean first: the drift -beta(t) x / 2 shrinks it; then use that the VP-SDE keeps "
                 "a unit-variance start at unit variance.",
                 "The mean is multiplied by exp(-1/2 times the integral of beta), so alpha_t^2 is the exponential "
                 "of minus the integral; the noise's variance is what is left of one.",
             )),
    Exercise("pf_ode_velocity", 6, "the probability-flow ODE's velocity from x, the score at x (B, D), the drift "
             "coefficient f and the squared diffusion g2 (B, 1) of dx = f x dt + g dW", pf_ode_velocity,
             _diagnose_pf_ode_velocity, (
                 "Write the Fokker-Planck equation of the SDE and move its diffusion term inside the divergence: "
                 "the Laplacian of p is the divergence of p times the score.",
                 "Written as a divergence, the diffusion term becomes a drift along the score, proportional to "
                 "g^2; the ODE keeps the SDE's own drift and takes only part of that one, the reverse SDE all of "
                 "it because it adds noise back.",
             )),
    Exercise("hutchinson", 6, "Hutchinson's estimate of the trace of each Jacobian (B, D, D) with the probes z "
             "(B, D) of random signs, one value per sample", hutchinson, _diagnose_hutchinson, (
                 "For z with independent entries of mean 0 and variance 1, E[z z^T] is the identity.",
                 "So the expectation of a quadratic form in z is the trace of its matrix: form each sample's "
                 "quadratic form with its own Jacobian and probe, one number per sample.",
             )),
]
