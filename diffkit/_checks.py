"""Input validation shared by every public function.

Each helper raises a ``ValueError`` (or ``TypeError``) whose message names the offending
argument and says what was expected, so a wrong call fails at the call site with a readable
message instead of a deep traceback or a silent NaN.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


def check_tensor(name: str, x: Any, *, min_ndim: int = 1, ndim: int | None = None) -> Tensor:
    """Return ``x`` if it is a floating-point tensor of the expected rank, else raise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
    return x


def check_finite(name: str, x: Tensor) -> Tensor:
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def as_time(name: str, t: Any, batch: int, like: Tensor, *, low: float = 0.0, high: float = 1.0) -> Tensor:
    """Turn ``t`` (a number, or a tensor of shape () or (batch,)) into a (batch,) tensor in [low, high]."""
    if isinstance(t, (int, float)):
        t = torch.full((batch,), float(t), dtype=like.dtype, device=like.device)
    elif isinstance(t, Tensor):
        if t.ndim == 0:
            t = t.expand(batch)
        elif t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(f"{name} must be a number or a tensor of shape ({batch},), got shape {tuple(t.shape)}")
        t = t.to(dtype=like.dtype, device=like.device)
    else:
        raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(t).__name__}")
    if torch.isnan(t).any() or (t < low).any() or (t > high).any():
        raise ValueError(f"{name} must lie in [{low}, {high}], got values in [{t.min().item():.4g}, {t.max().item():.4g}]")
    return t


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if value != value:
        raise ValueError(f"{name} must be a number, got NaN")
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def param_dtype(model: Any) -> torch.dtype | None:
    """The floating dtype of a network's weights (its first floating parameter), or ``None`` for anything that is
    not an ``nn.Module`` with floating parameters (a plain function, an oracle)."""
    if not isinstance(model, torch.nn.Module):
        return None
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def param_device(model: Any) -> torch.device | None:
    """The device of a network's weights (its first parameter), or ``None`` for anything that is not an
    ``nn.Module`` with parameters (a plain function, an oracle)."""
    if not isinstance(model, torch.nn.Module):
        return None
    return next((p.device for p in model.parameters()), None)


def call_network(model: Any, x: Tensor, t: Tensor, y: Tensor | None = None, *, name: str = "x") -> Tensor:
    """``model(x, t[, y])`` at the network's boundary: a network (``nn.Module``) is called on its own device and
    floating dtype (a float32 model on float64 noise, a GPU model on CPU tensors) and its output comes back to
    ``x``'s; a plain function gets the inputs as they are.  The output must be shaped like ``x`` (``name`` says
    what ``x`` is in the error)."""
    dtype, device = param_dtype(model) or x.dtype, param_device(model) or x.device
    xm, tm = x.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype)
    out = model(xm, tm) if y is None else model(xm, tm, y.to(device))
    if not isinstance(out, Tensor) or out.shape != x.shape:
        raise ValueError(f"model output must have the shape of {name} {tuple(x.shape)}, "
                         f"got {tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
    return out.to(device=x.device, dtype=x.dtype)


def broadcast_like(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample (B,) tensor to (B, 1, ..., 1) so that it broadcasts against ``x``."""
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device and moved to ``x``'s, so a CPU
    generator gives the same numbers whether ``x`` lives on the CPU or a GPU."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
