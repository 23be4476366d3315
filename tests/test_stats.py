import math

import pytest
import torch

from diffkit import stats


def test_mean_se_is_the_sample_mean_and_its_standard_error():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]], dtype=torch.float64)
    mean, se = stats.mean_se(x)
    torch.testing.assert_close(mean, torch.tensor([3.0, 6.0], dtype=torch.float64))
    torch.testing.assert_close(se, torch.tensor([2.0, 4.0], dtype=torch.float64) / math.sqrt(3))


def test_check_close_passes_within_and_fails_beyond_the_limit():
    assert stats.check_close(1.0, 1.2, 0.1) == pytest.approx(2.0)
    with pytest.raises(AssertionError, match=r"posterior: 1 vs exact 1.6 is -6.0 standard errors off \(limit 5\)"):
        stats.check_close(1.0, 1.6, 0.1, name="posterior")
    est = torch.tensor([0.0, 0.0, 3.0])
    with pytest.raises(AssertionError, match=r"3 vs exact 0 is \+6.0"):  # the worst entry is reported
        stats.check_close(est, 0.0, torch.tensor([1.0, 1.0, 0.5]))
    assert stats.check_close(est, 0.0, 1.0, max_z=3) == pytest.approx(3.0)


def test_check_close_holds_its_false_alarm_rate_on_true_estimates():
    g = torch.Generator().manual_seed(0)
    zs = []
    for _ in range(200):
        x = torch.randn(400, generator=g, dtype=torch.float64) * 2 + 1
        mean, se = stats.mean_se(x)
        zs.append(float(stats.z_score(mean, 1.0, se)))
    z = torch.tensor(zs)
    assert abs(z.mean()) < 0.3 and 0.8 < z.std() < 1.2  # z is standard normal when the estimate is right


def test_stats_bad_input():
    with pytest.raises(ValueError, match="se must be positive"):
        stats.check_close(1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="max_z must be"):
        stats.check_close(1.0, 1.0, 1.0, max_z=0)
    with pytest.raises(TypeError, match="estimate must be a number or a tensor"):
        stats.check_close("1", 1.0, 1.0)
    with pytest.raises(ValueError, match="at least 2 draws"):
        stats.mean_se(torch.ones(1))
    with pytest.raises(TypeError, match="floating-point"):
        stats.mean_se(torch.ones(3, dtype=torch.int64))
    with pytest.raises(AssertionError, match="NaN"):
        stats.check_close(float("nan"), 1.0, 1.0)
