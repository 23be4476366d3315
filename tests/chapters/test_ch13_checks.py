"""Chapter 13's checks, run at a fixed size against the planted bugs they guard against.

Each test writes the chapter's check as the notebook does, runs it on the correct formula (it must pass) and on
the plausible bug (it must fail), so that a check which a bug walks through is caught here and not only in a
quick-mode run of the notebook, whose smaller samples shrink every margin.
"""

import math

import pytest
import torch

from diffkit import (
    fid,
    fid_bias,
    grids,
    manifold,
    memorization,
    oracles,
    paths,
    samplers,
    stats,
)

F64 = torch.float64


# -- 1. eq-frechet against the cost of the optimal map, in standard errors -------------------------------------
def _two_gaussians():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(2, 5, generator=g, dtype=F64)
    b1, b2 = torch.randn(2, 5, 5, generator=g, dtype=F64)
    return g, mu1, b1 @ b1.T / 5 + 0.1 * torch.eye(5, dtype=F64), mu2, b2 @ b2.T / 5 + 0.1 * torch.eye(5, dtype=F64)


def _sqrt_psd(m):
    vals, vecs = torch.linalg.eigh(m)
    return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T


def _frechet(mu1, cov1, mu2, cov2):
    s1 = _sqrt_psd(cov1)
    return ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * _sqrt_psd(s1 @ cov2 @ s1).trace()


def _shortcut(mu1, cov1, mu2, cov2):  # sqrt of the trace for the trace of the sqrt
    return ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * (cov1 @ cov2).trace().sqrt()


def _no_two(mu1, cov1, mu2, cov2):  # the factor 2 on the cross term dropped
    s1 = _sqrt_psd(cov1)
    return ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - _sqrt_psd(s1 @ cov2 @ s1).trace()


