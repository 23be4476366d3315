"""Chapter 4's checks, run at a fixed size against the planted bugs they guard against.

Each test writes the chapter's check as the notebook does, runs it on the correct formula (it must pass) and on
the plausible bug (it must fail), so that a check which a bug walks through is caught here and not only in a
quick-mode run of the notebook.
"""

import pytest
import torch

from diffkit import data, paths, samplers, targets

F64 = torch.float64
T, S = torch.tensor([0.6, 0.5], dtype=F64)
PATHS = {"vp": paths.DiscretePath.from_schedule("linear", 1000), "ve": paths.VEPath(),
         "linear": paths.LinearPath()}


# -- 1. the DDIM step on any Gaussian path (eq-ddim-general, eq-posterior-std) --------------------------------

def posterior_std(p, t, s):  # the chapter's c_DDPM
    a_t, sig_t, a_s, sig_s = p.alpha(t), p.sigma(t), p.alpha(s), p.sigma(s)
    return sig_s * (sig_t**2 - (a_t / a_s) ** 2 * sig_s**2).clamp(min=0).sqrt() / sig_t


def vp_shortcut(p, t, s):  # the chapter's old noise level: right on variance-preserving paths only
    beta_ts = 1 - (p.alpha(t) / p.alpha(s)) ** 2
    return (p.sigma(s) ** 2 / p.sigma(t) ** 2 * beta_ts).clamp(min=0).sqrt()


def variance_as_std(p, t, s):  # c^2 written where c belongs
    return posterior_std(p, t, s) ** 2


def ddim_step(p, x, x0_hat, eps_hat, t, s, eta, z, noise_level=posterior_std):
    a_s, sig_s, c = p.alpha(s), p.sigma(s), eta * noise_level(p, t, s)
    return a_s * x0_hat + (sig_s**2 - c**2).sqrt() * eps_hat + c * z


