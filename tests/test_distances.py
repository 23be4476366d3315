import math

import pytest
import torch

import functools

from diffkit import distances
from diffkit.distances import energy_distance, mmd, null_band, sliced_wasserstein, with_null_band


def _gaussians(n, shift, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64) + shift
    return x, y


def test_mmd_matches_closed_form_for_shifted_gaussians():
    """For N(0, I) vs N(m, I) in d dims and one RBF bandwidth h:
    MMD^2 = 2 (h^2 / (h^2 + 2))^(d/2) (1 - exp(-|m|^2 / (2 (h^2 + 2))))."""
    d, h = 2, 1.0
    m = torch.tensor([1.0, 0.5], dtype=torch.float64)
    x, y = _gaussians(4000, m, d)
    closed = 2 * (h**2 / (h**2 + 2)) ** (d / 2) * (1 - math.exp(-(m**2).sum().item() / (2 * (h**2 + 2))))
    assert mmd(x, y, bandwidths=(h,)).item() == pytest.approx(closed, rel=0.05)
    x2, _ = _gaussians(4000, 0.0, d, seed=1)
    assert abs(mmd(x, x2, bandwidths=(h,)).item()) < 0.01 * closed * 10  # same law: ~0 (unbiased, may dip below)


def test_sliced_wasserstein_closed_form():
    """Same covariance, shifted by m: W2 along direction theta is |theta . m|, so SW^2 = |m|^2 / d."""
    m = torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    x, y = _gaussians(20000, m, 3)
    sw = sliced_wasserstein(x, y, n_projections=2000, generator=torch.Generator().manual_seed(0))
    assert sw.item() ** 2 == pytest.approx(4.0 / 3, rel=0.05)


def test_energy_distance_closed_form_in_1d():
    """X ~ N(0,1), Y ~ N(mu,1): E|X-Y| = E|N(mu, 2)|, E|X-X'| = E|Y-Y'| = 2/sqrt(pi)."""
    mu = 1.0
    x, y = _gaussians(6000, mu, 1)
    s = math.sqrt(2)
    e_xy = s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * (1 - 2 * 0.5 * (1 + math.erf(-mu / (s * math.sqrt(2)))))
    closed = 2 * e_xy - 2 * 2 / math.sqrt(math.pi)
    assert energy_distance(x, y).item() == pytest.approx(closed, rel=0.05)


def test_identical_sets():
    x = torch.randn(500, 2, dtype=torch.float64)
    assert mmd(x, x, unbiased=False).item() == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(x, x).item() == pytest.approx(0.0, abs=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="same number of columns"):
        mmd(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        energy_distance(torch.zeros(1, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="equally many samples"):
        sliced_wasserstein(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="x contains NaN"):
        mmd(torch.full((4, 2), float("nan")), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="bandwidths must be"):
        mmd(torch.randn(4, 2), torch.randn(4, 2), bandwidths=(0.0,))


def _true(n, g):
    return torch.randn(n, 2, generator=g, dtype=torch.float64)


def test_null_band_is_the_distance_from_fresh_true_sets_to_one_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path))
    band = null_band(mmd, _true, 200, pairs=30, seed=3)
    reference = _true(200, torch.Generator().manual_seed(3))
    torch.testing.assert_close(band.reference, reference, rtol=0, atol=0)
    want = torch.tensor([mmd(_true(200, torch.Generator().manual_seed(3 + k)), reference).item()
                         for k in range(1, 31)], dtype=torch.float64)
    torch.testing.assert_close(band.values, want, rtol=0, atol=0)
    assert band.mean == pytest.approx(want.mean().item()) and band.sd == pytest.approx(want.std().item())
    assert band.upper == pytest.approx(torch.quantile(want, 0.95).item()) and band.pairs == 30
    wrong = torch.randn(300, 2, dtype=torch.float64) + 0.5  # a wrong model
    shifted = band.measure(wrong)
    assert shifted.value == mmd(wrong[:200], reference).item()
    assert not shifted.in_band and shifted.z > 10 and "above the null band" in str(shifted)


