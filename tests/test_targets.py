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


@pytest.mark.parametrize("path", all_paths(), ids=path_id)
def test_each_target_is_anchored_to_its_own_definition(path):
    """Round trips alone pass a consistently wrong v; here each target is checked against its definition,
    written out from alpha, sigma and x_t without diffkit's conversions."""
    x0, eps, t, s = _batch(path)
    a, sg = path.alpha(t)[:, None], path.sigma(t)[:, None]
    # v (Salimans & Ho, 2022): v = alpha eps - sigma x0
    torch.testing.assert_close(targets.from_x0_eps(x0, eps, "v", s.x_t, t, path), a * eps - sg * x0)
    # score: the gradient of log N(x_t; alpha x0, sigma^2 I) in x_t, by autograd
    x_t = s.x_t.clone().requires_grad_(True)
    log_q = (-0.5 * ((x_t - a * x0) / sg) ** 2).sum()
    (grad,) = torch.autograd.grad(log_q, x_t)
    torch.testing.assert_close(targets.from_x0_eps(x0, eps, "score", s.x_t, t, path), grad)
    # velocity: d x_t / dt by central differences (inside one grid segment for the discrete path)
    if path.discrete:
        t = (torch.floor(t * path.n_steps) + 0.5) / path.n_steps
        s = path.sample(x0, t, eps)
        h = 1e-4 / path.n_steps
    else:
        h = 1e-6
    fd = (path.sample(x0, t + h, eps).x_t - path.sample(x0, t - h, eps).x_t) / (2 * h)
    torch.testing.assert_close(targets.from_x0_eps(x0, eps, "velocity", s.x_t, t, path), fd, rtol=1e-5, atol=1e-6)
    # and the inverse: each definition, converted back, gives the x0 and eps it was made from
    for target in ("v", "score", "velocity"):
        pred = targets.from_x0_eps(x0, eps, target, s.x_t, t, path)
        x0_back, eps_back = targets.to_x0_eps(pred, target, s.x_t, t, path)
        torch.testing.assert_close(x0_back, x0, rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(eps_back, eps, rtol=1e-7, atol=1e-7)


_ZERO_SNR = [paths.LinearPath(), paths.CosinePath(), paths.DiscretePath.from_schedule("linear", 1000, zero_terminal_snr=True)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("path", _ZERO_SNR, ids=path_id)
def test_informative_targets_stay_finite_at_and_near_alpha_zero(path, dtype):
    """x0, v and velocity carry x0 where alpha_t = 0; converting them there (and just before) must not amplify a
    prediction error, while eps and score, which carry nothing about x0 there, raise a clear error."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(256, 2, generator=g, dtype=torch.float64).to(dtype)
    eps = torch.randn(256, 2, generator=g, dtype=torch.float64).to(dtype)
    for t_val in (1.0, 1.0 - 1e-6, 1.0 - 1e-3):
        t = torch.full((256,), t_val, dtype=dtype)
        x_t = path.sample(x0, t, eps).x_t
        for target in ("x0", "v", "velocity"):
            pred = targets.from_x0_eps(x0, eps, target, x_t, t, path)
            x0_hat, eps_hat = targets.to_x0_eps(pred + 1e-3, target, x_t, t, path)
            assert torch.isfinite(x0_hat).all() and torch.isfinite(eps_hat).all(), (target, t_val)
            # a 1e-3 error stays about 1e-3 (for the velocity, divided by its scale alpha sigma' - sigma alpha')
            scale = 1.0 if target != "velocity" else \
                (path.alpha(t) * path.d_sigma(t) - path.sigma(t) * path.d_alpha(t)).abs().min().item()
            assert (x0_hat - x0).abs().max() < 5e-3 / min(scale, 1.0), (target, t_val)
    t1 = torch.ones(256, dtype=dtype)
    x1 = path.sample(x0, t1, eps).x_t
    for target in ("eps", "score"):
        with pytest.raises(ValueError, match="alpha_t is 0 at some t"):
            targets.to_x0_eps(eps, target, x1, t1, path)


def test_from_x0_score_agrees_with_from_x0_eps_where_sigma_is_positive():
    """The oracles' (x0, score) form gives every target as the (x0, eps) form does, eps = -sigma * score."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, 6, dtype=torch.float64)
    for path in (paths.VPPath(), paths.VEPath(0.01, 5.0), paths.LinearPath()):
        a, s = path.alpha(t)[:, None].double(), path.sigma(t)[:, None].double()
        x_t, score = a * x0 + s * eps, -eps / s
        for target in targets.TARGETS:
            torch.testing.assert_close(targets.from_x0_score(x0, score, target, x_t, t, path),
                                       targets.from_x0_eps(x0, eps, target, x_t, t, path))
    with pytest.raises(ValueError, match="only the denoiser"):
        targets.from_x0_score(x0, torch.full_like(x0, float("nan")), "eps", x0, t, paths.VPPath())
