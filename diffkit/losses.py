r"""Training objectives.  Every loss takes any ``model(x, t, y=None)`` and a batch of clean data ``x0``.

All of them are one regression (chapters 3–7): draw :math:`t`, :math:`\varepsilon`, form
:math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon` on a :class:`~diffkit.paths.GaussianPath`, and regress the
model output on the matching target (:mod:`diffkit.targets`):

* :func:`ddpm_loss` — :math:`\lVert\hat\varepsilon - \varepsilon\rVert^2` (DDPM's :math:`L_\text{simple}`, chapter 3), or
  ``target="x0"``/``"v"`` (chapter 4);
* :func:`dsm_loss` — denoising score matching :math:`\sigma_t^2\lVert s_\theta(x_t) + \varepsilon/\sigma_t\rVert^2`
  (Vincent, 2011; chapter 5);
* :func:`cfm_loss` — conditional flow matching :math:`\lVert u_\theta(x_t) - (\dot\alpha_t x_0 + \dot\sigma_t\varepsilon)\rVert^2`
  on the linear path with :math:`\sigma_\min` (rectified flow when :math:`\sigma_\min = 0`), uniform or logit-normal
  :math:`t`, optional minibatch OT coupling (chapter 7).

:func:`denoising_mse` measures a trained model on that common scale: the error of its implied
:math:`\hat x_0` at each noise level, whatever its target (chapters 4 and 10).

**Weightings** (chapter 4) are stated on the :math:`x_0` scale: the loss is
:math:`w(t)\,\lVert\hat x_0 - x_0\rVert^2` with :math:`w = \mathrm{SNR}` (``"snr"``: equals the ε-loss),
:math:`\max(\mathrm{SNR}, 1)` (``"truncated_snr"``, Salimans & Ho, 2022) or :math:`\min(\mathrm{SNR}, \gamma)`
(``"min_snr"``, Hang et al., 2023) or 1 (``"x0"``: the :math:`x_0`-loss, whatever the network outputs; chapter
10 trains an ε-network on it), evaluated on the model's own target by the exact change of scale
:math:`\lVert\Delta\,\text{target}\rVert^2 = k_\text{target}(t)\,\lVert\Delta x_0\rVert^2`.  ``weighting=None`` is the
plain MSE on the model's own target.

**Objectives** (what :class:`~diffkit.training.Trainer` trains on): :func:`objective` binds one of these losses to
its path, target and options, e.g. ``losses.objective("ddpm", path=DiscretePath.from_schedule("linear", 1000),
target="v")``.  The :class:`Objective` it returns is the Trainer's ``loss_fn(model, x0, y, generator)`` and
records what the model learns to predict, so that :func:`diffkit.checkpoints.save_model` and
:mod:`diffkit.cache` can store it next to the weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._checks import (as_time, call_network, check_choice, check_finite, check_number, check_positive_int,
                      check_tensor, randn_like)
from .coupling import ot_pair
from . import paths as _paths
from .paths import GaussianPath, LinearPath, check_path
from .targets import TARGETS, from_x0_eps, to_x0_eps

__all__ = ["diffusion_loss", "ddpm_loss", "dsm_loss", "cfm_loss", "denoising_mse", "sample_t", "target_scale",
           "loss_weight", "WEIGHTINGS", "T_DISTRIBUTIONS", "Objective", "objective", "OBJECTIVES",
           "path_to_dict", "path_from_dict"]

WEIGHTINGS = (None, "snr", "truncated_snr", "min_snr", "x0")
T_DISTRIBUTIONS = ("uniform", "logit_normal")
Model = Callable[..., Tensor]


def sample_t(n: int, path: GaussianPath, *, t_dist: str = "uniform", loc: float = 0.0, scale: float = 1.0,
             shift: float = 1.0, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
             device: torch.device | str | None = None) -> Tensor:
    r"""Training times: ``"uniform"`` (on the path's grid if it is discrete) or ``"logit_normal"``
    :math:`t = \operatorname{sigmoid}(\mu + s\,n)`, :math:`n \sim \mathcal N(0, 1)` (SD3; Esser et al., 2024).

    ``shift`` :math:`= a` moves every draw toward noise, :math:`t \mapsto a t / (1 + (a - 1) t)` (SD3's timestep
    shift, section 5.3.2; chapter 10): :math:`\operatorname{logit} t` grows by :math:`\ln a`, so on the rectified-flow
    path, where :math:`\log\mathrm{SNR} = -2\operatorname{logit} t`, every draw's SNR is divided by :math:`a^2`
    (a logit-normal :math:`\mu` becomes :math:`\mu + \ln a`).  Continuous paths only."""
    check_choice("t_dist", t_dist, T_DISTRIBUTIONS)
    check_positive_int("n", n)
    shift = check_number("shift", shift, low=0.0, low_open=True)
    if path.discrete and (t_dist != "uniform" or shift != 1.0):
        asked = " with ".join(([f"t_dist={t_dist!r}"] if t_dist != "uniform" else [])
                              + ([f"shift={shift:g}"] if shift != 1.0 else []))
        raise ValueError(f"{asked} needs a continuous path; a DiscretePath trains on its grid (uniform, shift 1)")
    if t_dist == "uniform":
        t = path.sample_t(n, generator=generator, dtype=torch.float64)  # (drawn in float64 either way)
    else:
        check_number("loc", loc)
        check_number("scale", scale, low=0.0, low_open=True)
        t = torch.sigmoid(loc + scale * torch.randn(n, generator=generator, dtype=torch.float64))
        t = t.clamp(1e-6, 1.0)
    if shift != 1.0:
        t = (shift * t / (1 + (shift - 1) * t)).clamp(1e-6, 1.0)
    return t.to(dtype=dtype, device=device)


def target_scale(target: str, t: Tensor, path: GaussianPath) -> Tensor:
    r""":math:`k_\text{target}(t)` with :math:`\lVert\Delta\,\text{target}\rVert^2 = k\,\lVert\Delta x_0\rVert^2` at fixed :math:`x_t`:
    1 for x0, SNR for ε, :math:`(\alpha^2+\sigma^2)^2/\sigma^2` for v, :math:`\alpha^2/\sigma^4` for the score,
    :math:`(\dot\alpha - \dot\sigma\alpha/\sigma)^2` for the velocity."""
    check_choice("target", target, TARGETS)
    a, s = path.alpha(t), path.sigma(t)
    if target == "x0":
        return torch.ones_like(t)
    if target == "eps":
        return a**2 / s**2
    if target == "v":
        return (a**2 + s**2) ** 2 / s**2
    if target == "score":
        return a**2 / s**4
    return (path.d_alpha(t) - path.d_sigma(t) * a / s) ** 2


def loss_weight(weighting: str | None, t: Tensor, path: GaussianPath, gamma: float = 5.0) -> Tensor:
    """The weight :math:`w(t)` on :math:`\\lVert\\hat x_0 - x_0\\rVert^2` (``None``: not defined, returns ``None``)."""
    check_choice("weighting", weighting, WEIGHTINGS)
    snr = path.snr(t)
    if weighting == "snr":
        return snr
    if weighting == "truncated_snr":
        return snr.clamp_min(1.0)
    if weighting == "min_snr":
        check_number("gamma", gamma, low=0.0, low_open=True)
        return snr.clamp_max(gamma)
    if weighting == "x0":
        return torch.ones_like(snr)
    raise ValueError("weighting=None has no x0-scale weight")


def _predict(model: Model, x_t: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
    """``model(x_t, t[, y])`` on the network's device and dtype, checked to be shaped like ``x_t`` (like x0)."""
    return call_network(model, x_t, t, y, name="x0")


def diffusion_loss(model: Model, x0: Tensor, path: GaussianPath, *, target: str = "eps", y: Tensor | None = None,
                   t: Tensor | None = None, eps: Tensor | None = None, weighting: str | None = None,
                   gamma: float = 5.0, t_dist: str = "uniform", t_shift: float = 1.0, coupling: str | None = None,
                   generator: torch.Generator | None = None, reduce: bool = True) -> Tensor:
    r"""The shared regression :math:`\mathbb E\,[\,w\,\lVert f_\theta(x_t, t, y) - \text{target}(x_0, \varepsilon)\rVert^2]`.

    ``t`` and ``eps`` may be given (to reuse the same draws); otherwise they are sampled with ``generator``
    (:func:`sample_t` with ``t_dist`` and ``shift=t_shift``).
    ``coupling="ot"`` re-pairs data and noise by exact minibatch OT before building :math:`x_t`.
    Returns the mean over the batch (or the per-sample losses with ``reduce=False``); the squared error is
    summed over all non-batch dimensions and divided by their number.
    """
    check_finite("x0", check_tensor("x0", x0, min_ndim=2))
    check_path(path)
    check_choice("target", target, TARGETS)
    check_choice("coupling", coupling, (None, "ot"))
    B = x0.shape[0]
    if t is None:
        t = sample_t(B, path, t_dist=t_dist, shift=t_shift, generator=generator, dtype=x0.dtype, device=x0.device)
    else:
        t = as_time("t", t, B, x0)
    if (path.sigma(t) == 0).any():
        raise ValueError("t must avoid points where sigma_t = 0 (clean data): the targets are undefined there")
    if eps is None:
        eps = randn_like(x0, generator)
    elif eps.shape != x0.shape:
        raise ValueError(f"eps must have the shape of x0 {tuple(x0.shape)}, got {tuple(eps.shape)}")
    if coupling == "ot":
        x0, eps = ot_pair(x0, eps)
    sample = path.sample(x0, t, eps)
    goal = sample.velocity if target == "velocity" else from_x0_eps(x0, eps, target, sample.x_t, t, path)
    pred = _predict(model, sample.x_t, t, y)
    per_sample = ((pred - goal) ** 2).flatten(1).mean(1)
    if weighting is not None:
        per_sample = per_sample * loss_weight(weighting, t, path, gamma) / target_scale(target, t, path)
    return per_sample.mean() if reduce else per_sample


def ddpm_loss(model: Model, x0: Tensor, path: GaussianPath, *, target: str = "eps", **kwargs) -> Tensor:
    r"""DDPM's :math:`L_\text{simple} = \mathbb E\lVert\varepsilon - \hat\varepsilon_\theta(x_t, t)\rVert^2` (chapter 3);
    ``target="x0"`` / ``"v"`` give the other parameterisations of chapter 4."""
    check_choice("target", target, ("eps", "x0", "v"))
    return diffusion_loss(model, x0, path, target=target, **kwargs)


def dsm_loss(model: Model, x0: Tensor, path: GaussianPath, *, t: Tensor | None = None, t_dist: str = "uniform",
             t_shift: float = 1.0, generator: torch.Generator | None = None, **kwargs) -> Tensor:
    r"""Denoising score matching with :math:`\lambda(t) = \sigma_t^2` (Song et al., 2021; chapter 5):
    :math:`\mathbb E\,\sigma_t^2\lVert s_\theta(x_t, t) - \nabla_{x_t}\log q(x_t|x_0)\rVert^2`,
    :math:`\nabla_{x_t}\log q(x_t|x_0) = -\varepsilon/\sigma_t`.  The model predicts the score."""
    for key in ("target", "weighting", "reduce"):
        if key in kwargs:
            raise TypeError(f"dsm_loss fixes {key}; use diffusion_loss to change it")
    check_tensor("x0", x0, min_ndim=2)
    if t is None:
        t = sample_t(x0.shape[0], path, t_dist=t_dist, shift=t_shift, generator=generator, dtype=x0.dtype,
                     device=x0.device)
    t = as_time("t", t, x0.shape[0], x0)
    per_sample = diffusion_loss(model, x0, path, target="score", t=t, generator=generator, reduce=False, **kwargs)
    return (path.sigma(t) ** 2 * per_sample).mean()


def cfm_loss(model: Model, x0: Tensor, *, sigma_min: float = 0.0, path: GaussianPath | None = None,
             t_dist: str = "uniform", t_shift: float = 1.0, coupling: str | None = None, **kwargs) -> Tensor:
    r"""Conditional flow matching (Lipman et al., 2023; Liu et al., 2023; chapter 7):
    :math:`\mathbb E\lVert u_\theta(x_t, t) - (\dot\alpha_t x_0 + \dot\sigma_t\varepsilon)\rVert^2`, on
    ``LinearPath(sigma_min)`` by default (target :math:`(1-\sigma_\min)\varepsilon - x_0`)."""
    path = LinearPath(sigma_min) if path is None else path
    return diffusion_loss(model, x0, path, target="velocity", t_dist=t_dist, t_shift=t_shift, coupling=coupling,
                          **kwargs)


@torch.no_grad()
def denoising_mse(model: Model, x0: Tensor, path: GaussianPath, ts: Tensor | list[float], *, target: str = "eps",
                  y: Tensor | None = None, generator: torch.Generator | None = None, batch_size: int = 250) -> Tensor:
    r"""The denoising error by noise level, on the common :math:`x_0` scale (chapters 4 and 10):
    :math:`\mathrm{MSE}(t) = \mathbb E\,\lVert\hat x_0(x_t, t) - x_0\rVert^2 / d` for each ``t`` in ``ts``, with
    :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon` and :math:`\hat x_0` recovered from the model's ``target``
    (:func:`diffkit.targets.to_x0_eps`, as every sampler does).

    One number per :math:`t` compares models that predict different targets: the error of their own target is
    :math:`k_\text{target}(t)\,\mathrm{MSE}(t)` (:func:`target_scale`; for ε that is
    :math:`\mathrm{SNR}(t)\,\mathrm{MSE}(t)`).  Two references: the posterior mean :math:`\mathbb E[x_0|x_t]`
    attains the minimum (Gaussian data :math:`\mathcal N(m, s^2 I)`:
    :math:`s^2\sigma_t^2/(\alpha_t^2 s^2 + \sigma_t^2)`), and predicting the data mean scores the data's variance
    at every :math:`t` — a model above that line at high noise has not learned the coarse structure yet.
    Every ``t`` uses the same noise draws; the model sees ``batch_size`` images at a time (the result does not
    depend on it beyond rounding).  Returns (len(ts),) float64.
    """
    check_tensor("x0", x0, min_ndim=2)
    check_positive_int("batch_size", batch_size)
    check_path(path)
    check_choice("target", target, TARGETS)
    ts = torch.as_tensor(ts, dtype=torch.float64)
    if ts.ndim != 1 or ts.numel() == 0:
        raise ValueError(f"ts must be a non-empty 1-D list or tensor of times in (0, 1], got shape {tuple(ts.shape)}")
    if torch.isnan(ts).any() or (ts < 0).any() or (ts > 1).any() or (path.sigma(ts) == 0).any():
        raise ValueError(f"ts must lie in [0, 1] and avoid points where sigma_t = 0 (x_t is the clean data), got {ts.tolist()}")
    eps = randn_like(x0, generator)
    out = []
    for t in ts.tolist():
        t_b = torch.full((x0.shape[0],), t, dtype=x0.dtype, device=x0.device)
        x_t = path.sample(x0, t_b, eps).x_t
        pred = torch.cat([_predict(model, x_t[i:i + batch_size], t_b[i:i + batch_size],
                                   None if y is None else y[i:i + batch_size])
                          for i in range(0, x0.shape[0], batch_size)])  # in batches: large ones run slower per image
        x0_hat, _ = to_x0_eps(pred, target, x_t, t_b, path)
        out.append(((x0_hat - x0) ** 2).double().mean())
    return torch.stack(out).cpu()


# --- objectives: a loss bound to its path, target and options (the Trainer's loss_fn) ---------------------------
#: The kinds :func:`objective` knows: the loss function, the targets it can train and the options it takes.
OBJECTIVES: dict[str, tuple[Callable[..., Tensor], tuple[str, ...], tuple[str, ...]]] = {
    "diffusion": (diffusion_loss, TARGETS, ("weighting", "gamma", "t_dist", "t_shift", "coupling")),
    "ddpm": (ddpm_loss, ("eps", "x0", "v"), ("weighting", "gamma", "t_dist", "t_shift", "coupling")),
    "dsm": (dsm_loss, ("score",), ("t_dist", "t_shift", "coupling")),
    "cfm": (cfm_loss, ("velocity",), ("t_dist", "t_shift", "coupling")),
}
_SIGNATURE = "loss_fn(model, x0, y, generator) -> scalar tensor"


def path_to_dict(path: GaussianPath) -> dict[str, Any]:
    """A JSON description of a diffkit path that :func:`path_from_dict` turns back into an equal path (a
    :class:`~diffkit.paths.DiscretePath` stores its betas).  Used by the cache key and by saved models."""
    check_path(path)
    name = type(path).__name__
    if isinstance(path, _paths.DiscretePath):
        return {"class": name, "betas": path.betas.tolist()}
    params = {k: v for k, v in vars(path).items() if not k.startswith("_")}
    if getattr(_paths, name, None) is not type(path) or not all(isinstance(v, (int, float)) for v in params.values()):
        raise TypeError(f"path must be one of diffkit's paths (VPPath, LinearPath, DiscretePath, ...) to be recorded, "
                        f"got {type(path).__module__}.{name}")
    return {"class": name, **params}


def path_from_dict(description: Mapping[str, Any]) -> GaussianPath:
    """Inverse of :func:`path_to_dict`."""
    params = dict(description)
    cls = getattr(_paths, str(params.pop("class", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, GaussianPath)):
        raise ValueError(f"description must name a diffkit path class, got {description!r}")
    if cls is _paths.DiscretePath:
        return cls(torch.tensor(params["betas"], dtype=torch.float64))
    return cls(**params)


@dataclass(frozen=True, eq=False)
class Objective:
    r"""A diffkit loss bound to its path, target and options; build it with :func:`objective`.

    Calling it is the :class:`~diffkit.training.Trainer`'s ``loss_fn(model, x0, y, generator)``.  ``target`` is
    what the model learns to predict (``"eps"``, ``"x0"``, ``"v"``, ``"score"`` or ``"velocity"``): the samplers
    need it, and :func:`diffkit.checkpoints.save_model` stores it with ``path``.  :meth:`to_dict` is the JSON
    record used in cache keys and saved models; :meth:`from_dict` rebuilds the objective from it.
    """

    kind: str
    path: GaussianPath
    target: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, model: Model, x0: Tensor, y: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        if self.kind == "cfm":
            return cfm_loss(model, x0, path=self.path, y=y, generator=generator, **self.options)
        if self.kind == "dsm":
            return dsm_loss(model, x0, self.path, y=y, generator=generator, **self.options)
        loss = OBJECTIVES[self.kind][0]
        return loss(model, x0, self.path, target=self.target, y=y, generator=generator, **self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": path_to_dict(self.path), "target": self.target,
                "options": dict(sorted(self.options.items()))}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Objective:
        return objective(record["kind"], path=path_from_dict(record["path"]), target=record["target"],
                         **record.get("options", {}))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Objective) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in sorted(self.options.items()))
        return f"objective({self.kind!r}, path={self.path!r}, target={self.target!r}{opts})"


