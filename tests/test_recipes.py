"""The recipes of chapter 10: the axes they combine, their sampling plumbing driven by an exact oracle, and the
scorecards that set them side by side."""

import pytest
import torch

from diffkit import oracles, paths, recipes


def test_the_recipes_are_the_documented_axes():
    sd1, dit_eps, dit, flux = (recipes.get_recipe(n) for n in ("sd1", "dit-eps", "dit", "flux"))
    assert type(sd1.build_model()).__name__ == "UNet"
    assert all(type(r.build_model()).__name__ == "DiT" for r in (dit_eps, dit, flux))
    assert sd1.path is dit.path is dit_eps.path and isinstance(sd1.path, paths.DiscretePath)
    assert (sd1.target, dit_eps.target, dit.target, flux.target) == ("eps", "eps", "x0", "x0")
    assert isinstance(flux.path, paths.LinearPath) and flux.t_dist == "logit_normal" and flux.t_shift == 3.0
    assert (sd1.sampler, dit_eps.sampler, dit.sampler, flux.sampler) == ("ddim", "ddim", "ddim", "euler")
    assert (sd1.clip_x0, dit.clip_x0, flux.clip_x0) == (1.0, 1.0, None)  # pixel-space DDPM clips x0_hat
    assert sd1.grid(30)[0].item() == 1.0 and sd1.grid(30)[-1].item() == 0.0  # trailing: starts at the noisiest step


def test_the_dit_recipe_is_chapter_8s_cached_model():
    """Chapter 10 loads chapter 8's DiT instead of retraining it: same objective record, same config."""
    from diffkit import losses, training

    dit = recipes.get_recipe("dit")
    assert dit.objective == losses.objective("ddpm", path=paths.DiscretePath.from_schedule("linear", 1000),
                                             target="x0")
    assert recipes.train_config(1200) == training.TrainConfig(steps=1200, batch_size=128, lr=5e-4, ema_decay=0.995)
    flux = recipes.get_recipe("flux")
    assert flux.objective.options == {"t_dist": "logit_normal", "t_shift": 3.0} and flux.objective.target == "x0"
    for name in ("sd1", "dit-eps", "dit"):  # unshifted recipes keep the keys their cached models were stored under
        assert "t_shift" not in recipes.get_recipe(name).objective.options


def test_a_scorecard_is_keyed_by_everything_the_recipe_changes(tmp_path, monkeypatch):
    """A recipe changed after its scorecard was stored (another time shift, sampler, target, network) must not
    read the old scorecard; keying it must not move the caller's random stream."""
    import dataclasses

    from diffkit.models import DiT

    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path))
    flux = recipes.get_recipe("flux")
    recipes.cached_scorecard(flux, 3, lambda: _card("flux", 3))
    recipes.cached_scorecard(flux, 3)  # the same recipe reads it back
    changed = [dataclasses.replace(flux, t_shift=1.0), dataclasses.replace(flux, sampler="heun"),
               dataclasses.replace(flux, target="velocity"), dataclasses.replace(flux, clip_x0=1.0),
               dataclasses.replace(flux, build_model=lambda: DiT(hidden=64, num_classes=10))]
    for recipe in changed:
        with pytest.raises(FileNotFoundError):
            recipes.cached_scorecard(recipe, 3)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    recipes.cached_scorecard(flux, 3)
    assert torch.equal(torch.rand(3), expected)


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

    recipe = recipes.get_recipe("dit-eps")
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
    # an untrained adaLN-Zero DiT outputs exactly 0, so its x0-loss is the data's second moment, whatever t is
    torch.testing.assert_close(loss, x.square().mean())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_input():
    with pytest.raises(ValueError, match="name must be one of"):
        recipes.get_recipe("sdxl")
    with pytest.raises(ValueError, match="labels must be a 1-D tensor"):
        recipes.generate(recipes.get_recipe("dit"), recipes.get_recipe("dit").build_model(), torch.zeros(2, 2))


