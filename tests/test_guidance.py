"""diffkit.guidance: Bayes' rule on the score holds exactly for the mixtures' classifier, classifier guidance with
exact models is classifier-free guidance, the tilt's rejection sampler agrees with an independent quadrature, and
every bad call gets a clear error (chapter 8)."""

import math
import re

import pytest
import torch

from diffkit import grids, guidance, oracles, paths, samplers, stats, training
from diffkit.targets import TARGETS

F64 = torch.float64
VP, DDPM, LIN = paths.VPPath(), paths.DiscretePath.from_schedule("linear", 1000), paths.LinearPath()


def two_class_mixture():
    """Three components, two classes: class 0 has two components, one of them near class 1's."""
    means = torch.tensor([[-2.0, 0.0], [0.5, 1.0], [1.5, -0.5]], dtype=F64)
    return oracles.GaussianMixture(means, stds=torch.tensor([0.5, 0.6, 0.7]),
                                   weights=torch.tensor([0.3, 0.2, 0.5]), labels=torch.tensor([0, 0, 1]))


MIX = two_class_mixture()


def points(n=64, seed=0, scale=2.5):
    return scale * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- the exact classifier and Bayes' rule on the score -------------------------------------------------------
@pytest.mark.parametrize("path", [VP, DDPM, LIN, paths.VEPath(0.01, 10.0)], ids=repr)
@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_bayes_rule_on_the_score_holds_to_rounding(path, t):
    x, clf = points(), guidance.MixtureClassifier(MIX, path)
    for c in range(2):
        y = torch.full((64,), c)
        lhs = MIX.score(x, t, path, y=y)
        rhs = MIX.score(x, t, path) + guidance.classifier_grad(clf, x, t, y)
        torch.testing.assert_close(lhs, rhs, rtol=1e-9, atol=1e-9)


def test_the_mixture_classifier_is_the_sum_of_the_responsibilities_of_each_class():
    x, t = points(), 0.4
    logits = guidance.MixtureClassifier(MIX, VP)(x, t)
    r = MIX.responsibilities(x, t, VP)  # (B, K), an independent route
    by_class = torch.stack([r[:, MIX.labels == c].sum(1) for c in range(2)], 1)
    torch.testing.assert_close(logits.exp(), by_class)
    torch.testing.assert_close(logits.logsumexp(1), torch.zeros(64, dtype=F64))


def test_a_clean_classifier_is_not_noise_aware():
    """The bug Bayes' rule guards against: p_0(y | x_t) in place of p_t(y | x_t)."""
    x, t, y = points(), 0.5, torch.zeros(64, dtype=torch.long)
    clean = guidance.MixtureClassifier(MIX, VP)
    wrong = MIX.score(x, t, VP) + guidance.classifier_grad(lambda z, s: clean(z, 0.0), x, t, y)
    assert (wrong - MIX.score(x, t, VP, y=y)).abs().max() > 0.1


def test_classifier_grad_works_inside_no_grad_and_on_a_float32_network():
    net = guidance.NoisyClassifier(num_classes=3, image_size=8, channels=(8, 16))
    x = torch.randn(5, 1, 8, 8, dtype=F64)
    with torch.no_grad():
        g = guidance.classifier_grad(net, x, 0.3, torch.tensor([0, 1, 2, 0, 1]))
    assert g.shape == x.shape and g.dtype == F64 and g.abs().sum() > 0


# --- classifier guidance = classifier-free guidance for exact models ------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
def test_classifier_guidance_with_exact_models_is_classifier_free_guidance(target, w):
    path, x, t = VP, points(32, seed=1), 0.35
    y = torch.tensor([0, 1] * 16)
    uncond = MIX.as_model(path, target)
    guided = guidance.ClassifierGuided(uncond, guidance.MixtureClassifier(MIX, path), path, w)
    cfg = samplers.Denoiser(uncond, path, target, y=y, guidance=w, null_label=uncond.null_label)
    tt = torch.full((32,), t, dtype=F64)
    torch.testing.assert_close(guided(x, tt, y), cfg.prediction(x, t))


