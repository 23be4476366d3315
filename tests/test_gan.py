"""diffkit.gan (chapter 1): closed forms against exact answers, the bilinear game's rates, the losses' gradients,
and a GAN that learns what a GAN can learn in seconds."""

import math

import pytest
import torch

from diffkit import data, gan

LOG4 = math.log(4.0)


def _grid(lo=-8.0, hi=9.0, n=170_001):
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    return x, (hi - lo) / (n - 1)


def _normal_pdf(x, mean, std):
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


# --- the optimal discriminator and the Jensen–Shannon divergence ------------------------------------------------
@pytest.mark.parametrize("shift", [0.0, 0.25, 0.5, 1.0, 2.0])
def test_optimal_discriminator_of_two_uniforms_gives_the_closed_form_js(shift):
    """p = U[0, 1], q = U[a, 1 + a]: on the overlap D* = 1/2, elsewhere 1 or 0, so V(D*) = -2 (1 - a) log 2 and
    JS = min(a, 1) log 2 exactly."""
    n = 4000  # cells of width 1/n: both supports are unions of whole cells
    x = (torch.arange(-n, 4 * n, dtype=torch.float64) + 0.5) / n
    p = ((x > 0) & (x < 1)).double()
    q = ((x > shift) & (x < 1 + shift)).double()
    d_star = gan.optimal_discriminator(p, q)
    js = min(shift, 1.0) * math.log(2.0)
    assert gan.js_divergence(p, q, dx=1 / n).item() == pytest.approx(js, abs=1e-12)
    assert gan.value_function(p, q, d_star, dx=1 / n).item() == pytest.approx(2 * js - LOG4, abs=1e-12)


def test_optimal_discriminator_of_two_gaussians_maximises_the_value_at_two_js_minus_log4():
    x, dx = _grid()
    p, q = _normal_pdf(x, 0.0, 0.7), _normal_pdf(x, 1.5, 1.0)  # p_g has the heavier tails
    d_star = gan.optimal_discriminator(p, q)
    # JS from its definition, independently: the KLs to the mixture, by the same quadrature
    m = (p + q) / 2
    js = 0.5 * ((p * (p / m).log()).sum() + (q * (q / m).log()).sum()) * dx
    v_star = gan.value_function(p, q, d_star, dx=dx)
    assert v_star.item() == pytest.approx(2 * js.item() - LOG4, abs=1e-10)
    assert gan.js_divergence(p, q, dx=dx).item() == pytest.approx(js.item(), abs=1e-12)
    assert 0 < js.item() < math.log(2)
    for bump in (0.05, -0.05):  # any other discriminator scores lower
        d = (d_star + bump * torch.exp(-(x - 0.7) ** 2)).clamp(1e-9, 1 - 1e-9)
        assert gan.value_function(p, q, d, dx=dx).item() < v_star.item() - 1e-5
    same = gan.optimal_discriminator(p, p)
    assert torch.allclose(same, torch.full_like(same, 0.5))
    assert gan.value_function(p, p, same, dx=dx).item() == pytest.approx(-LOG4, abs=1e-8)


def _bend_setup():
    x, dx = _grid(-10.0, 10.0, 20_001)
    p = 0.5 * _normal_pdf(x, -2.0, 0.5) + 0.5 * _normal_pdf(x, 2.0, 0.5)
    q = _normal_pdf(x, 0.0, 1.5)  # p_g has the heavier tails
    return x, dx, p, q, gan.optimal_discriminator(p, q)


def test_bend_gaps_of_the_optimal_discriminator_match_the_second_order_drop():
    x, dx, p, q, d_star = _bend_setup()
    centres, sizes = torch.arange(-10.0, 11.0), [-0.1, -0.01, 0.01, 0.1]
    gaps, predicted = gan.bend_gaps(p, q, d_star, x, dx, centres, sizes)
    assert gaps.shape == predicted.shape == (21, 4) and gaps.dtype == torch.float64
    felt = predicted[:, 1] > 5e-14
    assert felt.sum() >= 11 and bool(felt[10])  # at least |c| <= 5; c = 0 is centres[10]
    ratio = gaps[felt] / predicted[felt]
    assert (gaps[felt] > 0).all()
    assert ((ratio[:, 1:3] - 1).abs() < 2e-3).all()  # delta = 0.01: the second-order term, to 0.2%
    assert ((ratio - 1).abs() < 0.03).all()  # delta = 0.1: third-order terms of a few percent
    # the prediction itself, independently: (delta^2 / 2) * integral of p q / (p + q) bump^2 at c = 1, delta = 0.1
    want = 0.5 * 0.01 * (p * q / (p + q) * torch.exp(-2 * (x - 1.0) ** 2)).sum() * dx
    assert predicted[11, 3].item() == pytest.approx(want.item(), rel=1e-12)
    # the gap is the drop of value_function, computed directly
    bent = torch.sigmoid(torch.logit(d_star) - 0.1 * torch.exp(-((x + 3.0) / 2.0) ** 2))
    direct = gan.value_function(p, q, d_star, dx) - gan.value_function(p, q, bent, dx)
    g, _ = gan.bend_gaps(p, q, d_star, x, dx, [-3.0], [-0.1], width=2.0)
    assert g[0, 0].item() == pytest.approx(direct.item(), rel=1e-12)


