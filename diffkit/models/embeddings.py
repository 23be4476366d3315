r"""Time and class embeddings: how a network is told *when* (:math:`t`) and *what* (:math:`y`) it denoises.

* :func:`sinusoidal_embedding` — the Fourier features :math:`\gamma(t)` of the time (chapter 3).
* :class:`TimestepEmbedding` — :math:`\tau(t) = W_2\,\mathrm{SiLU}(W_1\gamma(t))` (chapter 3).
* :class:`LabelEmbedding` — a table :math:`e(y)` with an extra null row :math:`e(\varnothing)` and label dropout,
  the training half of classifier-free guidance (chapter 8).
* :class:`ConditionEmbedding` — the conditioning vector :math:`c = \tau(t) + e(y)` of every diffkit model
  (chapters 8 and 9), or the same two vectors as tokens :math:`[\tau(t), e(y)]`.

**Model convention.**  Every diffkit model is called ``model(x, t, y=None)``: ``t`` is a (B,) tensor in [0, 1]
(0 = data), ``y`` an optional (B,) integer tensor of labels in ``[0, num_classes]``; the label ``num_classes``
is the null label :math:`\varnothing`, and ``y=None`` means :math:`\varnothing` for every sample.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import as_time, check_number, check_positive_int, check_tensor, param_dtype

__all__ = [
    "sinusoidal_embedding", "sincos_features", "TimestepEmbedding", "LabelEmbedding", "ConditionEmbedding",
    "check_labels", "check_model_input", "RecordsConfig", "DiffusionModel", "check_guidance_support",
]


def sincos_features(pos: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    r"""Transformer features :math:`[\cos(p\,\omega_i), \sin(p\,\omega_i)]_{i<\lfloor d/2\rfloor}` of positions ``pos``
    (N,), with frequencies :math:`\omega_i = T^{-i/\lfloor d/2\rfloor}` (:math:`T` = ``max_period``); an odd ``dim``
    gets one zero column.  Returns (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=pos.device) / half)  # (d/2,)
    angles = pos.float()[:, None] * freqs[None]  # (N, d/2)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (N, 2*(d/2))
    return nn.functional.pad(emb, (0, dim - 2 * half))  # (N, dim)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0, scale: float = 1000.0) -> Tensor:
    r"""Sinusoidal time features :math:`\gamma(t) = [\cos(s\,t\,\omega_i), \sin(s\,t\,\omega_i)]` (chapter 3).

    ``t`` (B,) in [0, 1] is first multiplied by ``scale`` :math:`s`: the features were designed for integer steps
    :math:`0..1000`, and with :math:`s = 1` every frequency :math:`\omega_i \le 1` barely turns on [0, 1], so
    :math:`\gamma(0.10) \approx \gamma(0.11)` and the network cannot tell nearby noise levels apart.
    Returns (B, dim) float32 features.
    """
    check_tensor("t", t, ndim=1)
    t = as_time("t", t, t.shape[0], t)
    check_positive_int("dim", dim)
    max_period = check_number("max_period", max_period, low=1.0, low_open=True)
    scale = check_number("scale", scale, low=0.0, low_open=True)
    return sincos_features(scale * t, dim, max_period)  # (B, dim)


class TimestepEmbedding(nn.Module):
    r""":math:`\tau(t) = W_2\,\mathrm{SiLU}(W_1\,\gamma(t) + b_1) + b_2`, sinusoid then a two-layer MLP (chapter 3).

    ``freq_dim`` is the width of :math:`\gamma(t)`, ``dim`` the output width."""

    def __init__(self, dim: int, freq_dim: int = 256, scale: float = 1000.0, max_period: float = 10_000.0):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.freq_dim = check_positive_int("freq_dim", freq_dim)
        self.scale = check_number("scale", scale, low=0.0, low_open=True)
        self.max_period = check_number("max_period", max_period, low=1.0, low_open=True)
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        gamma = sinusoidal_embedding(t, self.freq_dim, self.max_period, self.scale)  # (B, F)
        return self.mlp(gamma.to(self.mlp[0].weight.dtype))  # (B, dim)


