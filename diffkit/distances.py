r"""Distances between two sets of low-dimensional samples (chapters 3–8 and 13).

* :func:`mmd` — squared maximum mean discrepancy with a sum of RBF kernels
  :math:`k(x, y) = \sum_h \exp(-\lVert x-y\rVert^2 / (2h^2))` (Gretton et al., 2012), unbiased by default;
* :func:`sliced_wasserstein` — :math:`\big(\mathbb E_\theta W_2^2(\theta^\top P, \theta^\top Q)\big)^{1/2}` over random
  directions on the sphere (Bonneel et al., 2015); needs equally many samples on both sides;
* :func:`energy_distance` — :math:`2\mathbb E\lVert X-Y\rVert - \mathbb E\lVert X-X'\rVert - \mathbb E\lVert Y-Y'\rVert`
  (Székely & Rizzo), unbiased;
* :func:`null_band` — the null distribution of a distance: its value between fresh sets of true samples and one
  fixed reference set, over many pairs (mean, sd, an upper quantile), cached on disk; :meth:`NullBand.measure` puts
  a model's distance to the same reference set beside it; :func:`with_null_band` does both in one call.

A single distance between two true sets is one draw of a random variable, not "the best score a model can get":
a claim that a model is "in the noise" compares its distance with the null distribution, measured against the same
reference set (the distance to a fixed reference carries that set's own noise, shared by every model compared).
The unbiased MMD and energy distance are differences of averages, so null draws and good models can be negative.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_finite, check_positive_int, check_tensor

__all__ = ["mmd", "sliced_wasserstein", "energy_distance", "null_band", "with_null_band", "NullBand", "Measured"]


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    for name, v in (("x", x), ("y", y)):
        if isinstance(v, Tensor) and v.ndim > 2:
            raise ValueError(f"{name} must be a (N, D) batch of vectors, got shape {tuple(v.shape)}: flatten "
                             f"images with {name}.flatten(1), or compare features (diffkit.evaluation) instead")
    check_tensor("x", x, ndim=2)
    check_tensor("y", y, ndim=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of columns, got {x.shape[1]} and {y.shape[1]}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("x and y must each hold at least 2 samples")
    check_finite("x", x)
    check_finite("y", y)
    return x.double(), y.double()


def _off_diagonal_mean(k: Tensor) -> Tensor:
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def mmd(x: Tensor, y: Tensor, bandwidths: Sequence[float] = (0.2, 0.5, 1.0, 2.0, 5.0), *, unbiased: bool = True) -> Tensor:
    r"""Squared MMD between the samples ``x`` (N, D) and ``y`` (M, D) (float64 scalar)."""
    x, y = _pair(x, y)
    if isinstance(bandwidths, (int, float)) or not isinstance(bandwidths, Sequence) or isinstance(bandwidths, str):
        raise TypeError(f"bandwidths must be a list of positive kernel widths, e.g. bandwidths=[{bandwidths!r}], "
                        f"got {type(bandwidths).__name__} {bandwidths!r}")
    if not bandwidths or any(not isinstance(h, (int, float)) or not math.isfinite(h) or h <= 0 for h in bandwidths):
        raise ValueError(f"bandwidths must be a non-empty list of positive numbers, got {bandwidths!r}")

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * h**2)) for h in bandwidths)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    if unbiased:
        return _off_diagonal_mean(kxx) + _off_diagonal_mean(kyy) - 2 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, *,
                       generator: torch.Generator | None = None) -> Tensor:
    r"""Sliced 2-Wasserstein distance, exact in each 1-D projection (sorted samples)."""
    x, y = _pair(x, y)
    check_positive_int("n_projections", n_projections)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold equally many samples, got {x.shape[0]} and {y.shape[0]}")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return ((px - py) ** 2).mean().sqrt()


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    r"""Squared energy distance (unbiased U-statistic), 0 iff the distributions agree."""
    x, y = _pair(x, y)
    return 2 * torch.cdist(x, y).mean() - _off_diagonal_mean(torch.cdist(x, x)) - _off_diagonal_mean(torch.cdist(y, y))


def _draw(sample_true: Callable, n: int, seed: int, dim: int | None) -> Tensor:
    out = sample_true(n, torch.Generator().manual_seed(seed))
    out = out[0] if isinstance(out, tuple) else out
    check_tensor("sample_true(n, generator)", out, ndim=2)
    if out.shape[0] != n or (dim is not None and out.shape[1] != dim):
        want = f"({n}, {dim})" if dim is not None else f"({n}, D)"
        raise ValueError(f"sample_true(n, generator) must return {want}, got {tuple(out.shape)}")
    check_finite("sample_true(n, generator)", out)
    return out


def _metric_name(metric: Callable) -> str:
    if isinstance(metric, functools.partial):
        args = ", ".join([repr(a) for a in metric.args] + [f"{k}={v!r}" for k, v in sorted(metric.keywords.items())])
        return f"{_metric_name(metric.func)}({args})"
    return getattr(metric, "__qualname__", type(metric).__name__)


def _cacheable(metric: Callable) -> bool:
    """Only functions whose name says what they compute are cached on disk (not lambdas or local closures)."""
    base = metric.func if isinstance(metric, functools.partial) else metric
    name = getattr(base, "__qualname__", "")
    return bool(name) and "<" not in name and getattr(base, "__module__", None) is not None


@dataclass(frozen=True)
class NullBand:
    r"""The null distribution of ``metric(fresh, reference)``: ``values`` holds the distance from each of ``pairs``
    fresh sets of ``n`` true samples to the one fixed ``reference`` set.  ``mean`` and ``sd`` summarise it,
    ``upper`` is its empirical ``quantile`` (a perfect model scores at or below ``upper`` with that probability).
    Compare models with :meth:`measure`, which uses the same reference set."""

    metric: str
    n: int
    reference: Tensor
    values: Tensor
    quantile: float
    _fn: Callable[[Tensor, Tensor], Tensor]

    @property
    def pairs(self) -> int:
        return int(self.values.numel())

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def sd(self) -> float:
        return float(self.values.std())

    @property
    def upper(self) -> float:
        return float(torch.quantile(self.values, self.quantile))

    def measure(self, samples: Tensor) -> Measured:
        """``metric(samples[:n], reference)`` beside this band (``samples`` must hold at least ``n`` rows)."""
        check_tensor("samples", samples, ndim=2)
        if samples.shape[0] < self.n:
            raise ValueError(f"samples must hold at least n = {self.n} rows (the band's sample size), "
                             f"got {samples.shape[0]}")
        if samples.shape[1] != self.reference.shape[1]:
            raise ValueError(f"samples must have {self.reference.shape[1]} columns like the reference set, "
                             f"got {samples.shape[1]}")
        value = float(self._fn(samples[: self.n].to(self.reference.dtype), self.reference))
        return Measured(self.metric, value, self)

    def __str__(self) -> str:
        return (f"null band of {self.metric}, {self.pairs} pairs of n={self.n}: mean {self.mean:.2g}, "
                f"sd {self.sd:.2g}, {self.quantile:.0%} at {self.upper:.2g}")


@dataclass(frozen=True)
class Measured:
    """A model's distance ``value`` to a band's reference set, beside that band."""

    metric: str
    value: float
    band: NullBand

    @property
    def z(self) -> float:
        """How many null standard deviations ``value`` lies above the null mean."""
        return (self.value - self.band.mean) / self.band.sd if self.band.sd > 0 else math.inf

    @property
    def in_band(self) -> bool:
        """``value <= band.upper``: as close to the data as the metric can tell with ``n`` samples."""
        return self.value <= self.band.upper

    def __float__(self) -> float:
        return self.value

    def __str__(self) -> str:
        where = "in the null band" if self.in_band else "above the null band"
        return (f"{self.metric} {self.value:.2g}, {where} ({self.z:+.1f} sd; "
                f"{self.band.quantile:.0%} of null <= {self.band.upper:.2g}, {self.band.pairs} pairs of n={self.band.n})")


def null_band(metric: Callable[[Tensor, Tensor], Tensor], sample_true: Callable[[int, torch.Generator], Tensor],
              n: int, *, pairs: int = 30, seed: int = 0, quantile: float = 0.95, cache: bool = True) -> NullBand:
    r"""The null band of ``metric`` at sample size ``n``.

    The reference set is ``sample_true(n, Generator(seed))``; the null draws are ``metric(fresh_k, reference)`` for
    ``pairs`` fresh sets ``sample_true(n, Generator(seed + k))``, k = 1..pairs (a pair ``(x, labels)`` is read
    as ``x``).  ``pairs`` should be at least 30 for a usable upper quantile.  With ``cache`` the draws are stored in
    ``$DIFFKIT_CACHE_DIR/bands`` under a key made of the metric's name and arguments, ``n``, ``pairs``, ``seed``
    and the bytes of the reference set and of the first fresh set, so a band is computed once per (data, n)
    (metrics that are lambdas or local functions are never cached: their name does not say what they compute).
    """
    if not callable(metric):
        raise TypeError(f"metric must be a function metric(x, y), e.g. distances.mmd, got {type(metric).__name__}")
    if not callable(sample_true):
        raise TypeError(f"sample_true must be a function sample_true(n, generator) -> (n, D) tensor, got "
                        f"{type(sample_true).__name__}")
    n = check_positive_int("n", n, minimum=2)
    pairs = check_positive_int("pairs", pairs, minimum=2)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not isinstance(quantile, float) or not 0.5 <= quantile < 1:
        raise ValueError(f"quantile must be a float in [0.5, 1), e.g. 0.95, got {quantile!r}")
    reference = _draw(sample_true, n, seed, None)
    name = _metric_name(metric)
    path = None
    if cache and _cacheable(metric):
        from .cache import cache_dir, fingerprint

        first = _draw(sample_true, n, seed + 1, reference.shape[1])
        key = json.dumps({"metric": name, "n": n, "pairs": pairs, "seed": seed,
                          "reference": fingerprint(reference), "first": fingerprint(first)}, sort_keys=True)
        path = cache_dir() / "bands" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
        if path.exists():
            try:
                stored = json.loads(path.read_text())
                if stored.get("key") == key and len(stored.get("values", [])) == pairs:
                    values = torch.tensor(stored["values"], dtype=torch.float64)
                    return NullBand(name, n, reference, values, quantile, metric)
            except (OSError, ValueError):
                pass  # unreadable: recompute and overwrite
    values = torch.tensor([float(metric(_draw(sample_true, n, seed + k, reference.shape[1]), reference))
                           for k in range(1, pairs + 1)], dtype=torch.float64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "values": values.tolist()}))
        tmp.replace(path)  # atomic: a crash never leaves half a file
    return NullBand(name, n, reference, values, quantile, metric)


def with_null_band(metric: Callable[[Tensor, Tensor], Tensor], samples: Tensor,
                   sample_true: Callable[[int, torch.Generator], Tensor], n: int | None = None, *,
                   pairs: int = 30, seed: int = 0, quantile: float = 0.95) -> Measured:
    """``null_band(metric, sample_true, n, ...).measure(samples)``: the distance of ``samples`` (the first ``n``
    rows; default all) to a reference set of true samples, beside the null band at that ``n``."""
    check_tensor("samples", samples, ndim=2)
    n = samples.shape[0] if n is None else check_positive_int("n", n, minimum=2)
    if n > samples.shape[0]:
        raise ValueError(f"n must be at most the number of samples ({samples.shape[0]}), got {n}")
    band = null_band(metric, sample_true, n, pairs=pairs, seed=seed, quantile=quantile)
    if band.reference.shape[1] != samples.shape[1]:
        raise ValueError(f"sample_true(n, generator) must return ({n}, {samples.shape[1]}) like samples, got "
                         f"{tuple(band.reference.shape)}")
    return band.measure(samples)
