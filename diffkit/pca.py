r"""Principal components of a point cloud (chapter 10): how much of the variance the top :math:`k` directions
explain — the measure of how far a set of patches is from filling all its dimensions."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_tensor

__all__ = ["explained_variance"]


def explained_variance(x: Tensor) -> Tensor:
    r"""For points ``x`` (N, D), the share of their variance that the top :math:`k` principal components explain
    together, for :math:`k = 1, \dots, D`: :math:`\sum_{i \le k} s_i^2 / \sum_i s_i^2`, with :math:`s_i` the
    singular values of the centred data, largest first (:math:`s_i^2/(N - 1)` are the covariance's eigenvalues).
    Isotropic noise gives :math:`k/D` up to sampling error; points on a :math:`k`-dimensional subspace reach 1 at
    :math:`k`.  Returns (D,) in the dtype of ``x``."""
    check_tensor("x", x, ndim=2)
    if x.shape[0] < 2:
        raise ValueError(f"x must hold at least 2 points to have a variance, got shape {tuple(x.shape)}")
    variances = torch.linalg.svdvals(x - x.mean(0)) ** 2
    total = variances.sum()
    if total == 0:
        raise ValueError("x: all points are the same; their variance is 0 and has no shares")
    return variances.cumsum(0) / total
