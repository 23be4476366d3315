"""Chapter 0's exercise: from the flow-matching clock (t = 0 noise) to diffkit's (t = 0 data)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, close, randn


def to_diffkit_time(t_fm: Tensor, u_fm: Tensor) -> tuple[Tensor, Tensor]:
    return 1 - t_fm, -u_fm


def _diagnose_to_diffkit_time(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        t_fm, u_fm = torch.rand(5, generator=g, dtype=torch.float64), randn(g, 5, 2)
        got = fn(t_fm, u_fm)
        if not (isinstance(got, tuple) and len(got) == 2):
            return ["return a pair (t, u): the time and the velocity in diffkit's convention"]
        t, u = got
        want_t, want_u = to_diffkit_time(t_fm, u_fm)
        if not isinstance(t, Tensor) or not isinstance(u, Tensor):
            return ["return tensors, not numbers or lists"]
        if t.shape == u_fm.shape and u.shape == t_fm.shape:
            return ["the pair is in the wrong order: the time comes first, then the velocity"]
        problems = []
        if close(t, t_fm):
            problems.append("the time is unchanged: in diffkit t = 0 is data, in flow matching t = 0 is noise")
        elif close(t, -t_fm):
            problems.append("the time is negated, so it leaves [0, 1]: both clocks run over [0, 1], in opposite "
                            "directions")
        elif not close(t, want_t):
            problems.append("the time is wrong: both clocks run over [0, 1], in opposite directions")
        if close(u, u_fm):
            problems.append("the velocity is unchanged, but reversing the clock reverses every motion along it")
        elif close(u, 1 - u_fm):
            problems.append("the velocity was shifted like a time: it is a rate of change, and a reversed clock "
                            "only reverses its direction, it adds no offset")
        elif not close(u, want_u):
            problems.append("the velocity is wrong: the motion is the same, only seen on a reversed clock")
        if problems:
            return problems
    return []


EXERCISES = [
    Exercise("to_diffkit_time", 0, "convert a time t_fm and velocity u_fm from the flow-matching convention "
             "(t = 0 noise, t = 1 data) to diffkit's (t = 0 data, t = 1 noise)", to_diffkit_time,
             _diagnose_to_diffkit_time, (
                 "The same path is traced on two clocks that run in opposite directions over [0, 1]. Which time "
                 "in diffkit's clock is the flow-matching time 0?",
                 "The time maps [0, 1] onto itself with its ends swapped. A velocity is dx/dt: when t runs the "
                 "other way, dt changes sign, the motion does not.",
             )),
]
