r"""Exact oracles: Gaussian mixtures whose every marginal along a Gaussian path is known in closed form.

If :math:`x_0 \sim \sum_k w_k\,\mathcal N(m_k, \Sigma_k)` and :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`, then
:math:`p_t = \sum_k w_k\,\mathcal N(\alpha_t m_k,\ C_k)` with :math:`C_k = \alpha_t^2\Sigma_k + \sigma_t^2 I`, so

* score :math:`\nabla\log p_t(x) = -\sum_k r_k(x)\,C_k^{-1}(x - \alpha_t m_k)` with responsibilities :math:`r_k`;
* denoiser :math:`\mathbb E[x_0\mid x_t] = \sum_k r_k\big(m_k + \alpha_t\Sigma_k C_k^{-1}(x - \alpha_t m_k)\big)`;
* :math:`\mathbb E[\varepsilon\mid x_t] = -\sigma_t\nabla\log p_t` (Tweedie, chapter 5) and the marginal velocity
  :math:`u_t = \dot\alpha_t\,\mathbb E[x_0|x_t] + \dot\sigma_t\,\mathbb E[\varepsilon|x_t]` (chapter 7).

A finite data set is the mixture with zero covariances: its denoiser is the *ideal denoiser*, which only
ever reproduces training points (memorisation, chapter 13).  Samplers are tested by driving them with
these oracles (:meth:`GaussianMixture.as_model`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import as_time, check_choice, check_finite, check_number, check_positive_int, check_tensor
from .paths import GaussianPath, Time, check_path
from .targets import TARGETS, from_x0_score

__all__ = ["GaussianMixture", "UniformBox", "eight_gaussians", "OracleModel"]


class GaussianMixture:
    """A mixture :math:`\\sum_k w_k \\mathcal N(m_k, \\Sigma_k)` in float64, optionally with a class label per component.

    Give either ``covs`` of shape (K, D, D) (full covariances, for low dimension) or ``stds`` (a number or a
    (K,) tensor: isotropic :math:`\\Sigma_k = s_k^2 I`, zero allowed, which scales to images).
    """

    def __init__(self, means: Tensor, covs: Tensor | None = None, stds: Tensor | float | None = None,
                 weights: Tensor | None = None, labels: Tensor | None = None):
        means = check_finite("means", check_tensor("means", means, ndim=2)).to(torch.float64)
        self.means = means
        K, D = means.shape
        self.dim = D
        if (covs is None) == (stds is None):
            raise ValueError("give exactly one of covs (K, D, D) or stds (number or (K,))")
        if covs is not None:
            covs = check_tensor("covs", covs, ndim=3).to(torch.float64)
            if covs.shape != (K, D, D):
                raise ValueError(f"covs must have shape ({K}, {D}, {D}), got {tuple(covs.shape)}")
            if not torch.allclose(covs, covs.transpose(1, 2)) or (torch.linalg.eigvalsh(covs) < -1e-12).any():
                raise ValueError("covs must be symmetric positive semi-definite matrices")
            self.covs, self.stds = covs, None
        else:
            stds_t = torch.as_tensor(stds, dtype=torch.float64)
            if stds_t.ndim > 1 or stds_t.numel() not in (1, K):
                raise ValueError(f"stds must be a number or {K} numbers (one per component), got shape "
                                 f"{tuple(stds_t.shape)}")
            stds_t = stds_t.reshape(-1).expand(K).clone()
            if not torch.isfinite(stds_t).all() or (stds_t < 0).any():
                raise ValueError("stds must be finite and >= 0")
            self.covs, self.stds = None, stds_t
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {K} non-negative numbers with a positive sum")
        self.weights = weights / weights.sum()
        if labels is not None:
            if torch.as_tensor(labels).is_floating_point():
                raise TypeError("labels must be integer class indices (a long tensor), got floating values")
            labels = torch.as_tensor(labels, dtype=torch.long)
            if labels.shape != (K,) or (labels < 0).any():
                raise ValueError(f"labels must be {K} non-negative class indices")
        self.labels = labels

    @classmethod
    def from_data(cls, data: Tensor, labels: Tensor | None = None) -> GaussianMixture:
        """The empirical distribution of a finite data set (N, ...) — its denoiser is the ideal denoiser."""
        data = check_tensor("data", data, min_ndim=2)
        return cls(data.reshape(data.shape[0], -1), stds=0.0, labels=labels)

    @property
    def num_classes(self) -> int:
        """Number of classes; the null label (unconditional) is this number."""
        return 0 if self.labels is None else int(self.labels.max()) + 1

    def sample(self, n: int, *, generator: torch.Generator | None = None, y: Tensor | None = None,
               return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` points (optionally only from components of class ``y[i]``)."""
        check_positive_int("n", n)
        logw = self._log_weights(n, y)
        k = torch.multinomial(logw.softmax(-1), 1, generator=generator).squeeze(-1)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        if self.covs is not None:
            chol = torch.linalg.cholesky(self.covs + 1e-12 * torch.eye(self.dim, dtype=torch.float64))
            x = self.means[k] + (chol[k] @ z.unsqueeze(-1)).squeeze(-1)
        else:
            x = self.means[k] + self.stds[k, None] * z
        if return_labels:
            return x, (self.labels[k] if self.labels is not None else k)
        return x

    # --- closed forms along a path ------------------------------------------------------------------
    def _log_weights(self, batch: int, y: Tensor | None) -> Tensor:
        logw = self.weights.log().expand(batch, -1)
        if y is None:
            return logw
        if self.labels is None:
            raise ValueError("y was given but this mixture has no labels")
        y = torch.as_tensor(y)
        if y.is_floating_point():
            raise TypeError("y must hold integer class labels (a long tensor), got floating values")
        y = y.to(torch.long)
        if y.shape != (batch,):
            raise ValueError(f"y must have shape ({batch},), got {tuple(y.shape)}")
        null = y == self.num_classes
        keep = (self.labels[None, :] == y[:, None]) | null[:, None]
        if not keep.any(-1).all():
            raise ValueError(f"y must be a class in 0..{self.num_classes - 1} or the null label {self.num_classes}")
        return logw.masked_fill(~keep, -math.inf)

    def _posterior(self, x: Tensor, t: Time, path: GaussianPath, y: Tensor | None):
        """Responsibilities r (B, K) and the per-component pieces needed by score and denoiser."""
        check_path(path)
        x = check_tensor("x", x, ndim=2).to(torch.float64)
        if x.shape[1] != self.dim:
            raise ValueError(f"x must have {self.dim} columns, got shape {tuple(x.shape)}")
        t = as_time("t", t, x.shape[0], x)
        a, s = path.alpha(t).to(torch.float64), path.sigma(t).to(torch.float64)  # (B,)
        logw = self._log_weights(x.shape[0], y)
        if self.covs is not None:
            eye = torch.eye(self.dim, dtype=torch.float64)
            C = a[:, None, None, None] ** 2 * self.covs + s[:, None, None, None] ** 2 * eye  # (B, K, D, D)
            diff = x[:, None, :] - a[:, None, None] * self.means  # (B, K, D)
            L = torch.linalg.cholesky(C)
            Cinv_diff = torch.cholesky_solve(diff.unsqueeze(-1), L).squeeze(-1)  # (B, K, D)
            logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
            maha = (diff * Cinv_diff).sum(-1)
        else:
            var = a[:, None] ** 2 * self.stds**2 + s[:, None] ** 2  # (B, K)
            sq = ((x**2).sum(-1, keepdim=True) - 2 * a[:, None] * (x @ self.means.T)
                  + a[:, None] ** 2 * (self.means**2).sum(-1)).clamp_min(0)
            point = var == 0  # point masses (stds 0) where sigma_t = 0: a data set at t = 0
            safe = torch.where(point, torch.ones_like(var), var)
            maha, logdet, Cinv_diff = sq / safe, self.dim * safe.log(), None
            if point.any():  # the limit sigma_t -> 0: all the mass on the nearest point (the nearest training point)
                near = sq == sq.masked_fill(~point, math.inf).min(-1, keepdim=True).values
                keep = point.any(-1, keepdim=True)
                logw = torch.where(keep, logw.masked_fill(~(point & near), -math.inf), logw)
                maha, logdet = torch.where(keep, 0.0, maha), torch.where(keep, 0.0, logdet)
        log_comp = logw - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
        return x, a, s, log_comp, Cinv_diff

    def responsibilities(self, x: Tensor, t: Time, path: GaussianPath, y: Tensor | None = None) -> Tensor:
        r"""Posterior component probabilities :math:`r_k(x) = p(k \mid x_t = x)` (B, K)."""
        return self._posterior(x, t, path, y)[3].softmax(-1)

    def log_prob(self, x: Tensor, t: Time, path: GaussianPath, y: Tensor | None = None) -> Tensor:
        r""":math:`\log p_t(x)` (B,); a data set (point masses) has no density where :math:`\sigma_t = 0`
        (a ValueError)."""
        x, a, s, log_comp, _ = self._posterior(x, t, path, y)
        if self.stds is not None and ((a[:, None] * self.stds) ** 2 + s[:, None] ** 2 == 0).any():
            raise ValueError("t: a distribution with point masses (a data set, GaussianMixture.from_data) has no "
                             "density where sigma_t = 0 (t = 0); evaluate at t > 0")
        return log_comp.logsumexp(-1)

    def _score_and_denoiser(self, x: Tensor, t: Time, path: GaussianPath, y: Tensor | None) -> tuple[Tensor, Tensor]:
        x, a, s, log_comp, Cinv_diff = self._posterior(x, t, path, y)
        r = log_comp.softmax(-1)
        if Cinv_diff is not None:
            score = -(r.unsqueeze(-1) * Cinv_diff).sum(1)
            comp = self.means + a[:, None, None] * (self.covs @ Cinv_diff.unsqueeze(-1)).squeeze(-1)
            return score, (r.unsqueeze(-1) * comp).sum(1)
        var = a[:, None] ** 2 * self.stds**2 + s[:, None] ** 2  # (B, K)
        point = (var == 0).any(-1, keepdim=True)  # rows at a point mass's sigma_t = 0: no score, x0 = nearest point
        var = torch.where(var == 0, torch.ones_like(var), var)
        w = r / var
        r_means = r @ self.means
        score = -(w.sum(-1, keepdim=True) * x - a[:, None] * (w @ self.means))
        score = torch.where(point, math.nan, score)
        c = self.stds**2 / var
        x0 = r_means - a[:, None] ** 2 * ((r * c) @ self.means) + a[:, None] * (r * c).sum(-1, keepdim=True) * x
        return score, x0

    def score(self, x: Tensor, t: Time, path: GaussianPath, y: Tensor | None = None) -> Tensor:
        r""":math:`\nabla_x \log p_t(x)` (B, D); at :math:`\sigma_t = 0` it is the data's score, undefined for a
        component with zero covariance (a data set: a ValueError)."""
        return self.predict(x, t, path, "score", y)

    def denoiser(self, x: Tensor, t: Time, path: GaussianPath, y: Tensor | None = None) -> Tensor:
        r""":math:`\mathbb E[x_0 \mid x_t = x]` (B, D); at :math:`\sigma_t = 0` the limit, which for a data set
        (:meth:`from_data`) is the nearest training point."""
        return self._score_and_denoiser(x, t, path, y)[1]

    def eps(self, x: Tensor, t: Time, path: GaussianPath, y: Tensor | None = None) -> Tensor:
        r""":math:`\mathbb E[\varepsilon \mid x_t = x] = -\sigma_t \nabla\log p_t(x)`."""
        return self.predict(x, t, path, "eps", y)

    def velocity(self, x: Tensor, t: Time, path: GaussianPath, y: Tensor | None = None) -> Tensor:
        r"""Marginal velocity :math:`u_t(x) = \dot\alpha_t\,\mathbb E[x_0|x] + \dot\sigma_t\,\mathbb E[\varepsilon|x]
        = \dot\alpha_t\,\mathbb E[x_0|x] - \sigma_t\dot\sigma_t\nabla\log p_t(x)`, finite at :math:`t = 0` where
        :math:`\dot\sigma_t` is infinite (VP, VE) but :math:`\sigma_t\dot\sigma_t` is not."""
        return self.predict(x, t, path, "velocity", y)

    def predict(self, x: Tensor, t: Time, path: GaussianPath, target: str, y: Tensor | None = None) -> Tensor:
        """The exact prediction of kind ``target`` (one of :data:`diffkit.targets.TARGETS`), at :math:`t = 0`
        too (see :func:`diffkit.targets.from_x0_score`)."""
        check_choice("target", target, TARGETS)
        check_tensor("x", x, ndim=2)
        t = as_time("t", t, x.shape[0], x)
        score, x0 = self._score_and_denoiser(x, t, path, y)
        return from_x0_score(x0, score, target, x.to(torch.float64), t.to(torch.float64), path)

    def as_model(self, path: GaussianPath, target: str = "eps") -> OracleModel:
        """A ``model(x, t, y=None)`` that returns the exact ``target`` prediction — a perfectly trained network."""
        check_path(path)
        check_choice("target", target, TARGETS)
        return OracleModel(self, path, target)


