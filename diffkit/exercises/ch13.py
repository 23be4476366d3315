"""Chapter 13's exercises: evaluation — the Fréchet distance of diagonal Gaussians, the k-NN radius behind
precision and recall, and bits per dimension from a dequantized density."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, randn, uniform


def frechet_diag(mu1: Tensor, var1: Tensor, mu2: Tensor, var2: Tensor) -> Tensor:
    sd_gap = var1.sqrt() - var2.sqrt()  # diagonal covariances commute: the trace term splits per dimension
    return ((mu1 - mu2) ** 2 + sd_gap**2).sum(-1)


def _diagnose_frechet_diag(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(131)
    cases = [(randn(g, 4, 3), uniform(g, 0.2, 3.0, 4, 3), randn(g, 4, 3), uniform(g, 0.2, 3.0, 4, 3))
             for _ in range(4)]
    return compare(fn, frechet_diag, cases, {
        "variances where standard deviations belong: the covariance part compares the square roots of the "
        "variances": lambda m1, v1, m2, v2: ((m1 - m2) ** 2 + (v1 - v2) ** 2).sum(-1),
        "the means are missing: two Gaussians with different centres are at a positive distance":
            lambda m1, v1, m2, v2: ((v1.sqrt() - v2.sqrt()) ** 2).sum(-1),
        "the covariance part is missing: two Gaussians with one mean but different widths are at a positive "
        "distance": lambda m1, v1, m2, v2: ((m1 - m2) ** 2).sum(-1),
        "the cross term has the wrong sign: the distance of a Gaussian to itself must be 0":
            lambda m1, v1, m2, v2: ((m1 - m2) ** 2 + v1 + v2 + 2 * (v1 * v2).sqrt()).sum(-1),
        "the gap between the standard deviations is not squared":
            lambda m1, v1, m2, v2: ((m1 - m2) ** 2 + (v1.sqrt() - v2.sqrt()).abs()).sum(-1),
        "that is the Fréchet distance itself, not its square (FID is the squared distance)":
            lambda m1, v1, m2, v2: ((m1 - m2) ** 2 + (v1.sqrt() - v2.sqrt()) ** 2).sum(-1).sqrt(),
    })


def knn_radius(x: Tensor, k: int) -> Tensor:
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))  # a point is not its own neighbour
    return d.kthvalue(k, dim=1).values


def _with_self(x: Tensor, k: int) -> Tensor:
    return torch.cdist(x, x).kthvalue(k, dim=1).values


def _diagnose_knn_radius(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(132)
    cases = [(randn(g, 12, 3), k) for k in (1, 2, 3, 5)]
    return compare(fn, knn_radius, cases, {
        "each point counts as its own nearest neighbour (at distance 0): the radius must come from the other "
        "points only": _with_self,
        "one neighbour too far: the radius is the distance to the k-th nearest other point, not the (k + 1)-th":
            lambda x, k: knn_radius(x, k + 1),
        "squared distances: the radius is compared with plain Euclidean distances":
            lambda x, k: knn_radius(x, k) ** 2,
        "that is the distance to the farthest of the points, not to the k-th nearest":
            lambda x, k: torch.cdist(x, x).max(1).values,
    })


def dequantized_bits(log_pz: Tensor, dim: int, levels: int, width: float) -> Tensor:
    import math

    log_py = log_pz + dim * math.log(width)  # change of variables from z to y = (k + u) / levels
    return -log_py / (dim * math.log(2)) + math.log2(levels)


def _diagnose_dequantized_bits(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(133)
    cases = [(uniform(g, -900.0, 900.0, 5), dim, levels, width)
             for dim, levels, width in [(784, 256, 2.0), (64, 16, 2.0), (10, 256, 4.0), (3, 8, 0.5)]]
    return compare(fn, dequantized_bits, cases, {
        "the change of variables is missing: log p(z) is a density on the model's scale, and the dequantized "
        "y = (k + u) / levels lives on [0, 1); the two differ by the Jacobian of z = low + width * y":
            lambda lp, d, L, w: -lp / (d * math.log(2)) + math.log2(L),
        "the Jacobian has the wrong sign: stretching [0, 1) to a range of length width > 1 lowers the density "
        "of z, so the density of y is higher": lambda lp, d, L, w: -(lp - d * math.log(w)) / (d * math.log(2))
        + math.log2(L),
        "nats, not bits: divide by ln 2 as well": lambda lp, d, L, w: -(lp + d * math.log(w)) / d + math.log2(L),
        "the bin width is missing: a density on [0, 1)^D becomes the probability of one of levels^D bins by "
        "the width of a bin in each dimension": lambda lp, d, L, w: -(lp + d * math.log(w)) / (d * math.log(2)),
        "per image, not per dimension": lambda lp, d, L, w: -(lp + d * math.log(w)) / math.log(2)
        + d * math.log2(L),
    })


EXERCISES = [
    Exercise("frechet_diag", 13, "the squared Fréchet distance between Gaussians with diagonal covariances, from "
             "their means mu1, mu2 and variances var1, var2 (B, D); one number per row (B,)", frechet_diag,
             _diagnose_frechet_diag, (
                 "Diagonal covariances commute, so the matrix square root in the trace term acts on each diagonal "
                 "entry on its own.",
                 "Per dimension the covariance part is var1 + var2 - 2 sqrt(var1 var2): complete the square. Then "
                 "add the squared gap of the means and sum over dimensions.",
             )),
    Exercise("knn_radius", 13, "the radius r_k of each of the points x (N, D): the distance to its k-th nearest "
             "neighbour among the other points (N,)", knn_radius, _diagnose_knn_radius, (
                 "torch.cdist gives every pairwise distance. What is the smallest entry of each row, and should it "
                 "count?",
                 "Make each point's distance to itself impossible to pick (an infinite entry on the diagonal), then "
                 "take the k-th smallest value of each row (torch.kthvalue).",
             )),
    Exercise("dequantized_bits", 13, "bits per dimension from log_pz (B,), the log-density in nats of a "
             "dequantized image z on the model's scale, the number of dimensions dim, the number of levels and "
             "the width (high - low) of the data range", dequantized_bits, _diagnose_dequantized_bits, (
                 "Three conversions: from the density of z to the density of y = (z - low) / width on [0, 1)^D, "
                 "from a density on [0, 1)^D to the probability mass of one bin of side 1 / levels, and from nats "
                 "to bits per dimension.",
                 "z = low + width * y multiplies each coordinate by width, so p_Y(y) = p_Z(z) width^dim; a bin "
                 "holds about p_Y / levels^dim; then divide minus its log by dim ln 2.",
             )),
]
