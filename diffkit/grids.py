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

Where the steps go matters as much as the solver (chapter 6).  Two spacings of the literature place them by the
noise level rather than by ``t``, so they mean the same on every path:

* :func:`log_snr`: uniform in :math:`\lambda_t = \log(\alpha_t^2/\sigma_t^2)` (:meth:`GaussianPath.log_snr`;
  DPM-Solver's half log-SNR :math:`\log(\alpha_t/\sigma_t)` is uniform on the same grid; Lu et al., 2022);
* :func:`karras`: uniform in :math:`\varsigma^{1/\rho}`, :math:`\varsigma_t = \sigma_t/\alpha_t = e^{-\lambda_t/2}` the
  noise-to-signal ratio (EDM, Karras et al., 2022, eq. 5, :math:`\rho = 7`): between uniform in :math:`\varsigma`
  (:math:`\rho = 1`, nearly every step at high noise) and uniform in log-SNR (:math:`\rho \to \infty`).

Both put ``n_steps`` positive times from ``t_max`` down to ``t_min`` and end with ``0``, so that a solver with one
evaluation a step (DDIM, DPM-Solver++(2M)) makes ``n_steps`` evaluations; the last step, from ``t_min`` to
``0``, is the jump to :math:`\hat x_0`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import check_choice, check_number, check_positive_int
from .paths import DiscretePath, GaussianPath, check_path

__all__ = ["uniform", "ddpm_grid", "log_snr", "karras", "default_t_min", "time_at_log_snr", "SPACINGS"]

#: Where a path's log-SNR is -infinity at ``t_max`` (alpha = 0: linear, cosine, zero terminal SNR), the noise-level
#: grids start their spacing at this log-SNR instead (SNR e^-10, a noise-to-signal ratio of e^5 = 148, about DDPM's
#: at t = 1); the first time is still ``t_max``.
LOG_SNR_FLOOR = -10.0

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


def default_t_min(path: GaussianPath) -> float:
    r"""The smallest positive time a noise-level grid visits: the first training step ``1/N`` of a
    :class:`~diffkit.paths.DiscretePath`, else ``1e-3`` (Song et al.'s sampling :math:`\epsilon`)."""
    check_path(path)
    return 1.0 / path.n_steps if isinstance(path, DiscretePath) else 1e-3


def time_at_log_snr(path: GaussianPath, lam: Tensor) -> Tensor:
    r"""The times :math:`t \in [0, 1]` at which ``path`` has log-SNR ``lam`` (float64), by bisection: every
    diffkit path's :math:`\lambda_t` falls strictly with :math:`t`.  Values beyond the path's range give the
    nearest end."""
    check_path(path)
    lam = torch.as_tensor(lam, dtype=torch.float64)
    lo, hi = torch.zeros_like(lam), torch.ones_like(lam)
    for _ in range(64):  # 2^-64: below float64's resolution on [0, 1]
        mid = 0.5 * (lo + hi)
        above = path.log_snr(mid).to(torch.float64) > lam  # still too clean: the time is later
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


def _noise_level_grid(spacing: Callable[[float, float, Tensor], Tensor], n_steps: int, path: GaussianPath,
                      t_min: float | None, t_max: float) -> Tensor:
    check_positive_int("n_steps", n_steps)
    check_path(path)
    check_number("t_max", t_max, low=0.0, high=1.0, low_open=True)
    t_min = default_t_min(path) if t_min is None else check_number("t_min", t_min, low=0.0, low_open=True)
    if not t_min < t_max:
        raise ValueError(f"t_min must be below t_max = {t_max}, got {t_min}")
    lam_hi = float(path.log_snr(torch.tensor(t_max, dtype=torch.float64)))
    lam_lo = float(path.log_snr(torch.tensor(t_min, dtype=torch.float64)))
    lam_hi = lam_hi if math.isfinite(lam_hi) else LOG_SNR_FLOOR
    if n_steps == 1:
        ts = torch.tensor([t_max], dtype=torch.float64)
    else:
        u = torch.linspace(0.0, 1.0, n_steps, dtype=torch.float64)
        ts = time_at_log_snr(path, spacing(lam_hi, lam_lo, u))
        ts[0], ts[-1] = t_max, t_min
    if (ts[1:] >= ts[:-1]).any():
        raise ValueError(f"{n_steps} steps between t_min = {t_min} and t_max = {t_max} are too many for this "
                         f"path's noise levels to stay distinct in float64: use fewer steps")
    return torch.cat([ts, torch.zeros(1, dtype=torch.float64)])


def log_snr(n_steps: int, path: GaussianPath, *, t_min: float | None = None, t_max: float = 1.0) -> Tensor:
    r"""``n_steps`` times uniform in log-SNR :math:`\lambda_t = \log(\alpha_t^2/\sigma_t^2)` from ``t_max`` to ``t_min``
    (default :func:`default_t_min`), then ``0`` (float64; Lu et al., 2022).  On a path with :math:`\alpha = 0`
    at ``t_max`` the spacing starts at :data:`LOG_SNR_FLOOR`."""
    return _noise_level_grid(lambda hi, lo, u: hi + (lo - hi) * u, n_steps, path, t_min, t_max)


def karras(n_steps: int, path: GaussianPath, *, rho: float = 7.0, t_min: float | None = None,
           t_max: float = 1.0) -> Tensor:
    r"""``n_steps`` times uniform in :math:`\varsigma^{1/\rho}` (Karras et al., 2022, eq. 5), with
    :math:`\varsigma_t = \sigma_t/\alpha_t = e^{-\lambda_t/2}` the noise-to-signal ratio, from ``t_max`` to ``t_min``,
    then ``0`` (float64).  :math:`\rho = 1` is uniform in :math:`\varsigma`, :math:`\rho \to \infty` uniform in
    log-SNR; EDM's :math:`\rho = 7` lies between: against uniform log-SNR it takes shorter steps at high noise and
    longer ones near the data."""
    rho = check_number("rho", rho, low=0.0, low_open=True)

    def spacing(hi: float, lo: float, u: Tensor) -> Tensor:
        big, small = math.exp(-hi / (2 * rho)), math.exp(-lo / (2 * rho))  # varsigma^(1/rho) at both ends
        return -2 * rho * torch.log(big + (small - big) * u)

    return _noise_level_grid(spacing, n_steps, path, t_min, t_max)