def test_guidance_on_top_of_the_conditional_model_is_cfg_at_one_plus_w():
    """conditional=True: s(x|y) + w grad log p(y|x) = (1 + w) s(x|y) - w s(x), classifier-free guidance at 1 + w."""
    path, x, y, w = DDPM, points(16, seed=2), torch.tensor([0, 1] * 8), 2.0
    model = MIX.as_model(path, "v")
    guided = guidance.ClassifierGuided(model, guidance.MixtureClassifier(MIX, path), path, w, conditional=True)
    cfg = samplers.Denoiser(model, path, "v", y=y, guidance=1 + w, null_label=model.null_label)
    torch.testing.assert_close(guided(x, torch.full((16,), 0.4, dtype=F64), y), cfg.prediction(x, 0.4))


def test_scale_zero_returns_the_models_own_prediction():
    model = MIX.as_model(DDPM, "x0")
    guided = guidance.ClassifierGuided(model, guidance.MixtureClassifier(MIX, DDPM), DDPM, 0.0)
    x, t, y = points(8), torch.full((8,), 0.6, dtype=F64), torch.zeros(8, dtype=torch.long)
    torch.testing.assert_close(guided(x, t, y), model(x, t, torch.full_like(y, 2)))


def test_guided_sampling_from_the_unconditional_model_is_conditional_sampling():
    """At scale 1 the wrapper around the unconditional oracle drives DDIM exactly as the conditional oracle does."""
    path, ts = DDPM, grids.ddpm_grid(50, 1000)
    y = torch.tensor([0, 1] * 50)
    x = samplers.prior(path, (100, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    uncond = MIX.as_model(path, "eps")
    guided = guidance.ClassifierGuided(uncond, guidance.MixtureClassifier(MIX, path), path, 1.0)
    out_guided = samplers.ddim(guided, x, ts, path, y=y)
    out_cond = samplers.ddim(uncond, x, ts, path, y=y)
    torch.testing.assert_close(out_guided, out_cond, rtol=1e-6, atol=1e-6)


def test_the_wrapper_records_the_models_target_for_the_samplers():
    model = MIX.as_model(LIN, "velocity")
    guided = guidance.ClassifierGuided(model, guidance.MixtureClassifier(MIX, LIN), LIN, 2.0)
    assert samplers.resolve_target(guided, LIN) == "velocity"
    with pytest.raises(ValueError, match="disagrees with the model"):
        samplers.resolve_target(guided, LIN, "eps")


# --- the noise-aware classifier's loss and training -------------------------------------------------------------
def test_classifier_loss_is_the_cross_entropy_on_noised_inputs():
    clf = guidance.MixtureClassifier(MIX, VP)
    g = torch.Generator().manual_seed(4)
    x0, y = MIX.sample(16, generator=g, return_labels=True)
    t, eps = torch.rand(16, generator=g, dtype=F64), torch.randn(16, 2, generator=g, dtype=F64)
    x_t = VP.alpha(t)[:, None] * x0 + VP.sigma(t)[:, None] * eps
    by_hand = -clf(x_t, t)[torch.arange(16), y].mean()
    torch.testing.assert_close(guidance.classifier_loss(clf, x0, y, VP, t=t, eps=eps), by_hand)


def test_the_exact_posterior_minimises_the_classifier_loss():
    """Cross-entropy is a proper scoring rule: sharper or flatter versions of the exact p_t(y|x) lose."""
    clf = guidance.MixtureClassifier(MIX, VP)
    g = torch.Generator().manual_seed(5)
    x0, y = MIX.sample(20_000, generator=g, return_labels=True)
    t, eps = torch.rand(20_000, generator=g, dtype=F64), torch.randn(20_000, 2, generator=g, dtype=F64)
    exact = guidance.classifier_loss(clf, x0, y, VP, t=t, eps=eps, reduce=False)
    for temperature in (0.7, 1.4):
        other = guidance.classifier_loss(lambda x, s: clf(x, s) / temperature, x0, y, VP, t=t, eps=eps,
                                         reduce=False)
        gap, se = stats.mean_se(other - exact)
        assert gap > 5 * se


def test_a_noisy_classifier_depends_on_time_and_records_its_arguments():
    torch.manual_seed(0)
    net = guidance.NoisyClassifier(num_classes=4, image_size=8, channels=(8, 16), time_dim=32)
    assert type(net)(**net.config).config == net.config
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        a, b = net(x, torch.full((3,), 0.1)), net(x, torch.full((3,), 0.9))
    assert a.shape == (3, 4) and not torch.allclose(a, b)


def test_cached_classifier_learns_and_is_loaded_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path))
    g = torch.Generator().manual_seed(6)
    y = torch.randint(0, 2, (256,), generator=g)
    images = (2 * y - 1).float()[:, None, None, None].expand(256, 1, 8, 8) * 0.8  # class = the sign of the image
    config = training.TrainConfig(steps=60, batch_size=64, lr=3e-3, ema_decay=0.9)

    def build():
        return guidance.NoisyClassifier(num_classes=2, image_size=8, channels=(8, 16), time_dim=32)

    clf = guidance.cached_classifier("test-clf", build, DDPM, (images, y), config, verbose=False)
    with torch.no_grad():
        acc = (clf(images, torch.full((256,), 0.05)).argmax(1) == y).double().mean()
    assert acc > 0.95
    again = guidance.cached_classifier("test-clf", build, DDPM, (images, y), config, verbose=False)
    for p, q in zip(clf.parameters(), again.parameters()):
        torch.testing.assert_close(p, q)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


