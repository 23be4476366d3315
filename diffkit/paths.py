r"""Gaussian probability paths :math:`x_t = \alpha_t\,x_0 + \sigma_t\,\varepsilon` (chapters 2, 6, 7 and 14).

**Time convention (used everywhere in diffkit).**  :math:`t \in [0, 1]`; :math:`t = 0` is the data end and
:math:`t = 1` the noise end.  At :math:`t = 0`, :math:`\alpha_0 = 1` on every path and :math:`\sigma_0 = 0` on every
path but one: :class:`LinearPath` with ``sigma_min > 0`` (Lipman et al.'s OT path) has :math:`\sigma_0 = \sigma_\min`,
so its :math:`x_0` is the data blurred by :math:`\mathcal N(0, \sigma_\min^2 I)` (:attr:`GaussianPath.sigma_at_data`
says which).  At :math:`t = 1`, :math:`\alpha_1 = 0` exactly (pure noise) on the linear, cosine and
zero-terminal-SNR paths, and is small but positive on VP, sub-VP and ordinary DDPM schedules.  This is the diffusion convention (DDPM, score SDEs, SD3's rectified
flow).  Meta's ``flow_matching`` and Lipman et al. run time the other way (:math:`t=0` noise); convert with
:func:`flip_time` and :func:`flip_velocity`.  Discrete DDPM step :math:`n \in \{1..N\}` sits at :math:`t = n/N`
(diffusers' 0-based timestep ``k`` is :math:`n = k + 1`, see :func:`t_from_index`).

Every path gives :math:`\alpha_t`, :math:`\sigma_t`, their time derivatives, the signal-to-noise ratio
:math:`\mathrm{SNR}(t) = \alpha_t^2/\sigma_t^2`, its log, and the SDE coefficients
:math:`f(t) = \dot\alpha_t/\alpha_t`, :math:`g^2(t) = \tfrac{d}{dt}\sigma_t^2 - 2 f(t)\,\sigma_t^2` of the forward SDE
:math:`dx = f(t)\,x\,dt + g(t)\,dW` whose marginals are the path (chapter 6).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import (as_time, broadcast_like, check_choice, check_number, check_positive_int, check_tensor,
                      randn_like)
from .schedules import alpha_bar_from_betas, make_betas

__all__ = [
    "GaussianPath", "PathSample", "VPPath", "SubVPPath", "VEPath", "LinearPath", "CosinePath", "DiscretePath",
    "make_path", "check_path", "PATHS", "flip_time", "flip_velocity", "t_from_index", "index_from_t",
]

Time = Tensor | float


@dataclass(frozen=True)
class PathSample:
    """A draw from the path: ``x_t = alpha_t * x0 + sigma_t * eps`` and its velocity ``dx_t/dt``."""

    x_t: Tensor
    x0: Tensor
    eps: Tensor
    t: Tensor
    velocity: Tensor


def _as_tensor(t: Time) -> Tensor:
    """``t`` as a tensor, checked to lie in [0, 1] (the one time convention)."""
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        t = torch.tensor(float(t), dtype=torch.float64)
    elif not isinstance(t, Tensor):
        raise TypeError(f"t must be a number or a torch.Tensor, got {type(t).__name__}")
    if t.numel() and (torch.isnan(t).any() or t.min() < 0 or t.max() > 1):
        raise ValueError(f"t must lie in [0, 1] (0 = data, 1 = noise), got values in "
                         f"[{t.min().item():.4g}, {t.max().item():.4g}]")
    return t


class GaussianPath(ABC):
    r"""A path :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`, :math:`t \in [0,1]`, :math:`t = 0` is data."""

    #: Whether training should draw t only on a discrete grid (DDPM with N steps).
    discrete: bool = False

    @abstractmethod
    def alpha(self, t: Time) -> Tensor: ...

    @abstractmethod
    def sigma(self, t: Time) -> Tensor: ...

    @abstractmethod
    def d_alpha(self, t: Time) -> Tensor:
        r""":math:`d\alpha_t/dt`."""

    @abstractmethod
    def d_sigma(self, t: Time) -> Tensor:
        r""":math:`d\sigma_t/dt`."""

    # --- derived quantities -------------------------------------------------------------------------
    def snr(self, t: Time) -> Tensor:
        r""":math:`\mathrm{SNR}(t) = \alpha_t^2 / \sigma_t^2`."""
        return self.alpha(t) ** 2 / self.sigma(t) ** 2

    def log_snr(self, t: Time) -> Tensor:
        r""":math:`\lambda_t = \log \mathrm{SNR}(t) = 2(\log\alpha_t - \log\sigma_t)`."""
        return 2 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def drift(self, t: Time) -> Tensor:
        r""":math:`f(t) = \dot\alpha_t / \alpha_t` of the forward SDE :math:`dx = f x\,dt + g\,dW`."""
        return self.d_alpha(t) / self.alpha(t)

    def sigma_d_sigma(self, t: Time) -> Tensor:
        r""":math:`\sigma_t\dot\sigma_t = \tfrac12\,d\sigma_t^2/dt`, finite at :math:`t = 0` even where
        :math:`\dot\sigma_0` is infinite (VP, VE: :math:`\sigma_t \propto \sqrt t` near 0); the exact velocity and
        :math:`g^2` use it there."""
        return self.sigma(t) * self.d_sigma(t)

    def diffusion_sq(self, t: Time) -> Tensor:
        r""":math:`g^2(t) = 2\sigma_t\dot\sigma_t - 2 f(t)\sigma_t^2` of the forward SDE."""
        return 2 * self.sigma_d_sigma(t) - 2 * self.drift(t) * self.sigma(t) ** 2

    def sample(self, x0: Tensor, t: Time, eps: Tensor | None = None,
               generator: torch.Generator | None = None) -> PathSample:
        r"""Draw :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon` for each row of ``x0`` (``t``: number or (B,))."""
        check_tensor("x0", x0)
        t = as_time("t", t, x0.shape[0], x0)
        if eps is None:
            eps = randn_like(x0, generator)
        elif eps.shape != x0.shape:
            raise ValueError(f"eps must have the shape of x0 {tuple(x0.shape)}, got {tuple(eps.shape)}")
        a, s = broadcast_like(self.alpha(t), x0), broadcast_like(self.sigma(t), x0)
        da, ds = broadcast_like(self.d_alpha(t), x0), broadcast_like(self.d_sigma(t), x0)
        return PathSample(x_t=a * x0 + s * eps, x0=x0, eps=eps, t=t, velocity=da * x0 + ds * eps)

    @property
    def sigma_at_data(self) -> float:
        r""":math:`\sigma_0`: 0 when :math:`x_{t=0}` is the clean data, :math:`\sigma_\min` for ``LinearPath(sigma_min)``
        (then samplers, which end at :math:`t = 0`, return data blurred by :math:`\mathcal N(0, \sigma_0^2 I)`)."""
        return float(self.sigma(torch.tensor(0.0, dtype=torch.float64)))

    def sample_t(self, n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> Tensor:
        """Training times: uniform on (0, 1] (discrete paths override this with their grid)."""
        check_positive_int("n", n)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return (1 - u).to(dtype=dtype, device=device)  # in (0, 1]: never exactly clean data

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class VPPath(GaussianPath):
    r"""Variance-preserving path of the VP-SDE (Song et al., 2021), chapter 6.

    :math:`\beta(t) = \beta_\min + t(\beta_\max - \beta_\min)`, :math:`B(t) = \int_0^t \beta`,
    :math:`\alpha_t = e^{-B(t)/2}`, :math:`\sigma_t = \sqrt{1 - e^{-B(t)}}` (so :math:`\alpha_t^2 + \sigma_t^2 = 1`).
    The discrete linear DDPM schedule with :math:`N` steps converges to it.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = check_number("beta_min", beta_min, low=0.0, low_open=True)
        self.beta_max = check_number("beta_max", beta_max, low=self.beta_min)

    def beta(self, t: Time) -> Tensor:
        return self.beta_min + _as_tensor(t) * (self.beta_max - self.beta_min)

    def integral_beta(self, t: Time) -> Tensor:
        t = _as_tensor(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t: Time) -> Tensor:
        return torch.exp(-0.5 * self.integral_beta(t))

    def sigma(self, t: Time) -> Tensor:
        return torch.sqrt(-torch.expm1(-self.integral_beta(t)))

    def d_alpha(self, t: Time) -> Tensor:
        return -0.5 * self.beta(t) * self.alpha(t)

    def d_sigma(self, t: Time) -> Tensor:
        return 0.5 * self.beta(t) * self.alpha(t) ** 2 / self.sigma(t)

    def sigma_d_sigma(self, t: Time) -> Tensor:
        return 0.5 * self.beta(t) * self.alpha(t) ** 2


