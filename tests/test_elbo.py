"""The DDPM variational bound of chapter 3, checked against Monte Carlo, torch.distributions and exact answers."""

import math

import pytest
import torch

from diffkit import elbo, paths

N_SMALL = 20


def _small_path():
    return paths.DiscretePath(torch.linspace(0.02, 0.4, N_SMALL, dtype=torch.float64))


def _gaussian_eps_model(path, v):
    """The exact eps-prediction E[eps | x_n] for data N(0, v) (1-D): linear in x_n."""
    def model(x, t):
        ab = path.alpha_bar_at(t.double()).reshape(-1, *[1] * (x.ndim - 1))
        return (1 - ab).sqrt() * x / (ab * v + 1 - ab)
    return model


def test_posterior_matches_monte_carlo_regression():
    path = _small_path()
    g = torch.Generator().manual_seed(0)
    M, n = 400_000, 7
    x0 = 0.8 * torch.randn(M, 1, generator=g, dtype=torch.float64) + 0.3
    ab_prev, beta = path.alpha_bar[n - 1], path.betas[n - 1]
    x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * torch.randn(M, 1, generator=g, dtype=torch.float64)
    x_n = (1 - beta).sqrt() * x_prev + beta.sqrt() * torch.randn(M, 1, generator=g, dtype=torch.float64)
    design = torch.cat([x0, x_n, torch.ones_like(x0)], 1)  # regress x_{n-1} on (x0, x_n, 1)
    coef = torch.linalg.lstsq(design, x_prev).solution[:, 0]
    resid_var = (x_prev - design @ coef[:, None]).var()
    mean, var = elbo.posterior(path, torch.ones(1, 1), torch.zeros(1, 1), n)  # coefficient of x0
    mean_xn, _ = elbo.posterior(path, torch.zeros(1, 1), torch.ones(1, 1), n)  # coefficient of x_n
    assert abs(coef[0] - mean.item()) < 5e-3 and abs(coef[1] - mean_xn.item()) < 5e-3
    assert abs(coef[2]) < 5e-3
    assert abs(resid_var - var.item()) / var.item() < 1e-2


def test_posterior_edge_and_input_checks():
    path = _small_path()
    _, var = elbo.posterior(path, torch.randn(3, 2), torch.randn(3, 2), 1)
    assert torch.all(var == 0)  # x_0 is known given itself
    with pytest.raises(TypeError, match="integer step"):
        elbo.posterior(path, torch.randn(3, 2), torch.randn(3, 2), torch.tensor(0.5))
    with pytest.raises(ValueError, match="lie in"):
        elbo.posterior(path, torch.randn(3, 2), torch.randn(3, 2), N_SMALL + 1)
    with pytest.raises(TypeError, match="DiscretePath"):
        elbo.posterior(paths.VPPath(), torch.randn(3, 2), torch.randn(3, 2), 2)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    m1, m2 = torch.randn(2, 50, generator=g, dtype=torch.float64)
    v1, v2 = 0.1 + torch.rand(2, 50, generator=g, dtype=torch.float64)
    want = torch.distributions.kl_divergence(torch.distributions.Normal(m1, v1.sqrt()),
                                             torch.distributions.Normal(m2, v2.sqrt()))
    torch.testing.assert_close(elbo.gaussian_kl(m1, v1, m2, v2), want)
    assert torch.all(elbo.gaussian_kl(m1, v1, m1, v1) == 0)


@pytest.mark.parametrize("variance", elbo.VARIANCES)
def test_kl_term_is_the_weighted_eps_mse(variance):
    path = paths.DiscretePath.from_schedule("linear", 1000)
    g = torch.Generator().manual_seed(2)
    B = 64
    n = torch.randint(2, 1001, (B,), generator=g)
    x0, eps, eps_hat = torch.randn(3, B, 5, generator=g, dtype=torch.float64)
    ab = path.alpha_bar[n][:, None]
    x_n = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    kl = elbo.kl_term(path, x0, x_n, n, eps_hat, variance)
    mse = ((eps - eps_hat) ** 2).sum(-1)
    const = 0.0
    if variance == "beta":  # the variance mismatch adds a constant per dimension
        _, var_q = elbo.posterior(path, x0, x_n, n)
        const = 5 * elbo.gaussian_kl(0.0, var_q, 0.0, path.betas[n - 1])
    torch.testing.assert_close(kl, elbo.eps_weight(path, n, variance) * mse + const)
    assert torch.all(elbo.kl_term(path, x0, x_n, n, eps, "beta_tilde").abs() < 1e-9)  # exact eps: no loss


