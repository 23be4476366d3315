r"""Pictures of samples: a batch of images as one grid (every chapter that samples images, chapters 3–13).

:func:`image_grid` lays out a batch (N, C, H, W) — C = 1 (grey) or 3 (RGB), values in :math:`[-1, 1]` (the scale
of :mod:`diffkit.data`) or :math:`[0, 1]` — in rows of ``nrow`` images separated by ``padding`` white pixels,
draws it on a matplotlib axis (shown in a notebook) and/or saves it as a PNG whose pixels are exactly
:math:`\operatorname{round}(255\,u)`, :math:`u` the image rescaled to :math:`[0, 1]` and clipped.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import check_finite, check_positive_int, check_tensor

__all__ = ["image_grid", "grid_pixels"]


def _unit_range(x: Tensor, value_range: tuple[float, float] | None) -> Tensor:
    if value_range is None:
        value_range = (-1.0, 1.0) if x.min() < 0 else (0.0, 1.0)
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range!r}")
    return ((x.double() - low) / (high - low)).clamp(0.0, 1.0)


def grid_pixels(x: Tensor, nrow: int = 8, *, padding: int = 2,
                value_range: tuple[float, float] | None = None) -> np.ndarray:
    """The grid as uint8 pixels: (rows, cols) for grey images, (rows, cols, 3) for RGB.  ``value_range``
    defaults to [-1, 1] if any value is negative, else [0, 1]; values outside it are clipped."""
    x = check_tensor("x", x, ndim=4).detach().cpu()
    check_finite("x", x)
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"x must have 1 (grey) or 3 (RGB) channels, got shape {tuple(x.shape)}")
    if n == 0:
        raise ValueError("x must hold at least one image")
    check_positive_int("nrow", nrow)
    check_positive_int("padding", padding, minimum=0)
    u = _unit_range(x, value_range)
    cols, rows = min(nrow, n), math.ceil(n / nrow)
    grid = torch.ones(c, padding + rows * (h + padding), padding + cols * (w + padding), dtype=torch.float64)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top:top + h, left:left + w] = u[i]
    pixels = torch.floor(grid * 255 + 0.5).to(torch.uint8).numpy()  # round half up
    return pixels[0] if c == 1 else pixels.transpose(1, 2, 0)


def image_grid(x: Tensor, nrow: int = 8, *, ax: Any = None, path: str | os.PathLike | None = None, padding: int = 2,
               value_range: tuple[float, float] | None = None, title: str | None = None,
               show: bool | None = None) -> np.ndarray:
    """Show and/or save a batch of images ``x`` (N, C, H, W) as one grid, ``nrow`` images per row.

    The grid is drawn on ``ax`` if given; without ``ax`` a new figure is made unless only ``path`` is given
    (``show`` overrides: ``True`` always draws, ``False`` never).  ``path`` saves the exact pixels as a PNG.
    Returns the pixels (:func:`grid_pixels`)."""
    pixels = grid_pixels(x, nrow, padding=padding, value_range=value_range)
    if path is not None:
        from PIL import Image

        from .checkpoints import check_writable

        target = check_writable(path, "path")
        Image.fromarray(pixels).save(target, format="PNG")  # uint8 (H, W) is mode L, (H, W, 3) is RGB
    draw = show if show is not None else (ax is not None or path is None)
    if draw:
        import matplotlib.pyplot as plt

        if ax is None:
            height, width = pixels.shape[:2]
            _, ax = plt.subplots(figsize=(min(10.0, width / 40 + 1), min(10.0, height / 40 + 1)))
        ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_axis_off()
        if title is not None:
            ax.set_title(title)
    return pixels
