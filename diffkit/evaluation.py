r"""Image metrics for MNIST samples: a classifier the course trains itself, FID in its feature space, and the
class accuracy of conditional samples (chapters 8, 10 and 13).

Inception features (the usual FID) are meaningless for 28x28 digits and cannot be downloaded here, so the course
trains a small CNN (:class:`MnistClassifier`, ~98% test accuracy) once and caches it (:mod:`diffkit.cache`).  Its
128-dimensional penultimate activations define **FID** for this course (:func:`mnist_fid`, the Fréchet distance of
:mod:`diffkit.fid`); its predictions give the **class accuracy** of class-conditional samples
(:func:`class_accuracy`).  FID values are comparable only between runs that use the same classifier (same
training data), which is why the cache key includes a fingerprint of the data.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cache, data, training
from ._checks import check_tensor
from .fid import frechet_distance_from_features

__all__ = ["MnistClassifier", "mnist_classifier", "features", "class_accuracy", "mnist_fid", "fid_floor",
           "CLASSIFIER_TRAINING"]

#: The classifier's training budget: fixed (not quick/full) so that FIDs are comparable across modes.
CLASSIFIER_TRAINING = {"steps": 800, "batch_size": 128, "lr": 3e-3, "weight_decay": 1e-4, "max_shift": 2, "seed": 0}


class MnistClassifier(nn.Module):
    """A small CNN: 3x3 convolutions with 16, 32 (stride 2), 64 (stride 2) and 128 channels, global average
    pooling to a 128-d feature vector, a linear layer to 10 logits.  Input (B, 1, 28, 28) in [-1, 1]."""

    feature_dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GroupNorm(8, 64), nn.SiLU(),
            nn.Conv2d(64, 128, 3, padding=1), nn.SiLU(),
        )
        self.head = nn.Linear(128, 10)

    def features(self, x: Tensor) -> Tensor:
        """The 128-d features (B, 128) that define the course's FID."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _random_shift(x: Tensor, max_shift: int, g: torch.Generator) -> Tensor:
    """Translate each image by up to ``max_shift`` pixels (background -1 fills in): cheap augmentation."""
    if max_shift == 0:
        return x
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dx, dy = (torch.randint(0, 2 * max_shift + 1, (2, x.shape[0]), generator=g)).tolist()
    H, W = x.shape[-2:]
    return torch.stack([padded[i, :, b:b + H, a:a + W] for i, (a, b) in enumerate(zip(dx, dy))])


def _fingerprint(images: Tensor, labels: Tensor) -> str:
    h = hashlib.sha256(labels.numpy().tobytes())
    h.update(images[:: max(1, len(images) // 256)].numpy().tobytes())
    return h.hexdigest()[:16]


def mnist_classifier(*, verbose: bool = True, progress: bool = True) -> MnistClassifier:
    """The course's MNIST classifier: trained once on the MNIST training split, then loaded from the cache."""
    images, labels = data.mnist_tensors("train", verbose=verbose)
    cfg = dict(CLASSIFIER_TRAINING)
    config = {"training": cfg, "init": "seeded", "data": {"n": len(labels), "fingerprint": _fingerprint(images, labels)}}

    def build() -> MnistClassifier:  # the initial weights are part of the run, whatever ran before
        with torch.random.fork_rng(devices=[]):  # (the caller's random state is left as it was)
            torch.manual_seed(cfg["seed"])
            return MnistClassifier()

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor | None, g: torch.Generator) -> Tensor:
        return F.cross_entropy(model(_random_shift(x, cfg["max_shift"], g)), y)

    def train(model: nn.Module) -> nn.Module:
        tc = training.TrainConfig(steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                                  weight_decay=cfg["weight_decay"], seed=cfg["seed"], ema_decay=0.99)
        return training.train(model, loss_fn, (images, labels), tc, progress=progress).cpu()

    return cache.cached_model("mnist-classifier", config, build, train, verbose=verbose)


@torch.no_grad()
def features(classifier: MnistClassifier, images: Tensor, batch_size: int = 500) -> Tensor:
    """Classifier features (N, 128) of images (N, 1, 28, 28) in [-1, 1]."""
    check_tensor("images", images, ndim=4)
    if images.shape[1:] != (1, 28, 28):
        raise ValueError(f"images must have shape (N, 1, 28, 28), got {tuple(images.shape)}")
    device = next(classifier.parameters()).device
    classifier.eval()
    return torch.cat([classifier.features(b.to(device).float()).cpu() for b in images.split(batch_size)])


@torch.no_grad()
def class_accuracy(classifier: MnistClassifier, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Fraction of ``images`` that the classifier assigns to ``labels`` (e.g. the classes samples were asked for)."""
    check_tensor("images", images, ndim=4)
    if not isinstance(labels, Tensor) or labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({images.shape[0]},)")
    device = next(classifier.parameters()).device
    classifier.eval()
    preds = torch.cat([classifier(b.to(device).float()).argmax(1).cpu() for b in images.split(batch_size)])
    return (preds == labels.cpu()).double().mean().item()


def mnist_fid(classifier: MnistClassifier, images_a: Tensor, images_b: Tensor) -> float:
    """FID between two sets of MNIST-like images in the classifier's feature space."""
    return frechet_distance_from_features(features(classifier, images_a), features(classifier, images_b)).item()


def fid_floor(classifier: MnistClassifier, digits: Tensor, labels: Tensor, real: Tensor, n_per_class: int, *,
              sets: int = 5) -> tuple[float, float]:
    """What a perfect model scores: FID of real ``digits`` against ``real`` (held-out digits, ``10 * n_per_class``
    of them), over ``sets`` disjoint class-balanced sets of ``n_per_class`` digits of each class.  Returns the mean
    and its standard error — FID's bias at this sample size, and the noise any difference between models must beat
    (chapters 10, 11 and 13)."""
    check_tensor("digits", digits, ndim=4)
    if not isinstance(labels, Tensor) or labels.shape != (digits.shape[0],):
        raise ValueError(f"labels must be the {digits.shape[0]} labels of digits, shape ({digits.shape[0]},)")
    if not isinstance(sets, int) or sets < 2:
        raise ValueError(f"sets must be an integer >= 2 (a standard error needs two), got {sets!r}")
    fewest = int(torch.bincount(labels, minlength=10).min())
    if sets * n_per_class > fewest:
        raise ValueError(f"n_per_class: {sets} disjoint sets of {n_per_class} digits per class need "
                         f"{sets * n_per_class} of each class; digits has {fewest} of its rarest class")
    fids = []
    for k in range(sets):
        part = slice(k * n_per_class, (k + 1) * n_per_class)
        pool = torch.cat([digits[labels == c][part] for c in range(10)])
        fids.append(mnist_fid(classifier, pool, real))
    values = torch.tensor(fids, dtype=torch.float64)
    return values.mean().item(), (values.std() / sets**0.5).item()
