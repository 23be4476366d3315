"""Auto-checked exercises: write a function in the notebook, hand it to :func:`check`, read the feedback.

    from diffkit import exercises
    def forward_sample(x0, eps, alpha_bar):
        ...
    exercises.check("forward_sample", forward_sample)

A checker runs the function on several cases with known answers and says *what* is wrong — a missing square
root, swapped coefficients, a sign, a wrong shape, arguments taken in another order or in the wrong number —
not just pass/fail.  It never raises for a wrong answer (the notebook keeps running); an unfinished exercise
(``raise NotImplementedError``) is reported as such.

The steps, from the prompt to the answer: :func:`list` (every exercise, by chapter), :func:`show` (the prompt
and the signature to write), :func:`check`, :func:`hint` (a nudge, not the answer), and last :func:`solution`
(the reference solution, which passes its own checker: tested).
"""

from __future__ import annotations

import builtins
import inspect
import itertools
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._checks import check_choice

__all__ = ["check", "solution", "hint", "show", "list", "signature", "EXERCISES", "Result", "Exercise"]


@dataclass
class Result:
    """The outcome of :func:`check`: ``passed`` and the feedback lines shown to the reader."""

    name: str
    passed: bool
    feedback: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"{'✓' if self.passed else '✗'} exercise '{self.name}': {'correct' if self.passed else 'not yet'}"
        return "\n".join([head, *(f"  - {line}" for line in self.feedback)])

    def _repr_markdown_(self) -> str:  # rendered nicely in Jupyter
        return str(self).replace("\n", "  \n")


@dataclass(frozen=True)
class Exercise:
    name: str
    chapter: int
    prompt: str
    solution: Callable
    diagnose: Callable[[Callable], list[str]]  # returns problems found (empty list = correct)
    hint: str = ""

    @property
    def parameters(self) -> tuple[str, ...]:
        """The argument names of the function to write, in order (those of the reference solution)."""
        return tuple(inspect.signature(self.solution).parameters)


def _close(a: object, b: Tensor, tol: float = 1e-6) -> bool:
    return isinstance(a, Tensor) and a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=tol, rtol=tol))


def _cases(seed: int = 0, n: int = 5) -> list[tuple[Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64),
             0.05 + 0.9 * torch.rand(4, 1, generator=g, dtype=torch.float64)) for _ in range(n)]


def _compare(fn: Callable, expected: Callable, args_list: list[tuple], wrong: dict[str, Callable]) -> list[str]:
    """Run ``fn`` on every case; if it disagrees with ``expected``, name the known mistake it matches."""
    for args in args_list:
        want = expected(*args)
        got = fn(*args)
        if not isinstance(got, Tensor):
            return [f"return a torch.Tensor, got {type(got).__name__}"]
        if got.shape != want.shape:
            return [f"the result should have shape {tuple(want.shape)} (like the inputs), got {tuple(got.shape)}"]
        if not torch.isfinite(got).all():
            return ["the result contains NaN or inf"]
        if not _close(got, want):
            for message, mistake in wrong.items():
                if _close(got, mistake(*args)):
                    return [message]
            err = (got.double() - want.double()).abs().max().item()
            return [f"the values are off (largest error {err:.3g}) on inputs where the answer is known"]
    return []


# --- the exercises ----------------------------------------------------------------------------------------------
def _to_diffkit_time(t_fm: Tensor, u_fm: Tensor) -> tuple[Tensor, Tensor]:
    return 1 - t_fm, -u_fm


