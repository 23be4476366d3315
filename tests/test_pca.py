"""diffkit.pca: explained variance against the covariance's eigenvalues, and its two limits."""

import pytest
import torch

from diffkit import pca

F64 = torch.float64


def test_explained_variance_is_the_cumulative_share_of_the_covariance_eigenvalues():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 7, generator=g, dtype=F64) @ torch.randn(7, 7, generator=g, dtype=F64) - 4.0
    eig = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)  # an independent route, largest first
    torch.testing.assert_close(pca.explained_variance(x), eig.cumsum(0) / eig.sum())


def test_noise_is_flat_and_a_subspace_is_full_at_its_dimension():
    g = torch.Generator().manual_seed(1)
    noise = pca.explained_variance(torch.randn(20_000, 16, generator=g, dtype=F64))
    k = torch.arange(1, 17, dtype=F64)
    # isotropic: every direction holds 1/16, up to the spread of sample eigenvalues, (1 +- sqrt(D/N))^2
    # (Marchenko-Pastur), which moves a cumulative share by less than 2 sqrt(D/N)
    assert (noise - k / 16).abs().max() < 2 * (16 / 20_000) ** 0.5
    plane = torch.randn(300, 3, generator=g, dtype=F64) @ torch.randn(3, 16, generator=g, dtype=F64) + 1.0
    share = pca.explained_variance(plane)
    assert share[1] < 1 - 1e-6 and torch.allclose(share[2:], torch.ones(14, dtype=F64))


def test_bad_input():
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        pca.explained_variance(torch.zeros(5))
    with pytest.raises(ValueError, match="at least 2 points"):
        pca.explained_variance(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="all points are the same"):
        pca.explained_variance(torch.ones(4, 3))
