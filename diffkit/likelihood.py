r"""Exact log-likelihood through the probability-flow ODE (chapter 6; used for evaluation in chapter 13).

Along the ODE :math:`dx/dt = u_t(x)` the density obeys the instantaneous change of variables
:math:`\frac{d}{dt}\log p_t(x_t) = -\nabla\cdot u_t(x_t)`, so integrating from the data (:math:`t = t_0 \approx 0`)
to the noise end (:math:`t = 1`):

.. math:: \log p_{t_0}(x) = \log p_1(x_1) + \int_{t_0}^{1} \nabla\cdot u_t(x_t)\,dt ,

with :math:`p_1 = \mathcal N(0, \sigma_1^2 I)` (exact when :math:`\alpha_1 = 0`).  The divergence is exact (one
backward pass per dimension, for 2-D data) or Hutchinson's unbiased estimate
:math:`\mathbb E_z[z^\top (\partial u/\partial x)\, z]` with Rademacher :math:`z` (for images).
``bits_per_dim`` converts to bits per dimension, including the change of scale from 8-bit pixels to [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import check_choice, check_number, check_positive_int, check_tensor
from .paths import GaussianPath, check_path
from .samplers import Denoiser

__all__ = ["log_likelihood", "bits_per_dim", "divergence"]


def divergence(f: Callable[[Tensor], Tensor], x: Tensor, method: str = "exact",
               generator: torch.Generator | None = None, n_probes: int = 1) -> tuple[Tensor, Tensor]:
    r"""Return ``(f(x), div f(x))`` per sample; ``method`` is ``"exact"`` or ``"hutchinson"``."""
    check_choice("method", method, ("exact", "hutchinson"))
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = f(x)
        flat_out, D = out.flatten(1), x[0].numel()
        if method == "exact":
            div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            for i in range(D):
                (g,) = torch.autograd.grad(flat_out[:, i].sum(), x, retain_graph=True)
                div = div + g.flatten(1)[:, i]
        else:
            div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            for _ in range(n_probes):
                z = torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1
                (g,) = torch.autograd.grad((out * z).sum(), x, retain_graph=True)
                div = div + (g * z).flatten(1).sum(1) / n_probes
    return out.detach(), div.detach()


def log_likelihood(model: Callable[..., Tensor], x: Tensor, path: GaussianPath, *, target: str = "eps",
                   y: Tensor | None = None, n_steps: int = 100, t0: float = 1e-3, method: str = "exact",
                   n_probes: int = 1, generator: torch.Generator | None = None) -> Tensor:
    r""":math:`\log p_{t_0}(x)` in nats per sample, by Heun's method on the probability-flow ODE from ``t0`` to 1.

    ``t0 > 0`` avoids the singular field at :math:`t = 0`; the result is the density of
    :math:`x_{t_0} = \alpha_{t_0}x_0 + \sigma_{t_0}\varepsilon`, a slightly smoothed data distribution.
    """
    check_tensor("x", x, min_ndim=2)
    check_path(path)
    check_positive_int("n_steps", n_steps)
    check_number("t0", t0, low=0.0, high=1.0, low_open=True)
    check_positive_int("n_probes", n_probes)
    den = Denoiser(model, path, target, y)
    field = lambda t: (lambda z: den.velocity(z, t))  # noqa: E731
    ts = torch.linspace(t0, 1.0, n_steps + 1, dtype=torch.float64).tolist()
    delta = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for t, s in zip(ts[:-1], ts[1:]):
        h = s - t
        u1, d1 = divergence(field(t), x, method, generator, n_probes)
        x_euler = x + h * u1
        u2, d2 = divergence(field(s), x_euler, method, generator, n_probes)
        x = x + 0.5 * h * (u1 + u2)
        delta = delta + 0.5 * h * (d1 + d2).double()
    sigma1 = float(path.sigma(torch.tensor(1.0, dtype=torch.float64)))
    D = x[0].numel()
    flat = x.flatten(1).double()
    log_p1 = -0.5 * (flat**2).sum(1) / sigma1**2 - D * math.log(sigma1) - 0.5 * D * math.log(2 * math.pi)
    return log_p1 + delta


def bits_per_dim(log_p: Tensor, dim: int, *, pixel_levels: int | None = 256) -> Tensor:
    r"""Negative log-likelihood in bits per dimension.  With ``pixel_levels = L`` the data are pixels scaled from
    :math:`\{0..L-1\}` to [-1, 1] (bin width :math:`2/(L-1)`): :math:`\text{bpd} = -\log_2 p / D + \log_2\frac{L-1}{2}`
    (7 bits for 8-bit images); ``None`` gives plain :math:`-\log_2 p / D` for continuous data."""
    check_positive_int("dim", dim)
    bpd = -log_p / (dim * math.log(2))
    if pixel_levels is not None:
        check_positive_int("pixel_levels", pixel_levels, minimum=2)
        bpd = bpd + math.log2((pixel_levels - 1) / 2)
    return bpd