def test_discretized_decoder_is_a_probability_over_the_256_bins():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, std in [(0.0, 0.01), (0.37, 0.2), (-0.999, 0.003), (1.3, 0.5), (0.5, 5.0)]:
        logp = elbo.discretized_gaussian_log_likelihood(levels, torch.tensor(mean), std)
        assert torch.isfinite(logp).all()
        torch.testing.assert_close(logp.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    # a bin far from the mean in the tail is still finite (no log(0))
    far = elbo.discretized_gaussian_log_likelihood(torch.tensor([1.0]), torch.tensor(-1.0), 0.01)
    assert torch.isfinite(far).all() and far.item() < -1000


def test_prior_term_matches_its_closed_form():
    path = paths.DiscretePath.from_schedule("linear", 1000)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    ab = path.alpha_bar[-1]
    want = 0.5 * (ab * (x0**2).sum(-1) + 3 * (1 - ab) - 3 - 3 * torch.log(1 - ab))
    torch.testing.assert_close(elbo.prior_kl(path, x0), want)


def test_sum_of_terms_equals_the_log_ratio_along_sampled_chains():
    """L = E_q[log q(x_{1:N}|x0) - log p(x_{0:N})], computed along whole chains, equals the sum of the terms."""
    path, v = _small_path(), 0.5
    model = _gaussian_eps_model(path, 0.3)  # a deliberately imperfect model: the identity holds for any model
    x0 = torch.tensor([[0.7]], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    M = 200_000
    x = x0.expand(M, 1)
    log_ratio = torch.zeros(M, dtype=torch.float64)
    chain = [x]
    for n in range(1, N_SMALL + 1):  # sample the forward chain q(x_{1:N} | x0) and its log-density
        beta = path.betas[n - 1]
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(M, 1, generator=g, dtype=torch.float64)
        log_ratio += torch.distributions.Normal((1 - beta).sqrt() * chain[-1], beta.sqrt()).log_prob(x)[:, 0]
        chain.append(x)
    log_ratio -= torch.distributions.Normal(0.0, 1.0).log_prob(chain[-1])[:, 0]
    for n in range(N_SMALL, 0, -1):  # minus log p(x_{n-1} | x_n), with sigma^2 = beta_n
        t = torch.full((M,), n / N_SMALL, dtype=torch.float64)
        mean = elbo.model_mean(path, chain[n], n, model(chain[n], t))
        log_ratio -= torch.distributions.Normal(mean, path.betas[n - 1].sqrt()).log_prob(chain[n - 1])[:, 0]
    bound = elbo.nll_bound(model, x0.expand(20_000, 1), path, variance="beta", discrete=False, generator=g,
                            batch_size=100_000)
    se = math.hypot(log_ratio.std() / M**0.5, bound.total.std() / 20_000**0.5)
    assert abs(log_ratio.mean() - bound.total.mean()) < 5 * se, (log_ratio.mean(), bound.total.mean(), se)
    assert bound.n_terms == N_SMALL - 1


def _exact_model_nll(path, model, x0):
    """-log p_theta(x0) of a linear-Gaussian reverse chain (sigma^2 = beta), propagated exactly."""
    N = path.n_steps
    mean_coef, var = torch.tensor(1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for n in range(N, 0, -1):  # x_{n-1} = c_n x_n + sqrt(beta_n) z, since the model is linear in x_n
        one = torch.ones(1, 1, dtype=torch.float64)
        c = elbo.model_mean(path, one, n, model(one, torch.tensor([n / N], dtype=torch.float64)))[0, 0]
        var = c**2 * var + path.betas[n - 1]
    return -torch.distributions.Normal(0.0, var.sqrt()).log_prob(x0)[:, 0]


def test_bound_is_above_the_exact_nll_and_tight_for_the_exact_model():
    path, v = paths.DiscretePath.from_schedule("linear", 200), 0.5
    model = _gaussian_eps_model(path, v)
    g = torch.Generator().manual_seed(4)
    x0 = math.sqrt(v) * torch.randn(4000, 1, generator=g, dtype=torch.float64)
    bound = elbo.nll_bound(model, x0, path, variance="beta", discrete=False, n_terms=20, generator=g)
    gap = bound.total - _exact_model_nll(path, model, x0)
    se = (gap.std() / gap.numel() ** 0.5).item()
    assert gap.mean() > -4 * se  # a bound: never below the model's exact NLL
    assert gap.mean() < 0.05 + 4 * se  # and tight for the model that is exact on the data
    entropy = 0.5 * math.log(2 * math.pi * math.e * v)
    assert abs(_exact_model_nll(path, model, x0).mean() - entropy) < 0.05  # that model is close to the data


def test_bits_per_dim_of_pixels_and_the_subset_estimate_is_unbiased():
    path = paths.DiscretePath.from_schedule("linear", 50)
    g = torch.Generator().manual_seed(5)
    x0 = (torch.randint(0, 256, (6, 1, 4, 4), generator=g).double() / 127.5 - 1)
    model = _gaussian_eps_model(path, 0.5)
    full = elbo.nll_bound(model, x0, path, generator=torch.Generator().manual_seed(6))
    assert full.dims == 16 and full.bits_per_dim.shape == (6,)
    torch.testing.assert_close(full.bits_per_dim, full.total / (16 * math.log(2)))
    assert torch.all(full.decoder > 0)  # a probability of a bin is at most 1
    sub = [elbo.nll_bound(model, x0, path, n_terms=5, generator=torch.Generator().manual_seed(s)).middle.mean()
           for s in range(200)]
    sub = torch.stack(sub)
    assert abs(sub.mean() - full.middle.mean()) < 5 * sub.std() / 200**0.5 + 0.05 * full.middle.mean().abs()


def _pixel_case(B=4000, seed=8):
    """A few 4x4 'images' repeated B times, N = 50 and a deliberately imperfect linear model."""
    path = paths.DiscretePath.from_schedule("linear", 50)
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (4, 1, 4, 4), generator=g).double() / 127.5 - 1
    return path, images.repeat(B // 4, 1, 1, 1), _gaussian_eps_model(path, 0.5)


@pytest.mark.parametrize("sampling", elbo.SAMPLINGS)
def test_every_step_sampling_is_unbiased_for_the_all_terms_sum(sampling):
    path, x0, model = _pixel_case()
    full = elbo.nll_bound(model, x0, path, generator=torch.Generator().manual_seed(9)).middle
    pilot = elbo.nll_bound(model, x0[:8], path, generator=torch.Generator().manual_seed(10)).terms
    proposal = None if sampling == "uniform" else elbo.importance_proposal(pilot)
    est = elbo.nll_bound(model, x0, path, n_terms=3, sampling=sampling, proposal=proposal,
                         generator=torch.Generator().manual_seed(11)).middle
    se = math.hypot(full.std() / full.numel() ** 0.5, est.std() / est.numel() ** 0.5)
    assert abs(est.mean() - full.mean()) < 5 * se, (sampling, est.mean(), full.mean(), se)


def test_sampling_variances_and_their_standard_errors():
    path, x0, model = _pixel_case(B=2000)
    pilot = elbo.nll_bound(model, x0[:8], path, generator=torch.Generator().manual_seed(12))
    assert pilot.terms.shape == (8, 49) and torch.allclose(pilot.terms.sum(-1), pilot.middle)
    proposal = elbo.importance_proposal(pilot.terms)
    assert proposal.shape == (49,) and abs(proposal.sum() - 1) < 1e-12 and proposal.min() >= 0.1 / 49
    sd = {}
    for sampling in elbo.SAMPLINGS:
        b = elbo.nll_bound(model, x0, path, n_terms=6, sampling=sampling,
                           proposal=None if sampling == "uniform" else proposal,
                           generator=torch.Generator().manual_seed(13))
        per_image = b.middle.reshape(-1, 4)  # the same 4 images repeated: spread = estimator noise
        sd[sampling] = per_image.std(0).mean().item()
        se = b.middle_se.reshape(-1, 4).pow(2).mean(0).sqrt().mean().item()  # its own estimate
        assert 0.8 * sd[sampling] < se < (1.2 if sampling != "stratified" else 2.5) * sd[sampling], (sampling, sd, se)
    assert sd["importance"] < sd["uniform"] and sd["stratified"] < sd["uniform"], sd


def test_two_variances_from_the_same_calls_and_input_checks():
    path, x0, model = _pixel_case(B=8)
    both = elbo.nll_bound(model, x0, path, n_terms=5, variance=elbo.VARIANCES,
                          generator=torch.Generator().manual_seed(14))
    for name in elbo.VARIANCES:
        one = elbo.nll_bound(model, x0, path, n_terms=5, variance=name, generator=torch.Generator().manual_seed(14))
        torch.testing.assert_close(one.total, both[name].total)
    assert torch.all(both["beta"].decoder == both["beta_tilde"].decoder)
    with pytest.raises(ValueError, match="needs a proposal"):
        elbo.nll_bound(model, x0, path, n_terms=5, sampling="importance")
    with pytest.raises(ValueError, match="takes no proposal"):
        elbo.nll_bound(model, x0, path, n_terms=5, proposal=torch.full((49,), 1 / 49))
    with pytest.raises(ValueError, match="N - 1 = 49"):
        elbo.nll_bound(model, x0, path, n_terms=5, sampling="importance", proposal=torch.full((10,), 0.1))
    with pytest.raises(ValueError, match="sampling"):
        elbo.nll_bound(model, x0, path, n_terms=5, sampling="sobol")
    upper = both["beta"].upper_limit(0.95)
    mean, se = both["beta"].mean_and_se()
    assert abs(upper - (mean + 1.6448536 * se)) < 1e-5
