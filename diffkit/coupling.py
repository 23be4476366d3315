r"""Minibatch optimal-transport coupling for flow matching (OT-CFM; Tong et al., 2024; Pooladian et al., 2023; chapter 7).

Within a minibatch of data :math:`\{x_0^i\}` and noise :math:`\{\varepsilon^j\}`, pair them by the permutation
:math:`\pi` that minimises :math:`\sum_i \lVert x_0^i - \varepsilon^{\pi(i)}\rVert^2` — an exact assignment
(Hungarian algorithm via :func:`scipy.optimize.linear_sum_assignment`), so every noise sample is used exactly
once.  (Sampling pairs from the OT plan *with replacement* duplicates some pairs and drops others.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_finite, check_tensor

__all__ = ["ot_permutation", "ot_pair"]


def ot_permutation(x0: Tensor, x1: Tensor) -> Tensor:
    """The permutation ``perm`` minimising ``sum_i ||x0[i] - x1[perm[i]]||^2`` (a LongTensor of shape (B,))."""
    check_finite("x0", check_tensor("x0", x0, min_ndim=2))
    check_finite("x1", check_tensor("x1", x1, min_ndim=2))
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    cost = torch.cdist(x0.detach().flatten(1).double().cpu(), x1.detach().flatten(1).double().cpu()) ** 2
    from scipy.optimize import linear_sum_assignment  # loaded on first use: import diffkit stays light

    rows, cols = linear_sum_assignment(cost.numpy())
    perm = torch.empty(x0.shape[0], dtype=torch.long)
    perm[torch.from_numpy(rows)] = torch.from_numpy(cols)
    return perm.to(x0.device)


def ot_pair(x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(x0, x1[perm])``: the same samples, re-paired by exact minibatch OT."""
    return x0, x1[ot_permutation(x0, x1)]