@pytest.mark.parametrize("wrong", ["half_in_the_tails", "logit_shift_in_the_tails", "global_logit_shift"])
def test_bend_gaps_turn_negative_for_a_discriminator_that_is_not_the_maximiser(wrong):
    x, dx, p, q, d_star = _bend_setup()
    tails = x.abs() > 3
    d = {"half_in_the_tails": torch.where(tails, torch.full_like(d_star, 0.5), d_star),
         "logit_shift_in_the_tails": torch.where(tails, torch.sigmoid(torch.logit(d_star) + 0.3), d_star),
         "global_logit_shift": torch.sigmoid(torch.logit(d_star) + 0.05)}[wrong]
    gaps, predicted = gan.bend_gaps(p, q, d, x, dx, torch.arange(-10.0, 11.0), [-0.01, 0.01])
    felt = predicted[:, 0] > 5e-14
    assert (gaps[felt] < 0).any()  # one sign of the bend raises V: d is not the maximum


def test_js_divergence_of_probability_vectors():
    p = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    q = torch.tensor([0.0, 0.0, 0.25, 0.75], dtype=torch.float64)
    assert gan.js_divergence(p, q).item() == pytest.approx(math.log(2), abs=1e-14)  # disjoint supports: the maximum
    assert gan.js_divergence(p, p).item() == pytest.approx(0.0, abs=1e-14)
    assert gan.optimal_discriminator(p, q).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert gan.optimal_discriminator(torch.zeros(2), torch.zeros(2)).tolist() == [0.5, 0.5]


# --- the losses ----------------------------------------------------------------------------------------------------
def test_losses_equal_their_definitions_and_stay_finite_for_confident_discriminators():
    real = torch.tensor([2.0, -1.0, 0.3], dtype=torch.float64)
    fake = torch.tensor([-3.0, 0.5, 1.0], dtype=torch.float64)
    dr, df = torch.sigmoid(real), torch.sigmoid(fake)
    want = -(dr.log().mean() + (1 - df).log().mean())
    assert torch.allclose(gan.discriminator_loss(real, fake), want, atol=1e-14)
    assert torch.allclose(gan.generator_loss(fake, "saturating"), (1 - df).log().mean(), atol=1e-14)
    assert torch.allclose(gan.generator_loss(fake, "non_saturating"), -df.log().mean(), atol=1e-14)
    huge = torch.tensor([-200.0, 200.0])  # float32: sigmoid(-200) is exactly 0, log of it is -inf
    assert torch.isfinite(gan.discriminator_loss(huge, huge)) and torch.isfinite(gan.generator_loss(huge))
    assert gan.generator_loss(torch.tensor([-200.0])).item() == pytest.approx(200.0)


def test_non_saturating_gradient_survives_where_the_saturating_one_vanishes():
    logits = torch.linspace(-12, 4, 33, dtype=torch.float64, requires_grad=True)
    grads = {}
    for kind in gan.GENERATOR_LOSSES:
        (g,) = torch.autograd.grad(gan.generator_loss(logits, kind) * logits.numel(), logits)
        grads[kind] = g
    d = torch.sigmoid(logits.detach())
    assert torch.allclose(grads["saturating"], -d, atol=1e-14)  # d/dl log(1 - sigmoid(l)) = -sigmoid(l)
    assert torch.allclose(grads["non_saturating"], -(1 - d), atol=1e-14)  # d/dl -log sigmoid(l)
    assert (grads["saturating"] < 0).all() and (grads["non_saturating"] < 0).all()  # both push D(G(z)) up
    rejected = d < 0.01  # D confidently rejects the fakes
    assert rejected.sum() > 5
    ratio = grads["non_saturating"][rejected] / grads["saturating"][rejected]
    assert (ratio > 99).all() and ratio.max() > 1e5