def check_labels(name: str, y: object, num_classes: int, batch: int | None = None) -> Tensor:
    """Return ``y`` if it is a (batch,) integer tensor of labels in ``[0, num_classes]`` (``num_classes`` = null)."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class labels, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must be an integer (long) tensor of class labels, got dtype {y.dtype}")
    if y.ndim != 1 or (batch is not None and y.shape[0] != batch):
        want = f"({batch},)" if batch is not None else "(B,)"
        raise ValueError(f"{name} must have shape {want} (one label per sample), got shape {tuple(y.shape)}")
    if y.numel() and (y.min() < 0 or y.max() > num_classes):
        raise ValueError(f"{name} must hold labels in [0, {num_classes}] ({num_classes} is the null label), "
                         f"got values in [{y.min().item()}, {y.max().item()}]")
    return y.long()


class LabelEmbedding(nn.Module):
    r"""Class embedding :math:`e(y)`, :math:`y \in \{0..K-1\} \cup \{\varnothing\}`, with label dropout (chapter 8).

    A table of :math:`K + 1` rows; row :math:`K` (= ``null_label``) is :math:`e(\varnothing)`, the unconditional
    embedding.  In training mode each label is replaced by :math:`\varnothing` with probability ``dropout_prob``,
    so one network learns both :math:`f(x, t, y)` and :math:`f(x, t, \varnothing)` — what classifier-free guidance
    needs.  ``force_drop_ids`` (B,) (nonzero = drop) drops chosen labels in any mode; eval mode never drops at
    random.  ``y=None`` is :math:`\varnothing` for the whole batch (pass ``batch``).
    """

    def __init__(self, num_classes: int, dim: int, dropout_prob: float = 0.0):
        super().__init__()
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.dropout_prob = check_number("dropout_prob", dropout_prob, low=0.0, high=1.0)
        self.table = nn.Embedding(num_classes + 1, check_positive_int("dim", dim))  # last row: the null label

    @property
    def null_label(self) -> int:
        return self.num_classes

    def drop(self, y: Tensor, force_drop_ids: Tensor | None = None) -> Tensor:
        """Labels after dropout: each replaced by ``null_label`` where dropped."""
        if force_drop_ids is not None:
            if not isinstance(force_drop_ids, Tensor) or force_drop_ids.shape != y.shape:
                raise ValueError(f"force_drop_ids must be a tensor of shape {tuple(y.shape)} (nonzero = drop)")
            dropped = force_drop_ids.bool()
        elif self.training and self.dropout_prob > 0:
            dropped = torch.rand(y.shape, device=y.device) < self.dropout_prob  # (B,)
        else:
            return y
        return torch.where(dropped, torch.full_like(y, self.null_label), y)  # (B,)

    def forward(self, y: Tensor | None, batch: int | None = None, force_drop_ids: Tensor | None = None) -> Tensor:
        if y is None:
            if batch is None:
                raise ValueError("y=None (the null label for every sample) needs batch, the number of samples")
            y = torch.full((check_positive_int("batch", batch),), self.null_label, device=self.table.weight.device)
        else:
            y = check_labels("y", y, self.num_classes, batch)
        return self.table(self.drop(y, force_drop_ids))  # (B, dim)


class ConditionEmbedding(nn.Module):
    r"""The conditioning of a diffkit model: :math:`c = \tau(t) + e(y)` (chapters 8 and 9).

    :meth:`forward` returns the sum :math:`c` (B, dim), used by adaptive normalisation and by the MLP and UNet;
    :meth:`tokens` returns the vectors :math:`[\tau(t), e(y)]` as a sequence (B, K, dim), for in-context and
    cross-attention conditioning.  With ``num_classes=None`` the model is unconditional (:math:`c = \tau(t)`,
    ``K = 1``) and passing ``y`` is an error.
    """

    def __init__(self, dim: int, num_classes: int | None = None, label_dropout: float = 0.0, freq_dim: int = 256):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.time = TimestepEmbedding(dim, freq_dim)
        self.label = LabelEmbedding(num_classes, dim, label_dropout) if num_classes is not None else None

    @property
    def num_classes(self) -> int | None:
        return self.label.num_classes if self.label is not None else None

    @property
    def null_label(self) -> int | None:
        """The label id that switches class conditioning off (``num_classes``), or ``None`` if unconditional."""
        return self.num_classes

    def tokens(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The conditioning vectors as a sequence, (B, K, dim) with K = 2 if class-conditional else 1."""
        vectors = [self.time(t)]  # [(B, dim)]
        if self.label is not None:
            vectors.append(self.label(y, batch=t.shape[0]))
        elif y is not None:
            raise ValueError("y was given but the model is unconditional (num_classes=None); pass y=None")
        return torch.stack(vectors, dim=1)  # (B, K, dim)

    def forward(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.tokens(t, y).sum(dim=1)  # (B, dim)


def check_model_input(x: object, t: object, shape: tuple[int, ...], model: nn.Module | None = None) -> Tensor:
    """Check ``x`` is a non-empty (B, *shape) batch (in the dtype of ``model``'s weights, when given) and return
    ``t`` as a (B,) tensor in [0, 1] with the dtype of ``x``."""
    x = check_tensor("x", x, ndim=len(shape) + 1)
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"x must have shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one sample, got shape {tuple(x.shape)}")
    dtype = param_dtype(model)
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"x must have the dtype of the model's weights, {dtype}, got {x.dtype}: cast the "
                        f"input (x.to({dtype})) or the model (model.to({x.dtype})); diffkit's samplers and "
                        "Trainer do this for you")
    return as_time("t", t, x.shape[0], x)  # (B,)


