r"""The samplers' shared machinery: the model wrapper :class:`Denoiser`, the grid driver, :class:`Trajectory`,
:func:`prior` and :func:`resolve_target` (see :mod:`diffkit.samplers` for the calling convention)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import call_network, check_choice, check_finite, check_number, check_tensor
from ..losses import path_to_dict
from ..models import check_guidance_support
from ..paths import GaussianPath, check_path
from ..targets import TARGETS, to_x0_eps

__all__ = ["Model", "Trajectory", "Denoiser", "Counted", "resolve_target", "prior"]

Model = Callable[..., Tensor]


@dataclass(frozen=True)
class Trajectory:
    """States ``xs[i]`` at times ``ts[i]`` (``xs[0]`` the starting noise, ``xs[-1]`` the samples), and ``nfe``:
    how many times the sampler evaluated the model (a guided evaluation, conditional and unconditional in one
    batch, counts once)."""

    xs: Tensor  # (len(ts), B, ...)
    ts: Tensor
    nfe: int = 0

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
        self.nfe = 0  # model evaluations so far

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
        self.nfe += 1
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


class Counted:
    """``model`` with a call counter: ``counted = Counted(model)`` is sampled like ``model`` (it keeps the model's
    recorded objective and null label) and ``counted.nfe`` is how many times any sampler, solver or likelihood
    called it.  An independent count beside :attr:`Trajectory.nfe`."""

    def __init__(self, model: Model):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t, y=None), got {type(model).__name__}")
        self.model, self.nfe = model, 0

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        self.nfe += 1
        return call_network(self.model, x, t, y)

    def __getattr__(self, name: str) -> object:  # diffkit_objective, null_label, num_classes, ...
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)


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
    return Trajectory(torch.stack(xs), ts, den.nfe) if xs is not None else x


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

