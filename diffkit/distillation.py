r"""Few-step generation (chapter 12): progressive distillation and reflow on a Gaussian path.

Every function works on any :class:`~diffkit.paths.GaussianPath` :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`
(t = 0 is data) and writes DDIM's deterministic step in terms of a prediction :math:`\hat x_0`:

.. math::  x_s = \alpha_s\hat x_0 + \sigma_s\,\frac{x_t - \alpha_t\hat x_0}{\sigma_t}, \qquad s < t .

* :func:`ddim_jump` is that step, with one time per sample;
* :func:`teacher_steps` runs a teacher (a network or an exact oracle, optionally guided) through several of them;
* :func:`progressive_target` is the :math:`\tilde x_0` of Salimans and Ho (2022) that makes *one* step from t to
  s land where the teacher's two steps land, and :func:`progressive_loss` the regression on it;
* :func:`reflow_x0_loss` is reflow (Liu et al., 2023) on fixed (sample, noise) pairs, with an :math:`x_0` target;
* :func:`distil` trains a student (a copy of the teacher) on either loss with diffkit's Trainer.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._checks import broadcast_like, call_network, check_finite, check_positive_int, check_tensor
from .paths import GaussianPath, check_path
from .targets import to_x0_eps

__all__ = ["ddim_jump", "predict_x0", "teacher_steps", "progressive_target", "progressive_loss",
           "reflow_x0_loss", "student_copy", "distil"]


def _times(name: str, t: Tensor | float, x: Tensor) -> Tensor:
    """A (B,) float64 tensor of times in [0, 1] from a number or a (B,) tensor."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a number or a (B,) tensor with B = {x.shape[0]}, got {tuple(t.shape)}")
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ValueError(f"{name} must lie in [0, 1] (t = 0 is data)")
    return t