def _diagnose_to_diffkit_time(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        t_fm, u_fm = torch.rand(5, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
        got = fn(t_fm, u_fm)
        if not (isinstance(got, tuple) and len(got) == 2):
            return ["return a pair (t, u): the time and the velocity in diffkit's convention"]
        t, u = got
        want_t, want_u = _to_diffkit_time(t_fm, u_fm)
        if not isinstance(t, Tensor) or not isinstance(u, Tensor):
            return ["return tensors, not numbers or lists"]
        problems = []
        if _close(t, t_fm):
            problems.append("the time is unchanged: in diffkit t = 0 is data, in flow matching t = 0 is noise")
        elif not _close(t, want_t):
            problems.append("the time is wrong: the two clocks run in opposite directions over [0, 1]")
        if _close(u, u_fm):
            problems.append("the velocity keeps its sign, but reversing time reverses it: dx/d(1 - t) = -dx/dt")
        elif not _close(u, want_u):
            problems.append("the velocity is wrong: only its sign changes")
        if problems:
            return problems
    return []


def _forward_sample(x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps


def _diagnose_forward_sample(fn: Callable) -> list[str]:
    return _compare(fn, _forward_sample, _cases(), {
        "the coefficients are alpha_bar and 1 - alpha_bar: take their square roots (they are variances)":
            lambda x0, e, ab: ab * x0 + (1 - ab) * e,
        "the coefficients of x0 and eps are swapped: x0 is scaled by sqrt(alpha_bar)":
            lambda x0, e, ab: (1 - ab).sqrt() * x0 + ab.sqrt() * e,
        "the noise coefficient should be sqrt(1 - alpha_bar), not 1 - sqrt(alpha_bar)":
            lambda x0, e, ab: ab.sqrt() * x0 + (1 - ab.sqrt()) * e,
    })


def _v_to_eps(v: Tensor, x_t: Tensor, alpha: Tensor) -> Tensor:
    sigma = (1 - alpha**2).sqrt()
    return alpha * v + sigma * x_t


def _diagnose_v_to_eps(fn: Callable) -> list[str]:
    cases = [(v, x, a.clamp(0.05, 0.95)) for v, x, a in _cases(1)]
    return _compare(fn, _v_to_eps, cases, {
        "alpha and sigma are swapped — a bug found in published code: eps = alpha * v + sigma * x_t":
            lambda v, x, a: (1 - a**2).sqrt() * v + a * x,
        "that is x0, not eps: x0 = alpha * x_t - sigma * v, eps = alpha * v + sigma * x_t":
            lambda v, x, a: a * x - (1 - a**2).sqrt() * v,
        "sigma = sqrt(1 - alpha^2), not 1 - alpha":
            lambda v, x, a: a * v + (1 - a) * x,
    })


def _ddim_step(x_n, eps_hat, alpha_bar, alpha_bar_prev, eta, z):  # tensors, eta a number
    x0_hat = (x_n - (1 - alpha_bar).sqrt() * eps_hat) / alpha_bar.sqrt()  # x0 from eps
    beta = 1 - alpha_bar / alpha_bar_prev  # one step of the chain
    beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta  # DDPM's posterior variance
    sigma = eta * beta_tilde.sqrt()  # a standard deviation: eta scales it once
    direction = (1 - alpha_bar_prev - sigma**2).sqrt() * eps_hat  # points back to x_n
    return alpha_bar_prev.sqrt() * x0_hat + direction + sigma * z


def _ddim_cases(seed: int = 9) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for eta in (0.0, 1.0, 0.5):  # eta = 0 first: mistakes in the noise level only show for eta > 0
        abp = 0.05 + 0.55 * torch.rand(4, 1, generator=g, dtype=torch.float64)
        ab = abp * (1 - (0.01 + 0.09 * torch.rand(4, 1, generator=g, dtype=torch.float64)))
        x, e, z = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
        out.append((x, e, ab, abp, eta, z))
    return out


def _diagnose_ddim_step(fn: Callable) -> list[str]:
    def parts(x, e, ab, abp, eta):
        x0 = (x - (1 - ab).sqrt() * e) / ab.sqrt()
        bt = (1 - abp) / (1 - ab) * (1 - ab / abp)
        return x0, bt

    def wrong_sigma(sigma_of, noise_of=lambda s, eta: s, keep=lambda s: s**2):
        def step(x, e, ab, abp, eta, z):
            x0, bt = parts(x, e, ab, abp, eta)
            s = sigma_of(bt, eta, ab, abp)
            return abp.sqrt() * x0 + (1 - abp - keep(s)).sqrt() * e + noise_of(s, eta) * z
        return step

    return _compare(fn, _ddim_step, _ddim_cases(), {
        "sigma is a standard deviation: the eps coefficient is sqrt(1 - alpha_bar_prev - sigma^2), with sigma "
        "squared": wrong_sigma(lambda bt, eta, ab, abp: eta * bt.sqrt(), keep=lambda s: s),
        "the noise level needs a square root: sigma = eta * sqrt(beta_tilde), not eta * beta_tilde":
            wrong_sigma(lambda bt, eta, ab, abp: eta * bt),
        "eta is applied twice: sigma = eta * sqrt(beta_tilde) already holds it, the noise term is sigma * z":
            wrong_sigma(lambda bt, eta, ab, abp: eta * bt.sqrt(), noise_of=lambda s, eta: eta * s),
        "that noise level is DDPM's forward beta = 1 - alpha_bar / alpha_bar_prev; eta scales the posterior's "
        "beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta":
            wrong_sigma(lambda bt, eta, ab, abp: eta * (1 - ab / abp).sqrt()),
        "the fresh noise sigma * z is missing (it only matters for eta > 0)":
            wrong_sigma(lambda bt, eta, ab, abp: eta * bt.sqrt(), noise_of=lambda s, eta: 0 * s),
        "alpha_bar_prev is a variance-like quantity: x0-hat is scaled by sqrt(alpha_bar_prev)":
            lambda x, e, ab, abp, eta, z: (abp * parts(x, e, ab, abp, eta)[0]
                                           + (1 - abp - eta**2 * parts(x, e, ab, abp, eta)[1]).sqrt() * e
                                           + eta * parts(x, e, ab, abp, eta)[1].sqrt() * z),
    })


def _min_snr_weight(alpha_bar: Tensor, gamma: float) -> Tensor:
    snr = alpha_bar / (1 - alpha_bar)  # a ratio of variances
    return snr.clamp(max=gamma) / snr  # x0-scale min(SNR, gamma) / the SNR of the eps-MSE


def _diagnose_min_snr_weight(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(10)
    cases = [(0.001 + 0.998 * torch.rand(6, generator=g, dtype=torch.float64), gamma) for gamma in (5.0, 1.0, 20.0)]

    def snr(ab):
        return ab / (1 - ab)

    return _compare(fn, _min_snr_weight, cases, {
        "that is min(SNR, gamma), the weight on the x0 scale; the eps-MSE already equals SNR * x0-MSE, so divide "
        "by SNR": lambda ab, gm: snr(ab).clamp(max=gm),
        "min-SNR caps the weight: min(SNR, gamma), not max(SNR, gamma) (that is closer to truncated SNR)":
            lambda ab, gm: snr(ab).clamp(min=gm) / snr(ab),
        "SNR is a ratio of variances, alpha_bar / (1 - alpha_bar), not of standard deviations":
            lambda ab, gm: snr(ab).sqrt().clamp(max=gm) / snr(ab).sqrt(),
        "that is gamma / SNR without the cap at 1: use min(SNR, gamma) / SNR":
            lambda ab, gm: gm / snr(ab),
    })


def _langevin_step(x: Tensor, score: Tensor, step_size: Tensor, z: Tensor) -> Tensor:
    return x + step_size * score + (2 * step_size).sqrt() * z  # drift delta * score, noise variance 2 delta


def _langevin_cases(seed: int = 13) -> list[tuple[Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64),
             0.01 + 0.5 * torch.rand(4, 1, generator=g, dtype=torch.float64),
             torch.randn(4, 2, generator=g, dtype=torch.float64)) for _ in range(4)]


def _diagnose_langevin_step(fn: Callable) -> list[str]:
    return _compare(fn, _langevin_step, _langevin_cases(), {
        "the noise is sqrt(2 delta) z: with sqrt(delta) the chain samples p^2 (a density too narrow by a factor "
        "sqrt(2))": lambda x, s, d, z: x + d * s + d.sqrt() * z,
        "2 delta is the noise's variance: multiply z by its square root": lambda x, s, d, z: x + d * s + 2 * d * z,
        "move up the score, not down: + delta * score": lambda x, s, d, z: x - d * s + (2 * d).sqrt() * z,
        "that is the convention x + (delta/2) score + sqrt(delta) z of a step twice as large; here the drift is "
        "delta * score and the noise sqrt(2 delta) z": lambda x, s, d, z: x + d / 2 * s + d.sqrt() * z,
        "the fresh noise is missing: without it the chain climbs to a mode and stops (gradient ascent)":
            lambda x, s, d, z: x + d * s,
    })


def _gaussian_score(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    return -(x - mean) / var  # grad of -|x - mean|^2 / (2 var); the normaliser has no x in it


def _diagnose_gaussian_score(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(14)
    cases = [(torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64),
              0.1 + 2 * torch.rand(4, 1, generator=g, dtype=torch.float64)) for _ in range(4)]
    return _compare(fn, _gaussian_score, cases, {
        "divide by the variance, not the standard deviation": lambda x, m, v: -(x - m) / v.sqrt(),
        "the score points towards the mean: -(x - mean) / var": lambda x, m, v: (x - m) / v,
        "the derivative of (x - mean)^2 / (2 var) is (x - mean) / var: the 1/2 cancels the 2":
            lambda x, m, v: -(x - m) / (2 * v),
        "that is the log-density itself, not its gradient": lambda x, m, v: -(x - m) ** 2 / (2 * v),
    })


def _tweedie_x0(x_t: Tensor, score: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    return (x_t + sigma**2 * score) / alpha  # E[x0 | x_t], from x_t = alpha x0 + sigma eps


def _diagnose_tweedie_x0(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(15)
    cases = []
    for _ in range(4):
        alpha = 0.2 + 0.7 * torch.rand(4, 1, generator=g, dtype=torch.float64)
        cases.append((torch.randn(4, 3, generator=g, dtype=torch.float64),
                      torch.randn(4, 3, generator=g, dtype=torch.float64), alpha, (1 - alpha**2).sqrt()))
    return _compare(fn, _tweedie_x0, cases, {
        "the correction is sigma^2 times the score (a variance), not sigma times it":
            lambda x, s, a, sg: (x + sg * s) / a,
        "the score points towards the data: add sigma^2 * score": lambda x, s, a, sg: (x - sg**2 * s) / a,
        "that is E[alpha x0 | x_t]: divide by alpha to get x0": lambda x, s, a, sg: x + sg**2 * s,
        "divide by alpha, not alpha^2 (x_t carries alpha x0)": lambda x, s, a, sg: (x + sg**2 * s) / a**2,
    })


def _rectified_flow_target(x0: Tensor, eps: Tensor) -> Tensor:
    return eps - x0


def _diagnose_rectified_flow_target(fn: Callable) -> list[str]:
    cases = [(x0, e) for x0, e, _ in _cases(2)]
    return _compare(fn, _rectified_flow_target, cases, {
        "the sign is flipped: with x_t = (1 - t) x0 + t eps, dx_t/dt = eps - x0 (t = 0 is data in this book)":
            lambda x0, e: x0 - e,
        "the velocity is the time derivative of x_t: constant in t and independent of it":
            lambda x0, e: e,
    })


def _gaussian_kl(mu1: Tensor, var1: Tensor, mu2: Tensor, var2: Tensor) -> Tensor:
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1).sum(-1)


def _diagnose_gaussian_kl(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(3)
    cases = [(torch.randn(4, 3, generator=g, dtype=torch.float64), 0.2 + torch.rand(4, 3, generator=g, dtype=torch.float64),
              torch.randn(4, 3, generator=g, dtype=torch.float64), 0.2 + torch.rand(4, 3, generator=g, dtype=torch.float64))
             for _ in range(4)]
    problems = _compare(fn, _gaussian_kl, cases, {
        "missing the factor 1/2 in front of the sum":
            lambda m1, v1, m2, v2: 2 * _gaussian_kl(m1, v1, m2, v2),
        "the arguments are variances, not standard deviations (do not square them again)":
            lambda m1, v1, m2, v2: _gaussian_kl(m1, v1**2, m2, v2**2),
        "that is KL(q2 || q1): the KL divergence is not symmetric":
            lambda m1, v1, m2, v2: _gaussian_kl(m2, v2, m1, v1),
        "sum over the last dimension: one KL per row": lambda m1, v1, m2, v2: _gaussian_kl(m1, v1, m2, v2).sum(),
    })
    if not problems:
        x = torch.randn(2, 3, dtype=torch.float64)
        same = fn(x, torch.ones_like(x), x, torch.ones_like(x))
        if not _close(same, torch.zeros(2, dtype=torch.float64)):
            problems.append("KL(q || q) must be exactly 0")
    return problems


def _posterior_mean(x0: Tensor, x_n: Tensor, alpha_bar: Tensor, alpha_bar_prev: Tensor) -> Tensor:
    beta = 1 - alpha_bar / alpha_bar_prev  # beta_n, since alpha_bar_n = (1 - beta_n) alpha_bar_{n-1}
    coef_x0 = alpha_bar_prev.sqrt() * beta / (1 - alpha_bar)
    coef_xn = (1 - beta).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)
    return coef_x0 * x0 + coef_xn * x_n


def _step_cases(seed: int) -> list[tuple[Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(4):
        ab_prev = 0.1 + 0.85 * torch.rand(4, 1, generator=g, dtype=torch.float64)
        ab = ab_prev * (1 - 0.02 - 0.3 * torch.rand(4, 1, generator=g, dtype=torch.float64))
        out.append((torch.randn(4, 3, generator=g, dtype=torch.float64),
                    torch.randn(4, 3, generator=g, dtype=torch.float64), ab, ab_prev))
    return out


def _diagnose_posterior_mean(fn: Callable) -> list[str]:
    def swapped(x0, xn, ab, abp):
        return _posterior_mean(xn, x0, ab, abp)

    def no_sqrt(x0, xn, ab, abp):
        beta = 1 - ab / abp
        return abp * beta / (1 - ab) * x0 + (1 - beta) * (1 - abp) / (1 - ab) * xn

    return _compare(fn, _posterior_mean, _step_cases(11), {
        "the coefficients of x0 and x_n are swapped: x0 is multiplied by sqrt(alpha_bar_prev) beta_n / "
        "(1 - alpha_bar)": swapped,
        "the coefficients need square roots: sqrt(alpha_bar_prev) and sqrt(alpha_n) (they scale means, "
        "not variances)": no_sqrt,
        "that is the forward step's mean sqrt(alpha_n) x_n ... the posterior mixes x0 and x_n":
            lambda x0, xn, ab, abp: (ab / abp).sqrt() * xn,
    })


def _mean_from_eps(x_n: Tensor, eps_hat: Tensor, alpha_bar: Tensor, alpha_bar_prev: Tensor) -> Tensor:
    alpha = alpha_bar / alpha_bar_prev  # alpha_n = 1 - beta_n
    return (x_n - (1 - alpha) / (1 - alpha_bar).sqrt() * eps_hat) / alpha.sqrt()


def _diagnose_mean_from_eps(fn: Callable) -> list[str]:
    return _compare(fn, _mean_from_eps, _step_cases(12), {
        "that is x0-hat, the clean-data estimate: the reverse step only goes one step back, to x_{n-1}":
            lambda xn, e, ab, abp: (xn - (1 - ab).sqrt() * e) / ab.sqrt(),
        "the noise coefficient is beta_n / sqrt(1 - alpha_bar_n), not sqrt(1 - alpha_bar_n)":
            lambda xn, e, ab, abp: (xn - (1 - ab).sqrt() * e) / (ab / abp).sqrt(),
        "divide by sqrt(alpha_n) = sqrt(alpha_bar_n / alpha_bar_prev), not by alpha_n":
            lambda xn, e, ab, abp: (xn - (1 - ab / abp) / (1 - ab).sqrt() * e) / (ab / abp),
        "subtract the predicted noise (the sign is flipped)":
            lambda xn, e, ab, abp: (xn + (1 - ab / abp) / (1 - ab).sqrt() * e) / (ab / abp).sqrt(),
    })


def _optimal_discriminator_logit(log_p_data: Tensor, log_p_g: Tensor) -> Tensor:
    return log_p_data - log_p_g


def _diagnose_optimal_discriminator_logit(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(5)
    def log_density() -> Tensor:
        return -3 * torch.rand(6, generator=g, dtype=torch.float64)

    cases = [(log_density(), log_density()) for _ in range(4)]
    problems = _compare(fn, _optimal_discriminator_logit, cases, {
        "the sign is flipped: that is the logit of 1 - D*, the probability that x is fake":
            lambda lp, lq: lq - lp,
        "that is D* itself, a probability: its logit is log(D* / (1 - D*))":
            lambda lp, lq: torch.sigmoid(lp - lq),
        "that is log D*, not the logit log(D* / (1 - D*)): the p_data + p_g in the denominator cancels":
            lambda lp, lq: lp - torch.logaddexp(lp, lq),
        "the inputs are already log densities: subtract them, do not take their log again":
            lambda lp, lq: torch.log(lp.abs()) - torch.log(lq.abs()),
    })
    if not problems:  # densities far in the tails: exp(-800) is 0 in float64, the difference of logs is not
        lp, lq = torch.tensor([-800.0, -1.0], dtype=torch.float64), torch.tensor([-805.0, -1.0], dtype=torch.float64)
        if not _close(fn(lp, lq), torch.tensor([5.0, 0.0], dtype=torch.float64)):
            problems.append("far in the tails (log densities near -800) exp underflows to 0: stay in log space")
    return problems


def _bilinear_cases(seed: int) -> list[tuple[Tensor, Tensor, float]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64), lr)
            for lr in (0.1, 0.3, 0.7)]


def _diagnose_pair(fn: Callable, want: Callable, cases: list[tuple], wrong: dict[str, Callable]) -> list[str]:
    """Like :func:`_compare`, for a function returning a pair ``(x, y)`` of tensors."""
    for args in cases:
        got = fn(*args)
        if not (isinstance(got, tuple) and len(got) == 2 and all(isinstance(v, Tensor) for v in got)):
            return ["return a pair (x_new, y_new) of tensors"]
        target = want(*args)
        if any(a.shape != b.shape for a, b in zip(got, target)):
            return [f"x_new and y_new should have the shape of x and y, {tuple(args[0].shape)}"]
        if not all(_close(a, b) for a, b in zip(got, target)):
            for message, mistake in wrong.items():
                if all(_close(a, b) for a, b in zip(got, mistake(*args))):
                    return [message]
            err = max((a.double() - b.double()).abs().max().item() for a, b in zip(got, target))
            return [f"the values are off (largest error {err:.3g}) on inputs where the answer is known"]
    return []


def _alternating_step(x: Tensor, y: Tensor, lr: float) -> tuple[Tensor, Tensor]:
    x_new = x - lr * y  # x descends on f = x y: df/dx = y
    y_new = y + lr * x_new  # y ascends (df/dy = x), at the x it now faces
    return x_new, y_new


def _diagnose_alternating_step(fn: Callable) -> list[str]:
    return _diagnose_pair(fn, _alternating_step, _bilinear_cases(6), {
        "that is the simultaneous step: y must respond to the updated x (y + lr * x_new)":
            lambda x, y, lr: (x - lr * y, y + lr * x),
        "x minimises f = x y and y maximises it: x steps down its gradient y, y up its gradient x":
            lambda x, y, lr: (x + lr * y, y - lr * (x + lr * y)),
        "the players are swapped: x descends along df/dx = y, not along x":
            lambda x, y, lr: (x - lr * x, y + lr * (x - lr * x)),
        "y ascends along df/dy = x (the updated x), not along y":
            lambda x, y, lr: (x - lr * y, y + lr * y),
    })


def _extragradient_step(x: Tensor, y: Tensor, lr: float) -> tuple[Tensor, Tensor]:
    x_look, y_look = x - lr * y, y + lr * x  # a simultaneous step to look ahead
    return x - lr * y_look, y + lr * x_look  # step from (x, y) with the gradients found there


def _diagnose_extragradient_step(fn: Callable) -> list[str]:
    return _diagnose_pair(fn, _extragradient_step, _bilinear_cases(7), {
        "that is one plain simultaneous step: look ahead first, then step with the gradients at the look-ahead point":
            lambda x, y, lr: (x - lr * y, y + lr * x),
        "the second step must start from (x, y), not from the look-ahead point; only its gradients come from there":
            lambda x, y, lr: (x - lr * y - lr * (y + lr * x), y + lr * x + lr * (x - lr * y)),
        "that is the alternating step; extragradient looks ahead with a simultaneous step and steps again from (x, y)":
            lambda x, y, lr: (x - lr * y, y + lr * (x - lr * y)),
        "x minimises f = x y and y maximises it: x steps down its gradient, y up its gradient":
            lambda x, y, lr: (x + lr * (y - lr * x), y - lr * (x + lr * y)),
    })


def _alpha_bar_from_betas(betas: Tensor) -> Tensor:
    return torch.cumprod(1 - betas, dim=0)  # alpha_bar_n = (1 - beta_1) ... (1 - beta_n)


def _beta_cases(seed: int = 8) -> list[tuple[Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(0.01 + 0.3 * torch.rand(n, generator=g, dtype=torch.float64),) for n in (3, 7, 50)]


def _diagnose_alpha_bar_from_betas(fn: Callable) -> list[str]:
    return _compare(fn, _alpha_bar_from_betas, _beta_cases(), {
        "that is 1 - (sum of the betas), only a first-order approximation: multiply the factors (1 - beta_i)":
            lambda b: 1 - torch.cumsum(b, 0),
        "that is the product of the betas: alpha_bar multiplies the alphas, alpha_i = 1 - beta_i":
            lambda b: torch.cumprod(b, 0),
        "that is 1 - (product of the alphas): alpha_bar is the product itself":
            lambda b: 1 - torch.cumprod(1 - b, 0),
        "the result is shifted by one step: alpha_bar_1 = 1 - beta_1 already includes the first step":
            lambda b: torch.cat([b.new_ones(1), torch.cumprod(1 - b, 0)[:-1]]),
        "those are square roots: alpha_bar is the product of the alphas, not of their square roots":
            lambda b: torch.cumprod((1 - b).sqrt(), 0),
    })


def _snr_one_time(alpha_bar: Tensor) -> Tensor:
    snr = alpha_bar / (1 - alpha_bar)  # signal variance over noise variance
    n = int((snr <= 1).nonzero()[0]) + 1  # the first step n (1-based) with SNR <= 1
    return torch.tensor(n / alpha_bar.shape[0], dtype=torch.float64)


def _snr_cases() -> list[tuple[Tensor]]:
    t = torch.arange(1, 201, dtype=torch.float64) / 200
    return [(torch.cos(t * torch.pi / 2) ** 2,), (torch.exp(-6 * t),), (torch.exp(-1.5 * t**2),),
            (torch.linspace(0.9, 0.05, 37, dtype=torch.float64),)]


def _diagnose_snr_one_time(fn: Callable) -> list[str]:
    def first(mask: Tensor) -> int:
        return int(mask.nonzero()[0])

    wrong = {
        "one step early: that is the last step with SNR above 1 (or a 0-based index divided by N); step n = 1 "
        "sits at t = 1/N":
            lambda ab: torch.tensor(first(ab <= 0.5) / ab.shape[0], dtype=torch.float64),
        "return the time t = n/N, not the step n":
            lambda ab: torch.tensor(float(first(ab <= 0.5) + 1), dtype=torch.float64),
        "SNR is a ratio of variances, alpha_bar / (1 - alpha_bar); that is sqrt(alpha_bar) = 1/2":
            lambda ab: torch.tensor((first(ab <= 0.25) + 1) / ab.shape[0], dtype=torch.float64),
    }
    for (ab,) in _snr_cases():
        got = fn(ab)
        if isinstance(got, (int, float)):
            return ["return a 0-dimensional tensor, e.g. torch.tensor(n / N)"]
        want = _snr_one_time(ab)
        if not isinstance(got, Tensor) or got.numel() != 1:
            return ["return one number as a 0-dimensional tensor, the time t = n/N"]
        got = got.reshape(())
        if not _close(got, want):
            for message, mistake in wrong.items():
                if _close(got, mistake(ab)):
                    return [message]
            return [f"the values are off: expected t = {want.item():.4f}, got {got.item():.4f}"]
    return []


EXERCISES: dict[str, Exercise] = {e.name: e for e in [
    Exercise("to_diffkit_time", 0, "convert a time t_fm and velocity u_fm from the flow-matching convention "
             "(t = 0 noise, t = 1 data) to diffkit's (t = 0 data, t = 1 noise)", _to_diffkit_time,
             _diagnose_to_diffkit_time, "the two clocks run in opposite directions: t = 1 - t_fm; and a velocity "
             "is a derivative with respect to time, so it changes sign with it"),
    Exercise("optimal_discriminator_logit", 1, "the logit log(D*/(1 - D*)) of the optimal discriminator, from "
             "the log densities log_p_data and log_p_g (B,) at the same points", _optimal_discriminator_logit,
             _diagnose_optimal_discriminator_logit,
             "write D* = p_data / (p_data + p_g) and 1 - D*, divide, and take the log: the sum cancels"),
    Exercise("alternating_step", 1, "one alternating gradient step on min_x max_y x*y: x first, then y against the "
             "new x; x, y tensors (B,), lr a number; return (x_new, y_new)", _alternating_step,
             _diagnose_alternating_step,
             "df/dx = y and df/dy = x; the minimising player subtracts lr times its gradient, the maximising one "
             "adds it, and the second player sees the first one's new value"),
    Exercise("extragradient_step", 1, "one extragradient step on min_x max_y x*y: a simultaneous look-ahead step, "
             "then a step from (x, y) with the gradients at the look-ahead point; return (x_new, y_new)",
             _extragradient_step, _diagnose_extragradient_step,
             "two simultaneous steps, both starting at (x, y): the first gives the point (x_half, y_half), "
             "the second uses df/dx = y_half and df/dy = x_half"),
    Exercise("alpha_bar_from_betas", 2, "alpha_bar_1 ... alpha_bar_N from a schedule betas (N,): alpha_bar_n "
             "is the product of (1 - beta_i) for i <= n", _alpha_bar_from_betas, _diagnose_alpha_bar_from_betas,
             "alpha_bar_n multiplies the factors alpha_i = 1 - beta_i of the first n steps: a running product "
             "(torch.cumprod)"),
    Exercise("forward_sample", 2, "x_t = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps, for tensors x0, eps "
             "(B, D) and alpha_bar (B, 1)", _forward_sample, _diagnose_forward_sample,
             "alpha_bar is the variance kept from x0, 1 - alpha_bar the variance of the noise: the coefficients "
             "are their square roots (torch.sqrt or .sqrt())"),
    Exercise("snr_one_time", 2, "the time t = n/N of the first step whose SNR = alpha_bar / (1 - alpha_bar) is "
             "at most 1, from alpha_bar_1 ... alpha_bar_N (N,), as a 0-dimensional tensor", _snr_one_time,
             _diagnose_snr_one_time, "SNR <= 1 means alpha_bar_n <= 1 - alpha_bar_n; find the first such index "
             "(it is 0-based), turn it into the step n and divide by N"),
    Exercise("gaussian_kl", 3, "KL(N(mu1, diag var1) || N(mu2, diag var2)) per row, for (B, D) inputs",
             _gaussian_kl, _diagnose_gaussian_kl,
             "per dimension, KL = 1/2 [log(var2/var1) + (var1 + (mu1 - mu2)^2)/var2 - 1]; then sum over the last "
             "dimension"),
    Exercise("posterior_mean", 3, "the mean of q(x_{n-1} | x_n, x0) from x0, x_n (B, D) and alpha_bar_n, "
             "alpha_bar_{n-1} (B, 1)", _posterior_mean, _diagnose_posterior_mean,
             "first recover beta_n = 1 - alpha_bar_n / alpha_bar_{n-1}; the mean is a weighted sum of x0 and x_n "
             "whose weights share the denominator 1 - alpha_bar_n"),
    Exercise("mean_from_eps", 3, "the reverse-step mean mu_theta(x_n) from x_n, a noise prediction eps_hat (B, D) "
             "and alpha_bar_n, alpha_bar_{n-1} (B, 1)", _mean_from_eps, _diagnose_mean_from_eps,
             "put x0-hat = (x_n - sqrt(1 - alpha_bar_n) eps_hat) / sqrt(alpha_bar_n) into the posterior mean and "
             "collect the terms in x_n"),
    Exercise("v_to_eps", 4, "eps from a v-prediction on a variance-preserving path: inputs v, x_t (B, D) and alpha "
             "(B, 1), with sigma = sqrt(1 - alpha^2)", _v_to_eps, _diagnose_v_to_eps,
             "write v = alpha * eps - sigma * x0 and x_t = alpha * x0 + sigma * eps, and eliminate x0"),
    Exercise("ddim_step", 4, "one DDIM step from x_n to x_{n-1}: x_n, eps_hat, z (B, D), alpha_bar, alpha_bar_prev "
             "(B, 1) and eta a number; the noise level is sigma = eta * sqrt(beta_tilde)", _ddim_step,
             _diagnose_ddim_step, "first x0-hat from x_n and eps_hat, then beta_tilde from the two alpha_bars "
             "(chapter 3's posterior variance); the three terms are signal, pointing back along eps_hat, fresh noise"),
    Exercise("min_snr_weight", 4, "the min-SNR-gamma weight that multiplies the eps-MSE, from alpha_bar (B,) and "
             "gamma a number (Hang et al., 2023)", _min_snr_weight, _diagnose_min_snr_weight,
             "on the x0 scale the weight is min(SNR, gamma); the eps-loss already weights the x0 error by SNR"),
    Exercise("gaussian_score", 5, "the score grad_x log N(x; mean, var I) for x, mean (B, D) and var (B, 1)",
             _gaussian_score, _diagnose_gaussian_score,
             "take the log first: the normaliser does not depend on x, so only -|x - mean|^2 / (2 var) is "
             "differentiated"),
    Exercise("langevin_step", 5, "one unadjusted Langevin step from x with the score at x, the step size delta "
             "(B, 1) and fresh standard normal noise z (B, D)", _langevin_step, _diagnose_langevin_step,
             "the chain drifts up the score by delta times it and diffuses with variance 2 delta per step"),
    Exercise("tweedie_x0", 5, "E[x0 | x_t] from x_t, the score of p_t at x_t (B, D), alpha and sigma (B, 1), "
             "where x_t = alpha x0 + sigma eps", _tweedie_x0, _diagnose_tweedie_x0,
             "Tweedie: E[alpha x0 | x_t] = x_t + sigma^2 grad log p_t(x_t); then undo the scaling by alpha"),
    Exercise("rectified_flow_target", 7, "the regression target of rectified flow for x_t = (1 - t) x0 + t eps",
             _rectified_flow_target, _diagnose_rectified_flow_target,
             "differentiate x_t = (1 - t) x0 + t eps with respect to t: what is left does not depend on t"),
]}


def _exercise(name: str) -> Exercise:
    check_choice("name", name, EXERCISES)
    return EXERCISES[name]


def signature(name: str) -> str:
    """The signature to write for exercise ``name``, e.g. ``"forward_sample(x0, eps, alpha_bar)"``."""
    return f"{name}({', '.join(_exercise(name).parameters)})"


def _argument_problems(exercise: Exercise, fn: Callable) -> list[str]:
    """Feedback on the number and order of the reader's arguments, read from ``fn``'s signature."""
    want = exercise.parameters
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # not inspectable: the checker will tell by running it
        return []
    try:
        inspect.signature(fn).bind(*want)
    except TypeError:
        got = ", ".join(params)
        return [f"your function takes ({got}) but is called with {len(want)} argument(s): {exercise.name}"
                f"({', '.join(want)})"]
    names = tuple(p.name for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    if sorted(names[:len(want)]) == sorted(want) and names[:len(want)] != want:
        return [f"the arguments come in the order ({', '.join(want)}), your function takes "
                f"({', '.join(names[:len(want)])}): the checker passes them by position"]
    return []


_GENERIC = ("the values are off", "the result contains NaN", "the result should have shape", "your function raised")


def _order_problem(exercise: Exercise, fn: Callable) -> list[str]:
    """If ``fn`` is right once its arguments are permuted, say which order it expects."""
    want = exercise.parameters
    if not 2 <= len(want) <= 4:
        return []
    for perm in itertools.permutations(range(len(want))):
        if perm == tuple(range(len(want))):
            continue
        try:
            if not exercise.diagnose(lambda *args, perm=perm: fn(*[args[i] for i in perm])):
                order = ", ".join(want[i] for i in perm)
                return [f"your function is right for the arguments in the order ({order}), but it is called as "
                        f"{exercise.name}({', '.join(want)})"]
        except Exception:  # noqa: BLE001  (a permutation that crashes is just not the one)
            continue
    return []


def check(name: str, fn: Callable, *, verbose: bool = True) -> Result:
    """Check the reader's ``fn`` for exercise ``name``; print and return the :class:`Result`."""
    exercise = _exercise(name)
    if not callable(fn):
        raise TypeError(f"fn must be the function you wrote, got {type(fn).__name__}")
    problems = _argument_problems(exercise, fn)
    if not problems:
        try:
            problems = exercise.diagnose(fn)
        except NotImplementedError:
            problems = ["not implemented yet: replace `raise NotImplementedError` with your code"]
        except Exception as exc:  # the reader's code crashed: say where, keep the notebook running
            problems = [f"your function raised {type(exc).__name__}: {exc}"]
        if problems and problems[0].startswith(_GENERIC):  # no known mistake recognised: arguments misread?
            problems = _order_problem(exercise, fn) or problems
    if problems and exercise.hint and not problems[0].startswith("not implemented"):
        problems = [*problems, f"stuck? exercises.hint({name!r}), then exercises.solution({name!r})"]
    result = Result(name, not problems, problems or ["matches the reference on every test case"])
    if verbose:
        print(result)
    return result


def hint(name: str, *, verbose: bool = True) -> str:
    """A hint for exercise ``name``: the step before :func:`solution`."""
    text = _exercise(name).hint
    if verbose:
        print(f"hint for '{name}': {text}\n(the full answer: exercises.solution({name!r}))")
    return text


def show(name: str, *, verbose: bool = True) -> str:
    """Print (and return) the prompt of exercise ``name`` and the signature of the function to write."""
    exercise = _exercise(name)
    text = (f"exercise '{name}' (chapter {exercise.chapter}): {exercise.prompt}\n"
            f"write:  def {signature(name)}:\n"
            f"check:  exercises.check({name!r}, {name})   stuck? exercises.hint({name!r})")
    if verbose:
        print(text)
    return text


def list(chapter: int | None = None, *, verbose: bool = True) -> builtins.list[str]:  # noqa: A001  (exercises.list())
    """The names of the exercises (of ``chapter`` only, if given), printed with their chapter and signature."""
    names = [n for n, e in EXERCISES.items() if chapter is None or e.chapter == chapter]
    if verbose:
        for n in names:
            print(f"chapter {EXERCISES[n].chapter:2d}  {signature(n)}")
    return names


def solution(name: str) -> str:
    """The source code of the reference solution of exercise ``name`` (try :func:`hint` first)."""
    src = inspect.getsource(_exercise(name).solution)
    return textwrap.dedent(src).replace(f"def _{name}(", f"def {name}(", 1)
