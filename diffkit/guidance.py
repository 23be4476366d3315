r"""Guidance: steering a diffusion model towards a class :math:`y` (chapter 8).

**Bayes' rule on the score.**  For :math:`x_t` on a Gaussian path, :math:`p_t(x\mid y) = p_t(y\mid x)\,p_t(x)/p(y)`,
and :math:`p(y)` does not depend on :math:`x`, so

.. math::  \nabla_x\log p_t(x\mid y) = \nabla_x\log p_t(x) + \nabla_x\log p_t(y\mid x),

where :math:`p_t(y\mid x)` is the probability of the class given the *noisy* :math:`x_t` — a noise-aware
classifier, not one trained on clean data.  Two ways to use it:

* **classifier guidance** (Dhariwal & Nichol, 2021): an unconditional model plus :math:`w` times the gradient of
  a classifier trained on noised data, :math:`s_t(x) + w\,\nabla_x\log p_\phi(y\mid x_t, t)`
  (:class:`NoisyClassifier`, :func:`classifier_loss`, :func:`cached_classifier`, :class:`ClassifierGuided`);
* **classifier-free guidance** (Ho & Salimans, 2021): one network trained with label dropout predicts
  :math:`f(x, t, y)` and :math:`f(x, t, \varnothing)`, and the samplers' ``guidance=w`` uses
  :math:`(1 - w)\,f(x, t, \varnothing) + w\,f(x, t, y)` (:mod:`diffkit.samplers`).  With exact scores both fields
  are the same, because :math:`\nabla\log p_t(y\mid x) = \nabla\log p_t(x\mid y) - \nabla\log p_t(x)`.

**What guidance samples.**  At :math:`t = 0` both fields are the score of the *tilted* density
:math:`p_w(x\mid y) \propto p(x\mid y)^w\,p(x)^{1-w} = p(x\mid y)\,p(y\mid x)^{w-1}\,p(y)^{1-w}`
(:func:`tilted_log_prob`, exact samples by rejection: :func:`sample_tilted`).  At :math:`t > 0` they are not the
score of the tilted density noised to :math:`t` (:func:`tilt_on_grid` gives that score in two dimensions): noising
does not commute with tilting, so a sampler driven by the guided field does not sample :math:`p_w`.

For the labelled Gaussian mixtures of :mod:`diffkit.oracles`, :class:`MixtureClassifier` is the exact
:math:`\log p_t(y\mid x)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cache, checkpoints, training
from ._checks import (as_time, broadcast_like, call_network, check_number, check_positive_int, check_tensor,
                      param_device, param_dtype, randn_like)
from .losses import path_to_dict, sample_t
from .models.embeddings import RecordsConfig, TimestepEmbedding, check_model_input
from .oracles import GaussianMixture
from .paths import GaussianPath, VEPath, check_path
from .targets import from_x0_eps, to_x0_eps

__all__ = ["NoisyClassifier", "classifier_loss", "ClassifierObjective", "cached_classifier", "classifier_grad",
           "ClassifierGuided", "MixtureClassifier", "tilted_log_prob", "sample_tilted", "tilt_on_grid",
           "within_class_variance"]

Classifier = Callable[[Tensor, Tensor], Tensor]
_AT_DATA = VEPath()  # sigma_0 = 0, alpha_0 = 1: evaluates a mixture's clean density at t = 0


def _check_y(y: object, batch: int) -> Tensor:
    """``y`` as a (batch,) long tensor of non-negative class labels."""
    if not isinstance(y, Tensor) or y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"y must be an integer tensor of class labels, got "
                        f"{y.dtype if isinstance(y, Tensor) else type(y).__name__}")
    if y.shape != (batch,):
        raise ValueError(f"y must have shape ({batch},) (one label per sample), got {tuple(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"y must hold class labels >= 0, got {int(y.min())}")
    return y.long()


# --- a noise-aware classifier ----------------------------------------------------------------------------------
class _Block(nn.Module):
    """GroupNorm, scale-shift by the time embedding, SiLU, 3x3 convolution (stride 1 or 2)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, stride: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c_in)
        self.emb = nn.Linear(emb_dim, 2 * c_in)
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        scale, shift = self.emb(c)[:, :, None, None].chunk(2, dim=1)  # (B, C_in, 1, 1) each
        return self.conv(F.silu(self.norm(h) * (1 + scale) + shift))


