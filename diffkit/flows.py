r"""Flows and the quantities of flow matching (chapter 7).

A flow moves samples along :math:`dx/dt = u_t(x)`; its density :math:`p_t` then obeys the **continuity
equation** :math:`\partial_t p_t + \nabla\cdot(p_t u_t) = 0`, or, divided by :math:`p_t`,

.. math::  \partial_t \log p_t + \nabla\cdot u_t + u_t\cdot\nabla\log p_t = 0 .

diffkit's time convention holds here too: :math:`t = 0` is data, :math:`t = 1` noise, samplers integrate from 1
to 0 (:mod:`diffkit.paths`).  This module gives

* the **conditional field** of a Gaussian path, :func:`conditional_velocity`:
  :math:`u_t(x\mid x_0) = \tfrac{\dot\sigma_t}{\sigma_t}(x - \alpha_t x_0) + \dot\alpha_t x_0`;
* the **marginal field** of a finite data set built from the conditional ones, :func:`marginal_velocity`, and
  its density, :func:`marginal_log_prob`;
* the continuity equation's residual at a grid of points, :func:`continuity_residual` (with :func:`divergence`);
* **straightness** (Liu et al., 2023) and the path-length ratio of a sampled trajectory, :func:`straightness`,
  :func:`path_length_ratio`;
* **reflow**: pairs (sample, noise) from a trained flow, :func:`reflow_pairs`, and the flow-matching loss on fixed
  pairs, :func:`coupled_cfm_loss`;
* the gradient check of CFM against FM, :func:`gradient_difference`;
* the density and distribution function of logit-normal training times, :func:`logit_normal_pdf`,
  :func:`logit_normal_cdf`; and :func:`nfe`, the network calls of the ODE solvers of :mod:`diffkit.samplers`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._checks import (as_time, broadcast_like, call_network, check_choice, check_finite, check_number,
                      check_positive_int, check_tensor)
from .grids import uniform
from .losses import cfm_loss
from .paths import GaussianPath, LinearPath, check_path
from .stats import mean_se

__all__ = ["conditional_velocity", "marginal_velocity", "marginal_log_prob", "divergence", "continuity_residual",
           "straightness", "path_length_ratio", "reflow_pairs", "coupled_cfm_loss", "gradient_difference",
           "logit_normal_pdf", "logit_normal_cdf", "nfe", "SOLVER_CALLS"]

Field = Callable[[Tensor, float], Tensor]


def _coefs(path: GaussianPath, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """alpha, sigma, d_alpha, d_sigma at t (B,), shaped to broadcast against ``like``; sigma must be > 0."""
    a, s = path.alpha(t).to(like.dtype), path.sigma(t).to(like.dtype)
    if (s == 0).any():
        raise ValueError("t must avoid points where sigma_t = 0 (t = 0 on most paths): the conditional field "
                         "(x - alpha_t x0) / sigma_t is undefined there")
    da, ds = path.d_alpha(t).to(like.dtype), path.d_sigma(t).to(like.dtype)
    return tuple(broadcast_like(v, like) for v in (a, s, da, ds))  # type: ignore[return-value]


def conditional_velocity(x: Tensor, x0: Tensor, t: Tensor | float, path: GaussianPath) -> Tensor:
    r"""The field that moves :math:`p_t(x\mid x_0) = \mathcal N(\alpha_t x_0, \sigma_t^2 I)` (chapter 7):

    .. math::  u_t(x\mid x_0) = \frac{\dot\sigma_t}{\sigma_t}\,(x - \alpha_t x_0) + \dot\alpha_t\,x_0 .

    On the path itself, :math:`x = \alpha_t x_0 + \sigma_t\varepsilon`, it is the velocity
    :math:`\dot\alpha_t x_0 + \dot\sigma_t\varepsilon` (:attr:`diffkit.paths.PathSample.velocity`).  ``x`` and ``x0``
    are (B, ...) of one shape, ``t`` a number or (B,), with :math:`\sigma_t > 0`."""
    check_tensor("x", x, min_ndim=2)
    check_tensor("x0", x0, min_ndim=2)
    if x0.shape != x.shape:
        raise ValueError(f"x0 must have the shape of x {tuple(x.shape)}, got {tuple(x0.shape)}")
    check_path(path)
    t = as_time("t", t, x.shape[0], x)
    a, s, da, ds = _coefs(path, t, x)
    return ds / s * (x - a * x0) + da * x0


def _log_weights(x: Tensor, t: Tensor | float, data: Tensor, path: GaussianPath,
                 weights: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(t, log[pi_i N(x; alpha x_i, sigma^2 I)] (B, N), data flattened (N, D)) for x (B, D)."""
    check_tensor("x", x, ndim=2)
    data = check_finite("data", check_tensor("data", data, min_ndim=2)).reshape(data.shape[0], -1).to(x.dtype)
    if data.shape[1] != x.shape[1]:
        raise ValueError(f"x must have {data.shape[1]} columns like the data points, got shape {tuple(x.shape)}")
    check_path(path)
    t = as_time("t", t, x.shape[0], x)
    a, s = path.alpha(t).to(x.dtype)[:, None], path.sigma(t).to(x.dtype)[:, None]  # (B, 1)
    if (s == 0).any():
        raise ValueError("t must avoid points where sigma_t = 0: a finite data set has no density there")
    if weights is None:
        log_pi = torch.full((data.shape[0],), -math.log(data.shape[0]), dtype=x.dtype, device=x.device)
    else:
        weights = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
        if weights.shape != (data.shape[0],) or (weights < 0).any() or not weights.sum() > 0:
            raise ValueError(f"weights must be {data.shape[0]} non-negative numbers (one per data point) with a "
                             f"positive sum")
        log_pi = (weights / weights.sum()).log()
    sq = ((x[:, None, :] - a[:, :, None] * data[None]) ** 2).sum(-1)  # (B, N) |x - alpha x_i|^2
    D = x.shape[1]
    log_comp = log_pi - 0.5 * sq / s**2 - D * torch.log(s) - 0.5 * D * math.log(2 * math.pi)
    return t, log_comp, data


