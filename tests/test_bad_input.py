"""Bad input anywhere in diffkit's public API gets a clear error that names the argument and what was expected.

One table per module, so the list can grow; each row is (call, exception type, words the message must contain).
The tables of the math core live beside its tests (test_paths, test_samplers); these cover the rest.
"""

import re

import numpy as np
import pytest
import torch

from diffkit import checkpoints, coupling, distances, fid, flows, grids, likelihood, losses, models, oracles, paths
from diffkit import samplers
from diffkit import schedules, targets, training, widgets

X, P = torch.zeros(4, 2), paths.VPPath()
NAN = torch.full((4, 2), float("nan"))
VE, DDPM = paths.VEPath(), paths.DiscretePath.from_schedule("linear", 100)
DATA = oracles.GaussianMixture.from_data(torch.randn(5, 2, generator=torch.Generator().manual_seed(0)))
X64 = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

TABLES = {
    "flows": [
        (lambda: flows.conditional_velocity(X, torch.zeros(4, 3), 0.5, P), ValueError, "x0 must have the shape of x"),
        (lambda: flows.conditional_velocity(X, X, 0.0, paths.LinearPath()), ValueError,
         "t must avoid points where sigma_t = 0"),
        (lambda: flows.marginal_velocity(X, 0.5, NAN, P), ValueError, "data contains NaN"),
        (lambda: flows.marginal_velocity(X, 0.5, X, P, weights=torch.ones(3)), ValueError,
         "weights must be 4 non-negative numbers"),
        (lambda: flows.continuity_residual(lambda z, t: z.sum(1), lambda z, t: z, X, 0.0), ValueError,
         "t must lie in [2 dt, 1 - 2 dt]"),
        (lambda: flows.straightness(torch.zeros(3, 4, 2), torch.tensor([0.0, 0.5, 1.0])), ValueError,
         "ts must be strictly decreasing"),
        (lambda: flows.coupled_cfm_loss(models.MLP(), torch.zeros(4, 3, 2)), ValueError,
         "pairs must have shape (B, 2, ...)"),
        (lambda: flows.gradient_difference(models.MLP(), X, torch.zeros(4), X, X, groups=3), ValueError,
         "groups must divide the number of draws (4)"),
        (lambda: flows.logit_normal_pdf(torch.tensor([0.0, 0.5])), ValueError, "t must lie strictly inside (0, 1)"),
        (lambda: flows.logit_normal_pdf(torch.tensor([0.5]), scale=0.0), ValueError, "scale must be > 0.0"),
        (lambda: flows.nfe("dpm", 3), ValueError, "solver must be one of"),
        (lambda: flows.reflow_pairs(models.MLP(), X, steps=0), ValueError, "steps must be an integer >= 1"),
    ],
    "grids (noise levels)": [
        (lambda: grids.log_snr(10, P, t_min=0.5, t_max=0.4), ValueError, "t_min must be below t_max"),
        (lambda: grids.karras(10, P, rho=-1.0), ValueError, "rho must be > 0"),
        (lambda: grids.karras(0, P), ValueError, "n_steps must be"),
        (lambda: grids.log_snr(10, "vp"), TypeError, "path"),
        (lambda: grids.time_at_log_snr("vp", torch.zeros(2)), TypeError, "path"),
    ],
    "samplers (chapter 6)": [
        (lambda: samplers.adaptive(DATA.as_model(P), X64, grids.uniform(2), P, rtol=-1.0), ValueError,
         "rtol must be > 0"),
        (lambda: samplers.adaptive(DATA.as_model(P), X64, grids.uniform(2), P, method="rk45"), ValueError,
         "method must be one of"),
        (lambda: samplers.adaptive(DATA.as_model(P), X64, grids.uniform(2), P, t_min=0.0), ValueError,
         "t_min must be > 0"),
        (lambda: samplers.recommended(P, 0), ValueError, "nfe must be"),
        (lambda: samplers.sample(DATA.as_model(P), X64, P, nfe=2.5), ValueError, "nfe must be an integer"),
        (lambda: samplers.Counted("model"), TypeError, "model must be callable"),
        (lambda: likelihood.log_likelihood(DATA.as_model(P), X64, P, solver="rk4"), ValueError,
         "solver must be one of"),
        (lambda: likelihood.flow_to_prior(DATA.as_model(P), X64, P, atol=0.0), ValueError, "atol must be > 0"),
    ],
    "distances": [
        (lambda: distances.mmd([[0.0, 0.0]], X), TypeError, "x must be a torch.Tensor"),
        (lambda: distances.mmd(torch.zeros(0, 2), X), ValueError, "must each hold at least 2 samples"),
        (lambda: distances.mmd(torch.zeros(4, 3), X), ValueError, "same number of columns"),
        (lambda: distances.energy_distance(NAN, X), ValueError, "x contains NaN"),
    ],
    "oracles": [
        # the t = 0 end: a data set's point masses have only a denoiser there (the nearest training point)
        (lambda: DATA.predict(X64, 0.0, VE, "eps"), ValueError, "target='eps' is undefined at t where sigma_t = 0"),
        (lambda: DATA.score(X64, 0.0, DDPM), ValueError, "only the denoiser (target='x0') has a limit there"),
        (lambda: DATA.velocity(X64, 0.0, P), ValueError, "target='velocity' is undefined at t where sigma_t = 0"),
        (lambda: DATA.log_prob(X64, 0.0, VE), ValueError, "has no density where sigma_t = 0"),
        (lambda: oracles.UniformBox(2).score(X64, 0.0, P), ValueError, "the unblurred box has no smooth density"),
        (lambda: oracles.UniformBox(2).predict(X64, 0.0, VE, "score"), ValueError, "undefined at t where sigma_t = 0"),
        (lambda: oracles.GaussianMixture(torch.zeros(2, 2), stds=torch.ones(3)), ValueError,
         "stds must be a number or 2 numbers (one per component)"),
        (lambda: oracles.GaussianMixture(torch.zeros(2, 2), stds=1.0, labels=torch.tensor([0.5, 1.0])), TypeError,
         "labels must be integer class indices"),
        (lambda: oracles.eight_gaussians().predict(X64, 0.5, P, "eps", y=torch.zeros(4, 1, dtype=torch.long)),
         ValueError, "y must have shape (4,), got (4, 1)"),
        (lambda: oracles.eight_gaussians().sample(4, y=torch.tensor([0.0, 1.0, 2.0, 3.0])), TypeError,
         "y must hold integer class labels"),
        (lambda: oracles.GaussianMixture([[0.0, 0.0]], stds=1.0), TypeError, "means must be a torch.Tensor"),
        (lambda: oracles.GaussianMixture(torch.tensor([[float("nan"), 0.0]]), stds=1.0), ValueError,
         "means contains NaN"),
        (lambda: oracles.GaussianMixture(torch.zeros(1, 2), stds=float("inf")), ValueError, "stds must be finite"),
        (lambda: oracles.GaussianMixture(torch.zeros(1, 2), covs=torch.full((1, 2, 2), float("nan"))), ValueError,
         "covs must be symmetric positive semi-definite"),
        (lambda: oracles.GaussianMixture(torch.zeros(2, 2), stds=1.0, weights=torch.tensor([float("nan"), 1.0])),
         ValueError, "weights must be 2 non-negative numbers"),
        (lambda: oracles.eight_gaussians().sample(0), ValueError, "n must be an integer >= 1"),
        (lambda: oracles.UniformBox(2, low=1.0, high=-1.0), ValueError, "high must be greater than low"),
        (lambda: oracles.UniformBox(2, blur=-0.1), ValueError, "blur must be >= 0.0"),
    ],
    "models": [
        (lambda: models.MLP()(torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4)), TypeError,
         "x must have the dtype of the model's weights, torch.float32, got torch.float64"),
        (lambda: models.MLP()(torch.zeros(4, 2, dtype=torch.float16), torch.zeros(4)), TypeError,
         "x must have the dtype of the model's weights"),
        (lambda: models.MLP()(torch.zeros(4, 2), torch.zeros(3)), ValueError, "t must be a number or a tensor of shape (4,)"),
        (lambda: models.MLP(num_classes=3)(X, torch.zeros(4), torch.zeros(3, dtype=torch.long)), ValueError,
         "y must have shape (4,)"),
        (lambda: models.MLP(num_classes=3)(X, torch.zeros(4), torch.full((4,), 7)), ValueError,
         "y must hold labels in [0, 3]"),
        (lambda: models.MLP()(torch.zeros(0, 2), torch.zeros(0)), ValueError, "x must hold at least one sample"),
        (lambda: models.MLP()(np.zeros((4, 2)), torch.zeros(4)), TypeError, "x must be a torch.Tensor"),
    ],
    "training": [
        (lambda: training.TrainConfig(steps=1, seed=0.5), TypeError, "seed must be an int"),
        (lambda: training.EMA(models.MLP(), 1.5), ValueError, "decay must be <= 1.0"),
        (lambda: training.TrainConfig(steps=1, betas=(0.9, 1.0)), ValueError, "betas[1] must be < 1"),
        (lambda: training.TrainConfig(steps=1, lr=float("inf")), ValueError, "lr must be finite"),
        (lambda: training.TrainConfig(steps=0), ValueError, "steps must be an integer >= 1"),
        (lambda: training.TrainConfig(steps=1, batch_size=0), ValueError, "batch_size must be an integer >= 1"),
        (lambda: training.Trainer(models.MLP(), losses.objective("cfm"), torch.full((64, 2), float("nan")),
                                  training.TrainConfig(steps=1)), ValueError, "data contains NaN"),
        (lambda: training.Trainer(models.MLP(), losses.objective("cfm"), torch.zeros(0, 2),
                                  training.TrainConfig(steps=1)), ValueError, "data is empty"),
    ],
    "losses": [
        (lambda: losses.sample_t(0, P), ValueError, "n must be an integer >= 1, got 0"),
        (lambda: losses.sample_t(-1, P), ValueError, "n must be an integer >= 1, got -1"),
        (lambda: losses.sample_t(4, P, t_dist="logit_normal", loc=float("nan")), ValueError, "loc must be a number"),
        (lambda: losses.cfm_loss(models.MLP(), np.zeros((4, 2))), TypeError, "x0 must be a torch.Tensor"),
        (lambda: losses.cfm_loss(models.MLP(num_classes=3), X, y=torch.zeros(3, dtype=torch.long)), ValueError,
         "y must have shape (4,)"),
        (lambda: losses.diffusion_loss(models.MLP(), X, P, eps=torch.zeros(4, 3)), ValueError,
         "eps must have the shape of x0 (4, 2)"),
        (lambda: losses.diffusion_loss(models.MLP(), X, P, t=torch.zeros(3)), ValueError,
         "t must be a number or a tensor of shape (4,)"),
        (lambda: losses.diffusion_loss(models.MLP(), NAN, P), ValueError, "x0 contains NaN"),
    ],
    "schedules": [
        (lambda: schedules.alpha_bar_from_betas(torch.tensor([0.5, 1.5])), ValueError,
         "betas must lie in [0, 1] (each step's noise variance), got values in [0.5, 1.5]"),
        (lambda: schedules.alpha_bar_from_betas(torch.tensor([-0.1, 0.5])), ValueError, "betas must lie in [0, 1]"),
        (lambda: schedules.alpha_bar_from_betas(np.array([0.1, 0.2])), TypeError, "betas must be a torch.Tensor"),
        (lambda: schedules.betas_from_alpha_bar(torch.tensor([1.2, 0.5])), ValueError, "alpha_bar must lie in [0, 1]"),
        (lambda: schedules.betas_from_alpha_bar(torch.tensor([0.9, 0.5]), max_beta=2.0), ValueError,
         "max_beta must be <= 1.0"),
        (lambda: schedules.rescale_zero_terminal_snr(torch.tensor([0.1, 1.2])), ValueError, "betas must lie in [0, 1]"),
        (lambda: schedules.cosine_betas(10, s=float("nan")), ValueError, "s must be a number, got NaN"),
        (lambda: schedules.linear_betas(10, beta_max=float("inf")), ValueError, "beta_max must be finite"),
        (lambda: schedules.cosine_betas(10, max_beta=1.5), ValueError, "max_beta must be <= 1.0"),
        (lambda: schedules.linear_betas(0), ValueError, "n_steps must be an integer >= 1"),
    ],
    "samplers": [
        (lambda: samplers.prior(P, 8), TypeError, "shape must be a tuple of positive ints, e.g. (8, 2)"),
        (lambda: samplers.prior(P, (8, 2.0)), ValueError, "shape must be a tuple of positive ints"),
        (lambda: samplers.ddim(oracles.eight_gaussians().as_model(P, "score"), X, grids.uniform(3), P, target="eps"),
         ValueError, "target='eps' disagrees with the model, which was trained to predict 'score'"),
        (lambda: samplers.ddim(oracles.eight_gaussians().as_model(VE, "score"), X, grids.uniform(3), P), ValueError,
         "is not the path the model was trained on, VEPath(sigma_min=0.01, sigma_max=50.0)"),
        (lambda: samplers.ddim(models.MLP(num_classes=3), X, grids.uniform(3), P, y=torch.zeros(4, dtype=torch.long),
                               guidance=2.0, null_label=5), ValueError,
         "null_label=5 disagrees with the model's null label 3"),
        (lambda: samplers.prior(P, (4, 2), dtype=torch.long), TypeError, "dtype must be a floating torch.dtype"),
    ],
    "likelihood": [
        (lambda: likelihood.log_likelihood(oracles.eight_gaussians().as_model(P), np.zeros((2, 2)), P), TypeError,
         "x must be a torch.Tensor"),
        (lambda: likelihood.bits_per_dim(torch.zeros(2), 0), ValueError, "dim must be an integer >= 1"),
        (lambda: likelihood.dequantized_bits_per_dim(oracles.eight_gaussians().as_model(P), X, P, levels=1),
         ValueError, "levels must be an integer >= 2"),
    ],
    "checkpoints": [
        (lambda: checkpoints.save("/tmp/diffkit-bad-input.safetensors", {"a": 1}), TypeError,
         "tensors must map names (str) to torch.Tensor values"),
        (lambda: checkpoints.save("/tmp", {"a": torch.zeros(1)}), ValueError, "is a directory"),
        (lambda: checkpoints.save("/tmp/diffkit-bad-input.safetensors", {"a": torch.zeros(1)}, {"m": object()}),
         TypeError, "metadata must be JSON-serialisable"),
    ],
    "widgets": [
        (lambda: widgets.figure_png("fig"), TypeError, "fig must be a matplotlib Figure"),
        (lambda: widgets.frame_grid([[b"png"]], ["a", "b"], ["x"]), ValueError,
         "frames must have one row per row label (2)"),
        (lambda: widgets.frame_grid([[b"png", "x"]], ["a"], ["x", "y"]), TypeError, "frames[0] must hold PNG bytes"),
    ],
    "targets": [
        (lambda: targets.from_x0_eps(torch.zeros(8, 2), torch.zeros(8, 1), "v", torch.zeros(8, 2), 0.5, P), ValueError,
         "eps must have the shape of x_t (8, 2), got (8, 1)"),
        (lambda: targets.from_x0_eps(torch.zeros(8, 1), torch.zeros(8, 2), "eps", torch.zeros(8, 2), 0.5, P),
         ValueError, "x0 must have the shape of x_t (8, 2), got (8, 1)"),
        (lambda: targets.to_x0_eps(np.zeros((4, 2)), "eps", X, 0.5, P), TypeError, "pred must be a torch.Tensor"),
    ],
    "fid": [
        (lambda: fid.frechet_distance(torch.zeros(2), -torch.eye(2), torch.zeros(2), -torch.eye(2)), ValueError,
         "cov1 must be positive semi-definite (a covariance), but has an eigenvalue -1"),
        (lambda: fid.frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2),
                                      torch.diag(torch.tensor([1.0, -2.0]))), ValueError, "cov2 must be positive semi-definite"),
        (lambda: fid.frechet_distance(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.zeros(2),
                                      torch.eye(2)), ValueError, "cov1 must be a symmetric covariance matrix"),
        (lambda: fid.frechet_distance(torch.zeros(2), torch.full((2, 2), float("nan")), torch.zeros(2), torch.eye(2)),
         ValueError, "cov1 contains NaN"),
    ],
    "paths": [
        (lambda: paths.t_from_index(0, 0), ValueError, "n_steps must be an integer >= 1, got 0"),
        (lambda: paths.index_from_t(0.5, 0), ValueError, "n_steps must be an integer >= 1, got 0"),
        (lambda: paths.t_from_index(2.5, 10), TypeError, "k must be an integer timestep index"),
        (lambda: P.sample_t(0), ValueError, "n must be an integer >= 1, got 0"),
        (lambda: DDPM.sample_t(0), ValueError, "n must be an integer >= 1, got 0"),
        (lambda: paths.VEPath.for_data(np.zeros((4, 2))), TypeError, "x must be a torch.Tensor"),
    ],
    "coupling": [
        (lambda: coupling.ot_pair(NAN, X), ValueError, "x0 contains NaN"),
    ],
}
ROWS = [(module, *row) for module, rows in TABLES.items() for row in rows]


