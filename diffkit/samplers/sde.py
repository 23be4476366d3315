r"""Stochastic samplers: Euler–Maruyama on the reverse-time SDE, predictor–corrector (chapter 6) and annealed
Langevin dynamics (chapter 5)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_number, check_positive_int, randn_like
from ..paths import GaussianPath
from .base import Denoiser, Model, Trajectory, _check_grid, _coef, _run
from .gaussian import _gaussian_step, _posterior_std

__all__ = ["euler_maruyama", "predictor_corrector", "annealed_langevin"]


def _reverse_sde_step(den: Denoiser, x: Tensor, t: float, s: float, generator, noise: bool) -> Tensor:
    r"""One Euler–Maruyama step of the reverse SDE :math:`dx = [f x - g^2\nabla\log p_t]\,dt + g\,d\bar W` from t to s.

    Where :math:`\alpha_t = 0` (the start of the linear, cosine and zero-terminal-SNR paths) :math:`f = \dot\alpha/\alpha`
    and :math:`g^2` are infinite and the Euler–Maruyama step is undefined; there the step is taken in its exact
    form instead: the reverse SDE with :math:`\hat x_0` held fixed over the step is the time reversal of the
    forward process started at :math:`\hat x_0`, whose transition is the Gaussian posterior
    :math:`q(x_s \mid x_t, \hat x_0)` (mean :math:`\alpha_s\hat x_0` when :math:`\alpha_t = 0`, std
    :math:`\tilde\sigma_{t\to s}`; chapter 6)."""
    path = den.path
    f, g2 = _coef(path.drift, t), _coef(path.diffusion_sq, t)
    if not (math.isfinite(f) and math.isfinite(g2)):
        return _gaussian_step(den, x, t, s, lambda t, s: _posterior_std(path, t, s)[1] if noise else 0.0, generator)
    h = s - t  # negative
    out = x + (f * x - g2 * den.score(x, t)) * h
    if noise:
        out = out + (g2 * -h) ** 0.5 * randn_like(x, generator)
    return out


def euler_maruyama(model: Model, x: Tensor, ts: Tensor, path: GaussianPath, *, target: str | None = None,
                   y: Tensor | None = None, guidance: float = 1.0, null_label: int | None = None,
                   generator: torch.Generator | None = None, return_trajectory: bool = False,
                   progress: bool = False, clip_x0: float | None = None) -> Tensor | Trajectory:
    r"""Euler–Maruyama on the reverse-time SDE (Anderson, 1982; chapter 6):
    :math:`x_s = x_t - [f(t)x_t - g^2(t)\nabla\log p_t(x_t)]\,|h| + g(t)\sqrt{|h|}\,z`.
    The last step (to :math:`t = 0`) adds no noise."""
    return _run(lambda den, x, t, s, i: _reverse_sde_step(den, x, t, s, generator, noise=s > 0.0), model, x, ts,
                path, target=target, y=y, guidance=guidance, null_label=null_label,
                return_trajectory=return_trajectory, progress=progress, clip_x0=clip_x0, desc="Euler-Maruyama")


def _langevin_step(den: Denoiser, x: Tensor, t: float, step_size: Tensor | float, generator) -> Tensor:
    r"""Unadjusted Langevin: :math:`x \leftarrow x + \delta\,\nabla\log p_t(x) + \sqrt{2\delta}\,z` (chapter 5)."""
    z = randn_like(x, generator)
    return x + step_size * den.score(x, t) + (2 * step_size) ** 0.5 * z


def predictor_corrector(model: Model, x: Tensor, ts: Tensor, path: GaussianPath, *, target: str | None = None,
                        y: Tensor | None = None, guidance: float = 1.0, null_label: int | None = None,
                        generator: torch.Generator | None = None, return_trajectory: bool = False,
                        progress: bool = False,
                        clip_x0: float | None = None, n_corrector: int = 1, snr: float = 0.16) -> Tensor | Trajectory:
    r"""Predictor–corrector sampling (Song et al., 2021, Algorithms 4–5; chapter 6): at each grid time :math:`t`
    (next time :math:`s`), ``n_corrector`` Langevin steps on :math:`p_t` with step size
    :math:`\delta = 2\,a\,(r\,\overline{\lVert z\rVert}/\overline{\lVert\nabla\log p_t\rVert})^2`, then one
    Euler–Maruyama predictor step to :math:`s`.  Norms are averaged over the batch, ``snr`` is :math:`r`, and
    :math:`a = \alpha_t^2/\alpha_s^2` is the signal kept by the forward step from :math:`s` to :math:`t` — Song et al.'s
    :math:`\alpha_i = 1 - \beta_i` for the VP-SDE (Algorithm 5), 1 for the VE-SDE (Algorithm 4).  Where
    :math:`\alpha_t = 0`, :math:`a = 0`: :math:`p_t` is exactly the Gaussian prior and there is nothing to correct."""
    check_positive_int("n_corrector", n_corrector, minimum=0)
    check_number("snr", snr, low=0.0, low_open=True)

    def step(den, x, t, s, i):
        a = (_coef(path.alpha, t) / _coef(path.alpha, s)) ** 2  # Song et al.'s alpha_i = 1 - beta_i
        for _ in range(n_corrector):
            score = den.score(x, t)
            z = randn_like(x, generator)
            # batch-averaged norms, as in Song et al.'s reference code: per-sample norms of low-dimensional
            # data are too noisy (a tiny score would give a huge step)
            ratio = z.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
            delta = 2 * a * (snr * ratio) ** 2
            x = x + delta * score + (2 * delta) ** 0.5 * z
        return _reverse_sde_step(den, x, t, s, generator, noise=s > 0.0)

    return _run(step, model, x, ts, path, target=target, y=y, guidance=guidance, null_label=null_label,
                return_trajectory=return_trajectory, progress=progress, clip_x0=clip_x0, desc="Predictor-corrector")


def annealed_langevin(model: Model, x: Tensor, ts: Tensor, path: GaussianPath, *, target: str | None = None,
                      y: Tensor | None = None, guidance: float = 1.0, null_label: int | None = None,
                      generator: torch.Generator | None = None, return_trajectory: bool = False,
                      progress: bool = False,
                      clip_x0: float | None = None, n_steps_each: int = 100,
                      step_lr: float = 2e-5) -> Tensor | Trajectory:
    r"""Annealed Langevin dynamics (NCSN, Song & Ermon, 2019; chapter 5).  At each noise level :math:`\sigma_i` of the
    grid (except the last), ``n_steps_each`` Langevin steps with :math:`\delta_i = \text{step\_lr}\cdot\sigma_i^2/\sigma_L^2`
    (:math:`\sigma_L` the smallest positive level); the final move to :math:`t = 0` is the Tweedie denoising step
    :math:`x \leftarrow \hat x_0(x)` (Jolicoeur-Martineau et al., 2021).

    In Song & Ermon's Algorithm 1 the step is :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2` and the update
    :math:`x \leftarrow x + \tfrac{\alpha_i}{2}\nabla\log p + \sqrt{\alpha_i}\,z`; here the update is
    :math:`x \leftarrow x + \delta_i\nabla\log p + \sqrt{2\delta_i}\,z`, so :math:`\delta_i = \alpha_i/2` and
    ``step_lr`` :math:`= \epsilon/2` (their :math:`\epsilon = 2\cdot10^{-5}` is ``step_lr = 1e-5``)."""
    check_positive_int("n_steps_each", n_steps_each)
    check_number("step_lr", step_lr, low=0.0, low_open=True)
    grid = _check_grid(ts)
    sigma_last = _coef(path.sigma, grid[-2])

    def step(den, x, t, s, i):
        delta = step_lr * (_coef(path.sigma, t) / sigma_last) ** 2
        for _ in range(n_steps_each):
            x = _langevin_step(den, x, t, delta, generator)
        if s == 0.0:
            return den(x, t)[0] * _coef(path.alpha, 0.0)
        return x

    return _run(step, model, x, ts, path, target=target, y=y, guidance=guidance, null_label=null_label,
                return_trajectory=return_trajectory, progress=progress, clip_x0=clip_x0, desc="Annealed Langevin")

