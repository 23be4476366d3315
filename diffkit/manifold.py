r"""k-nearest-neighbour estimates of the data manifold: precision, recall, density, coverage (chapter 13).

Each point :math:`x` of a set gets the radius :math:`r_k(x)`, the distance to its :math:`k`-th nearest neighbour
*in its own set, itself excluded*; the union of the balls :math:`B(x, r_k(x))` estimates the set's support.
With real features :math:`\{r_i\}_{i=1}^N` and generated ones :math:`\{g_j\}_{j=1}^M`
(Kynkäänniemi et al., 2019; Naeem et al., 2020):

.. math::
    \text{precision} &= \frac1M\sum_j \mathbf 1\big[\exists i: \lVert g_j - r_i\rVert \le r_k(r_i)\big], \qquad
    \text{recall} = \frac1N\sum_i \mathbf 1\big[\exists j: \lVert r_i - g_j\rVert \le r_k(g_j)\big], \\
    \text{density} &= \frac{1}{kM}\sum_j\sum_i \mathbf 1\big[\lVert g_j - r_i\rVert \le r_k(r_i)\big], \qquad
    \text{coverage} = \frac1N\sum_i \mathbf 1\big[\exists j: \lVert g_j - r_i\rVert \le r_k(r_i)\big].

Precision asks "are the samples on the real manifold?", recall "is the real manifold covered by the samples'?".
Density and coverage use only the real balls, which makes them robust to outlying samples.  When the two sets come
from one distribution, :math:`\mathbb E[\text{density}] = 1` exactly and
:math:`\mathbb E[\text{coverage}] = 1 - \prod_{i=0}^{k-1}\frac{N-1-i}{N+M-1-i}`
(:func:`expected_density_coverage`), which is how the tests and chapter 13 check them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_finite, check_positive_int, check_tensor

__all__ = ["knn_radii", "PrecisionRecall", "precision_recall", "DensityCoverage", "density_coverage",
           "expected_density_coverage"]


def _features(name: str, x: Tensor) -> Tensor:
    check_tensor(name, x, ndim=2)
    check_finite(name, x)
    return x.double()


def _pair(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    real, fake = _features("real", real), _features("fake", fake)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake must have the same feature dimension, got {real.shape[1]} and "
                         f"{fake.shape[1]}")
    return real, fake


def knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance (N,) from each row of ``x`` (N, D) to its ``k``-th nearest neighbour among the *other* rows."""
    x = _features("x", x)
    check_positive_int("k", k)
    if k >= len(x):
        raise ValueError(f"k must be smaller than the number of points ({len(x)}), got {k}")
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))  # a point is not its own neighbour
    return d.kthvalue(k, dim=1).values


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float


@dataclass(frozen=True)
class DensityCoverage:
    density: float
    coverage: float


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of ``fake`` (M, D) against ``real`` (N, D)."""
    real, fake = _pair(real, fake)
    d = torch.cdist(fake, real)  # (M, N)
    precision = (d <= knn_radii(real, k)[None, :]).any(1).double().mean()
    recall = (d <= knn_radii(fake, k)[:, None]).any(0).double().mean()
    return PrecisionRecall(float(precision), float(recall))


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> DensityCoverage:
    """Density and coverage (Naeem et al., 2020) of ``fake`` (M, D) against ``real`` (N, D)."""
    real, fake = _pair(real, fake)
    inside = torch.cdist(fake, real) <= knn_radii(real, k)[None, :]  # (M, N): g_j in B(r_i, r_k(r_i))
    density = inside.double().sum() / (k * len(fake))
    coverage = inside.any(0).double().mean()
    return DensityCoverage(float(density), float(coverage))


def expected_density_coverage(n_real: int, n_fake: int, k: int = 5) -> DensityCoverage:
    r"""Exact expected density (1) and coverage, :math:`1 - \binom{N-1}{k}/\binom{N+M-1}{k}`, when real and fake
    are independent draws of one continuous distribution: a real ball holds no fake point exactly when the
    :math:`k` points nearest its centre, among the other reals and all fakes, are reals."""
    check_positive_int("n_real", n_real, minimum=2)
    check_positive_int("n_fake", n_fake)
    check_positive_int("k", k)
    if k >= n_real:
        raise ValueError(f"k must be smaller than n_real ({n_real}), got {k}")
    empty = 1.0
    for i in range(k):
        empty *= (n_real - 1 - i) / (n_real + n_fake - 1 - i)
    return DensityCoverage(1.0, 1.0 - empty)