@pytest.mark.parametrize("module,call,error,match", ROWS, ids=[f"{m}: {r[2][:50]}" for m, *r in ROWS])
def test_bad_input_gets_a_clear_error(module, call, error, match):
    with pytest.raises(error, match=re.escape(match)):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_cuda():
    with pytest.raises(ValueError, match=re.escape("device='cuda' but CUDA is not available")):
        training.Trainer(models.MLP(), losses.objective("cfm"), torch.randn(64, 2), training.TrainConfig(steps=1),
                         device="cuda")


# --- the t = 0 end of every oracle: the limit, not NaN --------------------------------------------------------------
@pytest.mark.parametrize("path", [paths.VPPath(), paths.VEPath(), paths.CosinePath(), paths.LinearPath(), DDPM],
                         ids=lambda p: type(p).__name__)
def test_oracles_take_their_limit_at_t0(path):
    """A data set's ideal denoiser at t = 0 is the nearest training point (it was NaN on VE and discrete paths);
    a smooth mixture's exact predictions at t = 0 are their limits t -> 0 (the velocity was NaN on VP and VE,
    where d sigma/dt is infinite at 0 but sigma * d sigma/dt is not; eps converges like sqrt(t) on VP)."""
    nearest = DATA.means[torch.cdist(X64, DATA.means).argmin(1)]
    assert torch.equal(DATA.denoiser(X64, 0.0, path), nearest)
    assert torch.equal(DATA.predict(X64, 0.0, path, "x0"), nearest)
    mixture = oracles.eight_gaussians()
    for target in ("x0", "eps", "v", "score", "velocity"):
        at0 = mixture.predict(X64, 0.0, path, target)
        assert torch.isfinite(at0).all(), target
        torch.testing.assert_close(at0, mixture.predict(X64, 1e-14, path, target), rtol=1e-4, atol=1e-4, msg=target)
    box = oracles.UniformBox(2)
    assert torch.equal(box.predict(X64 * 3, 0.0, path, "x0"), (X64 * 3).clamp(-1, 1))  # the nearest point of the box