class NoisyClassifier(RecordsConfig):
    r"""A noise-aware image classifier :math:`p_\phi(y\mid x_t, t)` (chapter 8): ``forward(x, t)`` returns the
    logits (B, ``num_classes``) for noisy images x (B, C, S, S) at times t (B,) in [0, 1].

    A 3x3 convolution to ``channels[0]``, then one block per entry of ``channels`` (GroupNorm, a scale and shift
    read from the time embedding :math:`\tau(t)` of chapter 3, SiLU, a 3x3 convolution; stride 2 from the second
    block on), global average pooling and a linear layer.  Default: 28 -> 28 -> 14 -> 7 pixels, 32/64/128 channels.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 channels: tuple[int, ...] = (32, 64, 128), time_dim: int = 128, groups: int = 8):
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = check_positive_int("image_size", image_size)
        widths = tuple(check_positive_int("channels entry", c) for c in channels)
        if not widths:
            raise ValueError("channels must list at least one width, e.g. (32, 64, 128)")
        if any(c % groups for c in widths):
            raise ValueError(f"every entry of channels must be divisible by groups={groups}, got {widths}")
        self.time = TimestepEmbedding(check_positive_int("time_dim", time_dim))
        self.inp = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        ins = (widths[0],) + widths[:-1]
        self.blocks = nn.ModuleList(_Block(a, b, time_dim, 1 if i == 0 else 2, groups)
                                    for i, (a, b) in enumerate(zip(ins, widths)))
        self.out_norm = nn.GroupNorm(groups, widths[-1])
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = check_model_input(x, t, (self.in_channels, self.image_size, self.image_size), self)  # (B,)
        c = F.silu(self.time(t))  # (B, time_dim)
        h = self.inp(x)  # (B, C0, S, S)
        for block in self.blocks:
            h = block(h, c)
        return self.head(F.silu(self.out_norm(h)).mean(dim=(2, 3)))  # (B, K)


def classifier_loss(classifier: Classifier, x0: Tensor, y: Tensor, path: GaussianPath, *, t: Tensor | None = None,
                    eps: Tensor | None = None, generator: torch.Generator | None = None,
                    reduce: bool = True) -> Tensor:
    r"""The noise-aware classifier's loss (chapter 8): the cross-entropy
    :math:`\mathbb E_{t,\varepsilon}\,[-\log p_\phi(y\mid x_t, t)]` on :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`,
    with :math:`t` drawn as the diffusion losses draw it (:func:`diffkit.losses.sample_t`).  Its minimiser is the
    exact :math:`p_t(y\mid x_t)` at every :math:`t`.  ``t`` and ``eps`` may be given to reuse draws."""
    check_tensor("x0", x0, min_ndim=2)
    check_path(path)
    B = x0.shape[0]
    y = _check_y(y, B)
    if t is None:
        t = sample_t(B, path, generator=generator, dtype=x0.dtype, device=x0.device)
    t = as_time("t", t, B, x0)
    if eps is None:
        eps = randn_like(x0, generator)
    x_t = path.sample(x0, t, eps).x_t
    logits = classifier(x_t, t)
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != B:
        raise ValueError(f"classifier(x_t, t) must return logits of shape ({B}, num_classes), got "
                         f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}")
    if int(y.max()) >= logits.shape[1]:
        raise ValueError(f"y must hold labels in [0, {logits.shape[1] - 1}] (the classifier's classes), "
                         f"got {int(y.max())}")
    per_sample = F.cross_entropy(logits, y.to(logits.device), reduction="none")
    return per_sample.mean() if reduce else per_sample


@dataclass(frozen=True)
class ClassifierObjective:
    """:func:`classifier_loss` on ``path``, as the Trainer's ``loss_fn(model, x0, y, generator)``."""

    path: GaussianPath

    def __call__(self, model: Classifier, x0: Tensor, y: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        if y is None:
            raise ValueError("y: a classifier trains on labelled data, pass data=(images, labels)")
        return classifier_loss(model, x0, y, self.path, generator=generator)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "noisy-classifier", "path": path_to_dict(self.path)}


def cached_classifier(name: str, build: Callable[[], nn.Module], path: GaussianPath, data: tuple[Tensor, Tensor],
                      config: training.TrainConfig, *, verbose: bool = True) -> nn.Module:
    """A noise-aware classifier trained on ``data = (x0, labels)`` with :func:`classifier_loss` on ``path`` for
    ``config.steps`` steps (a :class:`~diffkit.training.Trainer`, EMA weights), or loaded from :mod:`diffkit.cache`.
    The key holds the name, the TrainConfig, the path, the model's class and arguments and the data's fingerprint.
    Returns the model in eval mode on the CPU."""
    if not isinstance(config, training.TrainConfig):
        raise TypeError(f"config must be a diffkit.training.TrainConfig, got {type(config).__name__}")
    if not (isinstance(data, tuple) and len(data) == 2 and all(isinstance(d, Tensor) for d in data)):
        raise TypeError("data must be a pair (x0, labels) of tensors")
    objective = ClassifierObjective(path)
    training.seed_everything(config.seed)  # the initial weights are part of the run
    probe = build()
    record = {"objective": objective.to_dict(), "training": config.to_dict(),
              "model": checkpoints.model_record(probe)}

    def train(model: nn.Module) -> nn.Module:
        return training.train(model, objective, data, config, progress=verbose).cpu()

    training.seed_everything(config.seed)
    return cache.cached_model(name, record, build, train, data=data, verbose=verbose)


# --- classifier guidance ---------------------------------------------------------------------------------------
def classifier_grad(classifier: Classifier, x: Tensor, t: Tensor | float, y: Tensor) -> Tensor:
    r""":math:`\nabla_x\log p_\phi(y\mid x, t)` (shaped like ``x``) for ``classifier(x, t)`` returning logits,
    by autograd (also inside ``torch.no_grad()``, as the samplers run).  A network is called on its own device and
    dtype, and the gradient comes back on ``x``'s."""
    check_tensor("x", x, min_ndim=2)
    B = x.shape[0]
    t = as_time("t", t, B, x)
    y = _check_y(y, B)
    dtype, device = param_dtype(classifier) or x.dtype, param_device(classifier) or x.device
    with torch.enable_grad():
        xg = x.detach().to(device=device, dtype=dtype).requires_grad_(True)
        logits = classifier(xg, t.to(device=device, dtype=dtype))
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != B:
            raise ValueError(f"classifier(x, t) must return logits of shape ({B}, num_classes)")
        if int(y.max()) >= logits.shape[1]:
            raise ValueError(f"y must hold labels in [0, {logits.shape[1] - 1}] (the classifier's classes), "
                             f"got {int(y.max())}")
        log_p = logits.log_softmax(-1).gather(1, y.to(device)[:, None]).sum()  # samples are independent
        (grad,) = torch.autograd.grad(log_p, xg)
    return grad.to(device=x.device, dtype=x.dtype)


class ClassifierGuided:
    r"""``model`` steered by a noise-aware ``classifier`` with scale :math:`w` (Dhariwal & Nichol, 2021; chapter 8):
    the score :math:`\hat s(x, t) + w\,\nabla_x\log p_\phi(y\mid x, t)`, returned in the model's own target, so every
    sampler uses it unchanged: ``sampler(ClassifierGuided(model, clf, path, w), x, ts, path, y=labels)``.

    In :math:`(\hat x_0, \hat\varepsilon)` terms the score shift :math:`\delta = w\nabla\log p_\phi` is
    :math:`\hat\varepsilon \to \hat\varepsilon - \sigma_t\delta` and :math:`\hat x_0 \to \hat x_0 +
    (\sigma_t^2/\alpha_t)\,\delta` (Tweedie, chapter 5); where :math:`\alpha_t = 0`, :math:`x_t` says nothing about
    :math:`y` and the shift is 0.  The model is asked for its unconditional prediction (the null label, or
    ``y=None`` for an unconditional model); ``conditional=True`` passes ``y`` to it as well."""

    def __init__(self, model: Callable[..., Tensor], classifier: Classifier, path: GaussianPath, scale: float = 1.0,
                 *, target: str | None = None, conditional: bool = False):
        from .samplers import resolve_target  # the samplers' own rule for the model's target

        if not callable(model) or not callable(classifier):
            raise TypeError("model and classifier must be callable: model(x, t, y=None), classifier(x, t) -> logits")
        check_path(path)
        self.model, self.classifier, self.path = model, classifier, path
        self.target = resolve_target(model, path, target)
        self.scale = check_number("scale", scale)
        self.conditional = bool(conditional)
        self.null_label = None  # the wrapper guides towards y; classifier-free guidance on top is not supported

    @property
    def diffkit_objective(self) -> Any:
        """What the wrapper predicts (``.path``, ``.target``): the model's own record, read by the samplers."""
        return _Record(self.path, self.target)

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            raise ValueError("y: classifier guidance needs the labels to guide towards (pass y= to the sampler)")
        B = x.shape[0]
        t = as_time("t", t, B, x)
        base_y = y if self.conditional else None
        own_null = getattr(self.model, "null_label", None)
        if base_y is None and isinstance(own_null, int):
            base_y = torch.full_like(y, own_null)
        with torch.no_grad():
            pred = call_network(self.model, x, t, base_y)
        x0, eps = to_x0_eps(pred, self.target, x, t, self.path)
        a, s = broadcast_like(self.path.alpha(t), x), broadcast_like(self.path.sigma(t), x)
        delta = self.scale * classifier_grad(self.classifier, x, t, y)
        safe_a = torch.where(a > 0, a, torch.ones_like(a))
        x0 = x0 + torch.where(a > 0, s**2 / safe_a, torch.zeros_like(a)) * delta
        eps = eps - torch.where(a > 0, s, torch.zeros_like(s)) * delta
        return from_x0_eps(x0, eps, self.target, x, t, self.path)


@dataclass(frozen=True)
class _Record:
    path: GaussianPath
    target: str


# --- exact answers on a labelled Gaussian mixture ---------------------------------------------------------------
def _check_labelled(mixture: object) -> GaussianMixture:
    if not isinstance(mixture, GaussianMixture) or mixture.labels is None:
        raise TypeError("mixture must be a diffkit.oracles.GaussianMixture with labels (one class per component)")
    return mixture


class MixtureClassifier:
    r"""The exact noise-aware classifier of a labelled :class:`~diffkit.oracles.GaussianMixture` on ``path``:
    ``clf(x, t)`` returns :math:`\log p_t(y\mid x)` for every class (B, C), from
    :math:`p_t(y\mid x) = p(y)\,p_t(x\mid y)/p_t(x)` (differentiable in ``x``; chapter 8)."""

    def __init__(self, mixture: GaussianMixture, path: GaussianPath):
        self.mixture = _check_labelled(mixture)
        check_path(path)
        self.path = path
        self.num_classes = mixture.num_classes

    def __call__(self, x: Tensor, t: Tensor | float) -> Tensor:
        flat = check_tensor("x", x, min_ndim=2).reshape(x.shape[0], -1).to(torch.float64)
        t = as_time("t", t, x.shape[0], flat)
        joint = torch.stack([self.mixture.log_prob(flat, t, self.path, y=torch.full((x.shape[0],), c))
                             for c in range(self.num_classes)], dim=1)  # log p(y) p_t(x|y), (B, C)
        return (joint - joint.logsumexp(-1, keepdim=True)).to(x.dtype)


def _check_class(mixture: GaussianMixture, y: int) -> int:
    if isinstance(y, bool) or not isinstance(y, int) or not 0 <= y < mixture.num_classes:
        raise ValueError(f"y must be a class in 0..{mixture.num_classes - 1}, got {y!r}")
    return y


def tilted_log_prob(mixture: GaussianMixture, x: Tensor, y: int, w: float) -> Tensor:
    r""":math:`w\log p(x\mid y) + (1 - w)\log p(x)` (B,), the unnormalised log-density of the tilt
    :math:`p_w(x\mid y) \propto p(x\mid y)^w p(x)^{1-w}` of the clean mixture (chapter 8)."""
    _check_labelled(mixture)
    y = _check_class(mixture, y)
    w = check_number("w", w, low=0.0)
    x = check_tensor("x", x, ndim=2).to(torch.float64)
    labels = torch.full((x.shape[0],), y)
    log_prior = mixture.weights[mixture.labels == y].sum().log()
    log_cond = mixture.log_prob(x, 0.0, _AT_DATA, y=labels) - log_prior
    return w * log_cond + (1 - w) * mixture.log_prob(x, 0.0, _AT_DATA)


def sample_tilted(mixture: GaussianMixture, n: int, y: int, w: float, *,
                  generator: torch.Generator | None = None, max_draws: int = 10**7) -> Tensor:
    r"""``n`` exact samples (n, D) of the tilt :math:`p_w(x\mid y) \propto p(x\mid y)^w p(x)^{1-w}` by rejection
    (chapter 8): for :math:`w \ge 1` propose from :math:`p(x\mid y)` and accept with probability
    :math:`p(y\mid x)^{w-1} \le 1`; for :math:`w < 1` propose from :math:`p(x)` and accept with :math:`p(y\mid x)^w`.
    A RuntimeError if more than ``max_draws`` proposals are needed."""
    _check_labelled(mixture)
    check_positive_int("n", n)
    y = _check_class(mixture, y)
    w = check_number("w", w, low=0.0)
    clf = MixtureClassifier(mixture, _AT_DATA)
    power, conditional = (w - 1, True) if w >= 1 else (w, False)
    out, drawn, m = [], 0, max(2 * n, 1000)
    while sum(len(o) for o in out) < n:
        if drawn >= max_draws:
            raise RuntimeError(f"sample_tilted: fewer than {n} acceptances in {drawn:,} proposals (w={w} tilts too "
                               f"far from p(x|y)); raise max_draws or lower w")
        labels = torch.full((m,), y) if conditional else None
        x = mixture.sample(m, generator=generator, y=labels)
        log_accept = power * clf(x, 0.0)[:, y]
        u = torch.rand(m, generator=generator, dtype=torch.float64)
        out.append(x[u.log() < log_accept])
        drawn += m
    return torch.cat(out)[:n]


def tilt_on_grid(mixture: GaussianMixture, y: int, w: float, *, low: float, high: float,
                 n: int = 100) -> GaussianMixture:
    r"""The tilt :math:`p_w(x\mid y)` of a 2-D mixture as a mixture of :math:`n^2` small Gaussians, one per cell of an
    :math:`n\times n` grid on :math:`[\text{low}, \text{high}]^2`: means at the cell centres, weights
    :math:`\propto p_w` there, standard deviation :math:`h/\sqrt{12}` (a cell's own, :math:`h` the cell width).
    Cells whose weight is below :math:`e^{-30}` of the largest are left out (they change no score by more than
    rounding).  Its score at :math:`t > 0` is the score of the *noised* tilt, up to the quadrature error (chapter 8)."""
    _check_labelled(mixture)
    if mixture.dim != 2:
        raise ValueError(f"mixture must be 2-D (a grid in more dimensions is too large), got dim {mixture.dim}")
    check_positive_int("n", n, minimum=2)
    low, high = check_number("low", low), check_number("high", high)
    if not high > low:
        raise ValueError(f"high must be greater than low, got low={low}, high={high}")
    h = (high - low) / n
    centres = torch.linspace(low + h / 2, high - h / 2, n, dtype=torch.float64)
    g1, g2 = torch.meshgrid(centres, centres, indexing="xy")
    cells = torch.stack([g1.flatten(), g2.flatten()], 1)
    log_w = tilted_log_prob(mixture, cells, y, w)
    keep = log_w > log_w.max() - 30
    return GaussianMixture(cells[keep], stds=h / math.sqrt(12), weights=(log_w[keep] - log_w.max()).exp())


# --- diversity ----------------------------------------------------------------------------------------------------
def within_class_variance(features: Tensor, labels: Tensor) -> float:
    r"""The mean over classes of the total variance :math:`\operatorname{tr}\operatorname{Cov}(f\mid y)` of
    ``features`` (N, F) within each class of ``labels`` (N,): how spread out the members of one class are
    (chapter 8's diversity measure, on the course classifier's features).  Every class needs two members."""
    check_tensor("features", features, ndim=2)
    if not isinstance(labels, Tensor) or labels.shape != (features.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({features.shape[0]},)")
    values = []
    for c in labels.unique():
        members = features[labels == c].double()
        if members.shape[0] < 2:
            raise ValueError(f"labels: class {int(c)} has {members.shape[0]} member(s); a variance needs 2")
        values.append(members.var(dim=0).sum())
    return torch.stack(values).mean().item()