def marginal_velocity(x: Tensor, t: Tensor | float, data: Tensor, path: GaussianPath,
                      weights: Tensor | None = None) -> Tensor:
    r"""The marginal field of the data set ``data`` (N, D) (weights :math:`\pi_i`, default equal), built from the
    conditional fields (chapter 7):

    .. math::  u_t(x) = \sum_i w_i(x)\,u_t(x\mid x_i), \qquad
               w_i(x) = \frac{\pi_i\,\mathcal N(x; \alpha_t x_i, \sigma_t^2 I)}
                             {\sum_j \pi_j\,\mathcal N(x; \alpha_t x_j, \sigma_t^2 I)} ,

    the posterior average :math:`\mathbb E[u_t(x\mid x_0)\mid x_t = x]`.  Since :math:`u_t(x\mid x_0)` is affine in
    :math:`x_0`, the sum is :math:`u_t(x\mid \bar x)` with :math:`\bar x = \sum_i w_i x_i`, which is how it is
    computed (memory B x D, not B x N x D).  ``x`` is (B, D), ``t`` a number or (B,) with :math:`\sigma_t > 0`.
    Differentiable in ``x``."""
    t, log_comp, data = _log_weights(x, t, data, path, weights)
    x_bar = log_comp.softmax(-1) @ data  # (B, D): E[x0 | x_t = x]
    return conditional_velocity(x, x_bar, t, path)


def marginal_log_prob(x: Tensor, t: Tensor | float, data: Tensor, path: GaussianPath,
                      weights: Tensor | None = None) -> Tensor:
    r""":math:`\log p_t(x) = \log\sum_i \pi_i\,\mathcal N(x; \alpha_t x_i, \sigma_t^2 I)` (B,), the density that
    :func:`marginal_velocity` transports."""
    return _log_weights(x, t, data, path, weights)[1].logsumexp(-1)


