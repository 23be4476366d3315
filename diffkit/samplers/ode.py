r"""Solvers of the ODE :math:`dx/dt = u_t(x)`: the probability-flow ODE of a diffusion model (chapter 6) and the
flow ODE of flow matching (chapter 7).  Fixed grids (Euler, Heun, RK4, DPM-Solver++(2M)) and an adaptive
Runge–Kutta solver (:func:`adaptive`, from ``torchdiffeq``) with its own step control."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_choice, check_number
from ..paths import GaussianPath
from .base import Model, Trajectory, _coef, _run

__all__ = ["euler", "heun", "rk4", "dpm_solver_pp_2m", "adaptive"]


def euler(model: Model, x: Tensor, ts: Tensor, path: GaussianPath, *, target: str | None = None,
          y: Tensor | None = None, guidance: float = 1.0, null_label: int | None = None,
          generator: torch.Generator | None = None, return_trajectory: bool = False, progress: bool = False,
          clip_x0: float | None = None) -> Tensor | Trajectory:
    r"""Euler on the ODE :math:`dx/dt = u_t(x)` (probability-flow ODE for diffusion models, the flow ODE for flow
    matching; chapters 6–7): :math:`x_s = x_t + (s - t)\,u_t(x_t)`."""
    return _run(lambda den, x, t, s, i: x + (s - t) * den.velocity(x, t), model, x, ts, path, target=target, y=y,
                guidance=guidance, null_label=null_label, return_trajectory=return_trajectory, progress=progress,
                clip_x0=clip_x0, desc="Euler")


def heun(model: Model, x: Tensor, ts: Tensor, path: GaussianPath, *, target: str | None = None, y: Tensor | None = None,
         guidance: float = 1.0, null_label: int | None = None, generator: torch.Generator | None = None,
         return_trajectory: bool = False, progress: bool = False, clip_x0: float | None = None) -> Tensor | Trajectory:
    r"""Heun's second-order method on the ODE: :math:`x_s = x_t + \tfrac{h}{2}(u_t(x_t) + u_s(x_t + h u_t))`,
    :math:`h = s - t`.  The step that ends at :math:`t = 0` is an Euler step (the field may be singular there)."""

    def step(den, x, t, s, i):
        d = den.velocity(x, t)
        x_euler = x + (s - t) * d
        if s == 0.0:
            return x_euler
        return x + (s - t) * 0.5 * (d + den.velocity(x_euler, s))

    return _run(step, model, x, ts, path, target=target, y=y, guidance=guidance, null_label=null_label,
                return_trajectory=return_trajectory, progress=progress, clip_x0=clip_x0, desc="Heun")


def rk4(model: Model, x: Tensor, ts: Tensor, path: GaussianPath, *, target: str | None = None, y: Tensor | None = None,
        guidance: float = 1.0, null_label: int | None = None, generator: torch.Generator | None = None,
        return_trajectory: bool = False, progress: bool = False, clip_x0: float | None = None) -> Tensor | Trajectory:
    r"""Classical fourth-order Runge–Kutta on the ODE (4 evaluations a step).  The step that ends at
    :math:`t = 0`, where the field may be singular, uses Ralston's third-order method (nodes at :math:`0, h/2, 3h/4`,
    never at :math:`t = 0`): its local error :math:`O(h^4)` keeps the global error :math:`O(h^4)`."""

    def step(den, x, t, s, i):
        h = s - t
        k1 = den.velocity(x, t)
        k2 = den.velocity(x + 0.5 * h * k1, t + 0.5 * h)
        if s == 0.0:  # Ralston (1962), third order: b = (2/9, 1/3, 4/9)
            k3 = den.velocity(x + 0.75 * h * k2, t + 0.75 * h)
            return x + h * (2 * k1 + 3 * k2 + 4 * k3) / 9
        k3 = den.velocity(x + 0.5 * h * k2, t + 0.5 * h)
        k4 = den.velocity(x + h * k3, s)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    return _run(step, model, x, ts, path, target=target, y=y, guidance=guidance, null_label=null_label,
                return_trajectory=return_trajectory, progress=progress, clip_x0=clip_x0, desc="RK4")


def dpm_solver_pp_2m(model: Model, x: Tensor, ts: Tensor, path: GaussianPath, *, target: str | None = None,
                     y: Tensor | None = None, guidance: float = 1.0, null_label: int | None = None,
                     generator: torch.Generator | None = None, return_trajectory: bool = False,
                     progress: bool = False, clip_x0: float | None = None) -> Tensor | Trajectory:
    r"""DPM-Solver++(2M) (Lu et al., 2022; chapter 6), multistep second order in the data prediction.

    With :math:`\lambda = \log(\alpha/\sigma)` and :math:`h = \lambda_s - \lambda_t`:
    :math:`x_s = \tfrac{\sigma_s}{\sigma_t}x_t + \alpha_s(1 - e^{-h})\,D`, where
    :math:`D = (1 + \tfrac{1}{2r})\hat x_0^{(t)} - \tfrac{1}{2r}\hat x_0^{(\text{prev})}`, :math:`r = h_\text{prev}/h`;
    the first step and the last (to :math:`\sigma = 0`) are first order (:math:`D = \hat x_0^{(t)}`)."""
    state: dict[str, object] = {"prev_x0": None, "prev_h": None}

    def step(den, x, t, s, i):
        x0, _ = den(x, t)
        a_t, s_t, a_s, s_s = _coef(path.alpha, t), _coef(path.sigma, t), _coef(path.alpha, s), _coef(path.sigma, s)
        if s_s == 0.0:
            return a_s * x0
        exp_neg_h = (a_t * s_s) / (s_t * a_s)  # e^{-h}, finite even where alpha_t = 0
        h = -torch.log(torch.tensor(exp_neg_h, dtype=torch.float64)).item()
        D = x0
        if state["prev_x0"] is not None and a_t > 0:
            r = state["prev_h"] / h
            D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * state["prev_x0"]
        state["prev_x0"], state["prev_h"] = x0, h
        return (s_s / s_t) * x + a_s * (1 - exp_neg_h) * D

    return _run(step, model, x, ts, path, target=target, y=y, guidance=guidance, null_label=null_label,
                return_trajectory=return_trajectory, progress=progress, clip_x0=clip_x0, desc="DPM-Solver++(2M)")



def adaptive(model: Model, x: Tensor, ts: Tensor, path: GaussianPath, *, target: str | None = None,
             y: Tensor | None = None, guidance: float = 1.0, null_label: int | None = None,
             generator: torch.Generator | None = None, return_trajectory: bool = False, progress: bool = False,
             clip_x0: float | None = None, rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
             t_min: float = 1e-3) -> Tensor | Trajectory:
    r"""An adaptive Runge–Kutta solver on the ODE :math:`dx/dt = u_t(x)` (chapter 6): ``torchdiffeq``'s ``dopri5``
    (Dormand & Prince, 1980) by default, as Song et al. (2021) use for sampling and likelihoods.

    Between neighbouring grid times the solver chooses its own steps, keeping each step's estimated local error
    below ``atol + rtol * |x|``; the grid only says where to report the state (``grids.uniform(1)`` asks for
    the end alone).  The field of most paths is singular at :math:`t = 0`, so the last interval is integrated to
    ``t_min`` (Song et al.'s :math:`\epsilon = 10^{-3}`), and the move from there to :math:`t = 0` is the
    deterministic step :math:`x_0 = \alpha_0\hat x_0` (one more evaluation).  :attr:`Trajectory.nfe` counts every
    evaluation, those of rejected steps included: the cost the tolerance sets."""
    from torchdiffeq import odeint

    check_number("rtol", rtol, low=0.0, low_open=True)
    check_number("atol", atol, low=0.0, low_open=True)
    check_number("t_min", t_min, low=0.0, high=1.0, low_open=True)
    methods = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
    check_choice("method", method, methods)

    def integrate(den, x, t, s):
        times = torch.tensor([t, s], dtype=torch.float64).to(x.dtype)

        def field(tt: Tensor, z: Tensor) -> Tensor:
            # the solver's first-step probe may look past the interval's end: the field is read inside it
            u = den.velocity(z, min(max(float(tt), s), t))
            if not torch.isfinite(u).all():  # else the step control shrinks the step forever
                raise FloatingPointError("adaptive ODE produced NaN/inf samples: check the model, the grid and the "
                                         "target")
            return u

        return odeint(field, x, times, rtol=rtol, atol=atol, method=method)[-1]

    def step(den, x, t, s, i):
        if s > 0.0:
            return integrate(den, x, t, s)
        if t > t_min:
            x, t = integrate(den, x, t, t_min), t_min
        return _coef(path.alpha, 0.0) * den(x, t)[0]

    return _run(step, model, x, ts, path, target=target, y=y, guidance=guidance, null_label=null_label,
                return_trajectory=return_trajectory, progress=progress, clip_x0=clip_x0, desc="adaptive ODE")