def objective(kind: str | Callable[..., Tensor] | Objective, *, path: GaussianPath | None = None,
              target: str | None = None, sigma_min: float | None = None, **options: Any) -> Objective:
    r"""The training objective for :class:`~diffkit.training.Trainer`: one of diffkit's losses with its path,
    target and options fixed (the adapter from ``ddpm_loss(model, x0, path, ...)`` to
    ``loss_fn(model, x0, y, generator)``).

    ``kind`` is ``"ddpm"``, ``"dsm"``, ``"cfm"``, ``"diffusion"`` or the loss function itself
    (``losses.cfm_loss``).  ``path`` is required except for ``"cfm"`` (default ``LinearPath(sigma_min)``);
    ``target`` defaults to ``"eps"`` for ``"ddpm"``/``"diffusion"`` and is fixed for ``"dsm"`` (score) and
    ``"cfm"`` (velocity).  ``options`` are the loss's keyword arguments: ``weighting``, ``gamma``, ``t_dist``,
    ``t_shift``, ``coupling`` (``"dsm"``/``"cfm"``: ``t_dist``, ``t_shift`` and ``coupling`` only).  Examples::

        losses.objective("cfm", t_dist="logit_normal")           # rectified flow, chapter 7
        losses.objective("ddpm", path=DiscretePath.from_schedule("linear", 1000), target="v")   # chapter 4
    """
    if isinstance(kind, Objective):
        if path is None and target is None and sigma_min is None and not options:
            return kind
        return objective(kind.kind, path=path or kind.path, target=target or kind.target,
                         **{**kind.options, **options})
    if callable(kind) and not isinstance(kind, str):
        names = {fn: name for name, (fn, _, _) in OBJECTIVES.items()}
        if kind not in names:
            raise TypeError(f"kind must be 'ddpm', 'dsm', 'cfm', 'diffusion' or one of those loss functions, got "
                            f"{getattr(kind, '__name__', type(kind).__name__)}; a loss of your own needs no adapter: "
                            f"pass any {_SIGNATURE} to the Trainer")
        kind = names[kind]
    check_choice("kind", kind, OBJECTIVES)
    _, targets, allowed = OBJECTIVES[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"objective({kind!r}) got unexpected option(s) {', '.join(unknown)}; it takes "
                        f"{', '.join(allowed)} (y, t, eps and generator come from the Trainer at each step)")
    if sigma_min is not None:
        if kind != "cfm" or path is not None:
            raise TypeError("sigma_min is an option of objective('cfm') without a path (it picks "
                            "LinearPath(sigma_min))")
        path = LinearPath(sigma_min)
    if path is None:
        if kind != "cfm":
            raise ValueError(f"objective({kind!r}) needs path=, e.g. paths.DiscretePath.from_schedule('linear', 1000) "
                             f"or paths.VPPath()")
        path = LinearPath()
    check_path(path)
    target = check_choice("target", targets[0] if target is None and len(targets) == 1 else target or "eps", targets)
    if "weighting" in options:
        check_choice("weighting", options["weighting"], WEIGHTINGS)
    if "gamma" in options:
        check_number("gamma", options["gamma"], low=0.0, low_open=True)
    if "t_dist" in options:
        check_choice("t_dist", options["t_dist"], T_DISTRIBUTIONS)
        if options["t_dist"] == "logit_normal" and path.discrete:
            raise ValueError("t_dist='logit_normal' needs a continuous path; a DiscretePath trains on its grid")
    if "t_shift" in options:
        check_number("t_shift", options["t_shift"], low=0.0, low_open=True)
        if options["t_shift"] != 1.0 and path.discrete:
            raise ValueError("t_shift needs a continuous path; a DiscretePath trains on its grid")
    if "coupling" in options:
        check_choice("coupling", options["coupling"], (None, "ot"))
    path_to_dict(path)  # fails now, not at save time, for a path that cannot be recorded
    return Objective(kind, path, target, dict(options))
