"""Bad input anywhere in diffkit's public API gets a clear error that names the argument and what was expected.

One table per module, so the list can grow; each row is (call, exception type, words the message must contain).
The tables of the math core live beside its tests (test_paths, test_samplers); these cover the rest.
"""

import re

import numpy as np
import pytest
import torch

from diffkit import checkpoints, distances, grids, likelihood, losses, models, oracles, paths, samplers, schedules
from diffkit import training, widgets

X, P = torch.zeros(4, 2), paths.VPPath()
NAN = torch.full((4, 2), float("nan"))

TABLES = {
    "distances": [
        (lambda: distances.mmd([[0.0, 0.0]], X), TypeError, "x must be a torch.Tensor"),
        (lambda: distances.mmd(torch.zeros(0, 2), X), ValueError, "must each hold at least 2 samples"),
        (lambda: distances.mmd(torch.zeros(4, 3), X), ValueError, "same number of columns"),
        (lambda: distances.energy_distance(NAN, X), ValueError, "x contains NaN"),
    ],
    "oracles": [
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
        (lambda: schedules.cosine_betas(10, s=float("nan")), ValueError, "s must be a number, got NaN"),
        (lambda: schedules.linear_betas(10, beta_max=float("inf")), ValueError, "beta_max must be finite"),
        (lambda: schedules.cosine_betas(10, max_beta=1.5), ValueError, "max_beta must be <= 1.0"),
        (lambda: schedules.linear_betas(0), ValueError, "n_steps must be an integer >= 1"),
    ],
    "samplers": [
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
