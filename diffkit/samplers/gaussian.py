r"""DDPM and DDIM: the Gaussian reverse step :math:`x_s = \alpha_s\hat x_0 + \sqrt{\sigma_s^2 - c^2}\,\hat\varepsilon + c\,z`
on any Gaussian path (chapters 3–4)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_choice, check_number, randn_like
from ..paths import GaussianPath
from .base import Denoiser, Model, Trajectory, _coef, _run

__all__ = ["ddpm", "ddim"]


def _gaussian_step(den: Denoiser, x: Tensor, t: float, s: float, noise_scale: Callable[[float, float], float],
                   generator) -> Tensor:
    r"""Shared DDPM/DDIM update from t to s < t on any Gaussian path (chapters 3–4):

    :math:`x_s = \alpha_s\hat x_0 + \sqrt{\sigma_s^2 - c^2}\,\hat\varepsilon + c\,z`, with the noise level
    :math:`c` chosen by the caller (``c = 0``: DDIM; :math:`c = \tilde\sigma_{t\to s}`: DDPM)."""
    x0, eps = den(x, t)
    a_s, s_s = _coef(den.path.alpha, s), _coef(den.path.sigma, s)
    c = noise_scale(t, s)
    out = a_s * x0 + max(s_s**2 - c**2, 0.0) ** 0.5 * eps
    if c > 0:
        out = out + c * randn_like(x, generator)
    return out


def _posterior_std(path: GaussianPath, t: float, s: float) -> tuple[float, float]:
    r"""Forward-step std :math:`\sigma_{t|s}` and posterior std :math:`\tilde\sigma_{t\to s}` of :math:`q(x_s|x_t, x_0)`:
    :math:`\alpha_{t|s} = \alpha_t/\alpha_s`, :math:`\sigma_{t|s}^2 = \sigma_t^2 - \alpha_{t|s}^2\sigma_s^2`,
    :math:`\tilde\sigma^2 = \sigma_{t|s}^2\sigma_s^2/\sigma_t^2`.  For one DDPM step their squares are :math:`\beta_t`
    and :math:`\tilde\beta_t` (the returned values are the standard deviations :math:`\sqrt{\beta_t}`,
    :math:`\sqrt{\tilde\beta_t}`)."""
    a_t, s_t, a_s, s_s = (_coef(path.alpha, t), _coef(path.sigma, t), _coef(path.alpha, s), _coef(path.sigma, s))
    var_ts = max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0)
    return var_ts**0.5, (var_ts * s_s**2 / s_t**2) ** 0.5


def ddpm(model: Model, x: Tensor, ts: Tensor, path: GaussianPath, *, target: str | None = None, y: Tensor | None = None,
         guidance: float = 1.0, null_label: int | None = None, generator: torch.Generator | None = None,
         return_trajectory: bool = False, progress: bool = False,
         clip_x0: float | None = None, variance: str = "beta_tilde") -> Tensor | Trajectory:
    r"""DDPM ancestral sampling (Ho et al., 2020; chapter 3): :math:`x_s \sim \mathcal N(\tilde\mu(x_t, \hat x_0), c^2 I)`
    with :math:`c^2 = \tilde\beta` (``variance="beta_tilde"``, the true posterior variance) or :math:`c^2 = \beta`
    (``variance="beta"``).  On a coarse grid :math:`\beta_{t\to s} = 1 - \bar\alpha_t/\bar\alpha_s`."""
    check_choice("variance", variance, ("beta_tilde", "beta"))

    def step(den, x, t, s, i):
        if variance == "beta_tilde":
            return _gaussian_step(den, x, t, s, lambda t, s: _posterior_std(path, t, s)[1], generator)
        # sigma^2 = beta: the posterior mean plus noise of the forward-step variance
        x0, eps = den(x, t)
        a_t, s_t = _coef(path.alpha, t), _coef(path.sigma, t)
        a_s, s_s = _coef(path.alpha, s), _coef(path.sigma, s)
        std_ts, _ = _posterior_std(path, t, s)
        a_ts = a_t / a_s
        mean = (a_ts * s_s**2 / s_t**2) * x + (a_s * std_ts**2 / s_t**2) * x0
        if s == 0.0:
            return mean
        return mean + std_ts * randn_like(x, generator)

    return _run(step, model, x, ts, path, target=target, y=y, guidance=guidance, null_label=null_label,
                return_trajectory=return_trajectory, progress=progress, clip_x0=clip_x0, desc="DDPM")


def ddim(model: Model, x: Tensor, ts: Tensor, path: GaussianPath, *, target: str | None = None, y: Tensor | None = None,
         guidance: float = 1.0, null_label: int | None = None, generator: torch.Generator | None = None,
         return_trajectory: bool = False, progress: bool = False,
         clip_x0: float | None = None, eta: float = 0.0) -> Tensor | Trajectory:
    r"""DDIM (Song et al., 2021; chapter 4): :math:`x_s = \alpha_s\hat x_0 + \sqrt{\sigma_s^2 - c^2}\,\hat\varepsilon + c z`,
    :math:`c = \eta\,\tilde\sigma_{t\to s}`.  ``eta=0`` is deterministic, ``eta=1`` is DDPM with :math:`\tilde\beta`;
    :math:`\eta > 1` would need :math:`c > \sigma_s` for some steps (a negative variance) and is rejected."""
    check_number("eta", eta, low=0.0, high=1.0)
    return _run(lambda den, x, t, s, i: _gaussian_step(den, x, t, s, lambda t, s: eta * _posterior_std(path, t, s)[1],
                                                       generator),
                model, x, ts, path, target=target, y=y, guidance=guidance, null_label=null_label,
                return_trajectory=return_trajectory, progress=progress, clip_x0=clip_x0, desc="DDIM")

