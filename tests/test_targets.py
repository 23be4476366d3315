import itertools

import pytest
import torch

from diffkit import paths, targets
from tests.conftest import all_paths, path_id


def _batch(path, n=64, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, d, generator=g, dtype=torch.float64)
    eps = torch.randn(n, d, generator=g, dtype=torch.float64)
    t = 0.02 + 0.96 * torch.rand(n, generator=g, dtype=torch.float64)
    return x0, eps, t, path.sample(x0, t, eps)


@pytest.mark.parametrize("path", all_paths(), ids=path_id)
def test_every_conversion_round_trips(path):
    x0, eps, t, s = _batch(path)
    for src, dst in itertools.permutations(targets.TARGETS, 2):
        pred = targets.from_x0_eps(x0, eps, src, s.x_t, t, path)
        there = targets.convert(pred, src, dst, s.x_t, t, path)
        back = targets.convert(there, dst, src, s.x_t, t, path)
        torch.testing.assert_close(back, pred, rtol=1e-9, atol=1e-9, msg=f"{src} -> {dst} -> {src}")
        # and the converted prediction is the true target of the other kind
        torch.testing.assert_close(there, targets.from_x0_eps(x0, eps, dst, s.x_t, t, path), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("path", all_paths(), ids=path_id)
def test_velocity_target_is_dx_dt(path):
    x0, eps, t, s = _batch(path)
    torch.testing.assert_close(targets.from_x0_eps(x0, eps, "velocity", s.x_t, t, path), s.velocity)
    h = 1e-6 if not path.discrete else 1e-3 / path.n_steps
    fd = (path.sample(x0, t + h, eps).x_t - path.sample(x0, t - h, eps).x_t) / (2 * h)
    if not path.discrete:
        torch.testing.assert_close(s.velocity, fd, rtol=1e-5, atol=1e-6)


def test_v_to_eps_textbook_formula_and_a_common_bug():
    """For alpha^2 + sigma^2 = 1: eps = alpha v + sigma x_t. The swapped version is a published bug."""
    path = paths.CosinePath()
    x0, eps, t, s = _batch(path)
    v = targets.from_x0_eps(x0, eps, "v", s.x_t, t, path)
    a, sg = path.alpha(t)[:, None], path.sigma(t)[:, None]
    torch.testing.assert_close(targets.convert(v, "v", "eps", s.x_t, t, path), a * v + sg * s.x_t)
    torch.testing.assert_close(targets.convert(v, "v", "x0", s.x_t, t, path), a * s.x_t - sg * v)
    wrong = sg * v + a * s.x_t
    assert (wrong - eps).abs().max() > 0.1


def test_zero_terminal_snr_rejects_eps_prediction():
    path = paths.DiscretePath.from_schedule("linear", 1000, zero_terminal_snr=True)
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="use target='v'"):
        targets.to_x0_eps(torch.randn(4, 2, dtype=torch.float64), "eps", x, 1.0, path)
    x0, eps = targets.to_x0_eps(torch.zeros(4, 2, dtype=torch.float64), "v", x, 1.0, path)  # v is fine
    torch.testing.assert_close(eps, x)  # alpha = 0: x_1 = eps exactly


def test_bad_input():
    path = paths.VPPath()
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="target must be one of"):
        targets.to_x0_eps(x, "noise", x, 0.5, path)
    with pytest.raises(ValueError, match="pred must have the shape of x_t"):
        targets.to_x0_eps(torch.randn(4, 3), "eps", x, 0.5, path)
    with pytest.raises(ValueError, match="t must lie in"):
        targets.convert(x, "eps", "x0", x, -0.1, path)
