r"""Memorisation: nearest-neighbour distances to the training set, and the likelihood of a model that copies it
(chapter 13).

A model that has memorised its training set returns training examples.  Sample-quality metrics cannot tell: the
copies *are* real data.  What gives it away is the distance from each sample to its nearest training example,
compared with the same distance for real examples the model never saw (:func:`nearest_distances`,
:func:`copy_share`).

The ideal denoiser of the training set (chapter 5) samples its empirical distribution; smoothed by a Gaussian of
standard deviation :math:`s` it is the kernel density estimate

.. math:: p_s(x) = \frac1M\sum_{i=1}^M \mathcal N(x; x_i, s^2 I) ,

whose log-density is exact (:func:`kernel_log_density`) and whose bits per dimension on quantized data are
bounded by uniform dequantization (:func:`dequantized_bits_per_dim_of`, the bound of
:mod:`diffkit.likelihood` for any closed-form density): with :math:`L` levels on ``data_range``
:math:`= (a, b)`, :math:`z = a + (b - a)(k + u)/L`,

.. math:: \text{bits/dim} \le \mathbb E_u\Big[-\frac{\log p(z) + D\log(b - a)}{D\ln 2}\Big] + \log_2 L .
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import check_finite, check_number, check_positive_int, check_tensor

__all__ = ["nearest_distances", "copy_share", "kernel_log_density", "dequantized_bits_per_dim_of"]


def _flat(name: str, x: Tensor) -> Tensor:
    check_tensor(name, x, min_ndim=2)
    check_finite(name, x)
    return x.reshape(x.shape[0], -1).double()


def nearest_distances(x: Tensor, reference: Tensor, *, exclude_self: bool = False, chunk: int = 500) -> Tensor:
    """Euclidean distance (N,) from each of ``x`` (N, ...) to its nearest row of ``reference`` (M, ...), flattened.
    ``exclude_self=True`` (``x`` is ``reference``) skips each point's own row."""
    xf, rf = _flat("x", x), _flat("reference", reference)
    if xf.shape[1] != rf.shape[1]:
        raise ValueError(f"x and reference must have the same size per example, got {xf.shape[1]} and "
                         f"{rf.shape[1]}")
    if exclude_self and xf.shape != rf.shape:
        raise ValueError("exclude_self=True needs x to be reference itself (same shape)")
    check_positive_int("chunk", chunk)
    out = []
    for start in range(0, len(xf), chunk):
        d = torch.cdist(xf[start:start + chunk], rf)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        out.append(d.min(1).values)
    return torch.cat(out)


def copy_share(sample_distances: Tensor, heldout_distances: Tensor, quantile: float = 0.01) -> tuple[float, float]:
    """``(share, threshold)``: the share of samples nearer to the training set than ``threshold``, the
    ``quantile`` of the distances of held-out real examples to it.  Held-out data score ``quantile`` by
    construction; a model that copies scores near 1 (chapter 13)."""
    check_tensor("sample_distances", sample_distances, ndim=1)
    check_tensor("heldout_distances", heldout_distances, ndim=1)
    check_number("quantile", quantile, low=0.0, high=1.0, low_open=True)
    threshold = torch.quantile(heldout_distances.double(), quantile)
    return float((sample_distances.double() < threshold).double().mean()), float(threshold)


def kernel_log_density(x: Tensor, centres: Tensor, std: float, *, chunk: int = 250) -> Tensor:
    r""":math:`\log p_s(x)` (N,) in nats of the equal-weight mixture :math:`\frac1M\sum_i\mathcal N(x_i, s^2 I)`
    with centres ``centres`` (M, ...) and ``std`` :math:`= s > 0`, at ``x`` (N, ...)."""
    xf, cf = _flat("x", x), _flat("centres", centres)
    if xf.shape[1] != cf.shape[1]:
        raise ValueError(f"x and centres must have the same size per example, got {xf.shape[1]} and {cf.shape[1]}")
    s = check_number("std", std, low=0.0, low_open=True)
    check_positive_int("chunk", chunk)
    D, M = xf.shape[1], cf.shape[0]
    const = -math.log(M) - 0.5 * D * math.log(2 * math.pi * s * s)
    out = [torch.logsumexp(-torch.cdist(xf[i:i + chunk], cf) ** 2 / (2 * s * s), dim=1) + const
           for i in range(0, len(xf), chunk)]
    return torch.cat(out)


def dequantized_bits_per_dim_of(log_density: Callable[[Tensor], Tensor], x: Tensor, *, levels: int = 256,
                                data_range: tuple[float, float] = (-1.0, 1.0), n_dequant: int = 1,
                                generator: torch.Generator | None = None) -> Tensor:
    """Upper bound (N,) on the bits per dimension of quantized ``x`` under a model whose log-density (nats, on
    the scale of ``data_range``) is ``log_density(z)``, by uniform dequantization averaged over ``n_dequant``
    draws (the formula of the module docstring; chapter 13)."""
    check_tensor("x", x, min_ndim=2)
    if not callable(log_density):
        raise TypeError(f"log_density must be a function z -> log p(z), got {type(log_density).__name__}")
    check_positive_int("levels", levels, minimum=2)
    check_positive_int("n_dequant", n_dequant)
    if not (isinstance(data_range, (tuple, list)) and len(data_range) == 2):
        raise ValueError(f"data_range must be a pair (low, high), got {data_range!r}")
    low, high = check_number("data_range[0]", data_range[0]), check_number("data_range[1]", data_range[1])
    if not high > low:
        raise ValueError(f"data_range must have high > low, got {data_range!r}")
    k = (x.double() - low) / (high - low) * (levels - 1)
    if (k - k.round()).abs().max() > 1e-3 or k.min() < -1e-3 or k.max() > levels - 1 + 1e-3:
        raise ValueError(f"x must hold quantized data: the {levels} levels of data_range={tuple(data_range)}")
    k, D = k.round(), x[0].numel()
    total = torch.zeros(len(x), dtype=torch.float64)
    for _ in range(n_dequant):
        u = torch.rand(x.shape, generator=generator, dtype=torch.float64)
        z = low + (high - low) * (k + u) / levels
        log_py = log_density(z).double() + D * math.log(high - low)  # the density of y = (k + u) / L
        total += -log_py / (D * math.log(2)) + math.log2(levels)
    return total / n_dequant
