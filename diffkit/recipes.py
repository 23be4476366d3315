r"""The real-world recipes of chapter 10, each a choice on the course's three axes (framework × architecture ×
sampler), trained on the same data for the same number of steps.

==============  ==================================  ========================  ===================================
recipe          training framework                  architecture              sampler
==============  ==================================  ========================  ===================================
``"sd1"``       DDPM, ε-prediction, linear β        U-Net (class-conditional) DDIM (trailing), x̂0 clipped
``"dit-eps"``   DDPM, ε-prediction, linear β        DiT-adaLN-Zero, patch 4   DDIM (trailing), x̂0 clipped
``"dit"``       DDPM, x0-prediction, linear β       DiT-adaLN-Zero, patch 4   DDIM (trailing), x̂0 clipped
``"flux"``      rectified flow, x0-prediction,      DiT-adaLN-Zero, patch 4   Euler on the flow ODE (x̂0 turned
                logit-normal t shifted ×3 to noise                            into the velocity)
==============  ==================================  ========================  ===================================

All are class-conditional with label dropout 0.1 and sample with classifier-free guidance.  ``"sd1"`` is "SD 1.x
style" and ``"flux"`` "Flux / SD3 style": the same axes as those systems, scaled down to 28×28 MNIST on a CPU.
``"dit-eps"`` is the DiT paper's recipe as published (ε-prediction, without its learned variance); ``"dit"`` is
the book's fix, which changes only what the network predicts.  The DDPM recipes clip :math:`\hat x_0` to
[-1, 1] while sampling, as DDPM does in pixel space (``clip_x0=1``; the latent systems they are named after do
not clip).

**Why the target matters for a patch-4 transformer** (chapter 10 shows it; ``benchmarks/recipes.py`` prints the
evidence).  A DiT token sees one 4×4 patch and must output 16 numbers.  Asked for ε, those numbers are the
noise, which lies off the data manifold and has all 16 degrees of freedom; asked for :math:`x_0`, they are a
clean patch, which lies near a low-dimensional set.  On the common :math:`x_0` scale the ε-loss is
:math:`\mathrm{SNR}(t)\,\lVert\hat x_0 - x_0\rVert^2`, so it hardly rewards getting the coarse shape and the
class right at low SNR, where they are decided; and :math:`\hat x_0 = (x_t - \sigma_t\hat\varepsilon)/\alpha_t`
magnifies what ε error remains by :math:`1/\alpha_t`.  At a few thousand steps the ε-DiT ignores the label; the
x0-DiT does not (Li & He, 2025, "Back to Basics: Let Denoising Generative Models Denoise").  Reweighting alone does
not fix it: the ε-DiT trained on the x0-loss (``weighting="x0"``, i.e. the ε-loss times 1/SNR) still ignores the
label and draws noise, because those weights starve the nearly clean levels instead; the output must change.  A
U-Net, whose convolutions see overlapping neighbourhoods at several scales, learns ε well.

**Why the flow recipe shifts its training times.**  On the rectified-flow path :math:`\log\mathrm{SNR} =
-2\operatorname{logit} t`, so SD3's logit-normal :math:`t` trains at :math:`\log\mathrm{SNR} \sim \mathcal N(0, 2^2)`:
13 % of its draws lie below SNR 0.1, where the sampler decides which digit to draw, against 52 % of the DDPM
recipes' uniform grid.  SD3's shift :math:`a = 3` (``t_shift``) divides every draw's SNR by :math:`a^2`, putting
48 % there; at 1,200 steps it took the flow recipe's guided accuracy from 91 % to 99 % (chapter 10).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import grids, losses, samplers
from ._checks import check_choice, check_positive_int
from .models import DiT, UNet
from .paths import DiscretePath, GaussianPath, LinearPath

if TYPE_CHECKING:
    from .training import TrainConfig

__all__ = ["Recipe", "RECIPES", "get_recipe", "generate", "train_config", "error_by_snr", "Scorecard", "score",
           "cached_scorecard", "SNRS", "CACHE_NAMES", "Comparison"]

NUM_CLASSES = 10
SNRS = (100.0, 10.0, 1.0, 0.1, 0.01, 0.001)  # where chapter 10 compares denoising errors


@dataclass(frozen=True)
class Recipe:
    """One point on the three axes: how to build the model, train it and sample from it."""

    name: str
    title: str
    build_model: Callable[[], nn.Module]
    path: GaussianPath
    target: str
    t_dist: str
    sampler: str
    lr: float
    spacing: str | None = None  # DDPM grids: "trailing" etc.; None = uniform in t
    clip_x0: float | None = None  # sampling clamps x0_hat to [-c, c] (DDPM's clip_denoised), None = no clipping
    t_shift: float = 1.0  # training times shifted toward noise, t -> a t / (1 + (a - 1) t) (SD3's shift a)
    weighting: str | None = None  # the loss weight on the x0 scale (losses.WEIGHTINGS); None = the target's own MSE

    @property
    def objective(self) -> losses.Objective:
        """The training objective, as :func:`diffkit.cache.cached_model` keys it (``"ddpm"`` on a discrete path:
        chapter 8's DiT is the ``"dit"`` recipe's model, loaded from the same cache file)."""
        extra = {} if self.t_shift == 1.0 else {"t_shift": self.t_shift}  # (the defaults keep the cache keys)
        if self.weighting is not None:
            extra["weighting"] = self.weighting
        if self.path.discrete:
            return losses.objective("ddpm", path=self.path, target=self.target, **extra)
        return losses.objective("diffusion", path=self.path, target=self.target, t_dist=self.t_dist, **extra)

    def loss(self, model: nn.Module, x0: Tensor, y: Tensor | None, generator: torch.Generator) -> Tensor:
        """The recipe's training loss (signature of :class:`diffkit.training.Trainer`'s ``loss_fn``)."""
        return self.objective(model, x0, y, generator=generator)

    def grid(self, n_steps: int) -> Tensor:
        if self.spacing is not None:
            return grids.ddpm_grid(n_steps, self.path.n_steps, self.spacing)
        return grids.uniform(n_steps)


def _dit() -> nn.Module:
    return DiT(image_size=28, in_channels=1, patch_size=4, hidden=128, depth=4, heads=4, num_classes=NUM_CLASSES,
               label_dropout=0.1)


def _unet() -> nn.Module:
    return UNet(in_channels=1, base_channels=UNET_BASE, channel_mults=(1, 2, 2), num_res_blocks=1,
                attention_resolutions=(7,), image_size=28, num_classes=NUM_CLASSES, label_dropout=0.1)


UNET_BASE = 16  # 0.39 s per training step at batch 128 on 2 cores; width 32 took 1.18 s
_DDPM = DiscretePath.from_schedule("linear", 1000)
RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("sd1", "DDPM + U-Net + DDIM (SD 1.x style)", _unet, _DDPM, "eps", "uniform", "ddim", 5e-4, "trailing",
           clip_x0=1.0),
    Recipe("dit-eps", "DDPM + DiT + DDIM, ε (DiT paper as published)", _dit, _DDPM, "eps", "uniform", "ddim", 5e-4,
           "trailing", clip_x0=1.0),
    Recipe("dit", "DDPM + DiT + DDIM, x0 (DiT paper style)", _dit, _DDPM, "x0", "uniform", "ddim", 5e-4,
           "trailing", clip_x0=1.0),
    Recipe("flux", "rectified flow + DiT + Euler, x0 (Flux / SD3 style)", _dit, LinearPath(), "x0", "logit_normal",
           "euler", 5e-4, t_shift=3.0),
]}


def get_recipe(name: str) -> Recipe:
    check_choice("name", name, RECIPES)
    return RECIPES[name]


def _as_recipe(recipe: str | Recipe) -> Recipe:
    """A recipe by name, or a :class:`Recipe` whose name is its own (a variant may not borrow a shipped recipe's
    name: it would share that recipe's cached model)."""
    if isinstance(recipe, str):
        return get_recipe(recipe)
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a recipe name ({', '.join(RECIPES)}) or a recipes.Recipe, "
                        f"got {type(recipe).__name__}")
    if recipe.name in RECIPES and recipe != RECIPES[recipe.name]:
        raise ValueError(f"a changed recipe needs a name of its own, not {recipe.name!r}: "
                         f"dataclasses.replace(recipe, name=..., ...)")
    return recipe