# --- the bilinear game ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lr", [0.05, 0.2, 0.7])
def test_simultaneous_steps_grow_the_distance_by_exactly_sqrt_one_plus_lr_squared(lr):
    traj = gan.bilinear_game(1.0, 0.5, lr, 200, "simultaneous")
    norms = traj.norm(dim=1)
    assert torch.allclose(norms[1:] / norms[:-1], torch.full((200,), math.sqrt(1 + lr**2), dtype=torch.float64),
                          rtol=1e-13)
    m = gan.bilinear_update_matrix(lr, "simultaneous")
    assert torch.allclose(torch.linalg.eigvals(m).abs(), torch.full((2,), math.sqrt(1 + lr**2), dtype=torch.float64))
    assert torch.allclose(traj[1:], traj[:-1] @ m.T, atol=1e-12)


@pytest.mark.parametrize("lr", [0.05, 0.2, 0.7, 1.9])
def test_alternating_steps_cycle_on_the_invariant_ellipse(lr):
    traj = gan.bilinear_game(1.0, 0.5, lr, 500, "alternating")
    q = gan.bilinear_invariant(traj, lr)
    assert torch.allclose(q, q[0].expand_as(q), rtol=1e-11)
    m = gan.bilinear_update_matrix(lr, "alternating")
    assert torch.linalg.det(m).item() == pytest.approx(1.0, abs=1e-14)
    assert torch.allclose(torch.linalg.eigvals(m).abs(), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(traj[1:], traj[:-1] @ m.T, atol=1e-12)
    norms = traj.norm(dim=1)  # bounded away from 0 and from infinity: neither converges nor diverges
    assert norms.min() > 0.2 and norms.max() < 20
    # the invariant is not conserved by simultaneous steps
    sim = gan.bilinear_invariant(gan.bilinear_game(1.0, 0.5, lr, 10, "simultaneous"), lr)
    assert not torch.allclose(sim, sim[0].expand_as(sim), rtol=1e-3)


# --- training -------------------------------------------------------------------------------------------------------
def _gaussian_data(n, g):
    return torch.tensor([2.0, -1.0]) + 0.5 * torch.randn(n, 2, generator=g)


@pytest.mark.parametrize("updates", gan.UPDATES)
def test_a_gan_moves_its_samples_to_the_data_mean(updates):
    """The generator's mean circles around the data mean (the game's rotation), so average it over the last
    snapshots: it must have travelled from its start to the data mean."""
    config = gan.GANConfig(steps=1200, batch_size=128, hidden=32, depth=2, lr_g=5e-4, lr_d=5e-4, updates=updates,
                           snapshot_every=50, n_snapshot=2000)
    run = gan.train_gan(_gaussian_data, config)
    target = torch.tensor([2.0, -1.0])
    start = run.snapshots[0][1].mean(0)
    late = torch.stack([s.mean(0) for _, s in run.snapshots[-6:]]).mean(0)
    assert (start - target).norm() > 1.5  # it starts far away
    assert (late - target).norm() < 0.15, late
    assert run.steps == 1200 and len(run.d_loss) == len(run.d_fake) == 1200


def test_runs_are_reproducible_and_the_update_orders_differ():
    config = gan.GANConfig(steps=20, batch_size=32, hidden=16, depth=1, snapshot_every=10, n_snapshot=50)
    a, b = gan.train_gan(_gaussian_data, config), gan.train_gan(_gaussian_data, config)
    assert a.d_loss == b.d_loss and a.g_loss == b.g_loss
    assert [s for s, _ in a.snapshots] == [0, 10, 20] and torch.equal(a.snapshots[-1][1], b.snapshots[-1][1])
    sim = gan.train_gan(_gaussian_data, gan.GANConfig(**{**config.__dict__, "updates": "simultaneous"}))
    assert sim.d_loss[0] == a.d_loss[0] and sim.g_loss[0] != a.g_loss[0]  # same start, G sees another D
    tensor_data = _gaussian_data(500, torch.Generator().manual_seed(0))
    assert gan.train_gan(tensor_data, config).steps == 20


def test_a_time_budget_stops_training():
    run = gan.train_gan(_gaussian_data, gan.GANConfig(steps=10**7, batch_size=16, hidden=8, depth=1),
                        max_seconds=0.3)
    assert 0 < run.steps < 10**7 and run.seconds < 2.0


# --- mode coverage --------------------------------------------------------------------------------------------------
def test_mode_coverage_of_the_mixture_and_of_one_mode():
    noise = 0.05
    mixture = data.toy_2d_oracle("8gaussians", noise)
    x = data.toy_2d("8gaussians", 40_000, generator=0, noise=noise)
    full = gan.mode_coverage(x, mixture.means, 3 * noise)
    assert full.covered == 8 and full.n_modes == 8
    assert full.share_near == pytest.approx(1 - math.exp(-4.5), abs=0.003)  # P(|N(0, s^2 I_2)| < 3s)
    one = mixture.sample(1000, y=torch.full((1000,), 3), generator=torch.Generator().manual_seed(0))
    cov = gan.mode_coverage(one, mixture.means, 3 * noise)
    assert cov.covered == 1 and cov.counts[3] == sum(cov.counts) and "1 of 8 modes" in str(cov)
    between = gan.mode_coverage(torch.zeros(100, 2), mixture.means, 3 * noise)
    assert between.covered == 0 and between.share_near == 0.0


# --- bad input ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call,exc,words", [
    (lambda: gan.optimal_discriminator(torch.tensor([-0.1]), torch.tensor([1.0])), ValueError,
     "p_data must be a density"),
    (lambda: gan.optimal_discriminator(torch.ones(3), torch.ones(2)), ValueError, "same shape"),
    (lambda: gan.value_function(torch.ones(2), torch.ones(2), torch.tensor([2.0, 0.5])), ValueError,
     "pass sigmoid(logits)"),
    (lambda: gan.js_divergence(torch.ones(2), torch.ones(2), dx=0.0), ValueError, "dx must be > 0"),
    (lambda: gan.generator_loss(torch.zeros(3), "minimax"), ValueError, "kind must be one of"),
    (lambda: gan.bend_gaps(torch.ones(3), torch.ones(3), torch.full((3,), 0.5), torch.zeros(2), 0.1, [0.0], [0.1]),
     ValueError, "x and d must have the shape of p_data"),
    (lambda: gan.bend_gaps(torch.ones(3), torch.ones(3), torch.full((3,), 0.5), torch.zeros(3), 0.1, [], [0.1]),
     ValueError, "centres and sizes must each hold at least one value"),
    (lambda: gan.bend_gaps(torch.ones(3), torch.ones(3), torch.full((3,), 0.5), torch.zeros(3), 0.1, [0.0], [0.1],
                           width=0.0), ValueError, "width must be > 0"),
    (lambda: gan.GANConfig(steps=0), ValueError, "steps must be an integer >= 1"),
    (lambda: gan.GANConfig(steps=1, updates="sequential"), ValueError, "updates must be one of"),
    (lambda: gan.GANConfig(steps=1, loss="wasserstein"), ValueError, "loss must be one of"),
    (lambda: gan.GANConfig(steps=1, betas=(0.5, 1.0)), ValueError, "betas must be a pair"),
    (lambda: gan.train_gan([[0.0, 1.0]], gan.GANConfig(steps=1)), TypeError, "data must be an (N, D) tensor"),
    (lambda: gan.train_gan(lambda n, g: torch.zeros(n + 1, 2), gan.GANConfig(steps=1)), ValueError,
     "must return an (n, D) tensor"),
    (lambda: gan.train_gan(torch.zeros(4, 2), {"steps": 1}), TypeError, "config must be a diffkit.gan.GANConfig"),
    (lambda: gan.bilinear_game(1.0, 1.0, -0.1, 10), ValueError, "lr must be > 0"),
    (lambda: gan.bilinear_game(1.0, 1.0, 0.1, 10, "leapfrog"), ValueError, "updates must be one of"),
    (lambda: gan.bilinear_invariant(torch.zeros(4, 3), 0.1), ValueError, "xy must have shape (..., 2)"),
    (lambda: gan.mode_coverage(torch.zeros(4, 2), torch.zeros(8, 3), 0.1), ValueError, "same number of columns"),
    (lambda: gan.mode_coverage(torch.zeros(4, 2), torch.zeros(8, 2), 0.0), ValueError, "radius must be > 0"),
    (lambda: gan.Generator(latent_dim=2)(torch.zeros(4, 3)), ValueError, "z must have shape (B, 2)"),
    (lambda: gan.Discriminator(dim=2)(torch.zeros(4)), ValueError, "x must have 2 dimensions"),
])
def test_bad_input(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)