def normal(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def step_check(p, eta, noise_level):
    """The chapter's check: one step t = 0.6 -> 0.5 by hand against diffkit's (the first step of a grid to 0)."""
    model = data.toy_2d_oracle("8gaussians").as_model(p, "eps")
    x0 = data.toy_2d("8gaussians", 500, generator=10).double()
    x_t = p.alpha(T) * x0 + p.sigma(T) * normal(x0.shape, 11)
    eps_hat = model(x_t, T.expand(500))
    x0_hat = (x_t - p.sigma(T) * eps_hat) / p.alpha(T)
    mine = ddim_step(p, x_t, x0_hat, eps_hat, T, S, eta, normal(x0.shape, 12), noise_level)
    grid = torch.stack([T, S, torch.zeros_like(S)])
    ref = samplers.ddim(model, x_t, grid, p, eta=eta, return_trajectory=True,
                        generator=torch.Generator().manual_seed(12)).xs[1]
    torch.testing.assert_close(mine, ref)


@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize("name", list(PATHS))
def test_general_posterior_std_matches_diffkit(name, eta):
    step_check(PATHS[name], eta, posterior_std)


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_vp_shortcut_passes_on_vp(eta):
    step_check(PATHS["vp"], eta, vp_shortcut)


@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize("name", ["ve", "linear"])
def test_vp_shortcut_fails_off_vp(name, eta):
    with pytest.raises(AssertionError):
        step_check(PATHS[name], eta, vp_shortcut)


@pytest.mark.parametrize("name", list(PATHS))
def test_variance_for_std_fails(name):
    with pytest.raises(AssertionError):
        step_check(PATHS[name], 1.0, variance_as_std)


def test_vp_shortcut_numbers():
    """The issue's numbers: on VE the shortcut is 0 where the posterior std is 0.64; on linear 0.50 vs 0.37."""
    ve, lin = PATHS["ve"], PATHS["linear"]
    assert vp_shortcut(ve, T, S).item() == 0.0
    assert posterior_std(ve, T, S).item() == pytest.approx(0.6395, abs=1e-3)
    assert vp_shortcut(lin, T, S).item() == pytest.approx(0.5, abs=1e-9)
    assert posterior_std(lin, T, S).item() == pytest.approx(0.3727, abs=1e-3)
    vp = PATHS["vp"]
    assert vp_shortcut(vp, T, S).item() == pytest.approx(posterior_std(vp, T, S).item(), rel=1e-9)


# -- 5. conversions: the by-hand check on the exact oracle catches a consistently wrong v ------------------------

def swapped_convert(pred, source, dest, x_t, t, p):
    """targets.convert with v written as sigma eps - alpha x0, consistently in both directions."""
    a, s = p.alpha(t)[:, None], p.sigma(t)[:, None]
    if source == "v":  # x_t = a x0 + s eps, v' = -a x0 + s eps
        x0, eps = (x_t - pred) / (2 * a), (x_t + pred) / (2 * s)
    else:
        x0, eps = targets.to_x0_eps(pred, source, x_t, t, p)
    if dest == "v":
        return s * eps - a * x0
    return targets.from_x0_eps(x0, eps, dest, x_t, t, p)


def round_trip_error(convert, p):
    g = torch.Generator().manual_seed(4)
    t = 0.02 + 0.96 * torch.rand(256, generator=g, dtype=F64)
    x0, eps = torch.randn(2, 256, 2, generator=g, dtype=F64)
    x_t = p.alpha(t)[:, None] * x0 + p.sigma(t)[:, None] * eps
    worst = 0.0
    for dest in ("eps", "x0", "score"):
        back = convert(convert(eps, "eps", "v", x_t, t, p), "v", "eps", x_t, t, p)
        worst = max(worst, (back - eps).abs().max().item())
        v = convert(eps, "eps", "v", x_t, t, p)
        back = convert(convert(v, "v", dest, x_t, t, p), dest, "v", x_t, t, p)
        worst = max(worst, (back - v).abs().max().item())
    return worst


def oracle_check(convert, p):
    """The chapter's check: v written out by hand (eq-targets) from the oracle's exact posterior means."""
    oracle = data.toy_2d_oracle("8gaussians")
    g = torch.Generator().manual_seed(5)
    x = 2 * torch.randn(1000, 2, generator=g, dtype=F64)
    t = 0.05 + 0.9 * torch.rand(1000, generator=g, dtype=F64)
    eps_o, x0_o = oracle.eps(x, t, p), oracle.denoiser(x, t, p)
    v_o = p.alpha(t)[:, None] * eps_o - p.sigma(t)[:, None] * x0_o  # eq-targets
    torch.testing.assert_close(convert(eps_o, "eps", "x0", x, t, p), x0_o)  # Tweedie
    torch.testing.assert_close(convert(v_o, "v", "eps", x, t, p), eps_o)
    torch.testing.assert_close(convert(v_o, "v", "x0", x, t, p), x0_o)
    torch.testing.assert_close(convert(eps_o, "eps", "v", x, t, p), v_o)


@pytest.mark.parametrize("name", ["vp", "linear"])
def test_oracle_check_passes_on_diffkit(name):
    oracle_check(targets.convert, PATHS[name])


@pytest.mark.parametrize("name", ["vp", "linear"])
def test_swapped_v_round_trips_but_fails_the_oracle_check(name):
    p = PATHS[name]
    assert round_trip_error(swapped_convert, p) < 1e-9  # consistency only: the round trip cannot see it
    with pytest.raises(AssertionError):
        oracle_check(swapped_convert, p)


# -- 4. the noise left one step short, measured without the network ---------------------------------------------

def border_noise(x, width=2):
    """The chapter's estimate: a robust (MAD) standard deviation of the frame pixels, which are -1 in digits."""
    frame = torch.ones(28, 28, dtype=torch.bool)
    frame[width:-width, width:-width] = False
    b = x.reshape(-1, 28, 28)[:, frame].flatten()
    return 1.4826 * (b - b.median()).abs().median().item(), b.numel()


def one_step_short_check(short, final, sigma):
    """The chapter's check: the state one step short carries noise of std sigma_t (|z| < 5), the samples after
    the last step carry none of it (more than 5 standard errors below sigma_t)."""
    noise_short, m = border_noise(short)
    noise_final, _ = border_noise(final)
    se = 1.167 * sigma / m**0.5  # standard error of a MAD-based std from m normal draws
    assert abs(noise_short - sigma) / se < 5, "the state one step short does not carry sigma_t of noise"
    assert (sigma - noise_final) / se > 5, "the samples still carry the noise of the last step"


@pytest.fixture(scope="module")
def digit_run():
    """25 DDIM steps with the ideal denoiser of 64 training digits (a model that makes no error)."""
    from diffkit import grids, oracles
    path = PATHS["vp"]
    digits, _ = data.mnist_tensors("train", n=64, seed=0, verbose=False)
    model = oracles.GaussianMixture.from_data(digits.double()).as_model(path, "eps")
    ts = grids.ddpm_grid(25, 1000)
    x = samplers.prior(path, (8, 784), generator=torch.Generator().manual_seed(6), dtype=F64)
    traj = samplers.ddim(model, x, ts, path, eta=0.0, return_trajectory=True)
    return traj, path.sigma(ts[-2]).item()


def test_one_step_short_check_passes(digit_run):
    traj, sigma = digit_run
    one_step_short_check(traj.xs[-2], traj.samples, sigma)


def test_one_step_short_check_fails_when_the_last_step_is_skipped(digit_run):
    traj, sigma = digit_run  # a sampler that stops at the last visited time returns the short state
    with pytest.raises(AssertionError, match="still carry"):
        one_step_short_check(traj.xs[-2], traj.xs[-2], sigma)


def test_one_step_short_check_fails_on_the_wrong_state(digit_run):
    traj, sigma = digit_run  # an off-by-one that inspects the state two steps short (more noise) ...
    with pytest.raises(AssertionError, match="does not carry"):
        one_step_short_check(traj.xs[-3], traj.samples, sigma)
    with pytest.raises(AssertionError, match="does not carry"):  # ... or the finished samples
        one_step_short_check(traj.samples, traj.samples, sigma)