class SubVPPath(VPPath):
    r"""sub-VP path (Song et al., 2021): :math:`\alpha_t = e^{-B(t)/2}`, :math:`\sigma_t = 1 - e^{-B(t)}`."""

    def sigma(self, t: Time) -> Tensor:
        return -torch.expm1(-self.integral_beta(t))

    def d_sigma(self, t: Time) -> Tensor:
        return self.beta(t) * torch.exp(-self.integral_beta(t))

    sigma_d_sigma = GaussianPath.sigma_d_sigma  # finite as it is (not VP's)


class VEPath(GaussianPath):
    r"""Variance-exploding path of the VE-SDE / NCSN (chapter 6): :math:`\alpha_t = 1` and
    :math:`\sigma_t^2 = \sigma_\min^2\big((\sigma_\max/\sigma_\min)^{2t} - 1\big)`, the exact marginal of
    :math:`dx = \sqrt{d[\sigma_\min^2 r^{2t}]/dt}\;dW` started at the data, so :math:`\sigma_0 = 0` and
    :math:`\sigma_1 \approx \sigma_\max`.

    **Choosing** :math:`\sigma_\max` **(scale it to the data).**  The prior :math:`\mathcal N(0, \sigma_\max^2 I)`
    must cover the data, so :math:`\sigma_\max` should be about the largest Euclidean distance between two
    training points (Song & Ermon, 2020, *Improved techniques for training score-based generative models*,
    Technique 1): much smaller and the noise never mixes distant modes; much larger and most training times are
    spent at noise levels where the data is invisible.  The default 50 is Song et al.'s (2021) value for
    CIFAR-10 images in [-1, 1]; MNIST digits in [-1, 1] are at most about 31 apart, and 2-D toy data far less:
    on two moons (largest distance about 4.5) a DSM-trained MLP with :math:`\sigma_\max = 50` samples far
    outside the distance's null band, with :math:`\sigma_\max = 5` inside it.  :meth:`for_data` takes
    :math:`\sigma_\max` from the data.
    :math:`\sigma_\min` is the smallest noise level, well below the spacing the samples should resolve
    (0.01 for data of unit scale)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = check_number("sigma_min", sigma_min, low=0.0, low_open=True)
        self.sigma_max = check_number("sigma_max", sigma_max, low=self.sigma_min, low_open=True)

    @classmethod
    def for_data(cls, x: Tensor, sigma_min: float = 0.01, *, max_points: int = 2000,
                 generator: torch.Generator | None = None) -> VEPath:
        r"""A VE path with :math:`\sigma_\max = \max_{i,j}\lVert x_i - x_j\rVert`, the largest pairwise Euclidean
        distance in the data ``x`` (N, ...) (Song & Ermon, 2020), over a random subset of ``max_points`` rows
        for a large set (drawn with ``generator``; the maximum over a subset is at most the true one).  E.g.
        ``VEPath.for_data(moons)`` gives :math:`\sigma_\max \approx 5` on two moons."""
        check_tensor("x", x, min_ndim=2)
        if x.shape[0] < 2:
            raise ValueError(f"x must hold at least 2 data points (rows) to measure their spread, got {x.shape[0]}")
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or infinite values")
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
            raise ValueError(f"max_points must be an integer >= 2, got {max_points!r}")
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        if flat.shape[0] > max_points:
            flat = flat[torch.randperm(flat.shape[0], generator=generator)[:max_points].to(flat.device)]
        sigma_max = torch.cdist(flat, flat).max().item()
        if not sigma_max > check_number("sigma_min", sigma_min, low=0.0, low_open=True):
            raise ValueError(f"x: the largest distance between two data points ({sigma_max:.3g}) must exceed "
                             f"sigma_min={sigma_min}: are all the rows equal?")
        return cls(sigma_min=sigma_min, sigma_max=sigma_max)

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: Time) -> Tensor:
        return torch.ones_like(_as_tensor(t))

    def sigma(self, t: Time) -> Tensor:
        return self.sigma_min * torch.sqrt(torch.expm1(2 * self._log_ratio * _as_tensor(t)))

    def d_alpha(self, t: Time) -> Tensor:
        return torch.zeros_like(_as_tensor(t))

    def d_sigma(self, t: Time) -> Tensor:
        t = _as_tensor(t)
        return self.sigma_min**2 * self._log_ratio * torch.exp(2 * self._log_ratio * t) / self.sigma(t)

    def sigma_d_sigma(self, t: Time) -> Tensor:
        return self.sigma_min**2 * self._log_ratio * torch.exp(2 * self._log_ratio * _as_tensor(t))


class LinearPath(GaussianPath):
    r"""Straight path of conditional flow matching / rectified flow (chapter 7):
    :math:`\alpha_t = 1 - t`, :math:`\sigma_t = \sigma_\min + (1 - \sigma_\min)\,t`.

    With ``sigma_min = 0`` it is rectified flow (:math:`x_t = (1-t)x_0 + t\varepsilon`, velocity
    :math:`\varepsilon - x_0`); with :math:`\sigma_\min > 0` it is Lipman et al.'s OT path, time-flipped.  Then
    :math:`t = 0` is **not** clean data: :math:`\sigma_0 = \sigma_\min`, so :math:`x_0` is the data blurred by
    :math:`\mathcal N(0, \sigma_\min^2 I)` (finite log-SNR at 0), and a sampler that integrates to :math:`t = 0`
    returns samples of that blurred distribution.
    """

    def __init__(self, sigma_min: float = 0.0):
        self.sigma_min = check_number("sigma_min", sigma_min, low=0.0, high=1.0)
        if self.sigma_min == 1.0:
            raise ValueError("sigma_min must be < 1, got 1.0")

    def alpha(self, t: Time) -> Tensor:
        return 1 - _as_tensor(t)

    def sigma(self, t: Time) -> Tensor:
        return self.sigma_min + (1 - self.sigma_min) * _as_tensor(t)

    def d_alpha(self, t: Time) -> Tensor:
        return -torch.ones_like(_as_tensor(t))

    def d_sigma(self, t: Time) -> Tensor:
        return torch.full_like(_as_tensor(t), 1 - self.sigma_min)


class CosinePath(GaussianPath):
    r"""Trigonometric variance-preserving path :math:`\alpha_t = \cos(\pi t/2)`, :math:`\sigma_t = \sin(\pi t/2)`
    (the continuous cosine schedule; chapters 4 and 14).

    :math:`\alpha_t` is computed as :math:`\sin(\tfrac{\pi}{2}(1 - t))`, so that :math:`\alpha_1 = 0` exactly in
    every dtype (:math:`\cos(\pi/2)` is :math:`6\cdot10^{-17}` in float64 and :math:`-4\cdot10^{-8}` in float32,
    which would hide the zero terminal SNR from the conversions in :mod:`diffkit.targets`)."""

    def alpha(self, t: Time) -> Tensor:
        return torch.sin(0.5 * math.pi * (1 - _as_tensor(t)))

    def sigma(self, t: Time) -> Tensor:
        return torch.sin(0.5 * math.pi * _as_tensor(t))

    def d_alpha(self, t: Time) -> Tensor:
        return -0.5 * math.pi * self.sigma(t)

    def d_sigma(self, t: Time) -> Tensor:
        return 0.5 * math.pi * self.alpha(t)


class DiscretePath(GaussianPath):
    r"""The discrete DDPM chain seen as a Gaussian path (chapters 2–4).

    Step :math:`n` of :math:`N` sits at :math:`t = n/N` with :math:`\alpha_t = \sqrt{\bar\alpha_n}`,
    :math:`\sigma_t = \sqrt{1 - \bar\alpha_n}` exactly.  Between grid points the angle
    :math:`\phi_t = \arctan(\sigma_t/\alpha_t)` is interpolated linearly, :math:`\alpha_t = \cos\phi_t`,
    :math:`\sigma_t = \sin\phi_t`: the path stays variance preserving everywhere, its velocity is
    :math:`dx_t/dt = \dot\phi_t\,v` (Salimans & Ho's :math:`v = \alpha_t\varepsilon - \sigma_t x_0` is the
    velocity in :math:`\phi`), and the derivatives stay finite where :math:`\bar\alpha` reaches 0 (zero terminal
    SNR), where :math:`d\sqrt{\bar\alpha}/dt` would be infinite.

    **One rule for the derivatives at a grid point:** segment :math:`n` covers :math:`(n/N, (n+1)/N]` (the first
    also holds :math:`t = 0`), so at :math:`t = n/N` the derivatives are those of the segment *below* :math:`t`,
    the one a sampler walking towards the data crosses next.  Training draws :math:`t \in \{1/N, \dots, 1\}`.
    """

    discrete = True

    def __init__(self, betas: Tensor):
        betas = check_tensor("betas", betas, ndim=1).to(torch.float64)
        if not torch.isfinite(betas).all() or ((betas <= 0) | (betas > 1)).any():
            raise ValueError("betas must lie in (0, 1]")
        self.betas = betas
        self.n_steps = betas.shape[0]
        self.alpha_bar = torch.cat([betas.new_ones(1), alpha_bar_from_betas(betas)])  # (N + 1,), alpha_bar[0] = 1
        self._alpha_grid = self.alpha_bar.sqrt()  # exact sqrt(alpha_bar_n) on the grid
        self._sigma_grid = (1 - self.alpha_bar).sqrt()
        self._phi = torch.atan2(self._sigma_grid, self._alpha_grid)  # (N + 1,), phi_0 = 0, increasing

    @classmethod
    def from_schedule(cls, name: str, n_steps: int = 1000, *, zero_terminal_snr: bool = False,
                      **kwargs: float) -> DiscretePath:
        """``DiscretePath.from_schedule("cosine", 1000)``: see :func:`diffkit.schedules.make_betas`."""
        return cls(make_betas(name, n_steps, zero_terminal_snr=zero_terminal_snr, **kwargs))

    def _position(self, t: Time) -> tuple[Tensor, Tensor]:
        """``t`` and its grid position ``N t`` in float64, snapped to the grid within 1e-9 steps."""
        t = _as_tensor(t)
        pos = t.to(torch.float64) * self.n_steps
        return t, torch.where((pos - pos.round()).abs() < 1e-9, pos.round(), pos)

    def _angle(self, t: Time) -> tuple[Tensor, Tensor, Tensor]:
        """``(t, alpha, sigma)`` in float64: the grid values exactly on the grid, the rotated ones between."""
        t, pos = self._position(t)
        n = pos.floor().clamp(0, self.n_steps - 1).long()
        phi = self._phi.to(pos.device)
        delta = (pos - n) * (phi[n + 1] - phi[n])  # angle travelled inside segment n
        a_n, s_n = self._alpha_grid.to(pos.device)[n], self._sigma_grid.to(pos.device)[n]
        alpha = a_n * torch.cos(delta) - s_n * torch.sin(delta)  # cos(phi_n + delta)
        sigma = s_n * torch.cos(delta) + a_n * torch.sin(delta)  # sin(phi_n + delta)
        on_grid = pos == pos.round()
        k = pos.round().long().clamp(0, self.n_steps)
        alpha = torch.where(on_grid, self._alpha_grid.to(pos.device)[k], alpha)
        sigma = torch.where(on_grid, self._sigma_grid.to(pos.device)[k], sigma)
        return t, alpha, sigma

    def _d_phi(self, t: Time) -> Tensor:
        r""":math:`d\phi/dt` of the segment below ``t`` (see the class docstring)."""
        _, pos = self._position(t)
        n = (pos.ceil() - 1).clamp(0, self.n_steps - 1).long()
        phi = self._phi.to(pos.device)
        return (phi[n + 1] - phi[n]) * self.n_steps

    def alpha_bar_at(self, t: Time) -> Tensor:
        t, alpha, _ = self._angle(t)
        return (alpha**2).to(t.dtype)

    def alpha(self, t: Time) -> Tensor:
        t, alpha, _ = self._angle(t)
        return alpha.to(t.dtype)

    def sigma(self, t: Time) -> Tensor:
        t, _, sigma = self._angle(t)
        return sigma.to(t.dtype)

    def d_alpha(self, t: Time) -> Tensor:
        t, _, sigma = self._angle(t)
        return (-sigma * self._d_phi(t)).to(t.dtype)

    def d_sigma(self, t: Time) -> Tensor:
        t, alpha, _ = self._angle(t)
        return (alpha * self._d_phi(t)).to(t.dtype)

    def sample_t(self, n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> Tensor:
        check_positive_int("n", n)
        steps = torch.randint(1, self.n_steps + 1, (n,), generator=generator)
        return (steps.to(torch.float64) / self.n_steps).to(dtype=dtype, device=device)

    def __repr__(self) -> str:
        return f"DiscretePath(n_steps={self.n_steps})"


PATHS = {
    "vp": VPPath, "subvp": SubVPPath, "ve": VEPath, "linear": LinearPath, "rectified_flow": LinearPath,
    "cosine": CosinePath,
}


def make_path(name: str, **kwargs) -> GaussianPath:
    """Build a path by name: ``"vp"``, ``"subvp"``, ``"ve"``, ``"linear"`` (= ``"rectified_flow"``), ``"cosine"``,
    or ``"ddpm-linear"``, ``"ddpm-cosine"``, ``"ddpm-sigmoid"`` (a :class:`DiscretePath`; pass ``n_steps``)."""
    if isinstance(name, str) and name.startswith("ddpm-"):
        schedule = name[len("ddpm-"):]
        check_choice("name", name, [f"ddpm-{s}" for s in ("linear", "cosine", "sigmoid")])
        return DiscretePath.from_schedule(schedule, **kwargs)
    check_choice("name", name, list(PATHS) + ["ddpm-linear", "ddpm-cosine", "ddpm-sigmoid"])
    return PATHS[name](**kwargs)


# --- conversions at the boundary with other conventions ------------------------------------------------
def check_path(path: object) -> GaussianPath:
    """Return ``path`` if it is a :class:`GaussianPath`, else raise a TypeError that says how to make one."""
    if not isinstance(path, GaussianPath):
        raise TypeError(f"path must be a diffkit.paths.GaussianPath (e.g. paths.VPPath()), got {type(path).__name__}")
    return path


def flip_time(t: Time) -> Tensor:
    """Convert between diffkit's t (0 = data) and the flow-matching t (0 = noise): ``1 - t`` both ways."""
    return 1 - _as_tensor(t)


def flip_velocity(v: Tensor) -> Tensor:
    """A velocity field under flipped time: ``dx/d(1-t) = -dx/dt``."""
    return -v


def t_from_index(k: Tensor | int, n_steps: int) -> Tensor:
    """diffusers' 0-based timestep ``k`` (0 … N-1) → diffkit's ``t = (k + 1) / N``."""
    check_positive_int("n_steps", n_steps)
    k = torch.as_tensor(k)
    if k.is_floating_point() or k.is_complex() or k.dtype == torch.bool:
        raise TypeError(f"k must be an integer timestep index (or an integer tensor), got dtype {k.dtype}")
    if (k < 0).any() or (k >= n_steps).any():
        raise ValueError(f"k must be a timestep index in 0..{n_steps - 1}, got values in [{k.min().item()}, {k.max().item()}]")
    return (k.to(torch.float64) + 1) / n_steps


def index_from_t(t: Time, n_steps: int) -> Tensor:
    """diffkit's ``t`` on the grid ``n/N`` → diffusers' 0-based timestep ``n - 1`` (``t = 0`` gives -1)."""
    check_positive_int("n_steps", n_steps)
    return (_as_tensor(t).to(torch.float64) * n_steps).round().long() - 1
