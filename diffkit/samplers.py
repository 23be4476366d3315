r"""Samplers: every one integrates a Gaussian path from :math:`t = 1` (noise) to :math:`t = 0` (data).

**One calling convention** (compare them side by side, swap one for another)::

    x0 = sampler(model, x, ts, path, *, target=None, y=None, guidance=1.0, null_label=None,
                 generator=None, return_trajectory=False, progress=False, clip_x0=None, **options)

* ``model(x, t, y=None)`` predicts ``target`` (``"eps"``, ``"x0"``, ``"v"``, ``"score"`` or ``"velocity"``;
  see :mod:`diffkit.targets`); ``t`` is a (B,) tensor in [0, 1] with 0 = data.  A model trained or loaded through
  diffkit knows its target (``model.diffkit_objective``): leave ``target`` out and the sampler takes it from the
  model; a ``target`` or ``path`` that disagrees with the model's is an error (see :func:`resolve_target`).
  A bare callable records nothing, and ``target`` defaults to ``"eps"``.
* ``x`` is the starting noise at ``ts[0]`` (see :func:`prior`); ``ts`` a strictly decreasing grid that ends
  exactly at 0 (see :mod:`diffkit.grids`).  Every sampler's last step lands on :math:`t = 0`: clean data on every
  path with :math:`\sigma_0 = 0`, i.e. every path but ``LinearPath(sigma_min > 0)``, whose :math:`t = 0` is the
  data blurred by :math:`\mathcal N(0, \sigma_\min^2 I)` (see :attr:`~diffkit.paths.GaussianPath.sigma_at_data`).
* Every sampler starts from :math:`t = 1` on every path, including those with :math:`\alpha_1 = 0` (linear,
  cosine, zero terminal SNR), whenever the target carries the information the step needs there: ``"x0"``,
  ``"v"`` and ``"velocity"`` do; ``"eps"`` and ``"score"`` say nothing about :math:`x_0` where
  :math:`\alpha_t = 0`, and such a start is a clear error (start the grid below 1, or train another target).
* Classifier-free guidance (chapter 8): ``guidance = w`` uses
  :math:`\hat f = f(x, t, \varnothing) + w\,(f(x, t, y) - f(x, t, \varnothing))` on the whole output, so
  ``w = 1`` is plain conditional sampling and ``w = 0`` unconditional.  It needs ``y`` and ``null_label``.
* ``return_trajectory=True`` returns a :class:`Trajectory` (all intermediate states) instead of the samples.
* ``clip_x0=c`` clamps every :math:`\hat x_0` to :math:`[-c, c]` before the update (and recomputes
  :math:`\hat\varepsilon` to match): DDPM's ``clip_denoised`` for pixel data in [-1, 1] (``c = 1``, chapter 4).
  At low SNR an ε-model's :math:`\hat x_0 = (x_t - \sigma_t\hat\varepsilon)/\alpha_t` multiplies its error by
  :math:`1/\alpha_t`; clipping keeps that error from wrecking the trajectory.

Every method converts the model output to :math:`(\hat x_0, \hat\varepsilon)` and writes its update in those
terms, so one implementation serves every path and every target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._checks import (call_network, check_choice, check_finite, check_number, check_positive_int, check_tensor,
                      randn_like)
from .models import check_guidance_support
from .losses import path_to_dict
from .paths import GaussianPath, check_path
from .targets import TARGETS, to_x0_eps

__all__ = [
    "ddpm", "ddim", "euler", "heun", "rk4", "euler_maruyama", "predictor_corrector", "annealed_langevin",
    "dpm_solver_pp_2m", "SAMPLERS", "get_sampler", "prior", "Trajectory", "Denoiser", "resolve_target",
]

Model = Callable[..., Tensor]


@dataclass(frozen=True)
class Trajectory:
    """States ``xs[i]`` at times ``ts[i]`` (``xs[0]`` the starting noise, ``xs[-1]`` the samples)."""

    xs: Tensor  # (len(ts), B, ...)
    ts: Tensor

    @property
    def samples(self) -> Tensor:
        return self.xs[-1]


def _path_record(path: GaussianPath) -> object:
    """What makes two paths the same path: diffkit's JSON description, or the repr of a path of one's own."""
    try:
        return path_to_dict(path)
    except TypeError:
        return repr(path)


def resolve_target(model: Model, path: GaussianPath, target: str | None = None) -> str:
    """The target to sample ``model`` with.  A model trained or loaded through diffkit records its objective in
    ``model.diffkit_objective`` (anything with ``.path`` and ``.target``: set by
    :class:`~diffkit.training.Trainer`, :func:`diffkit.checkpoints.load_model` and
    :func:`diffkit.cache.cached_model`; an oracle's ``as_model(path, target)`` records its own).  Then
    ``target=None`` takes the recorded target, and a ``target`` or a ``path`` that disagrees with the record is
    a ValueError that names both.  A bare callable records nothing: ``target=None`` means ``"eps"``."""
    check_path(path)
    if target is not None:
        check_choice("target", target, TARGETS)
    record = getattr(model, "diffkit_objective", None)
    if record is None:
        return "eps" if target is None else target
    own_target, own_path = getattr(record, "target", None), getattr(record, "path", None)
    if target is not None and own_target is not None and target != own_target:
        raise ValueError(f"target={target!r} disagrees with the model, which was trained to predict "
                         f"{own_target!r} (model.diffkit_objective.target): pass target={own_target!r}, or leave "
                         f"target out and the sampler takes it from the model")
    if isinstance(own_path, GaussianPath) and _path_record(own_path) != _path_record(path):
        raise ValueError(f"path={path!r} is not the path the model was trained on, {own_path!r} "
                         f"(model.diffkit_objective.path): sample on that path")
    return own_target if target is None and own_target is not None else (target or "eps")


class Denoiser:
    """Wraps ``model`` (+ guidance, + clipping) so that ``denoiser(x, t)`` returns
    :math:`(\\hat x_0, \\hat\\varepsilon)`.  ``target=None`` takes the model's recorded target (see
    :func:`resolve_target`), ``"eps"`` for a bare callable."""

    def __init__(self, model: Model, path: GaussianPath, target: str | None = None, y: Tensor | None = None,
                 guidance: float = 1.0, null_label: int | None = None, clip_x0: float | None = None):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t, y=None), got {type(model).__name__}")
        target = resolve_target(model, path, target)
        self.guidance = check_number("guidance", guidance, low=0.0)
        check_guidance_support(model, self.guidance)
        self.clip_x0 = None if clip_x0 is None else check_number("clip_x0", clip_x0, low=0.0, low_open=True)
        if self.guidance != 1.0:
            if null_label is None:
                raise ValueError("guidance != 1 needs null_label (the label id the model treats as 'no condition')")
            if y is None:
                raise ValueError("guidance != 1 needs class labels y to guide towards")
        if null_label is not None and (isinstance(null_label, bool) or not isinstance(null_label, int)):
            raise TypeError(f"null_label must be an int, got {type(null_label).__name__}")
        if y is not None:
            if not isinstance(y, Tensor) or y.ndim != 1 or y.dtype not in (torch.int32, torch.int64):
                raise ValueError("y must be a 1-D integer tensor of class labels, one per sample")
        own_null = getattr(model, "null_label", None)  # diffkit's models and oracles know theirs
        if null_label is not None and isinstance(own_null, int) and null_label != own_null:
            raise ValueError(f"null_label={null_label} disagrees with the model's null label {own_null} "
                             f"(pass null_label=model.null_label)")
        self.model, self.path, self.target, self.y, self.null_label = model, path, target, y, null_label

    def prediction(self, x: Tensor, t: float | Tensor) -> Tensor:
        """The (guided) raw model output at ``(x, t)``.  A network (``nn.Module``) whose weights have another
        floating dtype than ``x`` (a float32 model sampled from float64 noise) is called on ``x`` cast to its dtype,
        and its output cast back: the sampler's arithmetic stays in ``x``'s dtype.  Likewise a network on another
        device (a GPU) is called on its own device and its output moved back to ``x``'s."""
        B = x.shape[0]
        t_b = torch.full((B,), float(t), dtype=x.dtype, device=x.device) if not isinstance(t, Tensor) \
            else t.to(x.dtype).expand(B)
        if self.y is not None and self.y.shape[0] != B:
            raise ValueError(f"y must have one label per sample ({B}), got shape {tuple(self.y.shape)}")
        if self.guidance == 1.0:
            return call_network(self.model, x, t_b, self.y)
        null = torch.full_like(self.y, self.null_label)
        both = call_network(self.model, torch.cat([x, x]), torch.cat([t_b, t_b]), torch.cat([self.y, null]))
        cond, uncond = both.chunk(2)
        return uncond + self.guidance * (cond - uncond)

    def __call__(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(\hat x_0, \hat\varepsilon)` at ``(x, t)``.  With ``clip_x0 = c``, :math:`\hat x_0` is clamped to
        :math:`[-c, c]` and :math:`\hat\varepsilon = (x - \alpha_t\hat x_0)/\sigma_t` recomputed from it, so the pair
        still satisfies :math:`x = \alpha_t\hat x_0 + \sigma_t\hat\varepsilon` (DDPM's ``clip_denoised``)."""
        tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        x0, eps = to_x0_eps(self.prediction(x, t), self.target, x, tt, self.path)
        if self.clip_x0 is None:
            return x0, eps
        x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        sigma = _coef(self.path.sigma, float(t))
        if sigma > 0:
            eps = (x - _coef(self.path.alpha, float(t)) * x0) / sigma
        return x0, eps

    def velocity(self, x: Tensor, t: float) -> Tensor:
        r"""ODE velocity :math:`u_t(x) = \dot\alpha_t\hat x_0 + \dot\sigma_t\hat\varepsilon` (probability-flow / flow ODE)."""
        x0, eps = self(x, t)
        tt = torch.tensor(t, dtype=torch.float64)
        return float(self.path.d_alpha(tt)) * x0 + float(self.path.d_sigma(tt)) * eps

    def score(self, x: Tensor, t: float) -> Tensor:
        r""":math:`\nabla\log p_t(x) \approx -\hat\varepsilon/\sigma_t` (Tweedie, chapter 5)."""
        _, eps = self(x, t)
        return -eps / float(self.path.sigma(torch.tensor(t, dtype=torch.float64)))


def _check_grid(ts: Tensor) -> list[float]:
    if not isinstance(ts, Tensor) or ts.ndim != 1:
        raise ValueError("ts must be a 1-D tensor of times, e.g. diffkit.grids.uniform(n_steps)")
    if ts.numel() < 2:
        raise ValueError(f"ts must hold at least 2 times (one step), got {ts.numel()}")
    grid = [float(v) for v in ts.to(torch.float64)]
    if any(b >= a for a, b in zip(grid, grid[1:])):
        raise ValueError("ts must be strictly decreasing (from noise at ts[0] to data at ts[-1] = 0)")
    if grid[-1] != 0.0:
        raise ValueError(f"ts must end exactly at 0 (clean data), got ts[-1] = {grid[-1]}")
    if grid[0] > 1.0:
        raise ValueError(f"ts[0] must be <= 1, got {grid[0]}")
    return grid


def _coef(fn: Callable[[Tensor], Tensor], t: float) -> float:
    return float(fn(torch.tensor(t, dtype=torch.float64)))


def _run(step: Callable, model: Model, x: Tensor, ts: Tensor, path: GaussianPath, *, target: str | None, y, guidance,
         null_label, return_trajectory: bool, progress: bool, clip_x0: float | None, desc: str) -> Tensor | Trajectory:
    """Shared driver: validates inputs, walks the grid calling ``step(den, x, t, s, i)``, records the trajectory."""
    check_tensor("x", x, min_ndim=2)
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one sample, got shape {tuple(x.shape)}")
    check_finite("x", x)
    grid = _check_grid(ts)
    den = Denoiser(model, path, target, y, guidance, null_label, clip_x0)
    xs = [x] if return_trajectory else None
    pairs = list(zip(grid[:-1], grid[1:]))
    with torch.no_grad():
        for i, (t, s) in enumerate(tqdm(pairs, desc=desc, disable=not progress, leave=False)):
            x = step(den, x, t, s, i)
            if xs is not None:
                xs.append(x)
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"{desc} produced NaN/inf samples: check the model, the grid and the target")
    return Trajectory(torch.stack(xs), ts) if xs is not None else x


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


SAMPLERS: dict[str, Callable[..., Tensor | Trajectory]] = {
    "ddpm": ddpm, "ddim": ddim, "euler": euler, "heun": heun, "rk4": rk4, "euler_maruyama": euler_maruyama,
    "predictor_corrector": predictor_corrector, "annealed_langevin": annealed_langevin,
    "dpm_solver_pp_2m": dpm_solver_pp_2m,
}


def get_sampler(name: str) -> Callable[..., Tensor | Trajectory]:
    """Look a sampler up by name (see :data:`SAMPLERS`)."""
    check_choice("name", name, SAMPLERS)
    return SAMPLERS[name]


def prior(path: GaussianPath, shape: tuple[int, ...], *, t: float = 1.0, generator: torch.Generator | None = None,
          dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    r"""Starting noise :math:`x \sim \mathcal N(0, \sigma_t^2 I)` at ``t`` (the :math:`\alpha_t x_0` part is dropped;
    it is exactly 0 on paths with :math:`\alpha_1 = 0`, and tiny on VP)."""
    check_path(path)
    check_number("t", t, low=0.0, high=1.0, low_open=True)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}")
    if not isinstance(shape, (tuple, list, torch.Size)):
        raise TypeError(f"shape must be a tuple of positive ints, e.g. (8, 2) for 8 samples of 2-D data, got "
                        f"{type(shape).__name__} {shape!r}")
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"shape must be a tuple of positive ints, e.g. (8, 2) for 8 samples of 2-D data, got "
                         f"{shape!r}")
    sigma = _coef(path.sigma, t)
    noise = torch.randn(shape, generator=generator, dtype=dtype,
                        device=generator.device if generator is not None else device)
    return sigma * noise.to(device) if device is not None else sigma * noise
