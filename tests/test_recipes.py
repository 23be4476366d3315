"""The three recipes of chapter 10: the axes they combine, and their sampling plumbing driven by an exact oracle."""

import pytest
import torch

from diffkit import oracles, paths, recipes


def test_the_three_recipes_are_the_documented_axes():
    sd1, dit, flux = (recipes.get_recipe(n) for n in ("sd1", "dit", "flux"))
    assert type(sd1.build_model()).__name__ == "UNet" and type(dit.build_model()).__name__ == "DiT"
    assert sd1.path is dit.path and isinstance(sd1.path, paths.DiscretePath) and sd1.target == dit.target == "eps"
    assert isinstance(flux.path, paths.LinearPath) and flux.target == "velocity" and flux.t_dist == "logit_normal"
    assert (sd1.sampler, dit.sampler, flux.sampler) == ("ddim", "ddim", "euler")
    assert (sd1.clip_x0, dit.clip_x0, flux.clip_x0) == (1.0, 1.0, None)  # pixel-space DDPM clips x0_hat
    assert sd1.grid(30)[0].item() == 1.0 and sd1.grid(30)[-1].item() == 0.0  # trailing: starts at the noisiest step


@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_generate_samples_the_requested_classes(name):
    """Driven by the exact denoiser of ten well-separated 'digit' images, every sample lands on the asked class."""
    recipe = recipes.get_recipe(name)
    g = torch.Generator().manual_seed(0)
    means = torch.sign(torch.randn(10, 784, generator=g, dtype=torch.float64))
    mixture = oracles.GaussianMixture(means, stds=0.1, labels=torch.arange(10))
    asked = torch.arange(10).repeat(3)
    out = recipes.generate(recipe, mixture.as_model(recipe.path, recipe.target), asked, n_steps=20, guidance=2.0,
                           generator=g, progress=False)
    assert out.shape == (30, 1, 28, 28) and out.min() >= -1 and out.max() <= 1
    nearest = torch.cdist(out.flatten(1).double(), means).argmin(1)
    assert torch.equal(nearest, asked)


def test_generate_clips_x0_as_the_recipe_says():
    """generate() is the recipe's sampler with the recipe's clip_x0: the same numbers as calling it directly."""
    import dataclasses

    from diffkit import samplers

    recipe = recipes.get_recipe("dit")
    mixture = oracles.GaussianMixture(torch.zeros(10, 784, dtype=torch.float64), stds=0.5, labels=torch.arange(10))
    oracle = mixture.as_model(recipe.path, "eps")
    model = lambda x, t, y=None: oracle(x, t, y) + 0.05  # noqa: E731  (a biased eps: x0_hat runs far out of [-1, 1])
    asked = torch.arange(10)
    runs = {}
    for clip in (1.0, None):
        r = dataclasses.replace(recipe, clip_x0=clip)
        runs[clip] = recipes.generate(r, model, asked, n_steps=10, guidance=1.0, progress=False,
                                      generator=torch.Generator().manual_seed(0))
        x = samplers.prior(r.path, (10, 1, 28, 28), generator=torch.Generator().manual_seed(0))
        direct = samplers.ddim(model, x, r.grid(10), r.path, y=asked, clip_x0=clip).clamp(-1, 1)
        torch.testing.assert_close(runs[clip], direct)
    assert (runs[1.0] - runs[None]).abs().max() > 0.02  # the clipping was active


def test_recipe_losses_are_finite_and_learnable():
    recipe = recipes.get_recipe("flux")
    model = recipe.build_model()
    x, y = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8)
    loss = recipe.loss(model, x, y, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.item() > 0.5  # an untrained DiT outputs 0: the loss is E|eps - x0|^2 > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_input():
    with pytest.raises(ValueError, match="name must be one of"):
        recipes.get_recipe("sdxl")
    with pytest.raises(ValueError, match="labels must be a 1-D tensor"):
        recipes.generate(recipes.get_recipe("dit"), recipes.get_recipe("dit").build_model(), torch.zeros(2, 2))