def train_config(steps: int) -> TrainConfig:
    """The book's training settings for every recipe (chapter 8's DiT run): batch 128, Adam at the recipe's
    learning rate 5e-4, EMA 0.995, for ``steps`` steps."""
    from .training import TrainConfig

    check_positive_int("steps", steps)
    return TrainConfig(steps=steps, batch_size=128, lr=5e-4, ema_decay=0.995)


@torch.no_grad()
def generate(recipe: Recipe, model: nn.Module, labels: Tensor, *, n_steps: int = 30, guidance: float = 3.0,
             batch_size: int = 250, generator: torch.Generator | None = None, progress: bool = True) -> Tensor:
    """Class-conditional samples (N, 1, 28, 28) in [-1, 1] for ``labels`` (N,), with classifier-free guidance."""
    check_positive_int("n_steps", n_steps)
    if not isinstance(labels, Tensor) or labels.ndim != 1:
        raise ValueError("labels must be a 1-D tensor of class labels")
    if isinstance(model, nn.Module):
        model.eval()
        device = next(model.parameters()).device
    else:  # any callable model(x, t, y) — e.g. an exact oracle
        device = torch.device("cpu")
    sample = samplers.get_sampler(recipe.sampler)
    ts = recipe.grid(n_steps)
    out = []
    for y in tqdm(labels.split(batch_size), desc=f"sampling {recipe.name}", disable=not progress, leave=False):
        x = samplers.prior(recipe.path, (len(y), 1, 28, 28), generator=generator, device=device)
        out.append(sample(model, x, ts, recipe.path, target=recipe.target, y=y.to(device), guidance=guidance,
                          null_label=NUM_CLASSES, generator=generator, clip_x0=recipe.clip_x0).clamp(-1, 1).cpu())
    return torch.cat(out)


