r"""Score matching at one fixed density: explicit, implicit (Hyvärinen) and denoising (Vincent) — chapter 5.

A *score model* here is any function ``score_fn(x) -> Tensor`` shaped like ``x`` (B, ...), an estimate of
:math:`\nabla_x \log p(x)`.  The three losses below, derived in chapter 5, differ only by constants in
:math:`\theta`:

* explicit score matching (needs the true score :math:`\nabla\log p`, known only for toy densities)

  .. math:: J_\text{ESM}(\theta) = \tfrac12\,\mathbb E_{p(x)}\lVert s_\theta(x) - \nabla\log p(x)\rVert^2 ;

* implicit score matching (Hyvärinen, 2005), by integration by parts, needs samples only

  .. math:: J_\text{ISM}(\theta) = \mathbb E_{p(x)}\big[\operatorname{tr}\nabla_x s_\theta(x)
            + \tfrac12\lVert s_\theta(x)\rVert^2\big], \qquad
            J_\text{ESM} = J_\text{ISM} + \tfrac12\,\mathbb E_p\lVert\nabla\log p\rVert^2 ,

  with the trace computed exactly (one backward pass per dimension) or by Hutchinson's estimator
  :math:`\mathbb E_z[z^\top \nabla_x s_\theta\, z]` with Rademacher probes :math:`z` — sliced score matching
  with variance reduction (Song et al., 2019);

* denoising score matching at a fixed noise level :math:`\sigma` (Vincent, 2011), :math:`\tilde x = x + \sigma\varepsilon`

  .. math:: J_\text{DSM}(\theta) = \tfrac12\,\mathbb E_{x, \varepsilon}
            \big\lVert s_\theta(\tilde x) + \varepsilon/\sigma\big\rVert^2
            = J_\text{ESM}^{(\sigma)}(\theta) + \tfrac{D}{2\sigma^2} - \tfrac12\,\mathbb E\lVert\nabla\log p_\sigma\rVert^2 ,

  where :math:`J_\text{ESM}^{(\sigma)}` is explicit score matching against the noised density :math:`p_\sigma`.

The noise-conditional version, averaged over a path's noise levels, is :func:`diffkit.losses.dsm_loss`.
All three return the batch mean, or the per-sample values with ``reduce=False``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import check_choice, check_finite, check_number, check_positive_int, check_tensor, randn_like
from .likelihood import divergence

__all__ = ["explicit_score_matching", "implicit_score_matching", "denoising_score_matching"]

ScoreFn = Callable[[Tensor], Tensor]


def _check_score_fn(name: str, fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be a function {name}(x) -> Tensor shaped like x, got {type(fn).__name__}")


def _check_output(name: str, out: object, x: Tensor) -> Tensor:
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name} must return a tensor shaped like x {tuple(x.shape)}, got {got}")
    return out


def _check_x(x: object) -> Tensor:
    x = check_finite("x", check_tensor("x", x, min_ndim=2))
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one sample, got shape {tuple(x.shape)}")
    return x


def _reduce(per_sample: Tensor, reduce: bool) -> Tensor:
    if not isinstance(reduce, bool):
        raise TypeError(f"reduce must be True or False, got {type(reduce).__name__}")
    return per_sample.mean() if reduce else per_sample


def explicit_score_matching(score_fn: ScoreFn, x: Tensor, true_score: ScoreFn | Tensor, *,
                            reduce: bool = True) -> Tensor:
    r"""Explicit score matching :math:`\tfrac12\lVert s_\theta(x) - \nabla\log p(x)\rVert^2` averaged over the samples
    ``x`` (B, ...) of :math:`p` (chapter 5, eq-esm).  ``true_score`` is the reference score: a function of ``x`` or
    its values, a tensor shaped like ``x``."""
    _check_score_fn("score_fn", score_fn)
    x = _check_x(x)
    target = true_score(x) if callable(true_score) else true_score
    target = _check_output("true_score", target, x)
    out = _check_output("score_fn", score_fn(x), x)
    return _reduce(0.5 * (out - target.to(out.dtype)).pow(2).flatten(1).sum(1), reduce)


def implicit_score_matching(score_fn: ScoreFn, x: Tensor, *, method: str = "exact", n_probes: int = 1,
                            generator: torch.Generator | None = None, reduce: bool = True) -> Tensor:
    r"""Hyvärinen's implicit score matching :math:`\operatorname{tr}\nabla_x s_\theta(x) + \tfrac12\lVert s_\theta(x)\rVert^2`
    averaged over the samples ``x`` (B, ...) (chapter 5, eq-ism); differentiable in the parameters of
    ``score_fn``.

    ``method="exact"`` takes the trace with one backward pass per dimension (small D); ``"hutchinson"`` with
    ``n_probes`` Rademacher probes :math:`z^\top\nabla_x s_\theta\,z`, an unbiased estimate (sliced score matching,
    Song et al., 2019), for images.  Equals :func:`explicit_score_matching` minus
    :math:`\tfrac12\mathbb E\lVert\nabla\log p\rVert^2` in expectation, when :math:`p\,s_\theta \to 0` at infinity."""
    _check_score_fn("score_fn", score_fn)
    x = _check_x(x)
    check_choice("method", method, ("exact", "hutchinson"))
    check_positive_int("n_probes", n_probes)

    def checked(z: Tensor) -> Tensor:
        out = _check_output("score_fn", score_fn(z), z)
        return out if out.requires_grad else out + 0 * z  # a field that ignores x: its trace is 0

    out, div = divergence(checked, x, method, generator, n_probes, create_graph=True)
    return _reduce(div + 0.5 * out.pow(2).flatten(1).sum(1), reduce)


def denoising_score_matching(score_fn: ScoreFn, x: Tensor, sigma: float, *, eps: Tensor | None = None,
                             generator: torch.Generator | None = None, reduce: bool = True) -> Tensor:
    r"""Vincent's denoising score matching at one noise level (chapter 5, eq-dsm):
    :math:`\tfrac12\lVert s_\theta(x + \sigma\varepsilon) + \varepsilon/\sigma\rVert^2`, since
    :math:`\nabla_{\tilde x}\log q_\sigma(\tilde x\mid x) = -(\tilde x - x)/\sigma^2 = -\varepsilon/\sigma`.
    ``eps`` (shaped like ``x``) may be given to reuse the same noise; otherwise it is drawn with ``generator``."""
    _check_score_fn("score_fn", score_fn)
    x = _check_x(x)
    sigma = check_number("sigma", sigma, low=0.0, low_open=True)
    if eps is None:
        eps = randn_like(x, generator)
    else:
        eps = check_tensor("eps", eps, min_ndim=2)
        if eps.shape != x.shape:
            raise ValueError(f"eps must have the shape of x {tuple(x.shape)}, got {tuple(eps.shape)}")
    x_noisy = x + sigma * eps.to(x.dtype)  # the noisy input in the data's dtype, whatever eps's
    out = _check_output("score_fn", score_fn(x_noisy), x_noisy)
    return _reduce(0.5 * (out + eps.to(out.dtype) / sigma).pow(2).flatten(1).sum(1), reduce)
