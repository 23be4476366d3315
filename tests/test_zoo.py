import pytest
import torch

from diffkit import cache, models, training, zoo


def test_the_ddpm_mnist_run_is_a_step_budget_in_fp32():
    for mode, steps in (("0", 1600), ("1", 30)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DIFFKIT_QUICK", mode)
            setup = zoo.ddpm_mnist_setup()
        config = setup["config"]
        assert isinstance(config, training.TrainConfig) and config.steps == steps
        assert config.mixed_precision is False  # the same numbers on a GPU as on a CPU
        assert setup["snapshots"] == ((800,) if mode == "0" else (15,))
    assert setup["objective"].to_dict()["target"] == "eps"
    assert setup["path"].alpha_bar.shape[0] == 1001  # alpha_bar_0 = 1 .. alpha_bar_N, N = 1000


def test_ddpm_mnist_unet_trains_once_and_then_loads_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path))
    small = zoo.ddpm_mnist_setup()
    small["config"] = training.TrainConfig(steps=2, batch_size=4, lr=1e-3, ema_decay=0.995)
    small["snapshots"] = (1,)
    monkeypatch.setattr(zoo, "ddpm_mnist_setup", lambda: small)
    first = zoo.ddpm_mnist_unet(verbose=False)
    files = list(tmp_path.glob("ddpm-mnist-unet-*.safetensors"))
    assert len(files) == 2 and isinstance(first, models.UNet) and not first.training  # the run and its snapshot
    again = zoo.ddpm_mnist_unet(verbose=False)
    half = zoo.ddpm_mnist_unet(1, verbose=False)  # the snapshot, loaded
    assert len(list(tmp_path.glob("ddpm-mnist-unet-*.safetensors"))) == 2
    for a, b, h in zip(first.state_dict().values(), again.state_dict().values(), half.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, h) for a, h in zip(first.state_dict().values(), half.state_dict().values()))
    with pytest.raises(ValueError, match="steps must be 2"):
        zoo.ddpm_mnist_unet(5, verbose=False)
    small["config"] = training.TrainConfig(steps=3, batch_size=4, lr=1e-3, ema_decay=0.995)
    zoo.ddpm_mnist_unet(verbose=False)  # another step budget is another model (its snapshot at 1 is loaded)
    assert len(list(tmp_path.glob("ddpm-mnist-unet-*.safetensors"))) == 3
    assert cache.cache_dir() == tmp_path