def _card(recipe="dit", steps=3):
    return recipes.Scorecard(recipe, steps, 1.5, 60, 3.0, 20, 0.9, 0.07, 12.5, 2.0, torch.rand(30, 1, 28, 28),
                             torch.tensor(recipes.SNRS), torch.rand(6), torch.rand(6))


def test_cached_scorecard_stores_and_reloads_every_field(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path))
    dit = recipes.get_recipe("dit")
    with pytest.raises(FileNotFoundError, match="run the chapter 10 notebook"):
        recipes.cached_scorecard(dit, 3)
    made = recipes.cached_scorecard(dit, 3, _card)
    calls = []
    loaded = recipes.cached_scorecard(dit, 3, lambda: calls.append(1))  # stored: compute is not called
    assert not calls
    for key, value in vars(made).items():
        assert (torch.equal(value, getattr(loaded, key)) if isinstance(value, torch.Tensor)
                else value == getattr(loaded, key)), key
    with pytest.raises(FileNotFoundError):  # other scoring settings are another scorecard
        recipes.cached_scorecard(dit, 3, guidance=1.0)
    with pytest.raises(ValueError, match="compute must return the Scorecard of recipe 'flux'"):
        recipes.cached_scorecard(recipes.get_recipe("flux"), 3, _card)


def test_score_counts_the_asked_classes_and_orders_the_grid_by_digit():
    """Scored with a 'classifier' that reads the class off the image's mean, an exact oracle scores 100%."""
    recipe = recipes.get_recipe("dit")
    levels = torch.linspace(-0.9, 0.9, 10, dtype=torch.float64)
    means = levels[:, None].expand(10, 784).clone()
    mixture = oracles.GaussianMixture(means, stds=0.01, labels=torch.arange(10))

    class MeanReader(torch.nn.Module):  # logits peak at the level nearest the image's mean
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return -(x.flatten(1).mean(1, keepdim=True) - levels.float()[None]).abs()

        def features(self, x):
            return torch.cat([x.flatten(1).mean(1, keepdim=True), x.flatten(1).std(1, keepdim=True)], 1)

    real = means.float().reshape(10, 1, 28, 28).repeat_interleave(2, 0)
    real_labels = torch.arange(10).repeat_interleave(2)
    oracle = mixture.as_model(recipe.path, "x0")
    card = recipes.score(recipe, oracle, MeanReader(), real, real_labels, steps=7, train_seconds=3.0,
                         n_per_class=2, n_steps=10)
    assert card.accuracy == 1.0 and card.n == 20 and card.nfe == 20 and card.steps == 7
    assert card.grid.shape == (20, 1, 28, 28)  # 2 per digit (fewer than 3 asked for): rows of digits 0 ... 9
    assert (card.grid.flatten(1).mean(1) - levels.float().repeat(2)).abs().max() < 0.05
    with pytest.raises(ValueError, match="real must hold 20 held-out digits"):
        recipes.score(recipe, oracle, MeanReader(), real[:5], real_labels, steps=7, train_seconds=3.0,
                      n_per_class=2, n_steps=10)
    with pytest.raises(ValueError, match="real_labels must be the 20 labels"):
        recipes.score(recipe, oracle, MeanReader(), real, real_labels[:3], steps=7, train_seconds=3.0,
                      n_per_class=2, n_steps=10)


