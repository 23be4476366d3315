r"""The course's trained models, shared across chapters and cached (chapters 3–5 and later).

A model trained in one chapter and used again in another is defined here once, so that every chapter loads the
same weights from :mod:`diffkit.cache` instead of keeping its own copy of the configuration.  Budgets are
training *steps* (:func:`diffkit.budget`), never seconds, and the data and precision are pinned (the 4,000
offline MNIST digits, fp32), so a reader on any machine gets the book's model, only faster on a faster one.

* :func:`ddpm_mnist_unet` — chapter 3's ε-prediction U-Net on MNIST: DDPM's linear schedule with N = 1000
  steps (:math:`t = n/N`), the simple loss :math:`\lVert \varepsilon - \hat\varepsilon_\theta(x_n, n/N)\rVert^2`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from . import cache, data, losses, models, paths, training
from .budgets import budget

__all__ = ["DDPM_MNIST", "ddpm_mnist_unet", "ddpm_mnist_setup"]


def ddpm_mnist_setup() -> dict[str, Any]:
    """Chapter 3's MNIST run, as data: ``path``, ``objective``, ``unet`` (the U-Net's arguments), ``config`` (the
    :class:`~diffkit.training.TrainConfig`, whose ``steps`` is ``budget(full=1600, quick=30)``; 1,600 steps took
    about 370 s on 2 CPU cores) and ``snapshots`` (the earlier steps whose weights the run also keeps:
    ``budget(full=800, quick=15)``, for chapter 5's comparison at half the budget).  Read it to print or explain
    the run; :func:`ddpm_mnist_unet` trains it."""
    path = paths.DiscretePath.from_schedule("linear", 1000)
    return {
        "path": path,
        "objective": losses.objective("ddpm", path=path, target="eps"),
        "unet": dict(base_channels=16, channel_mults=(1, 2), attention_resolutions=()),
        "config": training.TrainConfig(steps=budget(full=1600, quick=30), batch_size=64, lr=1e-3,
                                       ema_decay=0.995, mixed_precision=False),
        "snapshots": (budget(full=800, quick=15),),
    }


#: Chapter 3's MNIST run in the current mode (see :func:`ddpm_mnist_setup`).
DDPM_MNIST = ddpm_mnist_setup()


def ddpm_mnist_unet(steps: int | None = None, *, verbose: bool = True) -> nn.Module:
    """Chapter 3's ε-U-Net, trained ``DDPM_MNIST["config"].steps`` steps on the 4,000 offline training digits
    (:func:`diffkit.data.mnist_tensors`), or loaded from the cache when a chapter already trained it.  ``steps``
    (default: the whole run) may also be one of ``DDPM_MNIST["snapshots"]``: the same run's weights at that step,
    stored when the whole run was trained, else trained that far on their own.  Returns the EMA weights in eval
    mode on the CPU."""
    setup = ddpm_mnist_setup()
    config, snapshots = setup["config"], setup["snapshots"]
    if steps is not None and steps != config.steps:
        if steps not in snapshots:
            raise ValueError(f"steps must be {config.steps} (the whole run) or one of its snapshots {snapshots}, "
                             f"got {steps!r}")
        config, snapshots = dataclasses.replace(config, steps=steps), ()
    digits, _ = data.mnist_tensors("train", verbose=verbose)
    model, _ = cache.cached_model("ddpm-mnist-unet", config, lambda: models.UNet(**setup["unet"]),
                                  objective=setup["objective"], data=digits, verbose=verbose, snapshots=snapshots)
    return model