class RecordsConfig(nn.Module):
    """Mixin that records the constructor arguments of a network, so that a file can rebuild it.

    After ``DiT(hidden=64, num_classes=10)``, ``model.config`` is the dict of every argument of ``DiT.__init__``
    (defaults included; tuples become lists), and ``type(model)(**model.config)`` builds the same architecture:
    :func:`diffkit.checkpoints.save_model` stores it next to the weights.  Subclass it (every diffkit model does,
    through :class:`DiffusionModel`) to make a network of your own saveable; its arguments must be numbers,
    strings, booleans, ``None`` or lists/dicts of those.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self: nn.Module, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            if type(self).__init__ is __init__:  # the outermost constructor records; super().__init__ calls do not
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                config: dict[str, Any] = {}
                for name, value in list(bound.arguments.items())[1:]:
                    if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                        config.update(value)
                    elif signature.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL:
                        raise TypeError(f"{cls.__name__} takes *{name}: only named arguments can be recorded")
                    else:
                        config[name] = value
                self._config = _plain(config)

        cls.__init__ = __init__  # type: ignore[method-assign]

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments, as a fresh dict (``type(self)(**self.config)`` rebuilds the network)."""
        return _plain(getattr(self, "_config", {}))


def _plain(value: Any) -> Any:
    """``value`` with tuples turned into lists (the JSON form), copied."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class DiffusionModel(RecordsConfig):
    r"""Base class of the diffkit networks: ``forward(x, t, y=None)`` -> a tensor shaped like ``x``, with the
    conditioning :math:`c = \tau(t) + e(y)` computed by ``self.cond`` (a :class:`ConditionEmbedding`).  Records
    its constructor arguments in ``config`` (:class:`RecordsConfig`)."""

    cond: ConditionEmbedding

    @property
    def num_classes(self) -> int | None:
        return self.cond.num_classes

    @property
    def null_label(self) -> int | None:
        """The label that switches class conditioning off (pass it as ``null_label`` to the samplers)."""
        return self.cond.null_label

    @property
    def label_dropout(self) -> float | None:
        """The probability with which training replaces a label by the null label (``None`` if unconditional)."""
        return self.cond.label.dropout_prob if self.cond.label is not None else None


def check_guidance_support(model: object, guidance: float) -> None:
    """Warn when classifier-free guidance (``guidance != 1``) is asked of a model that never trained on the null
    label (``model.label_dropout == 0``): its unconditional prediction is untrained, so guidance extrapolates
    from noise (chapter 8).  Models that do not say (no ``label_dropout`` attribute) pass silently."""
    if guidance != 1 and getattr(model, "label_dropout", None) == 0:
        warnings.warn(f"guidance={guidance} asked of a {type(model).__name__} built with label_dropout=0: it never "
                      "trained on the null label, so the unconditional half of guidance is untrained. Train with "
                      "label_dropout > 0 (0.1 is the default) or sample with guidance=1", UserWarning, stacklevel=3)
