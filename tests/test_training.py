import os

import pytest
import torch
from torch import nn

from diffkit import checkpoints, losses, oracles
from diffkit.training import EMA, TrainConfig, Trainer, TrainingDiverged


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Dropout(0.1), nn.Linear(64, 2))

    def forward(self, x, t, y=None):
        return self.f(torch.cat([x, t[:, None]], 1))


def cfm(model, x, y, g):
    return losses.cfm_loss(model, x, generator=g)


def toy_data():
    gmm = oracles.eight_gaussians()
    return gmm.sample(2000, generator=torch.Generator().manual_seed(0)).float()


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    config = TrainConfig(steps=40, batch_size=64, lr=1e-3, warmup_steps=5, checkpoint_every=15, ema_decay=0.9)
    torch.manual_seed(0)
    straight = Trainer(Net(), cfm, toy_data(), config, device="cpu")
    straight.fit(progress=False)

    ckpt = tmp_path / "run.safetensors"
    torch.manual_seed(0)
    first = Trainer(Net(), cfm, toy_data(), config, device="cpu", checkpoint_path=ckpt)
    first.fit(steps=23, progress=False)  # "crash" after 23 steps: the last periodic checkpoint is at 15 ...
    assert checkpoints.read_metadata(ckpt)["step"] == 23  # ... plus the one written at the end of fit
    torch.manual_seed(123)  # a different global RNG state and a different init: all must come from the checkpoint
    resumed = Trainer(Net(), cfm, toy_data(), config, device="cpu", checkpoint_path=ckpt)
    assert resumed.step == 23
    resumed.fit(progress=False)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.losses == resumed.losses


def test_training_reduces_the_loss():
    trainer = Trainer(Net(), cfm, toy_data(), TrainConfig(steps=300, batch_size=128, lr=3e-3), device="cpu")
    hist = trainer.fit(progress=False)
    assert sum(hist[-30:]) / 30 < 0.7 * sum(hist[:30]) / 30


def test_nan_loss_stops_training_and_keeps_the_checkpoint(tmp_path):
    ckpt = tmp_path / "run.safetensors"
    calls = {"n": 0}

    def flaky(model, x, y, g):
        calls["n"] += 1
        loss = cfm(model, x, y, g)
        return loss * float("nan") if calls["n"] == 8 else loss

    config = TrainConfig(steps=20, batch_size=16, checkpoint_every=5)
    trainer = Trainer(Net(), flaky, toy_data(), config, device="cpu", checkpoint_path=ckpt)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 8"):
        trainer.fit(progress=False)
    assert checkpoints.read_metadata(ckpt)["step"] == 5
    assert trainer.step == 7


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    checkpoints.save(path, {"w": torch.ones(3)}, {"step": 1})

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save(path, {"w": torch.zeros(3)}, {"step": 2})
    tensors, meta = checkpoints.load(path)
    assert torch.equal(tensors["w"], torch.ones(3)) and meta["step"] == 1
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no temporary file left behind


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError, match="cannot read checkpoint"):
        checkpoints.load(bad)
    with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
        checkpoints.load(tmp_path / "missing.safetensors")


def test_resuming_with_another_config_is_refused(tmp_path):
    ckpt = tmp_path / "run.safetensors"
    Trainer(Net(), cfm, toy_data(), TrainConfig(steps=3, batch_size=8), device="cpu", checkpoint_path=ckpt).fit(progress=False)
    with pytest.raises(checkpoints.CheckpointError, match="different TrainConfig"):
        Trainer(Net(), cfm, toy_data(), TrainConfig(steps=3, batch_size=8, lr=1.0), device="cpu", checkpoint_path=ckpt)


def test_ema_follows_its_formula():
    model = nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.5)
    expected = model.weight.item()
    for k, w in enumerate([1.0, 2.0, 3.0, 4.0]):
        with torch.no_grad():
            model.weight.fill_(w)
        ema.update(model)
        d = min(0.5, (1 + k) / (10 + k))
        expected = d * expected + (1 - d) * w
        assert ema.model.weight.item() == pytest.approx(expected)


def test_batches_come_from_the_data_and_labels_stay_paired():
    x = torch.arange(100, dtype=torch.float32)[:, None].repeat(1, 2)
    y = torch.arange(100)
    seen = []

    def record(model, xb, yb, g):
        seen.append((xb, yb))
        return model(xb, torch.zeros(len(xb)), yb).pow(2).mean()

    Trainer(Net(), record, (x, y), TrainConfig(steps=3, batch_size=16), device="cpu").fit(progress=False)
    for xb, yb in seen:
        assert torch.equal(xb[:, 0].long(), yb)


def test_bad_input():
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainConfig(steps=1, lr=0.0)
    with pytest.raises(TypeError, match="data must be a tensor"):
        Trainer(Net(), cfm, [1, 2, 3], TrainConfig(steps=1), device="cpu")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        Trainer(lambda x, t: x, cfm, toy_data(), TrainConfig(steps=1), device="cpu")
    with pytest.raises(TypeError, match="loss_fn must return a scalar tensor"):
        Trainer(Net(), lambda m, x, y, g: m(x, torch.zeros(len(x))), toy_data(), TrainConfig(steps=1),
                device="cpu").fit(progress=False)


def test_train_returns_the_ema_weights():
    config = TrainConfig(steps=20, batch_size=32, ema_decay=0.5)
    from diffkit.training import train

    torch.manual_seed(0)
    ema_model = train(Net(), cfm, toy_data(), config, device="cpu", progress=False)
    torch.manual_seed(0)
    trainer = Trainer(Net(), cfm, toy_data(), config, device="cpu")
    trainer.fit(progress=False)
    assert not ema_model.training
    for a, b in zip(ema_model.parameters(), trainer.ema_model.parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(ema_model.parameters(), trainer.model.parameters()))


def test_time_budget_stops_training_early():
    trainer = Trainer(Net(), cfm, toy_data(), TrainConfig(steps=10**6, batch_size=32), device="cpu")
    trainer.fit(max_seconds=0.5, progress=False)
    assert 0 < trainer.step < 10**6 and 0.4 < trainer.seconds < 5.0


def test_device_is_chosen_automatically(monkeypatch):
    from diffkit.training import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert default_device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert default_device().type == "cpu"