@torch.no_grad()
def error_by_snr(recipe: Recipe, model: nn.Module, x0: Tensor, y: Tensor, snrs: tuple[float, ...] = SNRS, *,
                 seed: int = 2) -> tuple[Tensor, Tensor]:
    r"""The denoising error :math:`\mathbb E\lVert\hat x_0 - x_0\rVert^2/d` of a trained recipe at each
    signal-to-noise ratio in ``snrs`` (:func:`diffkit.losses.denoising_mse`), with the true labels ``y`` and with
    the null label.  Indexed by the SNR, not by :math:`t`: recipes use different paths, and the best possible error
    depends on the path only through the SNR (:math:`x_t/\alpha_t = x_0 + \varepsilon/\sqrt{\mathrm{SNR}}`).
    Returns ``(with the label, with the null label)``, each (len(snrs),) float64."""
    ts = grids.time_at_log_snr(recipe.path, torch.log(torch.tensor(snrs, dtype=torch.float64)))
    if isinstance(model, nn.Module):
        model.eval()
    out = []
    for labels in (y, torch.full_like(y, NUM_CLASSES)):
        out.append(losses.denoising_mse(model, x0, recipe.path, ts, target=recipe.target, y=labels,
                                        generator=torch.Generator().manual_seed(seed)))
    return out[0], out[1]


@dataclass(frozen=True)
class Scorecard:
    """One row of chapter 10's table: a trained recipe's guided samples, scored by the course's classifier."""

    recipe: str
    steps: int  # training steps
    train_seconds: float  # as recorded when the model was trained
    nfe: int  # network evaluations per sample: 2 per sampling step with guidance
    guidance: float
    n: int  # samples scored, the same number of each digit
    accuracy: float  # share of samples the classifier puts in the asked class
    accuracy_se: float  # binomial standard error of ``accuracy``
    fid: float  # against as many held-out digits, in the classifier's feature space
    sample_seconds: float  # wall time to draw the n samples
    grid: Tensor  # three rows of ten, (30, 1, 28, 28): row i holds the i-th sample of digits 0 ... 9
    snrs: Tensor  # where the denoising error was measured, (K,)
    mse_label: Tensor  # x0 error per pixel with the true label, (K,) (error_by_snr, on the held-out digits)
    mse_null: Tensor  # the same with the null label

    @property
    def title(self) -> str:
        return get_recipe(self.recipe).title


