r"""Distances between two sets of low-dimensional samples (chapters 3–8 and 13).

* :func:`mmd` — squared maximum mean discrepancy with a sum of RBF kernels
  :math:`k(x, y) = \sum_h \exp(-\lVert x-y\rVert^2 / (2h^2))` (Gretton et al., 2012), unbiased by default;
* :func:`sliced_wasserstein` — :math:`\big(\mathbb E_\theta W_2^2(\theta^\top P, \theta^\top Q)\big)^{1/2}` over random
  directions on the sphere (Bonneel et al., 2015); needs equally many samples on both sides;
* :func:`energy_distance` — :math:`2\mathbb E\lVert X-Y\rVert - \mathbb E\lVert X-X'\rVert - \mathbb E\lVert Y-Y'\rVert`
  (Székely & Rizzo), unbiased.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._checks import check_finite, check_positive_int, check_tensor

__all__ = ["mmd", "sliced_wasserstein", "energy_distance"]


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    check_tensor("x", x, ndim=2)
    check_tensor("y", y, ndim=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of columns, got {x.shape[1]} and {y.shape[1]}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("x and y must each hold at least 2 samples")
    check_finite("x", x)
    check_finite("y", y)
    return x.double(), y.double()


def _off_diagonal_mean(k: Tensor) -> Tensor:
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def mmd(x: Tensor, y: Tensor, bandwidths: Sequence[float] = (0.2, 0.5, 1.0, 2.0, 5.0), *, unbiased: bool = True) -> Tensor:
    r"""Squared MMD between the samples ``x`` (N, D) and ``y`` (M, D) (float64 scalar)."""
    x, y = _pair(x, y)
    if not bandwidths or any(h <= 0 for h in bandwidths):
        raise ValueError(f"bandwidths must be a non-empty list of positive numbers, got {bandwidths!r}")

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * h**2)) for h in bandwidths)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    if unbiased:
        return _off_diagonal_mean(kxx) + _off_diagonal_mean(kyy) - 2 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, *,
                       generator: torch.Generator | None = None) -> Tensor:
    r"""Sliced 2-Wasserstein distance, exact in each 1-D projection (sorted samples)."""
    x, y = _pair(x, y)
    check_positive_int("n_projections", n_projections)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold equally many samples, got {x.shape[0]} and {y.shape[0]}")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return ((px - py) ** 2).mean().sqrt()


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    r"""Squared energy distance (unbiased U-statistic), 0 iff the distributions agree."""
    x, y = _pair(x, y)
    return 2 * torch.cdist(x, y).mean() - _off_diagonal_mean(torch.cdist(x, x)) - _off_diagonal_mean(torch.cdist(y, y))
