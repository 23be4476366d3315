r"""Fréchet distance between Gaussian fits of two feature sets (FID; Heusel et al., 2017; chapter 13).

.. math:: d^2 = \lVert\mu_1 - \mu_2\rVert^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
          - 2\operatorname{tr}\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}

The trace term is computed from the eigenvalues of the symmetric positive semi-definite matrix
:math:`\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}` (clipped at 0), which is numerically stable where the usual
``scipy.linalg.sqrtm(Σ1 Σ2)`` of a non-symmetric product returns complex noise or NaN for near-singular
covariances.  The course's FID uses the features of a small MNIST classifier it trains itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_finite, check_tensor

__all__ = ["gaussian_stats", "frechet_distance", "frechet_distance_from_features"]


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    check_tensor("features", features, ndim=2)
    check_finite("features", features)
    if features.shape[0] < 2:
        raise ValueError(f"features must hold at least 2 rows, got {features.shape[0]}")
    f = features.double()
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(m: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(0.5 * (m + m.T))
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    """Squared Fréchet distance between N(mu1, cov1) and N(mu2, cov2) (float64 scalar, >= 0)."""
    for name, mu, cov in (("1", mu1, cov1), ("2", mu2, cov2)):
        check_tensor(f"mu{name}", mu, ndim=1)
        check_tensor(f"cov{name}", cov, ndim=2)
        if cov.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"cov{name} must have shape ({mu.shape[0]}, {mu.shape[0]}), got {tuple(cov.shape)}")
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must have the same dimension, got {mu1.shape[0]} and {mu2.shape[0]}")
    mu1, cov1, mu2, cov2 = (check_finite(n, v).double() for n, v in
                            (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)))
    for name, cov in (("cov1", cov1), ("cov2", cov2)):
        scale = cov.abs().max().clamp_min(1e-300)
        if not torch.allclose(cov, cov.T, rtol=1e-6, atol=1e-9 * scale):
            raise ValueError(f"{name} must be a symmetric covariance matrix (e.g. from gaussian_stats)")
        lowest = torch.linalg.eigvalsh(cov).min()
        if lowest < -1e-6 * scale:
            raise ValueError(f"{name} must be positive semi-definite (a covariance), but has an eigenvalue "
                             f"{lowest.item():.3g}: compute it with gaussian_stats(features)")
    s1 = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh(s1 @ cov2 @ s1).clamp_min(0).sqrt().sum()
    d2 = ((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross
    return d2.clamp_min(0)


def frechet_distance_from_features(f1: Tensor, f2: Tensor) -> Tensor:
    """FID-style distance between two feature sets (N1, D) and (N2, D)."""
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))
