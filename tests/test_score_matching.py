"""Score matching (chapter 5) against closed forms on Gaussian data with a linear score model
s(x) = -A (x - b):  with x ~ N(mu, Sigma) and P = Sigma^{-1},

    ISM(A, b) = -tr A + 1/2 tr(A Sigma A^T) + 1/2 |A (mu - b)|^2
    ESM(A, b) = 1/2 tr((A - P) Sigma (A - P)^T) + 1/2 |A (mu - b)|^2 = ISM + 1/2 tr P
    DSM_sigma(A, b) = ISM computed with Sigma + sigma^2 I, plus D / (2 sigma^2).
"""

import math

import pytest
import torch

from diffkit import oracles, paths
from diffkit import score_matching as sm

D = 3


def _gaussian(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(D, D, generator=g, dtype=torch.float64) * 0.5 + torch.eye(D, dtype=torch.float64)
    return torch.randn(D, generator=g, dtype=torch.float64), L @ L.T, L


def _linear(A, b):
    return lambda x: -(x - b) @ A.T


def _ism_closed(A, b, mu, cov):
    return -torch.trace(A) + 0.5 * torch.trace(A @ cov @ A.T) + 0.5 * (A @ (mu - b)).pow(2).sum()


def _esm_closed(A, b, mu, cov):
    P = torch.linalg.inv(cov)
    return 0.5 * torch.trace((A - P) @ cov @ (A - P).T) + 0.5 * (A @ (mu - b)).pow(2).sum()


def _settings(seed: int = 1, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(D, D, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64))
            for _ in range(k)]


def test_implicit_loss_of_a_linear_model_is_its_closed_form_on_the_samples():
    mu, cov, L = _gaussian()
    x = mu + torch.randn(500, D, dtype=torch.float64) @ L.T
    for A, b in _settings():
        want = -torch.trace(A) + 0.5 * ((x - b) @ A.T).pow(2).sum(1).mean()  # exact on these samples
        torch.testing.assert_close(sm.implicit_score_matching(_linear(A, b), x), want, rtol=1e-12, atol=1e-12)


def test_explicit_minus_implicit_is_the_same_constant_half_E_score_squared():
    mu, cov, L = _gaussian()
    g = torch.Generator().manual_seed(2)
    x = mu + torch.randn(400_000, D, generator=g, dtype=torch.float64) @ L.T
    true_score = _linear(torch.linalg.inv(cov), mu)  # grad log N(mu, cov) = -P (x - mu)
    const = 0.5 * torch.trace(torch.linalg.inv(cov))
    for A, b in _settings():
        esm = sm.explicit_score_matching(_linear(A, b), x, true_score, reduce=False)
        ism = sm.implicit_score_matching(_linear(A, b), x, reduce=False)
        for got, want in [(esm, _esm_closed(A, b, mu, cov)), (ism, _ism_closed(A, b, mu, cov))]:
            assert abs(got.mean() - want) < 5 * got.std() / math.sqrt(len(x))
        diff = esm - ism
        assert abs(diff.mean() - const) < 5 * diff.std() / math.sqrt(len(x))
        torch.testing.assert_close(_esm_closed(A, b, mu, cov) - _ism_closed(A, b, mu, cov), const)


