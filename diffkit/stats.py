r"""Monte-Carlo checks stated in standard errors (every chapter's numerical checks).

A numerical check compares an estimate with the exact value it should converge to.  Its tolerance is a number
of standard errors, not a fixed absolute number: a tolerance of :math:`10^{-2}` can be 60 standard errors wide at
one sample size and 0.5 at another.  :func:`check_close` computes

.. math::  z = \frac{\hat\mu - \mu}{\mathrm{se}},

and fails when :math:`|z| > z_{\max}` (5 by default: a false alarm once in about 1.7 million checks).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["mean_se", "z_score", "check_close"]


def mean_se(x: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    r"""The mean of ``x`` along ``dim`` and its standard error :math:`s / \sqrt{n}` (``s`` the sample std)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"x must hold floating-point values, got dtype {x.dtype}")
    n = x.shape[dim] if x.ndim else 0
    if n < 2:
        raise ValueError(f"x must hold at least 2 draws along dim={dim}, got shape {tuple(x.shape)}")
    return x.mean(dim), x.std(dim) / math.sqrt(n)


def _as_tensor(name: str, value: object) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().double().cpu()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")


def z_score(estimate: Tensor | float, expected: Tensor | float, se: Tensor | float) -> Tensor:
    r"""Elementwise :math:`(\hat\mu - \mu) / \mathrm{se}` (float64; shapes broadcast as in torch)."""
    est, exp, s = _as_tensor("estimate", estimate), _as_tensor("expected", expected), _as_tensor("se", se)
    if torch.isnan(s).any() or (s <= 0).any():
        raise ValueError("se must be positive: a standard error of 0 means the estimate is exact (compare exactly)")
    return (est - exp) / s


def check_close(estimate: Tensor | float, expected: Tensor | float, se: Tensor | float, *,
                max_z: float = 5.0, name: str = "estimate") -> float:
    r"""Assert that every :math:`|z| = |\hat\mu - \mu| / \mathrm{se}` is at most ``max_z`` and return the largest.

    Raises ``AssertionError`` naming ``name``, the worst z and the values there.  Use it for every Monte-Carlo check:
    the tolerance then scales with the sample size, and a check that passes says "within ``max_z`` standard
    errors", which a reader can weigh.
    """
    if not isinstance(max_z, (int, float)) or isinstance(max_z, bool) or not max_z > 0:
        raise ValueError(f"max_z must be a positive number of standard errors, e.g. 5, got {max_z!r}")
    z = z_score(estimate, expected, se)
    if torch.isnan(z).any():
        raise AssertionError(f"{name}: NaN in the estimate or the expected value")
    worst = int(z.abs().argmax()) if z.ndim else 0
    zw = float(z.flatten()[worst])
    if abs(zw) > max_z:
        est = _as_tensor("estimate", estimate).expand_as(z).flatten()[worst]
        exp = _as_tensor("expected", expected).expand_as(z).flatten()[worst]
        raise AssertionError(f"{name}: {float(est):.6g} vs exact {float(exp):.6g} is {zw:+.1f} standard errors "
                             f"off (limit {max_z:g})")
    return abs(zw)
