r"""FID at a finite sample size: its upward bias, measured over many draws and predicted (chapter 13).

FID plugs the sample means and covariances of two feature sets into the Fréchet distance of
:mod:`diffkit.fid`.  Even for two sets drawn from the *same* distribution it is positive, and its expectation
falls like :math:`1/N`.  For two independent samples of sizes :math:`n_a, n_b` of one Gaussian
:math:`\mathcal N(\mu, \Sigma)`, with :math:`\lambda_i` the eigenvalues of :math:`\Sigma`, to leading order

.. math::
    \mathbb E[\mathrm{FID}] \approx \operatorname{tr}\Sigma\,\Big(\frac{1}{n_a} + \frac{1}{n_b}\Big)
    + \frac12\Big(\frac{1}{n_a - 1} + \frac{1}{n_b - 1}\Big)
      \Big[\sum_{i,j}\frac{\lambda_i\lambda_j}{\lambda_i + \lambda_j} + \frac{\operatorname{tr}\Sigma}{2}\Big] :

the first term is the mean part :math:`\mathbb E\lVert\hat\mu_a - \hat\mu_b\rVert^2` (exact), the second the
covariance part, from the second-order expansion of the Bures distance,
:math:`\tfrac12\sum_{ij}\Delta_{ij}^2/(\lambda_i + \lambda_j)` for :math:`\Delta = \hat\Sigma_a - \hat\Sigma_b` in
the eigenbasis of :math:`\Sigma`, and the Wishart variances
:math:`\operatorname{Var}\hat\Sigma_{ij} = (\lambda_i\lambda_j + \delta_{ij}\lambda_i^2)/(n - 1)`.
Chong & Forsyth (2020) use the same :math:`1/N` law to extrapolate FID to :math:`N = \infty`
(:func:`fid_infinity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_finite, check_positive_int, check_tensor
from .fid import frechet_distance, gaussian_stats

__all__ = ["expected_fid_same_gaussian", "FidCurve", "fid_by_size", "fid_infinity"]


def expected_fid_same_gaussian(cov: Tensor, n_a: int, n_b: int | None = None) -> float:
    """Leading-order expected FID between two independent samples (sizes ``n_a`` and ``n_b``, default ``n_a``)
    of one Gaussian with covariance ``cov`` (D, D): the formula of the module docstring (chapter 13)."""
    check_tensor("cov", cov, ndim=2)
    check_finite("cov", cov)
    if cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square (D, D) covariance, got shape {tuple(cov.shape)}")
    n_a = check_positive_int("n_a", n_a, minimum=2)
    n_b = n_a if n_b is None else check_positive_int("n_b", n_b, minimum=2)
    lam = torch.linalg.eigvalsh(0.5 * (cov + cov.T).double()).clamp_min(0)
    total = lam.sum()
    pair_sum = lam[:, None] + lam[None, :]
    harmonic = torch.where(pair_sum > 0, lam[:, None] * lam[None, :] / pair_sum.clamp_min(1e-300), 0.0)
    mean_part = total * (1 / n_a + 1 / n_b)
    cov_part = 0.5 * (1 / (n_a - 1) + 1 / (n_b - 1)) * (harmonic.sum() + total / 2)
    return float(mean_part + cov_part)


@dataclass(frozen=True)
class FidCurve:
    """FID at several sample sizes, ``draws`` independent subsets at each: ``values`` is (len(sizes), draws)."""

    sizes: tuple[int, ...]
    values: Tensor

    @property
    def mean(self) -> Tensor:
        return self.values.mean(1)

    @property
    def sd(self) -> Tensor:
        return self.values.std(1)

    @property
    def se(self) -> Tensor:
        return self.sd / self.values.shape[1] ** 0.5


def fid_by_size(features_a: Tensor, features_b: Tensor, sizes: Sequence[int], *, draws: int = 30,
                generator: torch.Generator | None = None) -> FidCurve:
    """FID between ``n`` rows of ``features_a`` and ``n`` rows of ``features_b``, each drawn without replacement
    (a fresh subset of each for every draw), for every ``n`` in ``sizes`` (chapter 13).  Subsets of a finite pool
    overlap when ``n`` nears its size, so the spread is then smaller than over truly fresh sets; the mean is not
    affected."""
    check_tensor("features_a", features_a, ndim=2)
    check_tensor("features_b", features_b, ndim=2)
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"features_a and features_b must have the same dimension, got {features_a.shape[1]} "
                         f"and {features_b.shape[1]}")
    check_positive_int("draws", draws, minimum=2)
    sizes = tuple(sizes)
    if not sizes:
        raise ValueError("sizes must hold at least one sample size")
    pool = min(len(features_a), len(features_b))
    for n in sizes:
        check_positive_int("sizes[...]", n, minimum=2)
        if n > pool:
            raise ValueError(f"sizes must be <= {pool} (the smaller feature set), got {n}")
    values = torch.zeros(len(sizes), draws, dtype=torch.float64)
    for i, n in enumerate(sizes):
        for j in range(draws):
            a = features_a[torch.randperm(len(features_a), generator=generator)[:n]]
            b = features_b[torch.randperm(len(features_b), generator=generator)[:n]]
            values[i, j] = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    return FidCurve(sizes, values)


def fid_infinity(sizes: Sequence[int], fids: Tensor, weights: Tensor | None = None) -> tuple[float, float]:
    r"""Fit :math:`\mathrm{FID}_N = \mathrm{FID}_\infty + b/N` by (weighted) least squares in :math:`1/N` and
    return :math:`(\mathrm{FID}_\infty, b)` (Chong & Forsyth, 2020; chapter 13).  ``weights`` (e.g.
    :math:`1/\mathrm{se}^2`) default to equal."""
    sizes_t = torch.as_tensor(list(sizes), dtype=torch.float64)
    fids = torch.as_tensor(fids, dtype=torch.float64)
    if fids.shape != sizes_t.shape or len(sizes_t) < 2:
        raise ValueError(f"fids must hold one value per size (at least 2 sizes), got {tuple(fids.shape)} for "
                         f"{len(sizes_t)} sizes")
    if (sizes_t <= 0).any():
        raise ValueError("sizes must be positive")
    w = torch.ones_like(fids) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != fids.shape or (w <= 0).any():
        raise ValueError("weights must be positive, one per size")
    design = torch.stack([torch.ones_like(sizes_t), 1 / sizes_t], 1) * w.sqrt()[:, None]
    coef = torch.linalg.lstsq(design, (fids * w.sqrt())[:, None]).solution[:, 0]
    return float(coef[0]), float(coef[1])
