"""Chapter 8's checks, run at a fixed size against the planted bugs they guard against.

Each test writes the chapter's check as the notebook does, runs it on the correct formula (it must pass) and on
the plausible bug (it must fail), so that a check which a bug walks through is caught here and not only in a
quick-mode run of the notebook, whose smaller samples shrink every margin.
"""

import math

import pytest
import torch

from diffkit import distances, grids, guidance, oracles, paths, samplers, stats

F64 = torch.float64
MEANS = torch.tensor([[-2.0, 0.0], [0.5, 1.0], [1.5, -0.5]], dtype=F64)
MIX = oracles.GaussianMixture(MEANS, stds=torch.tensor([0.5, 0.6, 0.7]), weights=torch.tensor([0.3, 0.2, 0.5]),
                              labels=torch.tensor([0, 0, 1]))  # the chapter's running example
DDPM = paths.DiscretePath.from_schedule("linear", 1000)
NULL = 2
X = 2.5 * torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=F64)


def nearest(x):
    return torch.cdist(x.double(), MEANS).argmin(1)


# -- 1. Bayes' rule on the score (eq-bayes-score), to rounding ---------------------------------------------------
def log_p_class(x, t, y):  # eq-noisy-posterior: the summed responsibilities of class y at noise level t
    r = MIX.responsibilities(x, t, DDPM)
    return torch.log((r * (MIX.labels == y)).sum(1))


def clean_classifier(x, t, y):  # p_0(y | x) evaluated at the noisy point
    return log_p_class(x, 0.0, y)


def clean_on_rescaled_input(x, t, y):  # p_0(y | x_t / alpha_t): undoes the scaling, not the noise
    alpha = DDPM.alpha(torch.tensor(t, dtype=F64))
    return log_p_class(x / alpha, 0.0, y)


def sign_flipped(x, t, y):
    return -log_p_class(x, t, y)


def bayes_check(log_p, t=0.2):
    """The notebook's check: the conditional score = unconditional + grad log p(y | x), to rounding."""
    for y in (0, 1):
        xg = X.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_p(xg, t, y).sum(), xg)
        err = (MIX.score(X, t, DDPM, y=torch.full((500,), y)) - MIX.score(X, t, DDPM) - grad).abs().max()
        assert err < 1e-9, f"eq-bayes-score: error {err:.3g}"


def test_bayes_check_passes_with_the_noisy_posterior():
    bayes_check(log_p_class)


@pytest.mark.parametrize("bug", [clean_classifier, clean_on_rescaled_input, sign_flipped])
def test_bayes_check_fails_on_planted_bugs(bug):
    with pytest.raises(AssertionError, match="eq-bayes-score"):
        bayes_check(bug)


# -- 2. classifier guidance: eq-cg-eps and the sampling check -----------------------------------------------------
UNCOND = MIX.as_model(DDPM, "eps")
EXACT = guidance.MixtureClassifier(MIX, DDPM)


class SigmaSquared(guidance.ClassifierGuided):
    """A plausible slip: the eps shift scaled by sigma_t^2 (a variance where a standard deviation belongs)."""

    def __call__(self, x, t, y=None):
        eps = UNCOND(x, t, torch.full_like(y, NULL))
        return eps - self.scale * DDPM.sigma(t)[:, None] ** 2 * guidance.classifier_grad(self.classifier, x, t, y)


class ScoreScale(guidance.ClassifierGuided):
    """Another: the classifier's gradient added to eps on the score's scale (no factor sigma_t)."""

    def __call__(self, x, t, y=None):
        eps = UNCOND(x, t, torch.full_like(y, NULL))
        return eps - self.scale * guidance.classifier_grad(self.classifier, x, t, y)


def cg_eps_check(wrapper_cls, w=3.0):
    t, y = torch.full((500,), 0.3, dtype=F64), torch.zeros(500, dtype=torch.long)
    by_hand = UNCOND(X, t) - w * DDPM.sigma(t)[:, None] * guidance.classifier_grad(EXACT, X, t, y)  # eq-cg-eps
    torch.testing.assert_close(wrapper_cls(UNCOND, EXACT, DDPM, w)(X, t, y), by_hand)


