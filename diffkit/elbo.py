r"""The DDPM variational bound, term by term (derived in chapter 3).

For the discrete chain of :class:`~diffkit.paths.DiscretePath` (step :math:`n` of :math:`N` at :math:`t = n/N`,
:math:`\alpha_n = 1 - \beta_n`, :math:`\bar\alpha_n = \prod_{i \le n}\alpha_i`), Jensen's inequality gives

.. math::
    -\log p_\theta(x_0) \le L = \underbrace{D_{KL}(q(x_N|x_0)\,\|\,p(x_N))}_{L_N\ (\text{prior})}
    + \sum_{n=2}^{N} \underbrace{\mathbb E_q\, D_{KL}(q(x_{n-1}|x_n, x_0)\,\|\,p_\theta(x_{n-1}|x_n))}_{L_{n-1}}
    \underbrace{- \mathbb E_q \log p_\theta(x_0|x_1)}_{L_0\ (\text{decoder})} .

Everything here works in nats and float64, per sample (summed over every non-batch dimension), with step
indices ``n`` as integer tensors (B,) in :math:`1..N`.  The model is ``model(x, t)`` predicting
:math:`\varepsilon` at :math:`t = n/N` (the book's convention: :math:`t = 0` is data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_choice, check_positive_int, check_tensor
from .paths import DiscretePath

__all__ = ["posterior", "gaussian_kl", "eps_weight", "model_mean", "kl_term", "prior_kl",
           "discretized_gaussian_log_likelihood", "decoder_nll", "Bound", "nll_bound", "importance_proposal",
           "VARIANCES", "SAMPLINGS"]

VARIANCES = ("beta_tilde", "beta")


def _check_path(path: object) -> DiscretePath:
    if not isinstance(path, DiscretePath):
        raise TypeError(f"path must be a diffkit.paths.DiscretePath (the discrete DDPM chain), got "
                        f"{type(path).__name__}")
    return path


def _steps(path: DiscretePath, n: Tensor | int, batch: int, low: int = 1) -> Tensor:
    n = torch.as_tensor(n)
    if n.is_floating_point() or n.dtype == torch.bool:
        raise TypeError("n must hold integer step indices 1..N (t = n/N), not times")
    n = n.long().expand(batch) if n.ndim == 0 else n.long()
    if n.shape != (batch,):
        raise ValueError(f"n must be one step index or one per sample, shape ({batch},), got {tuple(n.shape)}")
    if (n < low).any() or (n > path.n_steps).any():
        raise ValueError(f"step indices must lie in {low}..{path.n_steps}")
    return n


def _col(v: Tensor, x: Tensor) -> Tensor:
    """(B,) coefficients as a column that broadcasts against x (B, ...)."""
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(torch.float64)


def _per_sample(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).sum(-1)


def posterior(path: DiscretePath, x0: Tensor, x_n: Tensor, n: Tensor | int) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of :math:`q(x_{n-1} | x_n, x_0) = \mathcal N(\tilde\mu_n, \tilde\beta_n I)` (chapter 3):

    .. math:: \tilde\mu_n = \frac{\sqrt{\bar\alpha_{n-1}}\,\beta_n}{1 - \bar\alpha_n}\,x_0
              + \frac{\sqrt{\alpha_n}\,(1 - \bar\alpha_{n-1})}{1 - \bar\alpha_n}\,x_n,
              \qquad \tilde\beta_n = \frac{1 - \bar\alpha_{n-1}}{1 - \bar\alpha_n}\,\beta_n .

    Returns ``(mean, var)``: ``mean`` like ``x0`` (float64), ``var`` (B,) (the same for every coordinate);
    :math:`\tilde\beta_1 = 0`."""
    path = _check_path(path)
    x0, x_n = check_tensor("x0", x0).double(), check_tensor("x_n", x_n).double()
    n = _steps(path, n, x0.shape[0])
    ab, ab_prev, beta = path.alpha_bar[n], path.alpha_bar[n - 1], path.betas[n - 1]
    mean = _col(ab_prev.sqrt() * beta / (1 - ab), x0) * x0 + _col((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab),
                                                                    x0) * x_n
    return mean, (1 - ab_prev) / (1 - ab) * beta


