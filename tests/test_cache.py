import pytest
import torch
from torch import nn

from diffkit import cache, checkpoints


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path))


def _trainer(counter):
    def train(model):
        counter.append(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(len(counter))  # a "training" whose result depends on the run
        return model
    return train


def test_second_call_loads_instead_of_retraining():
    calls = []
    config = {"model": {"width": 4}, "train": {"steps": 10, "lr": 1e-3}}
    a = cache.cached_model("toy", config, lambda: nn.Linear(4, 4), _trainer(calls), verbose=False)
    b = cache.cached_model("toy", config, lambda: nn.Linear(4, 4), _trainer(calls), verbose=False)
    assert len(calls) == 1
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)


def test_changed_config_never_loads_a_stale_model():
    calls = []
    cache.cached_model("toy", {"steps": 10}, lambda: nn.Linear(2, 2), _trainer(calls), verbose=False)
    cache.cached_model("toy", {"steps": 11}, lambda: nn.Linear(2, 2), _trainer(calls), verbose=False)
    cache.cached_model("toy", {"steps": 10, "seed": 1}, lambda: nn.Linear(2, 2), _trainer(calls), verbose=False)
    assert len(calls) == 3


def test_a_file_for_another_config_is_not_trusted():
    calls = []
    config = {"steps": 10}
    cache.cached_model("toy", config, lambda: nn.Linear(2, 2), _trainer(calls), verbose=False)
    path = cache.cache_path("toy", config)
    tensors, meta = checkpoints.load(path)
    checkpoints.save(path, tensors, {**meta, "config": {"steps": 999}})  # as if the key had collided
    with pytest.warns(UserWarning, match="another configuration"):
        cache.cached_model("toy", config, lambda: nn.Linear(2, 2), _trainer(calls), verbose=False)
    assert len(calls) == 2


def test_corrupt_cache_file_is_retrained_not_fatal():
    calls = []
    config = {"steps": 1}
    path = cache.cache_path("toy", config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="could not be loaded"):
        cache.cached_model("toy", config, lambda: nn.Linear(2, 2), _trainer(calls), verbose=False)
    assert len(calls) == 1


def test_bad_input():
    with pytest.raises(TypeError, match="config must contain only"):
        cache.config_key("toy", {"fn": lambda x: x})
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        cache.cache_path("a/b", {})
    with pytest.raises(TypeError, match="train must return the trained torch.nn.Module"):
        cache.cached_model("toy", {"x": 1}, lambda: nn.Linear(2, 2), lambda m: None, verbose=False)
