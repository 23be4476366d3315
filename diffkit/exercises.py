"""Auto-checked exercises: write a function in the notebook, hand it to :func:`check`, read the feedback.

    from diffkit import exercises
    def forward_sample(x0, eps, alpha_bar):
        ...
    exercises.check("forward_sample", forward_sample)

A checker runs the function on several cases with known answers and says *what* is wrong — a missing square
root, swapped coefficients, a sign, a wrong shape — not just pass/fail.  It never raises for a wrong answer
(the notebook keeps running); an unfinished exercise (``raise NotImplementedError``) is reported as such.
:func:`solution` shows the reference solution, which passes its own checker (tested).
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._checks import check_choice

__all__ = ["check", "solution", "EXERCISES", "Result", "Exercise"]


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


EXERCISES: dict[str, Exercise] = {e.name: e for e in [
    Exercise("to_diffkit_time", 0, "convert a time t_fm and velocity u_fm from the flow-matching convention "
             "(t = 0 noise, t = 1 data) to diffkit's (t = 0 data, t = 1 noise)", _to_diffkit_time,
             _diagnose_to_diffkit_time),
    Exercise("forward_sample", 2, "x_t = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps, for tensors x0, eps "
             "(B, D) and alpha_bar (B, 1)", _forward_sample, _diagnose_forward_sample),
    Exercise("gaussian_kl", 3, "KL(N(mu1, diag var1) || N(mu2, diag var2)) per row, for (B, D) inputs",
             _gaussian_kl, _diagnose_gaussian_kl),
    Exercise("v_to_eps", 4, "eps from a v-prediction on a variance-preserving path: inputs v, x_t (B, D) and alpha "
             "(B, 1), with sigma = sqrt(1 - alpha^2)", _v_to_eps, _diagnose_v_to_eps),
    Exercise("rectified_flow_target", 7, "the regression target of rectified flow for x_t = (1 - t) x0 + t eps",
             _rectified_flow_target, _diagnose_rectified_flow_target),
]}


def check(name: str, fn: Callable, *, verbose: bool = True) -> Result:
    """Check the reader's ``fn`` for exercise ``name``; print and return the :class:`Result`."""
    check_choice("name", name, EXERCISES)
    if not callable(fn):
        raise TypeError(f"fn must be the function you wrote, got {type(fn).__name__}")
    try:
        problems = EXERCISES[name].diagnose(fn)
    except NotImplementedError:
        problems = ["not implemented yet: replace `raise NotImplementedError` with your code"]
    except Exception as exc:  # the reader's code crashed: say where, keep the notebook running
        problems = [f"your function raised {type(exc).__name__}: {exc}"]
    result = Result(name, not problems, problems or ["matches the reference on every test case"])
    if verbose:
        print(result)
    return result


def solution(name: str) -> str:
    """The source code of the reference solution of exercise ``name``."""
    check_choice("name", name, EXERCISES)
    src = inspect.getsource(EXERCISES[name].solution)
    return textwrap.dedent(src).replace(f"def _{name}(", f"def {name}(", 1)
