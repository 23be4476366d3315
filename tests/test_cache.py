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
    from diffkit.training import TrainConfig

    with pytest.raises(TypeError, match="config must contain only"):
        cache.config_key("toy", {"fn": lambda x: x})
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        cache.cache_path("a/b", {})
    with pytest.raises(TypeError, match="train must return the trained torch.nn.Module"):
        cache.cached_model("toy", {"x": 1}, lambda: nn.Linear(2, 2), lambda m: None, verbose=False)
    with pytest.raises(TypeError, match="config must be a diffkit.training.TrainConfig when cached_model trains"):
        cache.cached_model("toy", {"x": 1}, _mlp)
    with pytest.raises(TypeError, match="pass both, or your own train="):
        cache.cached_model("toy", TrainConfig(steps=1), _mlp, data=_toy)


# --- the key covers the objective and the data -------------------------------------------------------------------
def _toy(n, g):
    return torch.randn(n, 2, generator=g), None


def _shifted(n, g):
    return torch.randn(n, 2, generator=g) + 1, None


def _mlp():
    from diffkit.models import MLP

    return MLP(hidden=8, depth=1, time_dim=4)


def _cached(objective, data, config=None, **kwargs):
    from diffkit.training import TrainConfig

    return cache.cached_model("toy-mlp", config or TrainConfig(steps=2, batch_size=8), _mlp, objective=objective,
                              data=data, verbose=False, **kwargs)


def test_changing_the_loss_or_the_data_trains_a_new_model(tmp_path):
    from diffkit import losses, paths

    vp = paths.VPPath()
    first, info = _cached(losses.objective("ddpm", path=vp), _toy)
    again, _ = _cached(losses.objective("ddpm", path=vp), _toy)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1 and info.target == "eps"
    for p, q in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(p, q)
    for objective, data in [(losses.objective("ddpm", path=vp, target="v"), _toy),  # target
                            (losses.objective("ddpm", path=paths.VPPath(beta_max=10.0)), _toy),  # path
                            (losses.objective("ddpm", path=vp, weighting="min_snr"), _toy),  # option
                            (losses.objective("cfm"), _toy),  # kind
                            (losses.objective("ddpm", path=vp), _shifted)]:  # data
        _, info = _cached(objective, data)
        assert info.objective == objective
    assert len(list(tmp_path.glob("*.safetensors"))) == 6  # one model per configuration, none reused


def test_a_cached_model_is_a_model_file_and_its_training_is_reproducible(tmp_path):
    from diffkit import losses

    model, info = _cached(losses.objective("cfm"), _toy)
    (file,) = tmp_path.glob("*.safetensors")
    loaded, loaded_info = checkpoints.load_model(file)
    assert loaded_info == info and info.target == "velocity" and info.step == 2
    retrained, _ = _cached(losses.objective("cfm"), _toy, refresh=True)  # the seed fixes init and training
    for p, q, r in zip(model.state_dict().values(), loaded.state_dict().values(), retrained.state_dict().values()):
        assert torch.equal(p, q) and torch.equal(p, r)


def test_a_managed_file_for_another_key_is_not_trusted(tmp_path):
    from diffkit import losses

    _cached(losses.objective("cfm"), _toy)
    (file,) = tmp_path.glob("*.safetensors")
    tensors, meta = checkpoints.load(file)
    checkpoints.save(file, tensors, {**meta, "key": {"config": "another"}})  # as if the key had collided
    with pytest.warns(UserWarning, match="another configuration"):
        _cached(losses.objective("cfm"), _toy)
    assert checkpoints.read_metadata(file)["key"] != {"config": "another"}  # retrained and rewritten


def test_objective_and_data_join_the_key_of_a_custom_training():
    import diffkit.losses as losses

    calls = []
    x = torch.randn(10, 2)
    for objective, data in [(losses.objective("cfm"), x), (losses.objective("cfm"), x.clone()),
                            (losses.objective("cfm", t_dist="logit_normal"), x), (losses.objective("cfm"), x + 1e-3)]:
        cache.cached_model("toy", {"steps": 1}, lambda: nn.Linear(2, 2), _trainer(calls), objective=objective,
                           data=data, verbose=False)
    assert len(calls) == 3  # the clone has the same fingerprint; the other loss and the other data retrain


def test_fingerprint():
    x, y = torch.randn(6, 2), torch.arange(6)
    assert cache.fingerprint(x) == cache.fingerprint(x.clone())
    x2 = x.clone()
    x2[3, 1] += 1e-6
    prints = {cache.fingerprint(v) for v in (x, x2, x.double(), (x, y), (x, None), (x, y.flip(0)), _toy, _shifted)}
    assert len(prints) == 8
    with pytest.raises(ValueError, match="two draws with the same seed differ"):
        cache.fingerprint(lambda n, g: (torch.randn(n, 2), None))  # ignores its generator


def test_an_unwritable_cache_fails_before_training(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path / "a_file" / "cache"))
    calls = []
    with pytest.raises(checkpoints.CheckpointError, match="DIFFKIT_CACHE_DIR.*cannot write to"):
        cache.cached_model("toy", {"steps": 1}, lambda: nn.Linear(2, 2), _trainer(calls), verbose=False)
    assert calls == []


