import pytest
import torch
from torch import nn

import diffkit
from diffkit import checkpoints, losses, oracles, paths
from diffkit.models import MLP, DiT, RecordsConfig, UNet
from diffkit.training import TrainConfig, Trainer


def toy(n, g):
    return oracles.eight_gaussians().sample(n, generator=g).float(), torch.randint(0, 3, (n,), generator=g)


def trained(objective=None, steps=4, **kwargs):
    objective = objective or losses.objective("ddpm", path=paths.DiscretePath.from_schedule("cosine", 100), target="v")
    trainer = Trainer(lambda: MLP(hidden=16, depth=2, time_dim=8, num_classes=3), objective, toy,
                      TrainConfig(steps=steps, batch_size=16, ema_decay=0.5), device="cpu", **kwargs)
    trainer.fit(progress=False)
    return trainer


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_trained_model_saves_and_loads_in_one_call_each(tmp_path):
    trainer = trained()
    file = checkpoints.save_model(tmp_path / "mlp.safetensors", trainer)
    model, info = checkpoints.load_model(file)
    assert type(model) is MLP and not model.training and info.weights == "ema"
    assert model.config == trainer.model.config and same_weights(model, trainer.ema_model)
    x, t, y = torch.randn(5, 2), torch.rand(5), torch.tensor([0, 1, 2, 0, 1])
    assert torch.equal(model(x, t, y), trainer.ema_model(x, t, y))
    assert info.objective == trainer.objective and info.target == "v"
    assert torch.equal(info.path.betas, trainer.objective.path.betas)  # the very path, from the file alone
    assert info.step == 4 and info.train_config["batch_size"] == 16 and info.version == diffkit.__version__
    raw, info = checkpoints.load_model(file, weights="raw")
    assert info.weights == "raw" and same_weights(raw, trainer.model) and not same_weights(raw, model)


def test_a_trainer_checkpoint_is_a_model_file_too(tmp_path):
    ckpt = tmp_path / "run.safetensors"
    trainer = trained(losses.objective("cfm", t_dist="logit_normal"), checkpoint_path=ckpt)
    model, info = checkpoints.load_model(ckpt)
    assert same_weights(model, trainer.ema_model) and info.objective == losses.objective("cfm", t_dist="logit_normal")


@pytest.mark.parametrize("build", [
    lambda: UNet(base_channels=8, channel_mults=(1, 2), attention_resolutions=(4,), image_size=8, num_classes=2),
    lambda: DiT(image_size=8, patch_size=4, hidden=16, depth=1, heads=2, conditioning="cross_attention",
                learn_sigma=True),
], ids=["unet", "dit"])
def test_every_diffkit_model_is_rebuilt_from_its_file(tmp_path, build):
    model = build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the init: the weights must come from the file
    checkpoints.save_model(tmp_path / "m.safetensors", model, objective=losses.objective("cfm"))
    loaded, info = checkpoints.load_model(tmp_path / "m.safetensors")
    assert type(loaded) is type(model) and loaded.config == model.config and same_weights(loaded, model)
    assert info.weights == "raw" and info.target == "velocity" and info.step is None


def test_loading_into_another_architecture_says_so(tmp_path):
    file = checkpoints.save_model(tmp_path / "mlp.safetensors", trained())
    with pytest.raises(checkpoints.CheckpointError, match="holds a diffkit.models.mlp.MLP, not a .*UNet"):
        checkpoints.load_weights(file, UNet())
    with pytest.raises(checkpoints.CheckpointError, match="another architecture") as err:
        checkpoints.load_weights(file, MLP(hidden=32, depth=2, time_dim=8, num_classes=3))
    assert [line.strip() for line in str(err.value).splitlines()[1:]] == ["hidden: 16 in the checkpoint, 32 now"]
    with pytest.raises(checkpoints.CheckpointError, match="another architecture than this Linear"):
        checkpoints.load_weights(file, nn.Linear(2, 2))  # a model that does not record its arguments
    target = MLP(hidden=16, depth=2, time_dim=8, num_classes=3)
    info = checkpoints.load_weights(file, target)
    model, _ = checkpoints.load_model(file)
    assert info.target == "v" and same_weights(target, model)


class Mine(RecordsConfig):
    def __init__(self, width: int = 3):
        super().__init__()
        self.lin = nn.Linear(width, width)


def test_a_model_class_of_ones_own_is_passed_in(tmp_path):
    model = Mine(width=5)
    assert model.config == {"width": 5}
    checkpoints.save_model(tmp_path / "mine.safetensors", model)
    with pytest.raises(checkpoints.CheckpointError, match=r"not one of diffkit's: pass it as classes=\[Mine\]"):
        checkpoints.load_model(tmp_path / "mine.safetensors")
    loaded, info = checkpoints.load_model(tmp_path / "mine.safetensors", classes=[Mine])
    assert isinstance(loaded, Mine) and same_weights(loaded, model) and info.objective is None


def test_bad_input(tmp_path):
    with pytest.raises(TypeError, match="does not record its constructor arguments"):
        checkpoints.save_model(tmp_path / "a.safetensors", nn.Linear(2, 2))
    with pytest.raises(ValueError, match="is a directory"):
        checkpoints.save_model(tmp_path, MLP())
    with pytest.raises(TypeError, match="objective must be a diffkit.losses.Objective"):
        checkpoints.save_model(tmp_path / "a.safetensors", MLP(), objective="cfm")
    with pytest.raises(TypeError, match="source must be a diffkit.training.Trainer or a torch.nn.Module"):
        checkpoints.save_model(tmp_path / "a.safetensors", 3)
    file = checkpoints.save_model(tmp_path / "a.safetensors", MLP())
    with pytest.raises(checkpoints.CheckpointError, match="holds no EMA weights"):
        checkpoints.load_model(file, weights="ema")
    with pytest.raises(ValueError, match="weights must be 'ema', 'raw' or None"):
        checkpoints.load_model(file, weights="best")
    checkpoints.save(tmp_path / "bare.safetensors", {"w": torch.ones(1)})
    with pytest.raises(checkpoints.CheckpointError, match="does not say which model it holds"):
        checkpoints.load_model(tmp_path / "bare.safetensors")


def test_a_loaded_model_records_its_objective_for_the_samplers(tmp_path):
    trainer = trained()
    assert trainer.model.diffkit_objective == trainer.objective == trainer.ema_model.diffkit_objective
    model, info = checkpoints.load_model(checkpoints.save_model(tmp_path / "mlp.safetensors", trainer))
    assert model.diffkit_objective == info.objective and model.diffkit_objective.target == "v"
    fresh = MLP(hidden=16, depth=2, time_dim=8, num_classes=3)
    checkpoints.load_weights(tmp_path / "mlp.safetensors", fresh)
    assert fresh.diffkit_objective == info.objective
    # a bare model that records its objective keeps it through save_model without objective=
    model2, info2 = checkpoints.load_model(checkpoints.save_model(tmp_path / "ema.safetensors", trainer.ema_model))
    assert info2.objective == trainer.objective and model2.diffkit_objective == trainer.objective
    # a loss of one's own records nothing, and removes a stale record
    plain = Trainer(model, lambda m, x0, y, g: m(x0, torch.rand(x0.shape[0]), y).pow(2).mean(), toy,
                    TrainConfig(steps=1, batch_size=4), device="cpu")
    assert getattr(plain.model, "diffkit_objective", None) is None