def gaussian_kl(mu1: Tensor, var1: Tensor, mu2: Tensor, var2: Tensor) -> Tensor:
    r"""Elementwise :math:`D_{KL}(\mathcal N(\mu_1, \sigma_1^2)\,\|\,\mathcal N(\mu_2, \sigma_2^2))
    = \tfrac12\big[\log\tfrac{\sigma_2^2}{\sigma_1^2} + \tfrac{\sigma_1^2 + (\mu_1 - \mu_2)^2}{\sigma_2^2} - 1\big]`
    in nats (arguments are *variances*, broadcast together; chapter 3)."""
    mu1, var1, mu2, var2 = (torch.as_tensor(a, dtype=torch.float64) for a in (mu1, var1, mu2, var2))
    if (var1 <= 0).any() or (var2 <= 0).any():
        raise ValueError("variances must be positive")
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1)


def _model_var(path: DiscretePath, n: Tensor, variance: str) -> Tensor:
    check_choice("variance", variance, VARIANCES)
    ab, ab_prev, beta = path.alpha_bar[n], path.alpha_bar[n - 1], path.betas[n - 1]
    return (1 - ab_prev) / (1 - ab) * beta if variance == "beta_tilde" else beta


def model_mean(path: DiscretePath, x_n: Tensor, n: Tensor | int, eps_hat: Tensor) -> Tensor:
    r"""The reverse-step mean in :math:`\varepsilon` form (chapter 3),
    :math:`\mu_\theta = \frac{1}{\sqrt{\alpha_n}}\big(x_n - \frac{\beta_n}{\sqrt{1 - \bar\alpha_n}}\hat\varepsilon\big)`:
    :math:`\tilde\mu_n` with :math:`x_0` replaced by :math:`\hat x_0 = (x_n - \sqrt{1-\bar\alpha_n}\,\hat\varepsilon)
    /\sqrt{\bar\alpha_n}`."""
    path = _check_path(path)
    x_n, eps_hat = x_n.double(), eps_hat.double()
    n = _steps(path, n, x_n.shape[0])
    ab, beta = path.alpha_bar[n], path.betas[n - 1]
    return (x_n - _col(beta / (1 - ab).sqrt(), x_n) * eps_hat) / _col((1 - beta).sqrt(), x_n)


def eps_weight(path: DiscretePath, n: Tensor | int, variance: str = "beta_tilde") -> Tensor:
    r"""The weight :math:`w_n = \frac{\beta_n^2}{2\sigma_n^2\,\alpha_n\,(1 - \bar\alpha_n)}` that turns the
    squared error of :math:`\hat\varepsilon` into the KL term (chapter 3): with :math:`\sigma_n^2 = \tilde\beta_n`,
    :math:`L_{n-1} = w_n \|\varepsilon - \hat\varepsilon\|^2` exactly; with :math:`\sigma_n^2 = \beta_n` up to
    a constant.  (B,) for ``n`` (B,), :math:`n \ge 2`."""
    path = _check_path(path)
    n = torch.as_tensor(n).long().reshape(-1)
    n = _steps(path, n, n.shape[0], low=2)
    ab, beta = path.alpha_bar[n], path.betas[n - 1]
    return beta**2 / (2 * _model_var(path, n, variance) * (1 - beta) * (1 - ab))


def kl_term(path: DiscretePath, x0: Tensor, x_n: Tensor, n: Tensor | int, eps_hat: Tensor,
            variance: str = "beta_tilde") -> Tensor:
    r""":math:`L_{n-1} = D_{KL}(q(x_{n-1}|x_n, x_0)\,\|\,\mathcal N(\mu_\theta(x_n, \hat\varepsilon), \sigma_n^2 I))`
    per sample (B,), in nats, for :math:`n \ge 2` and :math:`\sigma_n^2 \in \{\tilde\beta_n, \beta_n\}`
    (chapter 3), computed from the closed-form Gaussian KL."""
    path = _check_path(path)
    n = _steps(path, n, x0.shape[0], low=2)
    mean_q, var_q = posterior(path, x0, x_n, n)
    mean_p = model_mean(path, x_n, n, eps_hat)
    var_p = _model_var(path, n, variance)
    return _per_sample(gaussian_kl(mean_q, _col(var_q, x0), mean_p, _col(var_p, x0)))


