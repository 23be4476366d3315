"""Chapter 3's checks, each run at a fixed sample size against the plausible bug it guards against.

Quick mode shrinks the notebook's samples, and with them every margin; here each check runs at the size the
full chapter uses (or a stated one) and must pass on the right formula and fail on the planted bug.
"""

import math

import pytest
import torch

from diffkit import elbo, paths, stats

N = 1000
PATH = paths.DiscretePath.from_schedule("linear", N)
AB, BETAS = PATH.alpha_bar, PATH.betas


# ---------- the posterior by regression (notebook: "Check it" under eq-posterior) ----------

def _regression(n, M=400_000, seed=0):
    """The notebook's regression of x_{n-1} on (x0, x_n, 1): coefficients, their s.e., residual variance, s.e."""
    g = torch.Generator().manual_seed(seed)
    x0 = 0.3 + 0.8 * torch.randn(M, 1, generator=g, dtype=torch.float64)
    noise = torch.randn(2, M, 1, generator=g, dtype=torch.float64)
    x_prev = AB[n - 1].sqrt() * x0 + (1 - AB[n - 1]).sqrt() * noise[0]
    x_n = (1 - BETAS[n - 1]).sqrt() * x_prev + BETAS[n - 1].sqrt() * noise[1]
    design = torch.cat([x0, x_n, torch.ones_like(x0)], 1)
    coef = torch.linalg.lstsq(design, x_prev).solution[:, 0]
    resid = (x_prev - design @ coef[:, None]).var()
    se = (resid * torch.linalg.inv(design.T @ design).diagonal()).sqrt()
    return coef, se, resid, resid * math.sqrt(2 / M)


def _posterior_formula(n, bug=None):
    a_n, b_n, abp, ab_n = 1 - BETAS[n - 1], BETAS[n - 1], AB[n - 1], AB[n]
    root_abp = abp if bug == "alpha_bar_prev" else abp.sqrt()  # the bug drops the square root
    root_a = a_n if bug == "alpha" else a_n.sqrt()
    coefs = torch.stack([root_abp * b_n / (1 - ab_n), root_a * (1 - abp) / (1 - ab_n), torch.zeros(())])
    return coefs, (1 - abp) / (1 - ab_n) * b_n


@pytest.fixture(scope="module")
def regressions():
    return {n: _regression(n) for n in [2, 50, 300, 900]}


def _posterior_check(regressions, bug=None):
    worst = 0.0
    for n, (coef, se, var, var_se) in regressions.items():
        want, want_var = _posterior_formula(n, bug)
        worst = max(worst, stats.check_close(coef, want, se, name=f"coefficients, n = {n}"),
                    stats.check_close(var, want_var, var_se, name=f"variance, n = {n}"))
    return worst


def test_posterior_check_passes_on_eq_posterior(regressions):
    assert _posterior_check(regressions) < 5


@pytest.mark.parametrize("bug", ["alpha", "alpha_bar_prev"])
def test_posterior_check_fails_on_a_dropped_square_root(regressions, bug):
    with pytest.raises(AssertionError, match="standard errors off"):
        _posterior_check(regressions, bug)


def test_posterior_exact_line_exercises_the_x_n_coefficient():
    """The notebook compares elbo.posterior at x0 = 1, x_n = 0.7: a wrong x_n coefficient cannot hide."""
    for n in [2, 50, 300, 900]:
        mean, _ = elbo.posterior(PATH, torch.ones(1, 1), torch.full((1, 1), 0.7), n)
        want, _ = _posterior_formula(n)
        torch.testing.assert_close(mean[0, 0], want[0] + 0.7 * want[1])
        bad, _ = _posterior_formula(n, "alpha")
        with pytest.raises(AssertionError):
            torch.testing.assert_close(mean[0, 0], bad[0] + 0.7 * bad[1])


# ---------- the bound on Gaussian data, exactly two ways (notebook: "Exactly.") ----------

V = 0.5


def _exact_eps(x, t):
    a_t = PATH.alpha_bar_at(t.double()).reshape(-1, *[1] * (x.ndim - 1))
    return (1 - a_t).sqrt() * x / (a_t * V + 1 - a_t)


def _sq_err():
    m = AB * V + 1 - AB
    all_n, ones = torch.arange(1, N + 1), torch.ones(N, 1, dtype=torch.float64)
    a_n = elbo.model_mean(PATH, ones, all_n, _exact_eps(ones, all_n / N))[:, 0]
    return m, m[:-1] - 2 * a_n * (1 - BETAS).sqrt() * m[:-1] + a_n**2 * m[1:]


def _exact_chain():
    m, sq_err = _sq_err()
    return ((sq_err / (2 * BETAS) - 0.5).sum() + 0.5 * math.log(2 * math.pi) + m[-1] / 2).item()


def _exact_terms(variance, bug=None):
    _, sq_err = _sq_err()
    n = torch.arange(2, N + 1)
    s = (1 - AB[n]).sqrt()
    c = s / (AB[n] * V + 1 - AB[n])
    mse = (1 - c * s) ** 2 + c**2 * AB[n] * V
    var_q = (1 - AB[n - 1]) / (1 - AB[n]) * BETAS[n - 1]
    var_p = var_q if variance == "beta_tilde" else BETAS[n - 1]
    c_n = 0.5 * (torch.log(var_p / var_q) + var_q / var_p - 1)
    w = elbo.eps_weight(PATH, n, variance)
    if bug == "weight_without_alpha":  # beta^2 / (2 sigma^2 (1 - alpha_bar)): the alpha_n forgotten
        w = w * (1 - BETAS[n - 1])
    dec_var = (1 - AB[1]) / (1 - AB[2]) * BETAS[1] if bug == "decoder_beta_tilde_2" else BETAS[0]
    decoder = sq_err[0] / (2 * dec_var) + 0.5 * torch.log(2 * math.pi * dec_var)
    prior = 0.5 * (AB[N] * V - AB[N] - torch.log(1 - AB[N]))
    return (prior + (w * mse + c_n).sum() + decoder).item()