def test_a_cached_model_records_its_objective_whether_trained_or_loaded():
    from diffkit import losses, paths
    from diffkit.training import TrainConfig, Trainer

    objective = losses.objective("dsm", path=paths.VEPath(sigma_max=5.0))
    trained, info = _cached(objective, _toy)
    loaded, _ = _cached(objective, _toy)
    assert trained.diffkit_objective == loaded.diffkit_objective == info.objective == objective

    def train(model):  # a custom training closure that trains through a Trainer
        trainer = Trainer(model, objective, _toy, TrainConfig(steps=1, batch_size=8), device="cpu")
        trainer.fit(progress=False)
        return trainer.ema_model

    for _ in range(2):  # trained, then loaded from the file
        model = cache.cached_model("toy-custom", {"steps": 1}, _mlp, train, verbose=False)
        assert model.diffkit_objective == objective
    for _ in range(2):  # a closure of one's own with objective=: the model records that objective
        model = cache.cached_model("toy-plain", {"steps": 1}, _mlp, lambda m: m, objective=objective, verbose=False)
        assert model.diffkit_objective == objective


def test_a_snapshot_is_the_shorter_run_and_leaves_the_final_model_unchanged(tmp_path):
    from diffkit import losses
    from diffkit.training import TrainConfig

    objective = losses.objective("cfm")
    long_config, short_config = TrainConfig(steps=9, batch_size=8), TrainConfig(steps=4, batch_size=8)
    final, info = _cached(objective, _toy, long_config, snapshots=(4,))
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and info.step == 9
    snap, snap_info = _cached(objective, _toy, short_config)  # loaded: no third file
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and snap_info.step == 4
    alone, _ = _cached(objective, _toy, short_config, refresh=True)  # 4 steps trained on their own
    plain, _ = _cached(objective, _toy, long_config, refresh=True)  # 9 steps without the snapshot
    changed = False
    for s, a, f, p in zip(*(m.state_dict().values() for m in (snap, alone, final, plain))):
        assert torch.equal(s, a) and torch.equal(f, p)
        changed |= not torch.equal(s, f)
    assert changed  # the snapshot is not the final model


def test_snapshots_must_lie_inside_the_run():
    from diffkit import losses
    from diffkit.training import TrainConfig

    for bad in [(0,), (9,), (12,), (2.5,), 4]:
        with pytest.raises((ValueError, TypeError), match="snapshots"):
            _cached(losses.objective("cfm"), _toy, TrainConfig(steps=9, batch_size=8), snapshots=bad)
    with pytest.raises(ValueError, match="managed"):
        cache.cached_model("toy", {"steps": 3}, lambda: nn.Linear(2, 2), _trainer([]), snapshots=(1,))


def test_seconds_saved_adds_the_recorded_training_of_each_loaded_run_once(monkeypatch):
    """A chapter run from the cache states its cold cost as its own time plus what loading skipped: the
    training times recorded in the files, a snapshot counted with its run, never on top of it."""
    from diffkit import losses, paths
    from diffkit.training import TrainConfig

    monkeypatch.setattr(cache, "_LOADED_RUNS", {})
    monkeypatch.setattr(cache, "_TRAINED_RUNS", set())
    clock = iter([100.0, 107.5, 200.0, 202.0])  # the two runs train in 7.5 s and 2 s by the cache's clock
    real_clock = cache.time.perf_counter
    monkeypatch.setattr(cache.time, "perf_counter", lambda: next(clock))
    cache.cached_model("toy-timed", {"steps": 1}, _mlp, lambda m: m, verbose=False)
    cache.cached_model("toy-timed", {"steps": 2}, _mlp, lambda m: m, verbose=False)
    assert cache.seconds_saved() == 0.0  # both trained in this process

    monkeypatch.setattr(cache, "_TRAINED_RUNS", set())  # a new process: both load
    for _ in range(2):  # loading one run twice counts it once
        cache.cached_model("toy-timed", {"steps": 1}, _mlp, lambda m: m, verbose=False)
    cache.cached_model("toy-timed", {"steps": 2}, _mlp, lambda m: m, verbose=False)
    assert cache.seconds_saved() == 9.5

    monkeypatch.setattr(cache.time, "perf_counter", real_clock)
    objective = losses.objective("dsm", path=paths.VEPath(sigma_max=5.0))
    config = TrainConfig(steps=4, batch_size=8)
    cache.cached_model("toy-snap", config, _mlp, objective=objective, data=_toy, snapshots=(2,), verbose=False)
    monkeypatch.setattr(cache, "_LOADED_RUNS", {})
    monkeypatch.setattr(cache, "_TRAINED_RUNS", set())
    cache.cached_model("toy-snap", config, _mlp, objective=objective, data=_toy, verbose=False)
    runs = dict(cache._LOADED_RUNS)
    cache.cached_model("toy-snap", TrainConfig(steps=2, batch_size=8), _mlp, objective=objective, data=_toy,
                       verbose=False)  # the snapshot at step 2 of the same run
    assert len(runs) == 1 and cache._LOADED_RUNS == runs  # counted with its run, not beside it
