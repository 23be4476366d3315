r"""Distances between two sets of low-dimensional samples (chapters 3–8 and 13).

* :func:`mmd` — squared maximum mean discrepancy with a sum of RBF kernels
  :math:`k(x, y) = \sum_h \exp(-\lVert x-y\rVert^2 / (2h^2))` (Gretton et al., 2012), unbiased by default;
* :func:`sliced_wasserstein` — :math:`\big(\mathbb E_\theta W_2^2(\theta^\top P, \theta^\top Q)\big)^{1/2}` over random
  directions on the sphere (Bonneel et al., 2015); needs equally many samples on both sides;
* :func:`energy_distance` — :math:`2\mathbb E\lVert X-Y\rVert - \mathbb E\lVert X-X'\rVert - \mathbb E\lVert Y-Y'\rVert`
  (Székely & Rizzo), unbiased;
* :func:`with_noise_floor` — a distance beside its noise floor: the same distance between two fresh sets of true
  samples, the value a perfect model would score with that many samples.  The unbiased MMD and energy distance
  are differences of averages, so both the floor and a good model's score can be slightly negative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_finite, check_positive_int, check_tensor

__all__ = ["mmd", "sliced_wasserstein", "energy_distance", "with_noise_floor", "DistanceWithFloor"]


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


@dataclass(frozen=True)
class DistanceWithFloor:
    """``distance`` between the model's samples and ``n`` true samples, and ``floor``, the same metric between two
    fresh sets of ``n`` true samples: a model is as good as this metric can tell when ``distance`` is near
    ``floor``."""

    metric: str
    distance: float
    floor: float
    n: int

    def __str__(self) -> str:
        return (f"{self.metric} {self.distance:.4g} (noise floor {self.floor:.4g}: two sets of {self.n} true samples; "
                f"can be negative)")


def with_noise_floor(metric: Callable[[Tensor, Tensor], Tensor], samples: Tensor,
                     sample_true: Callable[[int, torch.Generator], Tensor], n: int | None = None, *,
                     seed: int = 0) -> DistanceWithFloor:
    """``metric(samples[:n], true)`` beside ``metric(true', true'')``, where ``true``, ``true'`` and ``true''`` are
    three independent draws of ``n`` samples (default: ``len(samples)``) from ``sample_true(n, generator)``
    (generators seeded ``seed``, ``seed + 1``, ``seed + 2``; a pair ``(x, y)`` is read as ``x``).  ``metric`` is one
    of the functions above or any ``metric(x, y) -> scalar``."""
    if not callable(metric):
        raise TypeError(f"metric must be a function metric(x, y), e.g. distances.mmd, got {type(metric).__name__}")
    if not callable(sample_true):
        raise TypeError(f"sample_true must be a function sample_true(n, generator) -> (n, D) tensor, got "
                        f"{type(sample_true).__name__}")
    check_tensor("samples", samples, ndim=2)
    n = samples.shape[0] if n is None else check_positive_int("n", n, minimum=2)
    if n > samples.shape[0]:
        raise ValueError(f"n must be at most the number of samples ({samples.shape[0]}), got {n}")

    def draw(k: int) -> Tensor:
        out = sample_true(n, torch.Generator().manual_seed(seed + k))
        out = out[0] if isinstance(out, tuple) else out
        check_tensor("sample_true(n, generator)", out, ndim=2)
        if out.shape != (n, samples.shape[1]):
            raise ValueError(f"sample_true(n, generator) must return ({n}, {samples.shape[1]}), got {tuple(out.shape)}")
        return out

    truth, a, b = draw(0), draw(1), draw(2)
    name = getattr(metric, "__name__", type(metric).__name__)
    return DistanceWithFloor(name, float(metric(samples[:n], truth)), float(metric(a, b)), n)