# --- the tilt -------------------------------------------------------------------------------------------------
def test_the_tilt_is_the_conditional_at_w_1_and_the_marginal_at_w_0():
    x, y = points(), torch.zeros(64, dtype=torch.long)
    at_data = paths.VEPath()
    log_cond = MIX.log_prob(x, 0.0, at_data, y=y) - math.log(0.5)  # p(y = 0) = 0.3 + 0.2
    torch.testing.assert_close(guidance.tilted_log_prob(MIX, x, 0, 1.0), log_cond)
    torch.testing.assert_close(guidance.tilted_log_prob(MIX, x, 0, 0.0), MIX.log_prob(x, 0.0, at_data))


def grid_moments(w, y=0):
    """The tilt's mean and per-component mass by quadrature on a grid (tilt_on_grid), independent of sampling."""
    grid = guidance.tilt_on_grid(MIX, y, w, low=-6.0, high=6.0, n=300)
    mean = grid.weights @ grid.means
    near = ((grid.means[:, None, :] - MIX.means) ** 2).sum(-1).argmin(1)  # nearest component of each cell
    return mean, grid.weights[near == 1].sum()


@pytest.mark.parametrize("w", [0.5, 1.0, 3.0])
def test_rejection_samples_of_the_tilt_agree_with_quadrature(w):
    x = guidance.sample_tilted(MIX, 20_000, 0, w, generator=torch.Generator().manual_seed(7))
    mean, se = stats.mean_se(x)
    grid_mean, _ = grid_moments(w)
    assert stats.check_close(mean, grid_mean, se, name="tilt mean") <= 5


def test_a_wrong_acceptance_probability_is_caught():
    """Accepting with p(y|x)^w (the rule for proposals from p(x)) on proposals from p(x|y) samples another tilt."""
    g = torch.Generator().manual_seed(8)
    x = MIX.sample(60_000, generator=g, y=torch.zeros(60_000, dtype=torch.long))
    log_p = guidance.MixtureClassifier(MIX, paths.VEPath())(x, 0.0)[:, 0]
    wrong = x[torch.rand(60_000, generator=g, dtype=F64).log() < 3.0 * log_p][:20_000]
    mean, se = stats.mean_se(wrong)
    with pytest.raises(AssertionError, match="tilt mean"):
        stats.check_close(mean, grid_moments(3.0)[0], se, name="tilt mean")


