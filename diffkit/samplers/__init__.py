r"""Samplers: every one integrates a Gaussian path from :math:`t = 1` (noise) to :math:`t = 0` (data).

**One calling convention** (compare them side by side, swap one for another)::

    x0 = sampler(model, x, ts, path, *, target=None, y=None, guidance=1.0, null_label=None,
                 generator=None, return_trajectory=False, progress=False, clip_x0=None, **options)

* ``model(x, t, y=None)`` predicts ``target`` (``"eps"``, ``"x0"``, ``"v"``, ``"score"`` or ``"velocity"``;
  see :mod:`diffkit.targets`); ``t`` is a (B,) tensor in [0, 1] with 0 = data.  A model trained or loaded through
  diffkit knows its target (``model.diffkit_objective``): leave ``target`` out and the sampler takes it from the
  model; a ``target`` or ``path`` that disagrees with the model's is an error (see :func:`resolve_target`).
  A bare callable records nothing, and ``target`` defaults to ``"eps"``.
* ``x`` is the starting noise at ``ts[0]`` (see :func:`prior`); ``ts`` a strictly decreasing grid that ends
  exactly at 0 (see :mod:`diffkit.grids`).  Every sampler's last step lands on :math:`t = 0`: clean data on every
  path with :math:`\sigma_0 = 0`, i.e. every path but ``LinearPath(sigma_min > 0)``, whose :math:`t = 0` is the
  data blurred by :math:`\mathcal N(0, \sigma_\min^2 I)` (see :attr:`~diffkit.paths.GaussianPath.sigma_at_data`).
* Every sampler starts from :math:`t = 1` on every path, including those with :math:`\alpha_1 = 0` (linear,
  cosine, zero terminal SNR), whenever the target carries the information the step needs there: ``"x0"``,
  ``"v"`` and ``"velocity"`` do; ``"eps"`` and ``"score"`` say nothing about :math:`x_0` where
  :math:`\alpha_t = 0`, and such a start is a clear error (start the grid below 1, or train another target).
* Classifier-free guidance (chapter 8): ``guidance = w`` uses
  :math:`\hat f = f(x, t, \varnothing) + w\,(f(x, t, y) - f(x, t, \varnothing))` on the whole output, so
  ``w = 1`` is plain conditional sampling and ``w = 0`` unconditional.  It needs ``y`` and ``null_label``.
* ``return_trajectory=True`` returns a :class:`Trajectory` (all intermediate states) instead of the samples.
* ``clip_x0=c`` clamps every :math:`\hat x_0` to :math:`[-c, c]` before the update (and recomputes
  :math:`\hat\varepsilon` to match): DDPM's ``clip_denoised`` for pixel data in [-1, 1] (``c = 1``, chapter 4).
  At low SNR an ε-model's :math:`\hat x_0 = (x_t - \sigma_t\hat\varepsilon)/\alpha_t` multiplies its error by
  :math:`1/\alpha_t`; clipping keeps that error from wrecking the trajectory.

Every method converts the model output to :math:`(\hat x_0, \hat\varepsilon)` and writes its update in those
terms, so one implementation serves every path and every target.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .._checks import check_choice, check_positive_int
from ..grids import log_snr
from ..paths import GaussianPath, check_path
from .base import Counted, Denoiser, Trajectory, prior, resolve_target
from .gaussian import ddim, ddpm
from .ode import adaptive, dpm_solver_pp_2m, euler, heun, rk4
from .sde import annealed_langevin, euler_maruyama, predictor_corrector

__all__ = [
    "ddpm", "ddim", "euler", "heun", "rk4", "euler_maruyama", "predictor_corrector", "annealed_langevin",
    "dpm_solver_pp_2m", "adaptive", "recommended", "sample", "DEFAULT_NFE", "SAMPLERS", "get_sampler", "prior", "Trajectory", "Denoiser", "Counted", "resolve_target",
]

SAMPLERS: dict[str, Callable[..., Tensor | Trajectory]] = {
    "ddpm": ddpm, "ddim": ddim, "euler": euler, "heun": heun, "rk4": rk4, "euler_maruyama": euler_maruyama,
    "predictor_corrector": predictor_corrector, "annealed_langevin": annealed_langevin,
    "dpm_solver_pp_2m": dpm_solver_pp_2m, "adaptive": adaptive,
}


#: The number of model evaluations :func:`sample` spends unless told otherwise.
DEFAULT_NFE = 20


def recommended(path: GaussianPath, nfe: int = DEFAULT_NFE) -> tuple[Callable[..., Tensor | Trajectory], Tensor]:
    r"""The course's default sampler for ``nfe`` model evaluations: ``(dpm_solver_pp_2m, grids.log_snr(nfe, path))``.

    DPM-Solver++(2M) (Lu et al., 2022) makes one evaluation a step; the grid is uniform in log-SNR from
    :math:`t = 1` to :func:`diffkit.grids.default_t_min`, then 0.  Why (chapter 6): on a narrow heavy mode,
    :math:`\mathcal N(0, 0.1^2 I)` of weight 0.9 beside :math:`\mathcal N((3, 0), I)` of weight 0.1, driven by the
    exact oracle, every 20-step sampler on DDPM's trailing grid returns the mode at about half its width — the
    last jump, from :math:`t = 0.05` to 0, lands on the posterior mean — while this choice keeps it within 5% on
    VP, sub-VP, VE, cosine and linear paths (``tests/test_samplers.py``)."""
    check_path(path)
    return dpm_solver_pp_2m, log_snr(check_positive_int("nfe", nfe), path)


def sample(model: Callable[..., Tensor], x: Tensor, path: GaussianPath, *, nfe: int = DEFAULT_NFE,
           **options) -> Tensor | Trajectory:
    """Sample with the :func:`recommended` solver and grid for ``nfe`` evaluations: ``sample(model, x, path)`` is
    ``dpm_solver_pp_2m(model, x, grids.log_snr(20, path), path)``.  ``options`` are the shared keyword arguments
    (``target``, ``y``, ``guidance``, ``null_label``, ``return_trajectory``, ``progress``, ``clip_x0``)."""
    sampler, ts = recommended(path, nfe)
    return sampler(model, x, ts, path, **options)


def get_sampler(name: str) -> Callable[..., Tensor | Trajectory]:
    """Look a sampler up by name (see :data:`SAMPLERS`)."""
    check_choice("name", name, SAMPLERS)
    return SAMPLERS[name]