def _log_diff_ndtr(a: Tensor, b: Tensor) -> Tensor:
    r""":math:`\log(\Phi(a) - \Phi(b))` for :math:`a > b`, accurate in both tails."""
    upper = b > 0  # both in the upper tail: Phi(a) - Phi(b) = Phi(-b) - Phi(-a)
    hi = torch.where(upper, torch.special.log_ndtr(-b), torch.special.log_ndtr(a))
    lo = torch.where(upper, torch.special.log_ndtr(-a), torch.special.log_ndtr(b))
    d = (lo - hi).clamp_max(-1e-300)  # log of a ratio < 1
    log1mexp = torch.where(d > -math.log(2), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))
    return hi + log1mexp


class UniformBox:
    r"""The uniform distribution on the box :math:`[\text{low}, \text{high}]^D`, optionally blurred by
    :math:`\mathcal N(0, \tau^2 I)` — what uniformly dequantized pixels look like (chapters 3 and 6).

    Along a path, each coordinate of :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon` has the density
    :math:`p_t(x) = \dfrac{\Phi(a) - \Phi(b)}{\alpha_t(\text{high} - \text{low})}`, with
    :math:`a = (x - \alpha_t\,\text{low})/s_t`, :math:`b = (x - \alpha_t\,\text{high})/s_t`,
    :math:`s_t^2 = \alpha_t^2\tau^2 + \sigma_t^2`, so its score is
    :math:`(\varphi(a) - \varphi(b))/(s_t(\Phi(a) - \Phi(b)))` and Tweedie gives
    :math:`\mathbb E[x_0|x_t] = (x + \sigma_t^2\nabla\log p_t)/\alpha_t` (the box mean where :math:`\alpha_t = 0`).
    Its exact score makes the likelihood of dequantized data checkable (:mod:`diffkit.likelihood`).
    """

    labels = None
    num_classes = 0

    def __init__(self, dim: int, low: float = -1.0, high: float = 1.0, blur: float = 0.0):
        self.dim = check_positive_int("dim", dim)
        self.low = check_number("low", low)
        self.high = check_number("high", high)
        if not self.high > self.low:
            raise ValueError(f"high must be greater than low, got low={low}, high={high}")
        self.blur = check_number("blur", blur, low=0.0)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` points (float64)."""
        check_positive_int("n", n)
        u = torch.rand(n, self.dim, generator=generator, dtype=torch.float64)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.low + (self.high - self.low) * u + self.blur * z

    def _pieces(self, x: Tensor, t: Time, path: GaussianPath) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        check_path(path)
        x = check_tensor("x", x, ndim=2).to(torch.float64)
        if x.shape[1] != self.dim:
            raise ValueError(f"x must have {self.dim} columns, got shape {tuple(x.shape)}")
        t = as_time("t", t, x.shape[0], x)
        a, sg = path.alpha(t).to(torch.float64)[:, None], path.sigma(t).to(torch.float64)[:, None]
        s = (a**2 * self.blur**2 + sg**2).sqrt()
        if (s == 0).any():
            raise ValueError("t: the unblurred box has no smooth density where sigma_t = 0 (t = 0): evaluate at "
                             "t > 0, or give the box a blur > 0 (its denoiser, predict(..., 'x0'), has a limit)")
        return x, a, sg, s

    def log_prob(self, x: Tensor, t: Time, path: GaussianPath) -> Tensor:
        r""":math:`\log p_t(x)` (B,)."""
        x, a, _, s = self._pieces(x, t, path)
        narrow = a * (self.high - self.low) < 1e-6 * s  # the box has shrunk to a point: a Gaussian
        gauss = -0.5 * ((x - a * 0.5 * (self.low + self.high)) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)
        a_safe = torch.where(narrow, torch.ones_like(a), a)
        box = _log_diff_ndtr((x - a_safe * self.low) / s, (x - a_safe * self.high) / s) \
            - torch.log(a_safe * (self.high - self.low))
        return torch.where(narrow, gauss, box).sum(-1)

    def score(self, x: Tensor, t: Time, path: GaussianPath) -> Tensor:
        r""":math:`\nabla_x\log p_t(x)` (B, D)."""
        x, a, _, s = self._pieces(x, t, path)
        narrow = a * (self.high - self.low) < 1e-6 * s
        a_safe = torch.where(narrow, torch.ones_like(a), a)
        pa, pb = (x - a_safe * self.low) / s, (x - a_safe * self.high) / s
        log_z = _log_diff_ndtr(pa, pb)
        half_log_2pi = 0.5 * math.log(2 * math.pi)
        box = (torch.exp(-0.5 * pa**2 - half_log_2pi - log_z) - torch.exp(-0.5 * pb**2 - half_log_2pi - log_z)) / s
        return torch.where(narrow, -(x - a * 0.5 * (self.low + self.high)) / s**2, box)

    def predict(self, x: Tensor, t: Time, path: GaussianPath, target: str, y: Tensor | None = None) -> Tensor:
        """The exact prediction of kind ``target`` (``y`` must be None: the box has no classes)."""
        check_choice("target", target, TARGETS)
        if y is not None:
            raise ValueError("y must be None: a UniformBox has no classes")
        x = check_tensor("x", x, ndim=2).to(torch.float64)
        t = as_time("t", t, x.shape[0], x)
        a, sg = path.alpha(t).to(torch.float64)[:, None], path.sigma(t).to(torch.float64)[:, None]
        sharp = (a**2 * self.blur**2 + sg**2) == 0  # the unblurred box at t = 0: x0 is x moved into the box
        if sharp.any():
            return from_x0_score(x.clamp(self.low, self.high), torch.full_like(x, math.nan), target, x, t, path)
        score = self.score(x, t, path)
        mean = torch.full_like(x, 0.5 * (self.low + self.high))
        x0 = torch.where(a > 0, (x + sg**2 * score) / torch.where(a > 0, a, torch.ones_like(a)), mean)
        return from_x0_score(x0, score, target, x, t, path)

    def as_model(self, path: GaussianPath, target: str = "eps") -> OracleModel:
        """A ``model(x, t, y=None)`` that returns the exact ``target`` prediction."""
        check_path(path)
        check_choice("target", target, TARGETS)
        return OracleModel(self, path, target)


class OracleModel:
    """``model(x, t, y=None)`` backed by a :class:`GaussianMixture` (or a :class:`UniformBox`); ``y == num_classes``
    means unconditional."""

    def __init__(self, mixture: GaussianMixture, path: GaussianPath, target: str):
        self.mixture, self.path, self.target = mixture, path, target
        self.null_label = mixture.num_classes if mixture.labels is not None else None

    @property
    def diffkit_objective(self) -> OracleModel:
        """What the oracle predicts (``.path``, ``.target``), read by the samplers as they read a trained model's
        record (:func:`diffkit.samplers.resolve_target`): sampled without ``target=``, it uses its own."""
        return self

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        out = self.mixture.predict(flat, t, self.path, self.target, y)
        return out.to(x.dtype).reshape(x.shape)


def eight_gaussians(radius: float = 4.0, std: float = 0.3, labelled: bool = True) -> GaussianMixture:
    """Eight isotropic Gaussians on a circle, component ``k`` labelled ``k`` (the course's standard 2-D oracle)."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], -1)
    return GaussianMixture(means, stds=std, labels=torch.arange(8) if labelled else None)