@pytest.mark.parametrize("name", ["dit-eps", "flux"])
def test_error_by_snr_meets_the_exact_posterior_error_on_either_path(name):
    """Each class a Gaussian N(m_c, s^2 I): given the label, the best x0 error per pixel is s^2 / (1 + s^2 SNR)
    on any path (it depends on the path only through the SNR); the exact denoiser attains it, and without the
    label it can only do worse."""
    recipe, s2 = recipes.get_recipe(name), 0.04
    g = torch.Generator().manual_seed(3)
    means = 0.5 * torch.sign(torch.randn(10, 784, generator=g, dtype=torch.float64))
    mixture = oracles.GaussianMixture(means, stds=s2**0.5, labels=torch.arange(10))
    y = torch.arange(10).repeat(40)
    x0 = (means[y] + s2**0.5 * torch.randn(400, 784, generator=g, dtype=torch.float64)).reshape(400, 1, 28, 28)
    label, null = recipes.error_by_snr(recipe, mixture.as_model(recipe.path, recipe.target), x0, y)
    exact = torch.tensor([s2 / (1 + s2 * snr) for snr in recipes.SNRS], dtype=torch.float64)
    torch.testing.assert_close(label, exact, rtol=0.02, atol=0.0)  # 313,600 squared errors per level
    assert (null >= label - 1e-9).all() and null[-1] > 5 * label[-1]  # at SNR 0.001 the label is all it knows


def test_comparison_checks_its_inputs_and_keys_scorecards_by_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path))
    digits, labels = torch.rand(30, 1, 28, 28) * 2 - 1, torch.arange(30) % 10
    real, real_labels = torch.rand(20, 1, 28, 28), torch.arange(10).repeat_interleave(2)
    net = torch.nn.Linear(1, 1)  # stands in for the classifier: nothing is scored here
    bench = recipes.Comparison(digits, labels, 3, net, real, real_labels, 2)
    other = recipes.Comparison(digits.flip(0), labels.flip(0), 3, net, real, real_labels, 2)
    recipes.cached_scorecard(recipes.get_recipe("dit"), 3, _card, n_per_class=2, key=bench._key)
    assert recipes.cached_scorecard(recipes.get_recipe("dit"), 3, n_per_class=2, key=bench._key).fid == 12.5
    with pytest.raises(FileNotFoundError):  # other training digits: another scorecard
        recipes.cached_scorecard(recipes.get_recipe("dit"), 3, n_per_class=2, key=other._key)
    with pytest.raises(ValueError, match="labels must be the 30 labels of digits"):
        recipes.Comparison(digits, labels[:5], 3, net, real, real_labels, 2)
    with pytest.raises(ValueError, match="real must hold 30 held-out digits"):
        recipes.Comparison(digits, labels, 3, net, real, real_labels, 3)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        recipes.Comparison(digits, labels, 0, net, real, real_labels, 2)
    with pytest.raises(TypeError, match="classifier must be the scoring network"):
        recipes.Comparison(digits, labels, 3, "classifier", real, real_labels, 2)
    with pytest.raises(TypeError, match="key must be a dict"):
        recipes.cached_scorecard(recipes.get_recipe("dit"), 3, key="data")


def test_a_recipe_variant_trains_under_a_name_of_its_own(tmp_path, monkeypatch):
    """Chapter 10's 'weights or output?' row: a changed recipe (here the eps-DiT on the x0-loss) is trained and
    cached under its own name; a changed recipe that borrows a shipped recipe's name is refused (it would load
    that recipe's model)."""
    import dataclasses

    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path))
    digits, labels = torch.rand(30, 1, 28, 28) * 2 - 1, torch.arange(30) % 10
    real, real_labels = torch.rand(20, 1, 28, 28), torch.arange(10).repeat_interleave(2)
    bench = recipes.Comparison(digits, labels, 2, torch.nn.Linear(1, 1), real, real_labels, 2)
    reweighted = dataclasses.replace(recipes.get_recipe("dit-eps"), weighting="x0")
    with pytest.raises(ValueError, match="a changed recipe needs a name of its own, not 'dit-eps'"):
        bench.model(reweighted)
    with pytest.raises(TypeError, match="recipe must be a recipe name"):
        bench.scorecard(3)
    variant = dataclasses.replace(reweighted, name="dit-eps-x0w")
    assert variant.objective.kind == "ddpm" and variant.objective.options == {"weighting": "x0"}
    model = bench.model(variant)
    assert model.diffkit_objective == variant.objective
    assert [p.name.split("-")[:4] for p in tmp_path.glob("*.safetensors")] == [["ch10", "dit", "eps", "x0w"]]