def test_a_perfect_model_lands_in_the_band_at_about_its_stated_rate(tmp_path, monkeypatch):
    """Fresh true sets fall at or below the 95% quantile about 95% of the time (not half the time, as a band built
    from true-vs-true pairs with a different reference does)."""
    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path))
    band = null_band(energy_distance, _true, 100, pairs=60, seed=0)
    hits = [band.measure(_true(100, torch.Generator().manual_seed(1000 + k))).in_band for k in range(200)]
    rate = sum(hits) / len(hits)
    assert 0.85 < rate <= 1.0, rate  # 95% nominal; 60 null draws give a quantile good to a few percent
    assert (band.values < 0).any() and (band.values > 0).any()  # unbiased: no clamping at 0


def test_null_band_is_cached_on_disk_by_metric_data_and_n(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path))
    calls = []

    def counted(n, g):
        calls.append(n)
        return _true(n, g)

    first = null_band(mmd, counted, 50, pairs=30)
    assert len(list((tmp_path / "bands").glob("*.json"))) == 1
    calls.clear()
    again = null_band(mmd, counted, 50, pairs=30)
    assert len(calls) == 2  # only the reference and the first fresh set, drawn to check the key
    torch.testing.assert_close(again.values, first.values, rtol=0, atol=0)
    other = null_band(functools.partial(mmd, bandwidths=(1.0,)), counted, 50, pairs=30)  # another metric
    shifted = null_band(mmd, lambda n, g: _true(n, g) + 1, 50, pairs=30)  # other data
    assert not torch.equal(other.values, first.values) and not torch.equal(shifted.values, first.values)
    assert len(list((tmp_path / "bands").glob("*.json"))) == 3
    null_band(lambda x, y: mmd(x, y), counted, 50, pairs=30)  # a lambda is never cached: its name says nothing
    assert len(list((tmp_path / "bands").glob("*.json"))) == 3


def test_with_null_band_measures_against_the_band_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path))
    samples = torch.randn(300, 2, dtype=torch.float64) + 0.5
    m = with_null_band(mmd, samples, _true, 200, seed=3)
    band = null_band(mmd, _true, 200, seed=3)
    assert m.value == mmd(samples[:200], band.reference).item() and m.band.n == 200
    assert m.z == pytest.approx((m.value - band.mean) / band.sd) and float(m) == m.value
    assert len(str(m)) <= 90  # one line in the book's column


def test_null_band_bad_input():
    x = torch.randn(10, 2)
    with pytest.raises(TypeError, match="metric must be a function"):
        with_null_band("mmd", x, _true)
    with pytest.raises(ValueError, match="n must be at most the number of samples"):
        with_null_band(mmd, x, _true, 20)
    with pytest.raises(ValueError, match=r"must return \(10, 2\) like samples, got \(10, 3\)"):
        with_null_band(mmd, x, lambda n, g: torch.randn(n, 3, generator=g), pairs=2)
    with pytest.raises(ValueError, match="quantile must be"):
        null_band(mmd, _true, 10, quantile=95)
    with pytest.raises(ValueError, match="pairs must be"):
        null_band(mmd, _true, 10, pairs=1)
    band = null_band(mmd, _true, 10, pairs=5, seed=1)
    with pytest.raises(ValueError, match="at least n = 10 rows"):
        band.measure(torch.randn(5, 2))
    with pytest.raises(ValueError, match="2 columns"):
        band.measure(torch.randn(10, 3))
    with pytest.raises(TypeError, match=r"bandwidths=\[0.5\]"):
        mmd(x, x, bandwidths=0.5)
    for bad in ([float("nan")], [float("inf")], [1.0, -1.0]):
        with pytest.raises(ValueError, match="bandwidths must be a non-empty list of positive numbers"):
            mmd(x, x, bandwidths=bad)
    with pytest.raises(ValueError, match=r"flatten images with x.flatten\(1\)"):
        mmd(torch.randn(4, 1, 2, 2), torch.randn(4, 4))
    assert not hasattr(distances, "with_noise_floor")