def prior_kl(path: DiscretePath, x0: Tensor) -> Tensor:
    r"""The prior term :math:`L_N = D_{KL}(\mathcal N(\sqrt{\bar\alpha_N}x_0, (1 - \bar\alpha_N)I)\,\|\,\mathcal N(0, I))`
    per sample (B,), in nats (chapter 3): no parameters, and small when :math:`\bar\alpha_N \approx 0`."""
    path = _check_path(path)
    x0 = check_tensor("x0", x0).double()
    ab = path.alpha_bar[-1]
    return _per_sample(gaussian_kl(ab.sqrt() * x0, 1 - ab, torch.zeros_like(x0), torch.ones_like(x0)))


def _log_ndtr_diff(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for a < b, stable in both tails."""
    flip = a > 0  # use the upper tail there: Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp((log_lo - log_hi).clamp(max=0.0)).clamp(max=1 - 1e-300))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, std: Tensor | float, *,
                                        levels: int = 256) -> Tensor:
    r"""Ho et al.'s discretized Gaussian decoder (chapter 3), elementwise log-probabilities of the pixel values ``x``
    (the ``levels`` values :math:`-1 + 2k/(L-1)` of [-1, 1]):

    .. math:: P(x \mid \mu, \sigma) = \Phi\Big(\frac{\delta_+(x) - \mu}{\sigma}\Big)
              - \Phi\Big(\frac{\delta_-(x) - \mu}{\sigma}\Big),\quad
              \delta_\pm(x) = x \pm \frac{1}{L - 1},\ \delta_+(1) = +\infty,\ \delta_-(-1) = -\infty,

    so the probabilities of the :math:`L` bins sum to one: a probability, not a density."""
    check_positive_int("levels", levels, minimum=2)
    x, mean = check_tensor("x", x).double(), torch.as_tensor(mean, dtype=torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64)
    half = 1.0 / (levels - 1)
    upper = torch.where(x > 1 - 1e-6, torch.full_like(x, math.inf), x + half)
    lower = torch.where(x < -1 + 1e-6, torch.full_like(x, -math.inf), x - half)
    return _log_ndtr_diff((lower - mean) / std, (upper - mean) / std)


def decoder_nll(path: DiscretePath, x0: Tensor, x_1: Tensor, eps_hat: Tensor, *, discrete: bool = True,
                levels: int = 256) -> Tensor:
    r"""The decoder term :math:`L_0 = -\log p_\theta(x_0 | x_1)` per sample (B,), in nats (chapter 3), with mean
    :math:`\mu_\theta(x_1, 1) = \hat x_0` and variance :math:`\sigma_1^2 = \beta_1`: discretized (pixels, a
    probability, ``discrete=True``) or the Gaussian density (continuous data)."""
    path = _check_path(path)
    x0 = check_tensor("x0", x0).double()
    mean = model_mean(path, x_1, 1, eps_hat)
    std = path.betas[0].sqrt()
    if discrete:
        return -_per_sample(discretized_gaussian_log_likelihood(x0, mean, std, levels=levels))
    log_p = -0.5 * ((x0 - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return -_per_sample(log_p)


SAMPLINGS = ("uniform", "importance", "stratified")


@dataclass(frozen=True)
class Bound:
    """The terms of the bound per sample (B,), in nats; ``middle`` is :math:`\\sum_{n=2}^N L_{n-1}` (exact, or an
    unbiased estimate when ``n_terms < N - 1``); ``dims`` is the number of dimensions per sample.

    ``middle_se`` (B,) estimates the standard error of each sample's ``middle`` over the random steps and noise
    draws (the spread of the single-draw estimates over :math:`\\sqrt k` for independent steps; neighbouring
    strata or steps paired, which over-estimates it slightly, for ``"stratified"`` and for all terms).  ``terms``
    (B, N - 1) holds every :math:`L_{n-1}`, :math:`n = 2..N`, when all of them were computed (else ``None``):
    the pilot of :func:`importance_proposal`."""

    prior: Tensor
    middle: Tensor
    decoder: Tensor
    dims: int
    n_terms: int
    middle_se: Tensor | None = None
    terms: Tensor | None = None

    @property
    def total(self) -> Tensor:
        return self.prior + self.middle + self.decoder

    @property
    def bits_per_dim(self) -> Tensor:
        """The bound per sample in bits per dimension, :math:`L / (D \\ln 2)`."""
        return self.total / (self.dims * math.log(2))

    def mean_and_se(self) -> tuple[float, float]:
        """Mean bits/dim over the samples and its standard error (data and random steps together)."""
        b = self.bits_per_dim
        return b.mean().item(), (b.std() / math.sqrt(b.numel())).item() if b.numel() > 1 else math.nan

    def upper_limit(self, level: float = 0.95) -> float:
        """A one-sided upper confidence limit on the mean bits/dim: mean + :math:`z_{level}` standard errors
        (1.645 of them at 95%).  The mean is an unbiased estimate *of* a bound, so it can fall below the bound;
        this limit is above the expected bound with probability ``level`` (normal approximation)."""
        if not 0.5 <= level < 1:
            raise ValueError(f"level must lie in [0.5, 1), got {level}")
        mean, se = self.mean_and_se()
        return mean + math.sqrt(2) * torch.special.erfinv(torch.tensor(2 * level - 1.0)).item() * se


def importance_proposal(terms: Tensor, *, mix: float = 0.1) -> Tensor:
    r"""Step probabilities :math:`p(n) \propto \sqrt{\mathbb E[L_{n-1}^2]}`, :math:`n = 2..N`, from a pilot
    ``terms`` (B, N - 1) (``Bound.terms`` of an all-terms :func:`nll_bound`), mixed with a share ``mix`` of the
    uniform law so that every step keeps a probability of at least ``mix / (N - 1)`` (chapter 3; Nichol and
    Dhariwal's importance sampling of the bound).  Returns (N - 1,) float64 summing to one."""
    terms = check_tensor("terms", terms, min_ndim=2).double()
    if not 0 < mix <= 1:
        raise ValueError(f"mix must lie in (0, 1], got {mix}")
    root = terms.pow(2).mean(0).sqrt()
    if not torch.isfinite(root).all() or root.sum() <= 0:
        raise ValueError("the pilot terms must be finite and not all zero")
    return (1 - mix) * root / root.sum() + mix / root.numel()


def _draw_steps(N: int, B: int, k: int, sampling: str, proposal: Tensor | None,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Steps (B, k) in 2..N and their weights 1 / (k p(n)), so that sum_j w_j L_{n_j} is unbiased."""
    if proposal is None:
        p = torch.full((N - 1,), 1.0 / (N - 1), dtype=torch.float64)
    else:
        p = check_tensor("proposal", proposal).double()
        if p.shape != (N - 1,) or (p <= 0).any() or abs(p.sum().item() - 1) > 1e-6:
            raise ValueError(f"proposal must hold N - 1 = {N - 1} positive probabilities of the steps 2..N "
                             f"summing to one, got shape {tuple(p.shape)}")
    if sampling == "uniform":
        if proposal is not None:
            raise ValueError("sampling='uniform' takes no proposal: use sampling='importance'")
        idx = torch.randint(0, N - 1, (B, k), generator=generator)
    else:
        u = torch.rand(B, k, generator=generator, dtype=torch.float64)
        if sampling == "stratified":  # one draw in each of the k equal-probability strata
            u = (torch.arange(k, dtype=torch.float64) + u) / k
        cdf = torch.cumsum(p, 0)
        idx = torch.searchsorted(cdf, u, right=True).clamp(max=N - 2)  # inverse CDF: P(idx = i) = p[i]
    return idx + 2, 1.0 / (k * p[idx])


def _pair_se(contrib: Tensor) -> Tensor:
    """Standard error of the sum of independent columns (B, k), neighbours paired (k >= 2)."""
    k = contrib.shape[1] - contrib.shape[1] % 2
    var = (contrib[:, 0:k:2] - contrib[:, 1:k:2]).pow(2).sum(-1)
    if contrib.shape[1] % 2:  # an odd column out: pair it with its left neighbour
        var = var + (contrib[:, -1] - contrib[:, -2]).pow(2)
    return var.sqrt()


@torch.no_grad()
def nll_bound(model: Callable[..., Tensor], x0: Tensor, path: DiscretePath, *, n_terms: int | None = None,
              sampling: str = "uniform", proposal: Tensor | None = None,
              variance: str | Sequence[str] = "beta_tilde", discrete: bool = True, levels: int = 256,
              batch_size: int = 512, generator: torch.Generator | None = None) -> Bound | dict[str, Bound]:
    r"""The variational bound :math:`L \ge -\log p_\theta(x_0)` of an :math:`\varepsilon`-model, per sample
    (chapter 3): :math:`L_N` + :math:`\sum_{n=2}^N L_{n-1}` + :math:`L_0`, each :math:`L` at one draw
    :math:`x_n \sim q(x_n|x_0)`.

    ``n_terms=None`` sums all :math:`N - 1` KL terms.  Otherwise each sample gets ``n_terms`` = :math:`k` steps
    and the sum is estimated without bias by :math:`\sum_j L_{n_j - 1} / (k\,p(n_j))`:

    * ``sampling="uniform"``: :math:`n_j` uniform on :math:`2..N` (so :math:`(N-1)` times the mean term);
    * ``"importance"``: :math:`n_j` drawn independently from ``proposal`` (:func:`importance_proposal`);
    * ``"stratified"``: one :math:`n_j` in each of :math:`k` strata of equal probability under ``proposal``
      (uniform when ``None``), by the inverse CDF of :math:`(j + U_j)/k`.

    ``variance`` names :math:`\sigma_n^2` (``"beta_tilde"`` or ``"beta"``); a sequence of names returns a dict
    ``{name: Bound}`` computed from the same network calls.  With ``discrete=True`` (8-bit pixels in [-1, 1])
    the bits/dim bound the discrete negative log-likelihood."""
    path = _check_path(path)
    x0 = check_tensor("x0", x0, min_ndim=2).double()
    names = (variance,) if isinstance(variance, str) else tuple(variance)
    for name in names:
        check_choice("variance", name, VARIANCES)
    check_choice("sampling", sampling, SAMPLINGS)
    B, N = x0.shape[0], path.n_steps
    if n_terms is None:
        k = N - 1
        steps, weights = torch.arange(2, N + 1).repeat(B, 1), torch.ones(B, N - 1, dtype=torch.float64)
    else:
        k = check_positive_int("n_terms", n_terms)
        if sampling == "importance" and proposal is None:
            raise ValueError("sampling='importance' needs a proposal (see elbo.importance_proposal)")
        steps, weights = _draw_steps(N, B, k, sampling, proposal, generator)
    owner = torch.arange(B).repeat_interleave(k)
    flat_steps = torch.cat([steps, torch.ones(B, 1, dtype=torch.long)], 1).reshape(-1)  # step 1: the decoder
    flat_owner = torch.cat([owner.reshape(B, -1), torch.arange(B)[:, None]], 1).reshape(-1)
    slot = torch.cat([torch.arange(k).repeat(B, 1), torch.full((B, 1), -1)], 1).reshape(-1)
    contrib = {name: torch.zeros(B, k, dtype=torch.float64) for name in names}  # w_j L_{n_j - 1}
    decoder = torch.zeros(B, dtype=torch.float64)
    dtype = next((p.dtype for p in getattr(model, "parameters", lambda: iter(()))()), x0.dtype)
    for start in range(0, flat_steps.numel(), batch_size):
        n, who = flat_steps[start:start + batch_size], flat_owner[start:start + batch_size]
        j = slot[start:start + batch_size]
        x, ab = x0[who], path.alpha_bar[n]
        eps = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        x_n = _col(ab.sqrt(), x) * x + _col((1 - ab).sqrt(), x) * eps
        eps_hat = model(x_n.to(dtype), (n.double() / N).to(dtype)).double()
        dec = n == 1
        if (~dec).any():
            w = weights[who[~dec], j[~dec]]
            for name in names:
                kl = kl_term(path, x[~dec], x_n[~dec], n[~dec], eps_hat[~dec], name)
                contrib[name][who[~dec], j[~dec]] = kl * w
        if dec.any():
            decoder.index_add_(0, who[dec], decoder_nll(path, x[dec], x_n[dec], eps_hat[dec], discrete=discrete,
                                                         levels=levels))
    prior, out = prior_kl(path, x0), {}
    for name in names:
        c = contrib[name]
        if n_terms is None or sampling == "stratified":
            se = _pair_se(c) if k >= 2 else torch.full((B,), math.nan, dtype=torch.float64)
        else:  # k independent single-draw estimates k * c_j of the sum
            se = (k * c).std(-1) / math.sqrt(k) if k >= 2 else torch.full((B,), math.nan, dtype=torch.float64)
        out[name] = Bound(prior, c.sum(-1), decoder, x0[0].numel(), k, se, c if n_terms is None else None)
    return out[variance] if isinstance(variance, str) else out
