r"""Conversions between prediction targets on any Gaussian path (chapters 4, 5, 7 and 14).

Given :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`, a network may predict any one of

=============  =====================================================================  =================
``target``     definition                                                             chapter
=============  =====================================================================  =================
``"eps"``      :math:`\varepsilon`                                                    3 (DDPM)
``"x0"``       :math:`x_0`                                                            4
``"v"``        :math:`v = \alpha_t \varepsilon - \sigma_t x_0` (Salimans & Ho, 2022)  4
``"score"``    :math:`\nabla_x \log p_t(x_t) \approx -\varepsilon / \sigma_t`          5 (Tweedie)
``"velocity"`` :math:`u_t = \dot\alpha_t x_0 + \dot\sigma_t \varepsilon = dx_t/dt`     7 (flow matching)
=============  =====================================================================  =================

and each is an invertible affine function of :math:`(x_0, \varepsilon)` given :math:`x_t`.  For
:math:`\alpha_t^2 + \sigma_t^2 = 1` the v-inversion reduces to :math:`\varepsilon = \alpha_t v + \sigma_t x_t`,
:math:`x_0 = \alpha_t x_t - \sigma_t v`.
"""

from __future__ import annotations

from torch import Tensor

from ._checks import as_time, broadcast_like, check_choice, check_tensor
from .paths import GaussianPath, Time, check_path

__all__ = ["TARGETS", "to_x0_eps", "from_x0_eps", "from_x0_score", "convert"]

TARGETS = ("eps", "x0", "v", "score", "velocity")


def _coefs(path: GaussianPath, t: Time, x_t: Tensor) -> tuple[Tensor, Tensor]:
    check_path(path)
    t = as_time("t", t, x_t.shape[0], x_t)
    return broadcast_like(path.alpha(t), x_t), broadcast_like(path.sigma(t), x_t)


def _nonzero(name: str, value: Tensor, why: str) -> Tensor:
    if (value == 0).any():
        raise ValueError(f"{name} is 0 at some t, so {why}")
    return value


def to_x0_eps(pred: Tensor, target: str, x_t: Tensor, t: Time, path: GaussianPath) -> tuple[Tensor, Tensor]:
    r"""Recover :math:`(\hat x_0, \hat\varepsilon)` from a prediction of kind ``target`` at :math:`(x_t, t)`."""
    check_choice("target", target, TARGETS)
    check_tensor("x_t", x_t)
    check_tensor("pred", pred)
    if pred.shape != x_t.shape:
        raise ValueError(f"pred must have the shape of x_t {tuple(x_t.shape)}, got {tuple(pred.shape)}")
    a, s = _coefs(path, t, x_t)
    if target == "x0":
        return pred, (x_t - a * pred) / _nonzero("sigma_t", s, "eps is undefined at t = 0 (clean data)")
    if target in ("eps", "score"):
        eps = pred if target == "eps" else -s * pred
        zero_snr = (f"target={target!r} carries no information about x0 where alpha_t = 0 (t = 1 on the linear, cosine "
                    "and zero-terminal-SNR paths): use target='v' or 'x0' for a diffusion model, target='velocity' "
                    "for a flow-matching model, or start the grid below t = 1")
        return (x_t - s * eps) / _nonzero("alpha_t", a, zero_snr), eps
    if target == "v":
        norm = a**2 + s**2
        return (a * x_t - s * pred) / norm, (s * x_t + a * pred) / norm
    ts = as_time("t", t, x_t.shape[0], x_t)
    da, ds = broadcast_like(path.d_alpha(ts), x_t), broadcast_like(path.d_sigma(ts), x_t)
    det = _nonzero("alpha_t * dsigma_t - sigma_t * dalpha_t", a * ds - s * da, "the velocity does not determine x0")
    return (ds * x_t - s * pred) / det, (a * pred - da * x_t) / det


def from_x0_eps(x0: Tensor, eps: Tensor, target: str, x_t: Tensor, t: Time, path: GaussianPath) -> Tensor:
    """The prediction of kind ``target`` that corresponds to :math:`(x_0, \\varepsilon)` at :math:`(x_t, t)`."""
    check_choice("target", target, TARGETS)
    check_tensor("x_t", x_t)
    for name, value in (("x0", x0), ("eps", eps)):
        check_tensor(name, value)
        if value.shape != x_t.shape:  # an (8, 1) eps would broadcast silently against an (8, 2) x0
            raise ValueError(f"{name} must have the shape of x_t {tuple(x_t.shape)}, got {tuple(value.shape)}")
    if target == "x0":
        return x0
    if target == "eps":
        return eps
    a, s = _coefs(path, t, x_t)
    if target == "v":
        return a * eps - s * x0
    if target == "score":
        return -eps / _nonzero("sigma_t", s, "the score is undefined at t = 0")
    ts = as_time("t", t, x_t.shape[0], x_t)
    return broadcast_like(path.d_alpha(ts), x_t) * x0 + broadcast_like(path.d_sigma(ts), x_t) * eps


def from_x0_score(x0: Tensor, score: Tensor, target: str, x_t: Tensor, t: Time, path: GaussianPath) -> Tensor:
    r"""The prediction of kind ``target`` from :math:`\mathbb E[x_0|x_t]` and the score, as exact models (the
    oracles) know them.  Written with the score instead of :math:`\varepsilon`, every target keeps its limit at
    :math:`\sigma_t = 0` (:math:`t = 0`): :math:`\hat\varepsilon = -\sigma_t\nabla\log p_t`,
    :math:`v = -\alpha_t\sigma_t\nabla\log p_t - \sigma_t x_0`, and the velocity
    :math:`\dot\alpha_t x_0 - \sigma_t\dot\sigma_t\nabla\log p_t`
    (:meth:`~diffkit.paths.GaussianPath.sigma_d_sigma` is finite where :math:`\dot\sigma_t` is not: VP, VE).
    A NaN score marks a point mass at :math:`\sigma_t = 0`, where only ``"x0"`` has a limit; the others raise."""
    check_choice("target", target, TARGETS)
    check_tensor("x_t", x_t)
    for name, value in (("x0", x0), ("score", score)):
        check_tensor(name, value)
        if value.shape != x_t.shape:
            raise ValueError(f"{name} must have the shape of x_t {tuple(x_t.shape)}, got {tuple(value.shape)}")
    if target == "x0":
        return x0
    if score.isnan().any():
        raise ValueError(f"target={target!r} is undefined at t where sigma_t = 0 (t = 0) for a distribution with "
                         "point masses (a data set, GaussianMixture.from_data, or an unblurred UniformBox): only "
                         "the denoiser (target='x0') has a limit there; evaluate at t > 0")
    if target == "score":
        return score
    a, s = _coefs(path, t, x_t)
    if target == "eps":
        return -s * score
    if target == "v":
        return -a * s * score - s * x0
    ts = as_time("t", t, x_t.shape[0], x_t)
    return broadcast_like(path.d_alpha(ts), x_t) * x0 - broadcast_like(path.sigma_d_sigma(ts), x_t) * score


def convert(pred: Tensor, source: str, dest: str, x_t: Tensor, t: Time, path: GaussianPath) -> Tensor:
    """Convert a prediction of kind ``source`` into kind ``dest`` (e.g. ``"v"`` → ``"eps"``)."""
    check_choice("source", source, TARGETS)
    check_choice("dest", dest, TARGETS)
    if source == dest:
        return pred
    x0, eps = to_x0_eps(pred, source, x_t, t, path)
    return from_x0_eps(x0, eps, dest, x_t, t, path)