def test_hutchinson_trace_is_unbiased_for_the_exact_one():
    net = torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.Tanh(), torch.nn.Linear(16, D)).double()
    x = torch.randn(1, D, dtype=torch.float64).expand(40_000, D).contiguous()
    exact = sm.implicit_score_matching(net, x[:1])
    est = sm.implicit_score_matching(net, x, method="hutchinson", generator=torch.Generator().manual_seed(3),
                                     reduce=False)
    assert est.std() > 1e-3  # it is random ...
    assert abs(est.mean() - exact) < 5 * est.std() / math.sqrt(len(x))  # ... and unbiased
    many = sm.implicit_score_matching(net, x[:2], method="hutchinson", n_probes=20_000,
                                      generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(many, exact, atol=0.05 * est.std().item(), rtol=0)


def test_minimising_the_implicit_loss_recovers_the_gaussian_precision_and_mean():
    mu, cov, L = _gaussian(5)
    x = mu + torch.randn(2000, D, generator=torch.Generator().manual_seed(6), dtype=torch.float64) @ L.T
    A = torch.eye(D, dtype=torch.float64).requires_grad_(True)
    b = torch.zeros(D, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([A, b], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = sm.implicit_score_matching(_linear(A, b), x)  # the trace term needs create_graph
        loss.backward()
        return loss

    opt.step(closure)
    m = x.mean(0)
    S = (x - m).T @ (x - m) / len(x)  # the minimiser on these samples: A = S^-1, b = mean
    torch.testing.assert_close(A.detach(), torch.linalg.inv(S), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(b.detach(), m, atol=1e-6, rtol=1e-6)


def test_denoising_loss_is_implicit_loss_of_the_noised_density_plus_D_over_2_sigma_squared():
    mu, cov, L = _gaussian(7)
    sigma, n = 0.7, 400_000
    g = torch.Generator().manual_seed(8)
    x = mu + torch.randn(n, D, generator=g, dtype=torch.float64) @ L.T
    cov_noised = cov + sigma**2 * torch.eye(D, dtype=torch.float64)
    for A, b in _settings(9):
        dsm = sm.denoising_score_matching(_linear(A, b), x, sigma, generator=g, reduce=False)
        want = _ism_closed(A, b, mu, cov_noised) + D / (2 * sigma**2)
        assert abs(dsm.mean() - want) < 5 * dsm.std() / math.sqrt(n)


def test_denoising_minus_explicit_at_the_noised_mixture_is_the_same_for_every_model():
    """Vincent (2011) on a non-Gaussian density: a 2-D mixture, whose noised version is again a mixture."""
    means = torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.5, -2.0]], dtype=torch.float64)
    s, sigma, n = 0.4, 0.5, 200_000
    clean = oracles.GaussianMixture(means, stds=s, weights=torch.tensor([0.5, 0.3, 0.2]))
    noised = oracles.GaussianMixture(means, stds=math.sqrt(s**2 + sigma**2), weights=clean.weights)
    true_score = lambda z: noised.score(z, 0.0, paths.VEPath())  # VE at t = 0: the density itself
    g = torch.Generator().manual_seed(10)
    x0, eps = clean.sample(n, generator=g), torch.randn(n, 2, generator=g, dtype=torch.float64)
    const = 2 / (2 * sigma**2) - 0.5 * true_score(x0 + sigma * eps).pow(2).sum(1).mean()
    torch.manual_seed(11)
    for net in [torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()
                for _ in range(3)]:
        diff = (sm.denoising_score_matching(net, x0, sigma, eps=eps, reduce=False)
                - sm.explicit_score_matching(net, x0 + sigma * eps, true_score, reduce=False))
        assert abs(diff.mean() - const) < 5 * diff.std() / math.sqrt(n)


def test_explicit_loss_is_zero_at_the_true_score_and_accepts_its_values():
    x = torch.randn(10, 2, dtype=torch.float64)
    f = _linear(torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    assert sm.explicit_score_matching(f, x, f).item() == 0.0
    assert sm.explicit_score_matching(f, x, -x, reduce=False).shape == (10,)
    x[0] = 0.0  # a field that ignores x has trace 0 everywhere, also at the origin
    zero = sm.implicit_score_matching(torch.zeros_like, x, reduce=False)  # tr 0 + |0|^2 / 2
    torch.testing.assert_close(zero, torch.zeros(10, dtype=torch.float64))


def test_defaults_reduce_to_the_batch_mean_and_generators_make_draws_repeatable():
    """reduce=True (the default) is the mean of the per-sample values; the same generator seed gives the same
    Hutchinson probes and the same DSM noise (the noise is drawn as randn with that generator), another seed not."""
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    gens = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    for loss in (lambda **k: sm.explicit_score_matching(net, x, -x, **k),
                 lambda **k: sm.implicit_score_matching(net, x, method="hutchinson", generator=gens(1), **k),
                 lambda **k: sm.denoising_score_matching(net, x, 0.3, generator=gens(1), **k)):
        torch.testing.assert_close(loss(), loss(reduce=False).mean())
    hutch = [sm.implicit_score_matching(net, x, method="hutchinson", generator=gens(k)) for k in (2, 2, 3)]
    assert hutch[0] == hutch[1] and hutch[0] != hutch[2]
    assert hutch[0] == sm.implicit_score_matching(net, x, method="hutchinson", n_probes=1, generator=gens(2))
    eps = torch.randn(x.shape, generator=gens(4), dtype=x.dtype)
    torch.testing.assert_close(sm.denoising_score_matching(net, x, 0.3, generator=gens(4)),
                               sm.denoising_score_matching(net, x, 0.3, eps=eps))


def test_losses_take_the_score_models_dtype():
    """A float32 network scored against float64 references (true score, noise) gives a float32 loss."""
    x = torch.randn(8, 2)
    net = torch.nn.Linear(2, 2)
    assert sm.explicit_score_matching(net, x, -x.double()).dtype == torch.float32
    assert sm.denoising_score_matching(net, x, 0.5, eps=torch.randn(8, 2, dtype=torch.float64)).dtype == torch.float32


@pytest.mark.parametrize("call,exc,words", [
    (lambda: sm.explicit_score_matching("net", torch.zeros(4, 2), torch.zeros(4, 2)), TypeError,
     "score_fn must be a function"),
    (lambda: sm.explicit_score_matching(lambda x: x, torch.zeros(4), torch.zeros(4)), ValueError,
     "x must have at least 2"),
    (lambda: sm.explicit_score_matching(lambda x: x, torch.zeros(4, 2), torch.zeros(4, 3)), ValueError,
     "true_score must return a tensor shaped like x"),
    (lambda: sm.explicit_score_matching(lambda x: x[:, :1], torch.zeros(4, 2), torch.zeros(4, 2)), ValueError,
     "score_fn must return a tensor shaped like x"),
    (lambda: sm.implicit_score_matching(lambda x: x, torch.zeros(4, 2), method="sliced"), ValueError,
     "method must be one of"),
    (lambda: sm.implicit_score_matching(lambda x: x, torch.zeros(4, 2), n_probes=0), ValueError,
     "n_probes must be an integer >= 1"),
    (lambda: sm.implicit_score_matching(lambda x: x, torch.full((4, 2), float("nan"))), ValueError,
     "x contains NaN"),
    (lambda: sm.denoising_score_matching(lambda x: x, torch.zeros(4, 2), 0.0), ValueError, "sigma must be > 0"),
    (lambda: sm.denoising_score_matching(lambda x: x, torch.zeros(4, 2), 0.5, eps=torch.zeros(4, 3)), ValueError,
     "eps must have the shape of x"),
    (lambda: sm.denoising_score_matching(lambda x: x, torch.zeros(4, 2), 0.5, reduce=1), TypeError,
     "reduce must be True or False"),
    (lambda: sm.implicit_score_matching(3, torch.zeros(4, 2)), TypeError, "score_fn must be a function"),
    (lambda: sm.implicit_score_matching(lambda x: x[:, :1], torch.zeros(4, 2)), ValueError,
     "score_fn must return a tensor shaped like x"),
    (lambda: sm.implicit_score_matching(lambda x: "s", torch.zeros(4, 2)), ValueError,
     r"score_fn must return a tensor shaped like x \(4, 2\), got str"),
    (lambda: sm.explicit_score_matching(lambda x: x, torch.zeros(0, 2), torch.zeros(0, 2)), ValueError,
     "x must hold at least one sample"),
    (lambda: sm.denoising_score_matching(None, torch.zeros(4, 2), 0.5), TypeError, "score_fn must be a function"),
    (lambda: sm.denoising_score_matching(lambda x: x[:, :1], torch.zeros(4, 2), 0.5), ValueError,
     r"score_fn must return a tensor shaped like x \(4, 2\), got \(4, 1\)"),
    (lambda: sm.denoising_score_matching(lambda x: x, torch.zeros(4, 2), 0.5, eps=[0.0] * 8), TypeError, "eps must be"),
    (lambda: sm.denoising_score_matching(lambda x: x, torch.zeros(4, 2), 0.5, eps=torch.zeros(8)), ValueError,
     "eps must have at least 2"),
])
def test_bad_input(call, exc, words):
    with pytest.raises(exc, match=words):
        call()