def divergence(field: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    r""":math:`\nabla\cdot u(x) = \sum_i \partial u_i/\partial x_i` (B,) for ``field(x)`` (B, D) -> (B, D), exactly,
    by automatic differentiation (one backward pass per dimension: for low-dimensional ``x``).  Each row of the
    output may depend only on the same row of ``x``."""
    x = check_tensor("x", x, ndim=2).detach().requires_grad_(True)
    with torch.enable_grad():
        u = field(x)
        if not isinstance(u, Tensor) or u.shape != x.shape:
            raise ValueError(f"field(x) must return a tensor shaped like x {tuple(x.shape)}, got "
                             f"{tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__}")
        parts = [torch.autograd.grad(u[:, i].sum(), x, retain_graph=i < x.shape[1] - 1)[0][:, i]
                 for i in range(x.shape[1])]
    return torch.stack(parts).sum(0).detach()


def continuity_residual(log_prob: Callable[[Tensor, float], Tensor], field: Field, x: Tensor, t: float, *,
                        dt: float = 1e-4) -> Tensor:
    r"""The continuity equation divided by :math:`p_t`, at the points ``x`` (B, D) and time ``t`` (chapter 7):

    .. math::  r(x) = \partial_t \log p_t(x) + \nabla\cdot u_t(x) + u_t(x)\cdot\nabla\log p_t(x),

    zero everywhere when ``field`` transports ``log_prob``'s density.  ``log_prob(x, t)`` -> (B,) and
    ``field(x, t)`` -> (B, D) take a float ``t``.  The time derivative is the five-point central difference

    .. math::  \partial_t f \approx \frac{f(t - 2h) - 8 f(t - h) + 8 f(t + h) - f(t + 2h)}{12 h},
               \qquad h = \mathrm{dt},

    whose error is :math:`O(\mathrm{dt}^4)`; the space derivatives are exact (automatic differentiation).
    Returns (B,)."""
    x = check_finite("x", check_tensor("x", x, ndim=2))
    check_number("t", t)
    check_number("dt", dt, low=0.0, low_open=True)
    if not (0.0 <= t - 2 * dt and t + 2 * dt <= 1.0):
        raise ValueError(f"t must lie in [2 dt, 1 - 2 dt] for the central difference, got t={t}, dt={dt}")
    with torch.no_grad():
        dlogp = (log_prob(x, t - 2 * dt) - 8 * log_prob(x, t - dt) + 8 * log_prob(x, t + dt)
                 - log_prob(x, t + 2 * dt)) / (12 * dt)
    div = divergence(lambda z: field(z, t), x)
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        score = torch.autograd.grad(log_prob(xg, t).sum(), xg)[0]
    with torch.no_grad():
        u = field(x, t)
    return dlogp + div + (u * score).sum(-1)


# --- straightness of trajectories ----------------------------------------------------------------------------------
def _states(trajectory: object, ts: Tensor | None) -> tuple[Tensor, Tensor]:
    xs = getattr(trajectory, "xs", trajectory)
    ts = getattr(trajectory, "ts", ts)
    check_tensor("trajectory", xs, min_ndim=3)
    if not isinstance(ts, Tensor) or ts.ndim != 1 or ts.shape[0] != xs.shape[0]:
        raise ValueError(f"ts must be a 1-D tensor with one time per state ({xs.shape[0]}); pass a "
                         f"samplers.Trajectory (return_trajectory=True) or (xs, ts)")
    h = (ts[:-1] - ts[1:]).to(torch.float64)
    if (h <= 0).any():
        raise ValueError("ts must be strictly decreasing (a sampler's grid, from noise to data)")
    return xs.to(torch.float64), h


def straightness(trajectory: object, ts: Tensor | None = None) -> Tensor:
    r"""Straightness of each sampled path (Liu et al., 2023; chapter 7), per sample (B,):

    .. math::  S = \int \big\lVert (x_{t_0} - x_{t_K})/T - \dot x_t \big\rVert^2\,dt
               = \int \lVert\dot x_t\rVert^2\,dt - T\,\lVert (x_{t_0} - x_{t_K})/T\rVert^2 ,

    over the time span :math:`T = t_0 - t_K` (1 for a grid from 1 to 0: then the chord is :math:`x_1 - x_0`,
    Liu et al.'s definition), for the piecewise-linear path through the states, whose velocity on step
    :math:`k` is :math:`(x_{t_k} - x_{t_{k+1}})/(t_k - t_{k+1})`.  :math:`S = 0` exactly when the path is a straight
    line run at constant speed, the paths one Euler step integrates exactly.  ``trajectory`` is a
    :class:`diffkit.samplers.Trajectory` (``return_trajectory=True``) or the states ``xs`` (K+1, B, ...) with
    their times ``ts``; use a fine grid, so that the states follow the ODE.  Squared norms sum over all
    non-batch dimensions."""
    xs, h = _states(trajectory, ts)
    span = h.sum()
    chord = (xs[0] - xs[-1]) / span  # (B, ...)
    vel = (xs[:-1] - xs[1:]) / broadcast_like(h, xs[1:])  # (K, B, ...)
    dev = (vel - chord).flatten(2).pow(2).sum(-1)  # (K, B)
    return (h[:, None] * dev).sum(0)


def path_length_ratio(trajectory: object, ts: Tensor | None = None) -> Tensor:
    r"""Length of each sampled path over the distance between its ends, :math:`\sum_k\lVert x_{t_k} - x_{t_{k+1}}
    \rVert / \lVert x_{t_0} - x_{t_K}\rVert \ge 1` (B,); 1 for a straight path, whatever its speed."""
    xs, _ = _states(trajectory, ts)
    length = (xs[:-1] - xs[1:]).flatten(2).norm(dim=-1).sum(0)
    return length / (xs[0] - xs[-1]).flatten(1).norm(dim=-1).clamp_min(1e-300)


# --- reflow -------------------------------------------------------------------------------------------------------
def reflow_pairs(model: Callable[..., Tensor], noise: Tensor, path: GaussianPath | None = None, *,
                 steps: int = 32, solver: str = "rk4", target: str | None = None, batch_size: int = 4096) -> Tensor:
    r"""Pairs for one round of reflow (Liu et al., 2023; chapter 7): each noise sample with the sample the flow
    ``model`` carries it to, :math:`(\hat x_0, \varepsilon)` with :math:`\hat x_0 = \text{ODE}(\varepsilon)`,
    solved with ``solver`` (``"euler"``, ``"heun"`` or ``"rk4"``) on ``steps`` equal steps from :math:`t = 1` to 0 on
    ``path`` (default :class:`~diffkit.paths.LinearPath`, rectified flow).  Returns (B, 2, ...): ``[:, 0]`` the
    samples, ``[:, 1]`` the noise — the data of :func:`coupled_cfm_loss`."""
    from . import samplers

    check_tensor("noise", noise, min_ndim=2)
    check_finite("noise", noise)
    check_choice("solver", solver, ("euler", "heun", "rk4"))
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    path = LinearPath() if path is None else check_path(path)
    sample = samplers.get_sampler(solver)
    ts = uniform(steps)
    x0 = torch.cat([sample(model, chunk, ts, path, target=target) for chunk in noise.split(batch_size)])
    return torch.stack([x0, noise], dim=1)


def coupled_cfm_loss(model: Callable[..., Tensor], pairs: Tensor, y: Tensor | None = None,
                     generator: torch.Generator | None = None, *, path: GaussianPath | None = None,
                     t_dist: str = "uniform") -> Tensor:
    r"""Flow matching on fixed pairs (reflow's loss; chapter 7):
    :math:`\mathbb E_t\lVert u_\theta(x_t, t) - (\dot\alpha_t x_0 + \dot\sigma_t\varepsilon)\rVert^2` with
    :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon` for the given pairs ``pairs[:, 0]`` = :math:`x_0`,
    ``pairs[:, 1]`` = :math:`\varepsilon` (from :func:`reflow_pairs`), instead of independent draws.  Its signature
    is the Trainer's ``loss_fn(model, x0, y, generator)``, with the pairs as the data."""
    check_tensor("pairs", pairs, min_ndim=3)
    if pairs.shape[1] != 2:
        raise ValueError(f"pairs must have shape (B, 2, ...): pairs[:, 0] the data side, pairs[:, 1] the noise; "
                         f"got {tuple(pairs.shape)}")
    return cfm_loss(model, pairs[:, 0], eps=pairs[:, 1], path=path, y=y, generator=generator, t_dist=t_dist)


# --- the gradient check of CFM against FM ---------------------------------------------------------------------------
def gradient_difference(model: nn.Module, x_t: Tensor, t: Tensor, target_a: Tensor, target_b: Tensor, *,
                        groups: int = 100) -> tuple[Tensor, Tensor]:
    r"""Mean and standard error, per parameter, of the gradient of the difference of two regressions on the same
    draws (chapter 7):

    .. math::  \nabla_\theta\big(\lVert f_\theta(x_t, t) - a\rVert^2 - \lVert f_\theta(x_t, t) - b\rVert^2\big)
               = -2\,J_\theta^\top (a - b),

    computed as the gradient of :math:`-2 f_\theta\cdot(a - b)` (the same gradient, without the cancellation of
    two large squares).  The B draws are split into ``groups`` equal groups; each gives one mean gradient, and
    the groups' mean and its standard error (:func:`diffkit.stats.mean_se`) are returned as (P,) float64 vectors
    over the P parameters.  With :math:`a` the conditional target and :math:`b` the marginal field, the mean is
    zero: CFM and FM have the same gradient."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (its parameters are differentiated), got "
                        f"{type(model).__name__}")
    check_tensor("x_t", x_t, min_ndim=2)
    for name, v in (("target_a", target_a), ("target_b", target_b)):
        check_tensor(name, v)
        if v.shape != x_t.shape:
            raise ValueError(f"{name} must have the shape of x_t {tuple(x_t.shape)}, got {tuple(v.shape)}")
    t = as_time("t", t, x_t.shape[0], x_t)
    check_positive_int("groups", groups, minimum=2)
    if x_t.shape[0] % groups:
        raise ValueError(f"groups must divide the number of draws ({x_t.shape[0]}), got {groups}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require gradients")
    size = x_t.shape[0] // groups
    grads = []
    with torch.enable_grad():
        for k in range(groups):
            sl = slice(k * size, (k + 1) * size)
            out = call_network(model, x_t[sl], t[sl])
            diff = (target_a[sl] - target_b[sl]).to(out.dtype)
            loss = -2 * (out * diff).flatten(1).sum(1).mean()
            g = torch.autograd.grad(loss, params)
            grads.append(torch.cat([gi.flatten() for gi in g]).double().cpu())
    return mean_se(torch.stack(grads))


# --- logit-normal training times ------------------------------------------------------------------------------------
def _logit_args(t: Tensor, loc: float, scale: float) -> Tensor:
    check_tensor("t", t, min_ndim=0)
    if torch.isnan(t).any() or (t <= 0).any() or (t >= 1).any():
        raise ValueError("t must lie strictly inside (0, 1)")
    check_number("loc", loc)
    check_number("scale", scale, low=0.0, low_open=True)
    return (torch.log(t) - torch.log1p(-t) - loc) / scale


def logit_normal_pdf(t: Tensor, loc: float = 0.0, scale: float = 1.0) -> Tensor:
    r"""Density of :math:`t = \operatorname{sigmoid}(\mu + s\,n)`, :math:`n \sim \mathcal N(0, 1)` (SD3's training
    times, :func:`diffkit.losses.sample_t`; chapter 7), by the change of variables :math:`z = \operatorname{logit} t`,
    :math:`dz/dt = 1/(t(1-t))`:

    .. math::  p(t) = \frac{1}{s\sqrt{2\pi}}\,\frac{1}{t(1-t)}\,
               \exp\Big(-\frac{(\operatorname{logit} t - \mu)^2}{2s^2}\Big), \qquad 0 < t < 1 ."""
    z = _logit_args(t, loc, scale)
    return torch.exp(-0.5 * z**2) / (scale * math.sqrt(2 * math.pi) * t * (1 - t))


def logit_normal_cdf(t: Tensor, loc: float = 0.0, scale: float = 1.0) -> Tensor:
    r""":math:`P(T \le t) = \Phi((\operatorname{logit} t - \mu)/s)`."""
    return torch.special.ndtr(_logit_args(t, loc, scale))


# --- network calls of the ODE solvers ---------------------------------------------------------------------------------
#: Network calls per step of each ODE solver of :mod:`diffkit.samplers`, and on the last step (to t = 0), where
#: Heun falls back to Euler and RK4 to Ralston's third-order method.
SOLVER_CALLS = {"euler": (1, 1), "ddim": (1, 1), "heun": (2, 1), "rk4": (4, 3)}


def nfe(solver: str, steps: int) -> int:
    """The number of network calls (NFE) of ``solver`` on a grid of ``steps`` steps ending at t = 0: ``steps`` for
    Euler and DDIM, ``2 steps - 1`` for Heun, ``4 steps - 1`` for RK4 (see :data:`SOLVER_CALLS`)."""
    check_choice("solver", solver, SOLVER_CALLS)
    check_positive_int("steps", steps)
    per_step, last = SOLVER_CALLS[solver]
    return per_step * (steps - 1) + last
