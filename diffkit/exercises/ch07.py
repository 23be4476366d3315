"""Chapter 7's exercises: flow matching — the rectified-flow target, logit-normal times, the OT path's conditional
field, the straightness of a sampled path."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, randn, uniform


def rectified_flow_target(x0: Tensor, eps: Tensor) -> Tensor:
    return eps - x0


def _diagnose_rectified_flow_target(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(2)
    cases = [(randn(g, 4, 3), randn(g, 4, 3)) for _ in range(5)]
    return compare(fn, rectified_flow_target, cases, {
        "the sign is flipped: with t = 0 the data in this book, the velocity points from the data to the noise":
            lambda x0, e: x0 - e,
        "that is only the noise: the velocity is the time derivative of the whole path, and x0's term moves "
        "too": lambda x0, e: e,
        "that is only the data (an x0-prediction target), not the velocity along the path":
            lambda x0, e: x0,
        "that is the sum: differentiating the coefficient (1 - t) gives a minus sign":
            lambda x0, e: x0 + e,
        "that is the midpoint of the path, not its velocity": lambda x0, e: (x0 + e) / 2,
    })


def logit_normal_pdf(t: Tensor, loc: float, scale: float) -> Tensor:
    z = torch.log(t / (1 - t))  # logit t, normal with mean loc and std scale
    normal = torch.exp(-((z - loc) ** 2) / (2 * scale**2)) / (scale * (2 * torch.pi) ** 0.5)
    return normal / (t * (1 - t))  # change of variables: dz/dt = 1 / (t (1 - t))


def _normal(z: Tensor, loc: float, scale: float) -> Tensor:
    return torch.exp(-((z - loc) ** 2) / (2 * scale**2)) / (scale * (2 * torch.pi) ** 0.5)


def _diagnose_logit_normal_pdf(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(21)
    cases = [(uniform(g, 0.02, 0.98, 4, 3), loc, scale) for loc, scale in [(0.0, 1.0), (0.5, 0.7), (-0.3, 1.5)]]

    def logit(t):
        return torch.log(t / (1 - t))

    return compare(fn, logit_normal_pdf, cases, {
        "that is the normal density of logit t, without the change of variables: a density in t picks up "
        "|dz/dt|": lambda t, m, s: _normal(logit(t), m, s),
        "the Jacobian is inverted: the density in t is the density in z times dz/dt, and z = logit t changes "
        "fast near 0 and 1": lambda t, m, s: _normal(logit(t), m, s) * t * (1 - t),
        "the scale is used as a variance: s is the standard deviation of logit t":
            lambda t, m, s: _normal(logit(t), m, s**0.5) / (t * (1 - t)),
        "the normaliser 1/s is missing: the normal density of std s carries it":
            lambda t, m, s: _normal(logit(t), m, s) * s / (t * (1 - t)),
        "that is a normal density of t itself: t is the sigmoid of a normal variable, so its logit is normal":
            lambda t, m, s: _normal(t, m, s),
        "the Jacobian has only one factor: d logit(t)/dt = 1/t + 1/(1 - t)":
            lambda t, m, s: _normal(logit(t), m, s) / t,
    })


def ot_conditional_velocity(x: Tensor, x0: Tensor, t: Tensor, sigma_min: float) -> Tensor:
    sigma = sigma_min + (1 - sigma_min) * t  # the OT path: alpha_t = 1 - t
    return (1 - sigma_min) / sigma * (x - (1 - t) * x0) - x0  # d_sigma / sigma (x - alpha x0) + d_alpha x0


def _diagnose_ot_conditional_velocity(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(22)
    cases = [(randn(g, 4, 3), randn(g, 4, 3), uniform(g, 0.05, 0.95, 4, 1), s) for s in (0.1, 0.05, 0.2)]

    def sig(t, s):
        return s + (1 - s) * t

    return compare(fn, ot_conditional_velocity, cases, {
        "that is rectified flow's field: sigma_min is dropped, but on this path sigma_t does not start at 0":
            lambda x, x0, t, s: (x - (1 - t) * x0) / t - x0,
        "the numerator misses d sigma_t / dt = 1 - sigma_min": lambda x, x0, t, s:
            (x - (1 - t) * x0) / sig(t, s) - x0,
        "the sign is flipped: with t = 0 the data in this book, the field points from the data to the noise":
            lambda x, x0, t, s: -((1 - s) / sig(t, s) * (x - (1 - t) * x0) - x0),
        "that is Lipman et al.'s field in their time (t = 0 noise), not converted: flip t to 1 - t and the sign "
        "of the velocity": lambda x, x0, t, s: (x0 - (1 - s) * x) / (1 - (1 - s) * t),
        "the term d alpha_t / dt x0 = -x0 is missing: the mean alpha_t x0 moves too":
            lambda x, x0, t, s: (1 - s) / sig(t, s) * (x - (1 - t) * x0),
        "the mean at time t is alpha_t x0 = (1 - t) x0, not x0": lambda x, x0, t, s:
            (1 - s) / sig(t, s) * (x - x0) - x0,
        "divided by sigma_t squared: the noise in x is (x - alpha_t x0) / sigma_t, a single factor":
            lambda x, x0, t, s: (1 - s) / sig(t, s) ** 2 * (x - (1 - t) * x0) - x0,
    })


def straightness(xs: Tensor, ts: Tensor) -> Tensor:
    h = ts[:-1] - ts[1:]  # (K,) step lengths
    v = (xs[:-1] - xs[1:]) / h[:, None, None]  # (K, B, D) velocity on each step
    chord = (xs[0] - xs[-1]) / (ts[0] - ts[-1])  # (B, D) the straight line's velocity
    return (h[:, None] * ((v - chord) ** 2).sum(-1)).sum(0)  # (B,) integral over t


def _diagnose_straightness(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(23)
    cases = []
    for _ in range(3):
        inner = torch.sort(torch.rand(5, generator=g, dtype=torch.float64), descending=True).values
        ts = torch.cat([torch.ones(1, dtype=torch.float64), inner, torch.zeros(1, dtype=torch.float64)])
        cases.append((randn(g, 7, 4, 2), ts))

    def parts(xs, ts):
        h = ts[:-1] - ts[1:]
        return h, (xs[:-1] - xs[1:]) / h[:, None, None], xs[0] - xs[-1]

    def unweighted(xs, ts):
        _, v, c = parts(xs, ts)
        return ((v - c) ** 2).sum(-1).mean(0)

    def displacement(xs, ts):
        h, _, c = parts(xs, ts)
        return (h[:, None] * ((xs[:-1] - xs[1:] - c) ** 2).sum(-1)).sum(0)

    def norms(xs, ts):
        h, v, c = parts(xs, ts)
        return (h[:, None] * (v - c).norm(dim=-1)).sum(0)

    def flipped(xs, ts):
        h, v, c = parts(xs, ts)
        return (h[:, None] * ((v + c) ** 2).sum(-1)).sum(0)

    def kinetic(xs, ts):
        h, v, _ = parts(xs, ts)
        return (h[:, None] * (v**2).sum(-1)).sum(0)

    return compare(fn, straightness, cases, {
        "the steps are averaged with equal weights: the integral over t weights each step by its length h_k "
        "(the grids here are uneven)": unweighted,
        "the velocity on a step is its displacement divided by the step's length h_k": displacement,
        "that sums norms, not squared norms: the straightness integrates the squared deviation": norms,
        "the chord points the wrong way: x moves from x_{t_k} to x_{t_{k+1}} as t falls, so compare with "
        "(x_{t_0} - x_{t_K}) / T, the same orientation": flipped,
        "that is the kinetic energy alone: subtract the straight line's velocity (the chord) first": kinetic,
    })


EXERCISES = [
    Exercise("rectified_flow_target", 7, "the regression target of rectified flow for x_t = (1 - t) x0 + t eps",
             rectified_flow_target, _diagnose_rectified_flow_target, (
                 "The target is the velocity dx_t/dt of the straight path.",
                 "Differentiate each coefficient, (1 - t) and t, with respect to t: what is left does not depend "
                 "on t.",
             )),
    Exercise("logit_normal_pdf", 7, "the density of t = sigmoid(loc + scale n), n ~ N(0, 1), at t (a tensor in "
             "(0, 1)); loc and scale are numbers", logit_normal_pdf, _diagnose_logit_normal_pdf, (
                 "z = logit t, the log of the odds t / (1 - t), is normal with mean loc and standard deviation "
                 "scale. A density changes under a change of variables.",
                 "p_T(t) = p_Z(z(t)) |dz/dt|. Differentiate log t - log(1 - t).",
             )),
    Exercise("ot_conditional_velocity", 7, "the conditional field u_t(x | x0) of the OT path alpha_t = 1 - t, "
             "sigma_t = sigma_min + (1 - sigma_min) t, for x, x0 (B, D), t (B, 1) and a number sigma_min",
             ot_conditional_velocity, _diagnose_ot_conditional_velocity, (
                 "Along the path x = alpha_t x0 + sigma_t eps the velocity is d_alpha x0 + d_sigma eps; write eps "
                 "in terms of x.",
                 "eps = (x - alpha_t x0) / sigma_t. Here d_alpha = -1 and d_sigma = 1 - sigma_min.",
             )),
    Exercise("straightness", 7, "Liu et al.'s straightness of sampled paths: the states xs (K+1, B, D) at the "
             "decreasing times ts (K+1,), one number per path (B,)", straightness, _diagnose_straightness, (
                 "Compare, on every step, the path's velocity with the velocity of the straight line between its "
                 "ends, and integrate the squared difference over t.",
                 "On step k the velocity is the step's displacement over its length h_k; the straight line's is "
                 "the displacement between the two ends over the whole time span. Weight each squared norm by "
                 "h_k and sum over k.",
             )),
]