def _gaussian_check(bug=None):
    torch.testing.assert_close(_exact_terms("beta", bug), _exact_chain(), rtol=1e-10, atol=1e-10)


def test_exact_bound_two_ways_agree_and_match_the_referee_numbers():
    _gaussian_check()
    entropy = 0.5 * math.log(2 * math.pi * math.e * V)
    assert abs(_exact_terms("beta") - 1.0726) < 1e-4 and 0 < _exact_terms("beta") - entropy < 1e-3
    assert abs(_exact_terms("beta_tilde") - _exact_terms("beta") - 0.46) < 0.01


@pytest.mark.parametrize("bug", ["weight_without_alpha", "decoder_beta_tilde_2"])
def test_exact_check_fails_on_bugs_that_five_monte_carlo_errors_let_through(bug):
    shift = _exact_terms("beta", bug) - _exact_terms("beta")
    assert abs(shift) < 0.115  # the old check's 5 s.e. (0.115 nats) could not see it
    with pytest.raises(AssertionError):
        _gaussian_check(bug)


def test_exact_value_is_what_the_monte_carlo_estimates_converge_to():
    g = torch.Generator().manual_seed(3)
    x0 = V**0.5 * torch.randn(20_000, 1, generator=g, dtype=torch.float64)
    b = elbo.nll_bound(_exact_eps, x0, PATH, variance="beta", discrete=False, n_terms=100,
                       sampling="stratified", batch_size=200_000, generator=g)
    mean, se = stats.mean_se(b.total)
    stats.check_close(mean, _exact_terms("beta"), se, name="stratified terms")


# ---------- bits/dim against all terms, by hand (notebook: the MNIST "Check it") ----------

def _pixel_model(x, t):  # a cheap stand-in for the U-Net: the eps-prediction of N(0, 0.3) data
    a_t = PATH.alpha_bar_at(t.double()).reshape(-1, *[1] * (x.ndim - 1))
    return (1 - a_t).sqrt() * x / (a_t * 0.3 + 1 - a_t)


@pytest.fixture(scope="module")
def pilot():
    g = torch.Generator().manual_seed(4)
    gauss = 0.3**0.5 * torch.randn(4, 1, 28, 28, generator=g, dtype=torch.float64)  # the model's data,
    digits = ((gauss.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # on the 256 pixel levels
    full = elbo.nll_bound(_pixel_model, digits, PATH, batch_size=1000, generator=g)
    return digits, full, elbo.importance_proposal(full.terms)


def _bits_check(pilot, sampling="stratified", n_terms=40):
    digits, full, proposal = pilot
    check = elbo.nll_bound(_pixel_model, digits, PATH, n_terms=n_terms, sampling=sampling,
                           proposal=None if sampling == "uniform" else proposal, batch_size=1000,
                           generator=torch.Generator().manual_seed(5))
    to_bits = 1 / (28 * 28 * math.log(2))
    by_hand = (check.prior + full.terms.sum(-1) + check.decoder) * to_bits
    se = (check.middle_se**2 + full.middle_se**2).sum().sqrt() * to_bits / digits.shape[0]
    return stats.check_close(check.bits_per_dim.mean(), by_hand.mean(), se, name="bits/dim")


@pytest.mark.parametrize("sampling", ["importance", "stratified"])
def test_bits_check_passes(pilot, sampling):
    # not "uniform": on 8-bit pixels the first steps carry much of the sum, and 40 uniform steps give a
    # heavy-tailed estimate whose s.e. from its own 40 draws is too small (the chapter's reason to stratify)
    assert _bits_check(pilot, sampling) <= 5


@pytest.mark.parametrize("bug", ["nats_as_bits", "per_image"])
def test_bits_check_fails_on_wrong_units(pilot, monkeypatch, bug):
    wrong = {"nats_as_bits": lambda self: self.total / self.dims,
             "per_image": lambda self: self.total / math.log(2)}[bug]
    monkeypatch.setattr(elbo.Bound, "bits_per_dim", property(wrong))
    with pytest.raises(AssertionError, match="standard errors off"):
        _bits_check(pilot)


@pytest.mark.parametrize("sampling, n_terms", [("stratified", 40), ("uniform", 400)])
def test_bits_check_fails_without_the_step_weights(pilot, monkeypatch, sampling, n_terms):
    assert _bits_check(pilot, sampling, n_terms) <= 5
    draw = elbo._draw_steps

    def unweighted(*args, **kwargs):  # the (N - 1)/k, or 1/(k p(n)), forgotten
        steps, weights = draw(*args, **kwargs)
        return steps, torch.ones_like(weights)

    monkeypatch.setattr(elbo, "_draw_steps", unweighted)
    with pytest.raises(AssertionError, match="standard errors off"):
        _bits_check(pilot, sampling, n_terms)
