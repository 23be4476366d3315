"""diffkit.manifold: k-NN precision, recall, density and coverage (chapter 13), against exact answers."""

import pytest
import torch

from diffkit import manifold, oracles, stats

F64 = torch.float64


def test_knn_radii_excludes_the_point_itself_and_matches_a_loop():
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    r = manifold.knn_radii(x, 2)
    for i in [0, 7, 29]:
        d = sorted(float((x[i] - x[j]).norm()) for j in range(30) if j != i)
        assert r[i].item() == pytest.approx(d[1])
    line = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=F64)
    torch.testing.assert_close(manifold.knn_radii(line, 1), torch.tensor([1.0, 1.0, 2.0, 4.0], dtype=F64))


def test_a_set_against_itself_has_precision_recall_and_coverage_one():
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    pr, dc = manifold.precision_recall(x, x), manifold.density_coverage(x, x)
    assert pr.precision == 1.0 and pr.recall == 1.0 and dc.coverage == 1.0


def test_density_and_coverage_have_their_exact_expectations_for_one_distribution():
    g = torch.Generator().manual_seed(2)
    n, m, k = 150, 100, 5
    draws = torch.tensor([[v for v in vars(manifold.density_coverage(torch.randn(n, 2, generator=g, dtype=F64),
                                                                     torch.randn(m, 2, generator=g, dtype=F64),
                                                                     k)).values()] for _ in range(200)],
                         dtype=F64)
    mean, se = stats.mean_se(draws)
    want = manifold.expected_density_coverage(n, m, k)
    stats.check_close(mean, torch.tensor([want.density, want.coverage], dtype=F64), se, name="density, coverage")
    # counting the point itself as its first neighbour (radius of the (k-1)-th): density far from 1
    assert abs(mean[0] - (k - 1) / k) > 10 * se[0]


def test_dropping_modes_costs_recall_not_precision():
    mix = oracles.eight_gaussians()
    g = torch.Generator().manual_seed(3)
    real = mix.sample(2000, generator=g)
    kept = mix.sample(4000, generator=g)
    kept = kept[torch.cdist(kept, mix.means).argmin(1) < 6][:1500]  # six of the eight modes, same density
    pr = manifold.precision_recall(real, kept)
    assert pr.precision > 0.95 and abs(pr.recall - 0.75) < 0.05
    dc = manifold.density_coverage(real, kept)
    assert dc.density > 0.8 and abs(dc.coverage - 0.75) < 0.05
    swapped = manifold.precision_recall(kept, real)  # arguments swapped: the two numbers trade places
    assert swapped.recall > 0.95 and swapped.precision < 0.8


def test_samples_off_the_manifold_cost_precision_not_recall():
    mix = oracles.eight_gaussians()
    g = torch.Generator().manual_seed(4)
    real, good = mix.sample(1000, generator=g), mix.sample(1000, generator=g)
    noise = 8 * torch.rand(1000, 2, generator=g, dtype=F64) - 4
    pr = manifold.precision_recall(real, torch.cat([good, noise]))
    assert pr.precision < 0.65 and pr.recall > 0.9


def test_expected_coverage_is_one_minus_half_to_the_k_for_large_equal_sets():
    assert manifold.expected_density_coverage(10**6, 10**6, 5).coverage == pytest.approx(1 - 0.5**5, rel=1e-4)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="k must be smaller"):
        manifold.knn_radii(torch.randn(3, 2), 3)
    with pytest.raises(ValueError, match="same feature dimension"):
        manifold.precision_recall(torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(ValueError, match="real"):
        manifold.density_coverage(torch.randn(10), torch.randn(10, 3))
    with pytest.raises(ValueError, match="fake contains NaN"):
        manifold.precision_recall(torch.randn(10, 2), torch.full((10, 2), float("nan")))