def test_the_grid_tilt_at_w_1_has_the_conditional_score_when_noised():
    grid = guidance.tilt_on_grid(MIX, 1, 1.0, low=-6.0, high=6.0, n=200)
    x, y = points(32, seed=9, scale=1.5), torch.ones(32, dtype=torch.long)
    torch.testing.assert_close(grid.score(x, 0.3, VP), MIX.score(x, 0.3, VP, y=y), rtol=1e-3, atol=1e-3)


def test_within_class_variance_by_hand():
    f = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 5.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # class 0: var of (0, 2) = 2 in the first coordinate; class 1: var of (1, 3, 5) = 4 in the second
    assert guidance.within_class_variance(f, labels) == pytest.approx(3.0)


# --- bad input --------------------------------------------------------------------------------------------------
X = points(4)
CLF = guidance.MixtureClassifier(MIX, VP)
SAME = oracles.GaussianMixture(torch.zeros(2, 2), stds=1.0, labels=torch.tensor([0, 1]))  # p(y|x) = 1/2 everywhere
BAD = [
    (lambda: guidance.MixtureClassifier(oracles.eight_gaussians(labelled=False), VP), TypeError,
     "mixture must be a diffkit.oracles.GaussianMixture with labels"),
    (lambda: guidance.classifier_grad(CLF, X, 0.5, torch.zeros(4)), TypeError, "y must be an integer tensor"),
    (lambda: guidance.classifier_grad(CLF, X, 0.5, torch.zeros(3, dtype=torch.long)), ValueError,
     "y must have shape (4,)"),
    (lambda: guidance.classifier_grad(CLF, X, 0.5, torch.full((4,), 2)), ValueError,
     "y must hold labels in [0, 1]"),
    (lambda: guidance.classifier_grad(CLF, X, 1.5, torch.zeros(4, dtype=torch.long)), ValueError,
     "t must lie in [0.0, 1.0]"),
    (lambda: guidance.ClassifierGuided(MIX.as_model(VP), CLF, VP, 1.0)(X, torch.full((4,), 0.5)), ValueError,
     "classifier guidance needs the labels"),
    (lambda: guidance.ClassifierGuided(MIX.as_model(VP), CLF, VP, float("nan")), ValueError, "scale must be"),
    (lambda: guidance.ClassifierGuided(MIX.as_model(VP), "clf", VP), TypeError, "must be callable"),
    (lambda: guidance.classifier_loss(CLF, X, torch.full((4,), -1), VP), ValueError, "class labels >= 0"),
    (lambda: guidance.ClassifierObjective(VP)(CLF, X, None), ValueError, "a classifier trains on labelled data"),
    (lambda: guidance.sample_tilted(MIX, 10, 2, 3.0), ValueError, "y must be a class in 0..1"),
    (lambda: guidance.sample_tilted(MIX, 10, 0, -1.0), ValueError, "w must be >= 0"),
    (lambda: guidance.sample_tilted(SAME, 10, 0, 60.0, max_draws=2000), RuntimeError, "raise max_draws or lower w"),
    (lambda: guidance.tilt_on_grid(MIX, 0, 2.0, low=1.0, high=-1.0), ValueError, "high must be greater than low"),
    (lambda: guidance.tilted_log_prob(MIX, torch.zeros(4, 3, dtype=F64), 0, 2.0), ValueError, "x must have 2"),
    (lambda: guidance.NoisyClassifier(channels=(12,)), ValueError, "divisible by groups=8"),
    (lambda: guidance.NoisyClassifier(num_classes=1), ValueError, "num_classes must be an integer >= 2"),
    (lambda: guidance.within_class_variance(torch.zeros(3, 2), torch.tensor([0, 0, 1])), ValueError,
     "class 1 has 1 member"),
    (lambda: guidance.cached_classifier("x", guidance.NoisyClassifier, VP, torch.zeros(4, 2),
                                        training.TrainConfig(steps=1)), TypeError, "data must be a pair"),
]


@pytest.mark.parametrize("call,exc,words", BAD, ids=[w for _, _, w in BAD])
def test_bad_input_gets_a_clear_error(call, exc, words):
    with pytest.raises(exc, match=re.escape(words)):
        call()
