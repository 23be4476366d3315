r"""Discrete DDPM noise schedules :math:`\beta_1, \dots, \beta_N` (chapter 2, *The forward process*).

A schedule fixes the forward chain :math:`q(x_n \mid x_{n-1}) = \mathcal N(\sqrt{1-\beta_n}\,x_{n-1}, \beta_n I)`,
whose closed form is :math:`q(x_n \mid x_0) = \mathcal N(\sqrt{\bar\alpha_n}\,x_0, (1-\bar\alpha_n) I)` with
:math:`\bar\alpha_n = \prod_{i \le n} (1 - \beta_i)`.  Every function returns a float64 tensor of shape
``(n_steps,)`` holding :math:`\beta_1 \dots \beta_N`; :class:`diffkit.paths.DiscretePath` turns it into a
Gaussian path on :math:`t = n / N`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check_choice, check_number, check_positive_int, check_tensor

__all__ = [
    "linear_betas", "cosine_betas", "sigmoid_betas", "alpha_bar_from_betas", "betas_from_alpha_bar",
    "rescale_zero_terminal_snr", "make_betas", "SCHEDULES",
]


def linear_betas(n_steps: int, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    r"""Linear schedule of Ho et al. (2020): :math:`\beta_n = \big(\beta_\min + \tfrac{n-1}{N-1}(\beta_\max-\beta_\min)\big)/N`.

    ``beta_min`` and ``beta_max`` are in the units of the VP-SDE (chapter 6), so ``n_steps=1000`` gives the
    DDPM values :math:`\beta_1 = 10^{-4}`, :math:`\beta_N = 0.02`, and any other ``n_steps`` discretises the same
    continuous process: :math:`\bar\alpha_n \to \exp(-\int_0^{n/N}\beta(s)\,ds)` as :math:`N \to \infty`.
    """
    check_positive_int("n_steps", n_steps)
    check_number("beta_min", beta_min, low=0.0, low_open=True)
    check_number("beta_max", beta_max, low=beta_min)
    if beta_max / n_steps >= 1:
        raise ValueError(f"beta_max / n_steps must be < 1 (a step may not destroy all signal), got {beta_max / n_steps}")
    if n_steps == 1:
        return torch.tensor([beta_min], dtype=torch.float64)
    return torch.linspace(beta_min, beta_max, n_steps, dtype=torch.float64) / n_steps


def _check_unit_interval(name: str, values: Tensor, what: str) -> Tensor:
    """``values`` as a float64 1-D tensor, checked to lie in [0, 1] (``what`` says what they are)."""
    values = check_tensor(name, values, ndim=1)
    if values.numel() == 0:
        raise ValueError(f"{name} must hold at least one value, got an empty tensor")
    if not torch.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise ValueError(f"{name} must lie in [0, 1] ({what}), got values in "
                         f"[{values.min().item():.4g}, {values.max().item():.4g}]")
    return values.to(torch.float64)


def betas_from_alpha_bar(alpha_bar: Tensor, max_beta: float = 0.999) -> Tensor:
    r""":math:`\beta_n = \min(1 - \bar\alpha_n / \bar\alpha_{n-1},\ \text{max\_beta})` with :math:`\bar\alpha_0 = 1`."""
    alpha_bar = _check_unit_interval("alpha_bar", alpha_bar, "products of 1 - beta")
    check_number("max_beta", max_beta, low=0.0, high=1.0, low_open=True)
    prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    return (1 - alpha_bar / prev).clamp(min=0.0, max=max_beta)


def cosine_betas(n_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    r"""Cosine schedule of Nichol & Dhariwal (2021): :math:`\bar\alpha(t) = f(t)/f(0)`,
    :math:`f(t) = \cos^2\!\big(\tfrac{t + s}{1 + s}\,\tfrac{\pi}{2}\big)`, with :math:`\beta_n` clipped at ``max_beta``."""
    check_positive_int("n_steps", n_steps)
    check_number("s", s, low=0.0)
    check_number("max_beta", max_beta, low=0.0, high=1.0, low_open=True)
    t = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return betas_from_alpha_bar(f[1:] / f[0], max_beta)


def sigmoid_betas(n_steps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                  max_beta: float = 0.999) -> Tensor:
    r"""Sigmoid schedule of Chen (2023), *On the importance of noise scheduling*:
    :math:`\bar\alpha(t) = \dfrac{v_\text{end} - \operatorname{sigmoid}((t(\text{end}-\text{start})+\text{start})/\tau)}{v_\text{end} - v_\text{start}}`
    with :math:`v = \operatorname{sigmoid}(\cdot/\tau)` at the two ends."""
    check_positive_int("n_steps", n_steps)
    check_number("tau", tau, low=0.0, low_open=True)
    if not end > start:
        raise ValueError(f"end must be greater than start, got start={start}, end={end}")
    t = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    alpha_bar = (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)
    return betas_from_alpha_bar(alpha_bar[1:] / alpha_bar[0], max_beta)


def alpha_bar_from_betas(betas: Tensor) -> Tensor:
    r""":math:`\bar\alpha_n = \prod_{i=1}^{n}(1-\beta_i)` for :math:`n = 1 \dots N` (float64); each
    :math:`\beta_i` is a variance fraction in [0, 1] (:math:`\beta > 1` would make :math:`\bar\alpha` negative)."""
    return torch.cumprod(1 - _check_unit_interval("betas", betas, "each step's noise variance"), dim=0)


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    r"""Rescale a schedule to zero terminal SNR (Lin et al., 2024, Algorithm 1).

    :math:`\sqrt{\bar\alpha_n}` is shifted so that :math:`\sqrt{\bar\alpha_N} = 0` and scaled so that
    :math:`\sqrt{\bar\alpha_1}` is unchanged.  Then :math:`\beta_N = 1`: the last step forgets the data entirely,
    so an :math:`\varepsilon`-predicting model carries no information about :math:`x_0` at :math:`t = 1` — train
    with ``target="v"`` (chapter 4).
    """
    sqrt_ab = alpha_bar_from_betas(betas).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    if first <= last:
        raise ValueError("betas must make alpha_bar decrease, cannot rescale to zero terminal SNR")
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alpha_bar = sqrt_ab**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas, "sigmoid": sigmoid_betas}


def make_betas(name: str, n_steps: int, *, zero_terminal_snr: bool = False, **kwargs: float) -> Tensor:
    """Build a named schedule (``"linear"``, ``"cosine"`` or ``"sigmoid"``), optionally rescaled to zero terminal SNR."""
    check_choice("name", name, SCHEDULES)
    betas = SCHEDULES[name](n_steps, **kwargs)
    return rescale_zero_terminal_snr(betas) if zero_terminal_snr else betas
