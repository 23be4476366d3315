r"""The three real-world recipes of chapter 10, each a choice on the course's three axes (framework ×
architecture × sampler), trained on the same data with the same budget.

=====================  =============================  ==============================  =====================
recipe                 training framework             architecture                    sampler
=====================  =============================  ==============================  =====================
``"sd1"``              DDPM, ε-prediction, linear β   U-Net (class-conditional)       DDIM (trailing)
``"dit"``              DDPM, ε-prediction, linear β   DiT-adaLN-Zero, patch 4         DDIM (trailing)
``"flux"``             rectified flow, logit-normal t DiT-adaLN-Zero, patch 4         Euler on the flow ODE
=====================  =============================  ==============================  =====================

All three are class-conditional with label dropout 0.1 and sample with classifier-free guidance.  The two DDPM
recipes clip :math:`\hat x_0` to [-1, 1] while sampling, as DDPM does in pixel space (``clip_x0=1``; the latent
systems they are named after do not clip).
(``"sd1"`` is "SD 1.x style", ``"dit"`` "DiT paper style", ``"flux"`` "Flux / SD3 style": same axes as those
systems, scaled down to 28×28 MNIST on a CPU.)

**Why they differ at a CPU budget** (``benchmarks/recipes.py`` prints the evidence: FID, class accuracy and the
denoising error by SNR of each trained model, :func:`diffkit.losses.denoising_mse`).  On the common :math:`x_0`
scale the ε-loss is :math:`\mathrm{SNR}(t)\,\lVert\hat x_0 - x_0\rVert^2`, so at SNR 0.01 an :math:`x_0` error as
large as the data's whole variance costs the ε-loss less than the error it already makes at low noise; the
velocity loss on the linear path weighs the same error by :math:`1/t^2 \ge 1`, and logit-normal :math:`t`
trains mostly at mid SNR.  Within a few thousand steps the ε recipes therefore stay poor where the digit's shape
and class are decided (low SNR), and :math:`\hat x_0 = (x_t - \sigma_t\hat\varepsilon)/\alpha_t` magnifies what
error they have by :math:`1/\alpha_t` (about 150 at the first step of the linear schedule): without
:math:`\hat x_0` clipping, some samples never leave the noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import grids, losses, samplers
from ._checks import check_choice, check_positive_int
from .models import DiT, UNet
from .paths import DiscretePath, GaussianPath, LinearPath

__all__ = ["Recipe", "RECIPES", "get_recipe", "generate"]

NUM_CLASSES = 10


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

    def loss(self, model: nn.Module, x0: Tensor, y: Tensor | None, generator: torch.Generator) -> Tensor:
        """The recipe's training loss (signature of :class:`diffkit.training.Trainer`'s ``loss_fn``)."""
        return losses.diffusion_loss(model, x0, self.path, target=self.target, y=y, t_dist=self.t_dist,
                                     generator=generator)

    def grid(self, n_steps: int) -> Tensor:
        if self.spacing is not None:
            return grids.ddpm_grid(n_steps, self.path.n_steps, self.spacing)
        return grids.uniform(n_steps)


def _dit() -> nn.Module:
    return DiT(image_size=28, in_channels=1, patch_size=4, hidden=128, depth=4, heads=4, num_classes=NUM_CLASSES,
               label_dropout=0.1)


def _unet() -> nn.Module:
    return UNet(in_channels=1, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attention_resolutions=(7,),
                image_size=28, num_classes=NUM_CLASSES, label_dropout=0.1)


_DDPM = DiscretePath.from_schedule("linear", 1000)
RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("sd1", "DDPM + U-Net + DDIM (SD 1.x style)", _unet, _DDPM, "eps", "uniform", "ddim", 5e-4, "trailing",
           clip_x0=1.0),
    Recipe("dit", "DDPM + DiT + DDIM (DiT paper style)", _dit, _DDPM, "eps", "uniform", "ddim", 5e-4, "trailing",
           clip_x0=1.0),
    Recipe("flux", "rectified flow + DiT + Euler (Flux / SD3 style)", _dit, LinearPath(), "velocity", "logit_normal",
           "euler", 5e-4),
]}


def get_recipe(name: str) -> Recipe:
    check_choice("name", name, RECIPES)
    return RECIPES[name]


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
