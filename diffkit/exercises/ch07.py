"""Chapter 7's exercise (the chapter is coming: listed as such by :func:`diffkit.exercises.list`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, randn


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


EXERCISES = [
    Exercise("rectified_flow_target", 7, "the regression target of rectified flow for x_t = (1 - t) x0 + t eps",
             rectified_flow_target, _diagnose_rectified_flow_target, (
                 "The target is the velocity dx_t/dt of the straight path.",
                 "Differentiate each coefficient, (1 - t) and t, with respect to t: what is left does not depend "
                 "on t.",
             )),
]