def _coefs(path: GaussianPath, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    return (broadcast_like(path.alpha(t).to(x.dtype), x), broadcast_like(path.sigma(t).to(x.dtype), x))


def _step_coefs(x_t: Tensor, name: str, other: Tensor, t: Tensor | float, s: Tensor | float,
                path: GaussianPath) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check a step's inputs (``other`` shaped like ``x_t``, s < t, sigma_t > 0); return alpha_t, sigma_t, alpha_s,
    sigma_s broadcast against ``x_t``."""
    check_tensor("x_t", x_t, min_ndim=2)
    check_tensor(name, other, min_ndim=2)
    if other.shape != x_t.shape:
        raise ValueError(f"{name} must have the shape of x_t {tuple(x_t.shape)}, got {tuple(other.shape)}")
    path = check_path(path)
    t, s = _times("t", t, x_t), _times("s", s, x_t)
    if (s >= t).any():
        raise ValueError("s must be smaller than t for every sample (a step runs towards the data, t = 0)")
    a_t, s_t = _coefs(path, t, x_t)
    if (s_t <= 0).any():
        raise ValueError("t must have sigma_t > 0: the step divides by sigma_t")
    return (a_t, s_t, *_coefs(path, s, x_t))


def ddim_jump(x_t: Tensor, x0_hat: Tensor, t: Tensor | float, s: Tensor | float, path: GaussianPath) -> Tensor:
    r"""DDIM's deterministic step from t to s (chapter 4), written with :math:`\hat x_0` (chapter 12's
    eq-ddim-x0): :math:`x_s = \alpha_s\hat x_0 + \sigma_s(x_t - \alpha_t\hat x_0)/\sigma_t`.  ``t`` and ``s`` are
    numbers or (B,) tensors with :math:`\sigma_t > 0`."""
    a_t, s_t, a_s, s_s = _step_coefs(x_t, "x0_hat", x0_hat, t, s, path)
    return a_s * x0_hat + s_s * (x_t - a_t * x0_hat) / s_t


def predict_x0(model: Callable[..., Tensor], x: Tensor, t: Tensor | float, path: GaussianPath, *,
               y: Tensor | None = None, guidance: float = 1.0, null_label: int | None = None,
               target: str | None = None) -> Tensor:
    r""":math:`\hat x_0(x, t)` of ``model`` (any target, converted as in chapter 4), one time per sample, with
    classifier-free guidance ``guidance = w`` on the raw output as the samplers apply it (chapter 8)."""
    from .samplers import Denoiser

    t = _times("t", t, x)
    den = Denoiser(model, path, target=target, y=y, guidance=guidance, null_label=null_label)
    raw = den.prediction(x, t.to(x.dtype))
    return to_x0_eps(raw, den.target, x, t.to(x.dtype), path)[0]


def teacher_steps(teacher: Callable[..., Tensor], x_t: Tensor, times: list[Tensor | float], path: GaussianPath, *,
                  y: Tensor | None = None, guidance: float = 1.0, null_label: int | None = None,
                  target: str | None = None) -> Tensor:
    r"""Run ``teacher`` through DDIM steps :math:`x_{\tau_0} \to x_{\tau_1} \to \dots` (``times`` =
    :math:`[\tau_0, \tau_1, \dots]`, each a number or a (B,) tensor, decreasing) and return the last state.
    No gradient flows through the teacher."""
    if len(times) < 2:
        raise ValueError(f"times must hold at least a start and an end, got {len(times)} entries")
    x = x_t
    with torch.no_grad():
        for t, s in zip(times[:-1], times[1:]):
            x0 = predict_x0(teacher, x, t, path, y=y, guidance=guidance, null_label=null_label, target=target)
            x = ddim_jump(x, x0, t, s, path)
    return x


def progressive_target(x_t: Tensor, x_s: Tensor, t: Tensor | float, s: Tensor | float,
                       path: GaussianPath) -> Tensor:
    r"""Progressive distillation's target (Salimans and Ho, 2022; chapter 12's eq-pd-target): the :math:`\tilde
    x_0` for which one DDIM step from :math:`(x_t, t)` lands exactly on ``x_s`` at time ``s``,

    .. math::  \tilde x_0 = \frac{x_s - (\sigma_s/\sigma_t)\,x_t}{\alpha_s - (\sigma_s/\sigma_t)\,\alpha_t} .

    ``x_s`` is where the teacher's two steps t → (t+s)/2 → s land.  At ``s = 0`` (:math:`\sigma_0 = 0`) it is
    :math:`x_0/\alpha_0`."""
    a_t, s_t, a_s, s_s = _step_coefs(x_t, "x_s", x_s, t, s, path)
    ratio = s_s / s_t
    return (x_s - ratio * x_t) / (a_s - ratio * a_t)


def progressive_loss(student: Callable[..., Tensor], x0: Tensor, y: Tensor | None = None,
                     generator: torch.Generator | None = None, *, teacher: Callable[..., Tensor],
                     path: GaussianPath, student_steps: int, guidance: float = 1.0,
                     null_label: int | None = None) -> Tensor:
    r"""One batch of progressive distillation (Salimans and Ho, 2022; chapter 12), in the Trainer's
    ``loss_fn(model, x0, y, generator)`` form:

    1. draw a step :math:`i \in \{1, \dots, N\}` of the student's uniform grid (N = ``student_steps``), so
       :math:`t = i/N`, :math:`s = (i-1)/N`, and noise :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`;
    2. run the teacher (guided with ``guidance``) two DDIM steps, t → t − 1/(2N) → s;
    3. regress the student's :math:`\hat x_0(x_t, t, y)` on :func:`progressive_target` (mean squared error).
    """
    check_tensor("x0", x0, min_ndim=2)
    check_finite("x0", x0)
    n = check_positive_int("student_steps", student_steps)
    path = check_path(path)
    b = x0.shape[0]
    i = torch.randint(1, n + 1, (b,), generator=generator).to(device=x0.device, dtype=torch.float64)
    t, mid, s = i / n, (i - 0.5) / n, (i - 1) / n
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    a_t, s_t = _coefs(path, t, x0)
    x_t = a_t * x0 + s_t * eps
    x_s = teacher_steps(teacher, x_t, [t, mid, s], path, y=y, guidance=guidance, null_label=null_label)
    target = progressive_target(x_t, x_s, t, s, path)
    pred = predict_x0(student, x_t, t, path, y=y, target="x0")  # the student predicts x0
    return ((pred - target) ** 2).flatten(1).sum(1).mean() / x0[0].numel()


def reflow_x0_loss(student: Callable[..., Tensor], pairs: Tensor, y: Tensor | None = None,
                   generator: torch.Generator | None = None, *, path: GaussianPath) -> Tensor:
    r"""Reflow (Liu et al., 2023; chapters 7 and 12) on a Gaussian path with an :math:`x_0` target: for fixed
    pairs ``pairs[:, 0]`` = :math:`\hat x_0` (the teacher's ODE endpoint) and ``pairs[:, 1]`` = :math:`\varepsilon`
    (its starting noise), :math:`\mathbb E_t\lVert\hat x_{0,\theta}(\alpha_t\hat x_0 + \sigma_t\varepsilon, t) -
    \hat x_0\rVert^2`, t drawn by ``path.sample_t``.  Trainer form ``loss_fn(model, pairs, y, generator)``."""
    check_tensor("pairs", pairs, min_ndim=3)
    if pairs.shape[1] != 2:
        raise ValueError(f"pairs must have shape (B, 2, ...): pairs[:, 0] the samples, pairs[:, 1] their noise; "
                         f"got {tuple(pairs.shape)}")
    path = check_path(path)
    x0, eps = pairs[:, 0], pairs[:, 1]
    t = path.sample_t(x0.shape[0], generator=generator, dtype=torch.float64).to(x0.device)
    a_t, s_t = _coefs(path, t, x0)
    pred = predict_x0(student, a_t * x0 + s_t * eps, t, path, y=y, target="x0")
    return ((pred - x0) ** 2).flatten(1).sum(1).mean() / x0[0].numel()


def student_copy(teacher: nn.Module) -> nn.Module:
    """A trainable copy of ``teacher`` (same weights, recorded objective kept) whose label dropout is switched
    off: a student distils one guided field per label and never needs the null label."""
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module to be copied, got {type(teacher).__name__}")
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    for m in student.modules():
        if hasattr(m, "dropout_prob"):
            m.dropout_prob = 0.0
    return student


def distil(student: nn.Module, data, config, *, teacher: Callable[..., Tensor] | None = None,
           path: GaussianPath, student_steps: int | None = None, guidance: float = 1.0,
           null_label: int | None = None, progress: bool = False) -> nn.Module:
    r"""Train ``student`` (chapter 12) with diffkit's Trainer and return its EMA weights.  With ``teacher``:
    :func:`progressive_loss` towards an ``student_steps``-step student on ``data`` (images or ``(images,
    labels)``); without: :func:`reflow_x0_loss` on ``data`` = pairs (or ``(pairs, labels)``)."""
    from .training import train

    path = check_path(path)
    if teacher is None:
        loss = functools.partial(reflow_x0_loss, path=path)
    else:
        if student_steps is None:
            raise ValueError("student_steps is needed with a teacher: the student's number of steps")
        loss = functools.partial(progressive_loss, teacher=teacher, path=path, student_steps=student_steps,
                                 guidance=guidance, null_label=null_label)
    if getattr(teacher, "training", False):
        teacher.eval()
    return train(student, loss, data, config, progress=progress)