def cg_sampling_gap(wrapper_cls, n=300, steps=50):
    """The notebook's sampling check: at w = 1 the wrapped unconditional oracle retraces the conditional one."""
    ts = grids.ddpm_grid(steps, 1000)
    x_T = samplers.prior(DDPM, (n, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    y0 = torch.zeros(n, dtype=torch.long)
    out = samplers.ddim(wrapper_cls(UNCOND, EXACT, DDPM, 1.0), x_T, ts, DDPM, y=y0)
    return (out - samplers.ddim(UNCOND, x_T, ts, DDPM, y=y0)).abs().max().item()


def test_cg_checks_pass_on_diffkit():
    cg_eps_check(guidance.ClassifierGuided)
    assert cg_sampling_gap(guidance.ClassifierGuided) < 1e-6


@pytest.mark.parametrize("bug", [SigmaSquared, ScoreScale])
def test_cg_checks_fail_on_planted_bugs(bug):
    with pytest.raises(AssertionError):
        cg_eps_check(bug)
    assert cg_sampling_gap(bug) > 1e-2


# -- 3. classifier-free guidance (eq-cfg) and its equality with classifier guidance -------------------------------
def cfg_check(combine, w=3.0):
    t, y = torch.full((500,), 0.3, dtype=F64), torch.zeros(500, dtype=torch.long)
    cfg = samplers.Denoiser(UNCOND, DDPM, y=y, guidance=w, null_label=NULL).prediction(X, 0.3)
    torch.testing.assert_close(cfg, combine(UNCOND(X, t), UNCOND(X, t, y), w))
    torch.testing.assert_close(guidance.ClassifierGuided(UNCOND, EXACT, DDPM, w)(X, t, y), cfg)


def test_cfg_check_passes_on_eq_cfg():
    cfg_check(lambda u, c, w: (1 - w) * u + w * c)


@pytest.mark.parametrize("bug", [lambda u, c, w: (1 + w) * c - w * u,  # Ho & Salimans' w, read as this book's
                                 lambda u, c, w: u + w * c])  # the difference dropped
def test_cfg_check_fails_on_planted_bugs(bug):
    with pytest.raises(AssertionError):
        cfg_check(bug)


# -- 4. the tilt: eq-tilt at t = 0, the field gap at t > 0, the rejection sampler -------------------------------
def tilt_identity_check(log_tilt, w=3.0):
    y = torch.zeros(500, dtype=torch.long)
    field = (1 - w) * MIX.score(X, 0.0, DDPM) + w * MIX.score(X, 0.0, DDPM, y=y)  # eq-cfg at t = 0
    xg = X.clone().requires_grad_(True)
    (tilt_score,) = torch.autograd.grad(log_tilt(xg, w).sum(), xg)
    err = (field - tilt_score).abs().max()
    assert err < 1e-9, f"eq-tilt: error {err:.3g}"


def test_tilt_identity_passes():
    tilt_identity_check(lambda x, w: guidance.tilted_log_prob(MIX, x, 0, w))


def test_tilt_identity_fails_without_the_one_minus_w():
    at_data = paths.VEPath()

    def both_to_the_w(x, w):  # p(x|y)^w p(x)^w: the exponent of p(x) written as w
        y = torch.zeros(x.shape[0], dtype=torch.long)
        return w * MIX.log_prob(x, 0.0, at_data, y=y) + w * MIX.log_prob(x, 0.0, at_data)

    with pytest.raises(AssertionError, match="eq-tilt"):
        tilt_identity_check(both_to_the_w)


def gap_ratio(w, t=0.2, n_grid=40):
    """The notebook's field check: rms gap between eq-cfg and the noised tilt's score (quadrature), over the
    quadrature's own error (measured at w = 1, where the answer is known)."""
    box = dict(low=-4.5, high=3.5, n=n_grid)
    tilt, cond = guidance.tilt_on_grid(MIX, 0, w, **box), guidance.tilt_on_grid(MIX, 0, 1.0, **box)
    x0 = guidance.sample_tilted(MIX, 1000, 0, w, generator=torch.Generator().manual_seed(4))
    x_t = DDPM.sample(x0, t, generator=torch.Generator().manual_seed(5)).x_t
    y = torch.zeros(1000, dtype=torch.long)
    field = (1 - w) * MIX.score(x_t, t, DDPM) + w * MIX.score(x_t, t, DDPM, y=y)
    truth, cond_truth = tilt.score(x_t, t, DDPM), MIX.score(x_t, t, DDPM, y=y)
    gap = ((field - truth) ** 2).sum(1).mean().sqrt()
    quad = ((cond.score(x_t, t, DDPM) - cond_truth) ** 2).sum(1).mean().sqrt()
    return (gap / quad).item()


def test_field_gap_check_sees_the_gap_at_w_3():
    assert gap_ratio(3.0) > 10


def test_field_gap_check_sees_no_gap_where_there_is_none():
    """At w = 1 the guided field is the noised conditional score: the check's ratio must stay near 1 there, so a
    check that flagged every field would be caught."""
    assert gap_ratio(1.0) < 3


def on_class_1_side(x):  # where the clean classifier prefers class 1: p(0 | x) < 1/2
    return EXACT(x, 0.0)[:, 0] < math.log(0.5)


def tilt_share_check(samples, w=3.0):
    """The notebook's check of the rejection sampler: its share of points nearest class 0's component next to
    class 1, and on class 1's side of the clean boundary, against quadrature on a grid, in standard errors."""
    grid = guidance.tilt_on_grid(MIX, 0, w, low=-4.5, high=3.5, n=80)
    quad = torch.stack([grid.weights[nearest(grid.means) == 1].sum(), grid.weights[on_class_1_side(grid.means)].sum()])
    shares = torch.stack([nearest(samples) == 1, on_class_1_side(samples)], 1).double()
    mean, se = stats.mean_se(shares)
    stats.check_close(mean, quad, se, name="tilt shares")


def test_tilt_share_check_passes_on_the_rejection_sampler():
    tilt_share_check(guidance.sample_tilted(MIX, 8000, 0, 3.0, generator=torch.Generator().manual_seed(6)))


def accept_with(power, proposals_from_class, n=24_000, seed=7):
    """Rejection samples with acceptance p(y|x)^power, proposals from p(x|y) (or from p(x))."""
    g = torch.Generator().manual_seed(seed)
    x = MIX.sample(n, generator=g, y=torch.zeros(n, dtype=torch.long) if proposals_from_class else None)
    log_p = guidance.MixtureClassifier(MIX, paths.VEPath())(x, 0.0)[:, 0]
    return x[torch.rand(n, generator=g, dtype=F64).log() < power * log_p][:8000]  # the notebook's full size


@pytest.mark.parametrize("power,from_class", [(1 - 3.0, True),  # the exponent's sign flipped: accepts all
                                              (3.0 - 1, False)])  # proposals from p(x), not p(x|y)
def test_tilt_share_check_fails_on_a_wrong_rejection_sampler(power, from_class):
    tilt_share_check(accept_with(3.0 - 1, True))  # the right one passes at this size
    with pytest.raises(AssertionError, match="tilt shares"):
        tilt_share_check(accept_with(power, from_class))


# -- 5. samples against the tilt's null band ---------------------------------------------------------------------
N, STEPS = 400, 100


@pytest.fixture(scope="module")
def band():
    return distances.null_band(distances.mmd, lambda k, g: guidance.sample_tilted(MIX, k, 0, 3.0, generator=g), N,
                               pairs=30, seed=10, cache=False)


def sample(model, **kw):
    x_T = samplers.prior(DDPM, (N, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    return samplers.ddim(model, x_T, grids.ddpm_grid(STEPS, 1000), DDPM, **kw)


def test_the_sampler_on_the_noised_tilts_score_lands_in_the_band(band):
    tilt = guidance.tilt_on_grid(MIX, 0, 3.0, low=-4.5, high=3.5, n=32)
    assert band.measure(sample(tilt.as_model(DDPM, "eps")).float()).in_band


def test_the_guided_sampler_lands_outside_the_band(band):
    y0 = torch.zeros(N, dtype=torch.long)
    assert not band.measure(sample(UNCOND, y=y0, guidance=3.0, null_label=NULL).float()).in_band


def test_the_band_has_the_power_to_see_another_tilt(band):
    other = guidance.sample_tilted(MIX, N, 0, 1.0, generator=torch.Generator().manual_seed(11))  # w = 1
    assert not band.measure(other.float()).in_band
