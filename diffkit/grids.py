r"""Time grids for sampling: strictly decreasing, from noise (``t <= 1``) to exactly ``t = 0`` (chapter 4).

For a model trained on the discrete DDPM chain with ``n_train`` steps (step :math:`n` at :math:`t = n/N`), a
sampler with fewer steps uses a subsequence of the training steps.  The three spacings of the literature
(Lin et al., 2024, Table 2), written with diffusers' 0-based timesteps :math:`k = n - 1`:

* ``"leading"`` (DDIM): :math:`k = i\cdot\lfloor N/S\rfloor` for :math:`i = S-1 \dots 0` — never starts at the
  noisiest step (with N=1000, S=10 it starts at t = 0.901);
* ``"trailing"``: :math:`k = \operatorname{round}(N - iN/S) - 1` — starts at :math:`t = 1`;
* ``"linspace"``: :math:`k = \operatorname{round}(\text{linspace}(0, N-1, S))` reversed.

Each grid then ends with an exact ``0``: the last step always lands on clean data.  Taking the *next
entry of the grid* as the previous time (not ``t - N // S``) is what keeps uneven spacings correct.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_choice, check_number, check_positive_int

__all__ = ["uniform", "ddpm_grid", "SPACINGS"]

SPACINGS = ("leading", "trailing", "linspace")


def uniform(n_steps: int, t_max: float = 1.0) -> Tensor:
    """``n_steps`` equal steps from ``t_max`` to 0 (``n_steps + 1`` times, float64)."""
    check_positive_int("n_steps", n_steps)
    check_number("t_max", t_max, low=0.0, high=1.0, low_open=True)
    ts = torch.linspace(t_max, 0.0, n_steps + 1, dtype=torch.float64)
    ts[-1] = 0.0
    return ts


def ddpm_grid(n_steps: int, n_train: int = 1000, spacing: str = "trailing") -> Tensor:
    """A subsequence of ``n_steps`` of the ``n_train`` DDPM training steps, plus the final ``t = 0`` (float64)."""
    check_positive_int("n_steps", n_steps)
    check_positive_int("n_train", n_train)
    check_choice("spacing", spacing, SPACINGS)
    if n_steps > n_train:
        raise ValueError(f"n_steps must be <= n_train ({n_train}), got {n_steps}")
    if spacing == "leading":
        k = torch.arange(n_steps - 1, -1, -1, dtype=torch.float64) * (n_train // n_steps)
    elif spacing == "trailing":
        k = torch.round(torch.arange(n_train, 0, -n_train / n_steps, dtype=torch.float64)) - 1
    else:
        k = torch.round(torch.linspace(0, n_train - 1, n_steps, dtype=torch.float64)).flip(0)
    k = torch.unique_consecutive(k)
    return torch.cat([(k + 1) / n_train, torch.zeros(1, dtype=torch.float64)])