def score(recipe: Recipe, model: nn.Module, classifier: nn.Module, real: Tensor, real_labels: Tensor, *,
          steps: int, train_seconds: float, n_per_class: int = 50, n_steps: int = 30, guidance: float = 3.0,
          seed: int = 8, progress: bool = False) -> Scorecard:
    """Draw ``n_per_class`` guided samples of each digit with the recipe's sampler (same seed for every recipe),
    and score them: class accuracy and FID against ``real`` (held-out digits, as many as samples); and the
    model's denoising error by SNR on ``real`` with its labels ``real_labels`` (:func:`error_by_snr`)."""
    from .evaluation import class_accuracy, mnist_fid

    check_positive_int("n_per_class", n_per_class)
    asked = torch.arange(NUM_CLASSES).repeat_interleave(n_per_class)
    if not isinstance(real, Tensor) or real.shape[0] != len(asked):
        raise ValueError(f"real must hold {len(asked)} held-out digits (as many as samples), "
                         f"got {tuple(getattr(real, 'shape', ()))}")
    if not isinstance(real_labels, Tensor) or real_labels.shape != (real.shape[0],):
        raise ValueError(f"real_labels must be the {real.shape[0]} labels of real, shape ({real.shape[0]},)")
    start = time.perf_counter()
    images = generate(recipe, model, asked, n_steps=n_steps, guidance=guidance, progress=progress,
                      generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    acc = class_accuracy(classifier, images, asked)
    n = len(asked)
    pick = torch.cat([torch.arange(NUM_CLASSES) * n_per_class + i for i in range(min(3, n_per_class))])
    return Scorecard(recipe.name, steps, float(train_seconds), n_steps * (2 if guidance != 1.0 else 1), guidance,
                     n, acc, math.sqrt(max(acc * (1 - acc), 1 / n) / n), mnist_fid(classifier, images, real),
                     seconds, images[pick].clone(), torch.tensor(SNRS, dtype=torch.float64),
                     *error_by_snr(recipe, model, real, real_labels))


_TENSOR_FIELDS = ("grid", "snrs", "mse_label", "mse_null")


def _scorecard_path(recipe: Recipe, steps: int, settings: dict, key: dict) -> Path:
    from .cache import cache_dir, config_key

    key = config_key(f"scorecard-{recipe.name}", {"recipe": _recipe_key(recipe), "train": asdict(train_config(steps)),
                                                  "score": settings, **key})
    return cache_dir() / "scorecards" / f"{recipe.name}-{key[:20]}.safetensors"


def _recipe_key(recipe: Recipe) -> dict:
    """Everything in a recipe that changes its scorecard: the objective (path, target, time distribution and
    shift), the sampler and its grid, the learning rate and the network's architecture (built under a forked
    RNG, so that keying a scorecard does not move the caller's random stream)."""
    from .checkpoints import model_record

    with torch.random.fork_rng(devices=[]):
        network = model_record(recipe.build_model())  # what the cache keys a model's architecture by
    return {"objective": recipe.objective.to_dict(), "sampler": recipe.sampler, "spacing": recipe.spacing,
            "clip_x0": recipe.clip_x0, "lr": recipe.lr, "network": network}


def cached_scorecard(recipe: Recipe, steps: int, compute: Callable[[], Scorecard] | None = None, *,
                     n_per_class: int = 50, n_steps: int = 30, guidance: float = 3.0, seed: int = 8,
                     key: dict | None = None) -> Scorecard:
    """The scorecard of ``recipe`` trained ``steps`` steps with :func:`train_config` and scored with these
    settings: read from the cache, or made by ``compute()`` and stored there.  ``key`` adds what else the
    scorecard depends on (:class:`Comparison` adds fingerprints of the training and the held-out digits, so that
    other data never reads this data's scorecard).  Without ``compute``, a missing scorecard is an error that says
    which notebook makes it — chapter 10 trains each recipe in its own notebook and sets the rows side by side in
    the last one."""
    from . import checkpoints

    settings = {"n_per_class": n_per_class, "n_steps": n_steps, "guidance": guidance, "seed": seed}
    if key is not None and not isinstance(key, dict):
        raise TypeError(f"key must be a dict of what else the scorecard depends on, got {type(key).__name__}")
    path = _scorecard_path(recipe, steps, settings, key or {})
    if path.exists():
        tensors, meta = checkpoints.load(path)
        fields = {k: v for k, v in meta.items() if k in Scorecard.__dataclass_fields__}
        return Scorecard(**fields, **{k: tensors[k] for k in _TENSOR_FIELDS})
    if compute is None:
        raise FileNotFoundError(
            f"no scorecard for recipe {recipe.name!r} at {steps:,} steps with {settings} in {path.parent}: run the "
            f"chapter 10 notebook that trains this recipe first")
    card = compute()
    if not isinstance(card, Scorecard) or card.recipe != recipe.name or card.steps != steps:
        raise ValueError(f"compute must return the Scorecard of recipe {recipe.name!r} at {steps} steps")
    meta = {k: v for k, v in asdict(card).items() if k not in _TENSOR_FIELDS}
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.save(path, {k: getattr(card, k).contiguous() for k in _TENSOR_FIELDS}, meta)
    return card


#: Where each recipe's model lives in the cache: chapter 10 trains three, chapter 8 trained the x0-DiT.
CACHE_NAMES = {"sd1": "ch10-sd1", "dit-eps": "ch10-dit-eps", "dit": "ch08-mnist-dit", "flux": "ch10-flux"}


@dataclass
class Comparison:
    """Chapter 10's common ground: the training digits and their labels, the budget in steps, the scoring
    classifier, the held-out digits ``real`` (``n_per_class`` of each digit, labels ``real_labels``) and the
    guidance scale.  :meth:`model` trains a recipe on it (or loads it from the cache), :meth:`scorecard` scores it
    (or reads the stored scorecard, which is how the last notebook sets rows trained elsewhere side by side)."""

    digits: Tensor
    labels: Tensor
    steps: int
    classifier: nn.Module
    real: Tensor
    real_labels: Tensor
    n_per_class: int
    guidance: float = 3.0
    _models: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from ._checks import check_tensor
        from .cache import fingerprint

        check_tensor("digits", self.digits, ndim=4)
        if not isinstance(self.labels, Tensor) or self.labels.shape != (self.digits.shape[0],):
            raise ValueError(f"labels must be the {self.digits.shape[0]} labels of digits, "
                             f"shape ({self.digits.shape[0]},)")
        check_positive_int("steps", self.steps)
        check_positive_int("n_per_class", self.n_per_class)
        if not isinstance(self.classifier, nn.Module):
            raise TypeError(f"classifier must be the scoring network (evaluation.mnist_classifier()), "
                            f"got {type(self.classifier).__name__}")
        n = NUM_CLASSES * self.n_per_class
        check_tensor("real", self.real, ndim=4)
        if self.real.shape[0] != n:
            raise ValueError(f"real must hold {n} held-out digits (n_per_class = {self.n_per_class} of each of "
                             f"{NUM_CLASSES} classes), got {self.real.shape[0]}")
        if not isinstance(self.real_labels, Tensor) or self.real_labels.shape != (n,):
            raise ValueError(f"real_labels must be the {n} labels of real, shape ({n},)")
        self._key = {"data": fingerprint((self.digits, self.labels)),
                     "real": fingerprint((self.real, self.real_labels))}

    def model(self, recipe: str | Recipe) -> nn.Module:
        """Recipe ``recipe`` (a name in :data:`RECIPES`, or a :class:`Recipe` of your own with a name of its own,
        e.g. ``dataclasses.replace(get_recipe("dit-eps"), name="dit-eps-x0w", weighting="x0")``) trained
        :func:`train_config` ``(steps)`` on the digits: from the cache, or trained and stored there (its training
        time is ``model.diffkit_train_seconds``)."""
        from .cache import cached_model

        recipe = _as_recipe(recipe)
        if recipe.name not in self._models:
            self._models[recipe.name], _ = cached_model(
                CACHE_NAMES.get(recipe.name, f"ch10-{recipe.name}"), train_config(self.steps), recipe.build_model,
                objective=recipe.objective, data=(self.digits, self.labels), verbose=False)
        return self._models[recipe.name]

    def scorecard(self, recipe: str | Recipe, n_steps: int = 30) -> Scorecard:
        """The :class:`Scorecard` of ``recipe`` (as in :meth:`model`) sampled with ``n_steps`` steps: read from the
        cache, or made (training the model if need be) and stored."""
        recipe = _as_recipe(recipe)
        settings = {"n_per_class": self.n_per_class, "n_steps": n_steps, "guidance": self.guidance}
        return cached_scorecard(recipe, self.steps, lambda: score(
            recipe, self.model(recipe), self.classifier, self.real, self.real_labels, steps=self.steps,
            train_seconds=self.model(recipe).diffkit_train_seconds, **settings), key=self._key, **settings)

    def fid_floor(self) -> tuple[float, float]:
        """FID of real training digits against ``real`` (:func:`diffkit.evaluation.fid_floor`): what a perfect
        recipe would score at this sample size, and its standard error."""
        from .evaluation import fid_floor

        return fid_floor(self.classifier, self.digits, self.labels, self.real, self.n_per_class)