def _no_sqrt(mu1, cov1, mu2, cov2):  # tr(S1 S2) without any square root
    return ((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * (cov1 @ cov2).trace()


def frechet_check(formula):
    g, mu1, cov1, mu2, cov2 = _two_gaussians()
    s1_inv = torch.linalg.inv(_sqrt_psd(cov1))
    a = s1_inv @ _sqrt_psd(_sqrt_psd(cov1) @ cov2 @ _sqrt_psd(cov1)) @ s1_inv
    torch.testing.assert_close(a @ cov1 @ a, cov2)
    x = mu1 + torch.randn(100_000, 5, generator=g, dtype=F64) @ torch.linalg.cholesky(cov1).T
    cost, se = stats.mean_se(((x - mu2 - (x - mu1) @ a) ** 2).sum(1))
    stats.check_close(cost, formula(mu1, cov1, mu2, cov2), se, name="eq-frechet")


def test_frechet_check_passes_on_the_formula_and_on_diffkit():
    frechet_check(_frechet)
    frechet_check(lambda *args: fid.frechet_distance(*args))


@pytest.mark.parametrize("bug", [_shortcut, _no_two, _no_sqrt])
def test_frechet_check_fails_on_planted_bugs(bug):
    with pytest.raises(AssertionError):
        frechet_check(bug)


# -- 2. eq-fid-bias against pairs of Gaussian sets -------------------------------------------------------------------
def bias_check(prediction):
    g = torch.Generator().manual_seed(1)
    lam = torch.logspace(0, -2, 16, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=F64))
    cov = q @ torch.diag(lam) @ q.T
    chol = torch.linalg.cholesky(cov)
    draws = torch.stack([fid.frechet_distance_from_features(torch.randn(200, 16, generator=g, dtype=F64) @ chol.T,
                                                            torch.randn(200, 16, generator=g, dtype=F64) @ chol.T)
                         for _ in range(300)])
    mean, se = stats.mean_se(draws)
    stats.check_close(mean, prediction(cov, lam), se, name="eq-fid-bias")


def test_bias_check_passes_on_eq_fid_bias():
    bias_check(lambda cov, lam: fid_bias.expected_fid_same_gaussian(cov, 200))


@pytest.mark.parametrize("bug", [
    lambda cov, lam: 2 * lam.sum().item() / 200,  # the mean part alone
    lambda cov, lam: fid_bias.expected_fid_same_gaussian(cov, 200) / 2,  # one set against the exact law
    lambda cov, lam: fid_bias.expected_fid_same_gaussian(cov, 200) - 2 * lam.sum().item() / 200,  # no mean part
])
def test_bias_check_fails_on_planted_bugs(bug):
    with pytest.raises(AssertionError):
        bias_check(bug)


# -- 3. density and coverage at their exact expectations; modes dropped cost recall, not precision --------------
def _radii_with_self(x, k):  # the bug: a point counted as its own nearest neighbour
    return torch.cdist(x, x).kthvalue(k, dim=1).values


def _density_coverage(real, fake, k, radii):
    inside = torch.cdist(fake, real) <= radii(real, k)[None, :]
    return [inside.double().sum().item() / (k * len(fake)), inside.any(0).double().mean().item()]


def density_coverage_check(radii):
    g, n, k = torch.Generator().manual_seed(2), 300, 5
    draws = torch.tensor([_density_coverage(torch.randn(n, 2, generator=g, dtype=F64),
                                            torch.randn(n, 2, generator=g, dtype=F64), k, radii)
                          for _ in range(60)], dtype=F64)
    mean, se = stats.mean_se(draws)
    exact = manifold.expected_density_coverage(n, n, k)
    stats.check_close(mean, torch.tensor([exact.density, exact.coverage], dtype=F64), se, name="D, C")


def test_density_coverage_check_passes_with_diffkit_and_fails_when_a_point_is_its_own_neighbour():
    density_coverage_check(manifold.knn_radii)
    with pytest.raises(AssertionError):
        density_coverage_check(_radii_with_self)


def mode_drop_check(precision_recall):
    mix, g = oracles.eight_gaussians(), torch.Generator().manual_seed(3)
    same, drop = [], []
    for _ in range(12):
        real, fake = mix.sample(800, generator=g), mix.sample(800, generator=g)
        kept = fake[torch.cdist(fake, mix.means).argmin(1) < 6]
        same.append(vars(precision_recall(real, fake)).values())
        drop.append(vars(precision_recall(real, kept)).values())
    (m_same, s_same), (m_drop, s_drop) = (stats.mean_se(torch.tensor([list(v) for v in r], dtype=F64))
                                          for r in (same, drop))
    stats.check_close(m_drop[0], m_same[0], s_drop[0].hypot(s_same[0]), name="precision kept")
    ratio = m_drop[1] / m_same[1]
    se = ratio * ((s_drop[1] / m_drop[1]) ** 2 + (s_same[1] / m_same[1]) ** 2).sqrt()
    stats.check_close(ratio, 0.75, se, name="recall kept")


def test_mode_drop_check_passes_and_fails_with_the_arguments_swapped():
    mode_drop_check(manifold.precision_recall)
    with pytest.raises(AssertionError):
        mode_drop_check(lambda real, fake: manifold.precision_recall(fake, real))


# -- 4. bits/dim of a uniform density: exactly log2(256) on [-1, 1]^D, one bit more on [-2, 2]^D ---------------
def uniform_bits_check(bits_fn, half_width=1.0):
    x = torch.randint(0, 256, (4, 1, 28, 28), generator=torch.Generator().manual_seed(4)).double() / 127.5 - 1

    def uniform(z):  # density (2 half_width)^-D on [-half_width, half_width]^D
        return torch.full((len(z),), -z[0].numel() * math.log(2.0 * half_width), dtype=F64)

    want = 8.0 + math.log2(half_width)
    torch.testing.assert_close(bits_fn(uniform, x), torch.full((4,), want, dtype=F64))


def test_uniform_bits_check_passes_and_fails_without_the_change_of_variables():
    uniform_bits_check(memorization.dequantized_bits_per_dim_of)
    uniform_bits_check(memorization.dequantized_bits_per_dim_of, 2.0)
    with pytest.raises(AssertionError):  # no D log(b - a): the notebook's check
        uniform_bits_check(lambda f, x: memorization.dequantized_bits_per_dim_of(f, x) - 1.0)


def test_bits_in_nats_pass_the_notebooks_check_but_not_the_wider_box():
    def in_nats(f, x):
        return (memorization.dequantized_bits_per_dim_of(f, x) - 8) * math.log(2) + 8

    uniform_bits_check(in_nats)  # on [-1, 1]^D the first term is 0 in any unit: this check cannot see it
    with pytest.raises(AssertionError):
        uniform_bits_check(in_nats, 2.0)


# -- 5. the ideal denoiser of a training set copies it; held-out points calibrate the threshold ------------------
def test_the_ideal_denoiser_copies_and_the_copy_share_catches_it():
    g = torch.Generator().manual_seed(5)
    train = torch.randn(300, 16, generator=g, dtype=F64)
    held = torch.randn(400, 16, generator=g, dtype=F64)
    path = paths.DiscretePath.from_schedule("linear", 1000)
    x_t = samplers.prior(path, (200, 16), generator=g, dtype=F64)
    copies = samplers.ddim(oracles.GaussianMixture.from_data(train).as_model(path, "x0"), x_t,
                           grids.ddpm_grid(20, 1000), path)
    fresh = torch.randn(200, 16, generator=g, dtype=F64)  # a model that generalises perfectly
    d_held = memorization.nearest_distances(held, train)
    assert memorization.copy_share(memorization.nearest_distances(copies, train), d_held)[0] > 0.95
    assert memorization.copy_share(memorization.nearest_distances(fresh, train), d_held)[0] < 0.05
