"""Chapter 13's exercises (diffkit.exercises.ch13): each reference agrees with the diffkit function the chapter
uses (diffkit.fid, diffkit.manifold, diffkit.memorization), and passes its own checker."""

import math

import torch

from diffkit import fid, manifold, memorization
from diffkit.exercises import ch13
from diffkit.exercises._checking import run_check

F64 = torch.float64
EXERCISES = {e.name: e for e in ch13.EXERCISES}


def test_references_pass_their_checkers():
    for name, exercise in EXERCISES.items():
        assert run_check(exercise, getattr(ch13, name)).passed, name


def test_frechet_diag_is_diffkits_frechet_distance_for_diagonal_covariances():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(2, 5, generator=g, dtype=F64)
    var1, var2 = torch.rand(2, 5, generator=g, dtype=F64) + 0.1
    want = fid.frechet_distance(mu1, torch.diag(var1), mu2, torch.diag(var2))
    torch.testing.assert_close(ch13.frechet_diag(mu1[None], var1[None], mu2[None], var2[None])[0], want)


def test_knn_radius_is_manifold_knn_radii():
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    for k in (1, 3, 7):
        torch.testing.assert_close(ch13.knn_radius(x, k), manifold.knn_radii(x, k))


def test_dequantized_bits_is_memorizations_bound_for_one_draw():
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (6, 10), generator=g).double() / 127.5 - 1
    centres = torch.rand(20, 10, generator=g, dtype=F64) * 2 - 1
    seen = []

    def log_density(z):
        seen.append(z)
        return memorization.kernel_log_density(z, centres, 0.3)

    got = memorization.dequantized_bits_per_dim_of(log_density, x, generator=torch.Generator().manual_seed(3))
    want = ch13.dequantized_bits(memorization.kernel_log_density(seen[0], centres, 0.3), 10, 256, 2.0)
    torch.testing.assert_close(got, want)
    assert abs(ch13.dequantized_bits(torch.tensor([-10 * math.log(2.0)]), 10, 256, 2.0).item() - 8.0) < 1e-12
