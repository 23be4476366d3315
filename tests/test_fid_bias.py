"""diffkit.fid_bias: the leading-order expected FID of two same-distribution samples, FID by sample size, and the
1/N extrapolation (chapter 13)."""

import pytest
import torch

from diffkit import fid, fid_bias, stats

F64 = torch.float64


def _gaussian(D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lam = torch.logspace(0, -1.5, D, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=F64))
    return q @ torch.diag(lam) @ q.T, g


@pytest.mark.parametrize("n_a,n_b", [(300, 300), (200, 600)])
def test_expected_fid_agrees_with_monte_carlo_in_standard_errors(n_a, n_b):
    cov, g = _gaussian()
    chol = torch.linalg.cholesky(cov)
    draws = torch.stack([fid.frechet_distance_from_features(torch.randn(n_a, 6, generator=g, dtype=F64) @ chol.T,
                                                            torch.randn(n_b, 6, generator=g, dtype=F64) @ chol.T)
                         for _ in range(300)])
    mean, se = stats.mean_se(draws)
    want = fid_bias.expected_fid_same_gaussian(cov, n_a, n_b)
    stats.check_close(mean, want, se, name="E[FID]")
    # the plausible slips are far outside: the mean part alone, or one sample against the exact law (half)
    assert abs(mean - float(torch.trace(cov)) * (1 / n_a + 1 / n_b)) > 10 * se
    assert abs(mean - want / 2) > 10 * se


def test_expected_fid_of_an_isotropic_gaussian_has_the_closed_form():
    D, n = 10, 100
    got = fid_bias.expected_fid_same_gaussian(torch.eye(D, dtype=F64), n)
    assert got == pytest.approx(2 * D / n + (D * D / 2 + D / 2) / (n - 1))


def test_expected_fid_is_rotation_invariant_and_scales_with_cov():
    cov, _ = _gaussian()
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(3), dtype=F64))
    base = fid_bias.expected_fid_same_gaussian(cov, 50)
    assert fid_bias.expected_fid_same_gaussian(q @ cov @ q.T, 50) == pytest.approx(base)
    assert fid_bias.expected_fid_same_gaussian(3 * cov, 50) == pytest.approx(3 * base)


def test_fid_by_size_matches_fid_on_the_subsets_it_draws():
    a = torch.randn(100, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    b = torch.randn(80, 4, generator=torch.Generator().manual_seed(2), dtype=F64) + 0.5
    curve = fid_bias.fid_by_size(a, b, [20, 80], draws=3, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    ia, ib = torch.randperm(100, generator=g)[:20], torch.randperm(80, generator=g)[:20]
    assert curve.values[0, 0] == pytest.approx(fid.frechet_distance_from_features(a[ia], b[ib]).item())
    assert curve.values.shape == (2, 3) and len(set(curve.values[0].tolist())) == 3  # fresh subsets
    torch.testing.assert_close(curve.mean, curve.values.mean(1))


def test_fid_infinity_recovers_a_planted_line_and_the_bias_shrinks_like_one_over_n():
    sizes = [50, 100, 200, 400]
    fids = torch.tensor([3.0 + 500 / n for n in sizes], dtype=F64)
    inf, slope = fid_bias.fid_infinity(sizes, fids)
    assert inf == pytest.approx(3.0) and slope == pytest.approx(500.0)
    cov, _ = _gaussian()
    assert fid_bias.expected_fid_same_gaussian(cov, 400) == pytest.approx(
        fid_bias.expected_fid_same_gaussian(cov, 100) / 4, rel=0.02)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="n_a"):
        fid_bias.expected_fid_same_gaussian(torch.eye(3), 1)
    with pytest.raises(ValueError, match="cov"):
        fid_bias.expected_fid_same_gaussian(torch.ones(3, 2), 10)
    with pytest.raises(ValueError, match="sizes"):
        fid_bias.fid_by_size(torch.randn(10, 2), torch.randn(10, 2), [20])
    with pytest.raises(ValueError, match="same dimension"):
        fid_bias.fid_by_size(torch.randn(10, 2), torch.randn(10, 3), [5])
    with pytest.raises(ValueError, match="fids"):
        fid_bias.fid_infinity([10, 20], torch.tensor([1.0]))
