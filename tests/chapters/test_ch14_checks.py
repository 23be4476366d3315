"""Chapter 14's checks, run at a fixed size against the planted bugs they guard against.

Each test writes the chapter's check as the notebook does, runs it on the correct ingredient (it must pass) and on
a plausible bug (it must fail), so that a check which a bug walks through is caught here and not only in a
quick-mode run of the notebook.
"""

import itertools

import pytest
import torch

from diffkit import grids, oracles, paths, samplers, targets, unified

F64 = torch.float64
MIX = oracles.eight_gaussians()
DDPM = paths.DiscretePath.from_schedule("linear", 1000)
LIN = paths.LinearPath()


# -- 1. DDPM -> VP at rate 1/N (eq-ddpm-limit) -------------------------------------------------------------------
def limit_check(rate):
    vp, err = paths.VPPath(), {}
    for N in (100, 1000, 10000):
        mid = (torch.arange(N, dtype=F64) + 0.5) / N
        chain = paths.DiscretePath(rate(vp, mid, N))
        grid = torch.arange(N + 1, dtype=F64) / N
        err[N] = (chain.alpha(grid) - vp.alpha(grid)).abs().max().item()
    shrink = [err[N] / err[10 * N] for N in (100, 1000)]
    assert all(8 < r < 12 for r in shrink), f"eq-ddpm-limit: shrink {shrink}"


def test_limit_check_passes_with_beta_times_dt():
    limit_check(lambda vp, mid, N: vp.beta(mid) / N)


@pytest.mark.parametrize("bug", [lambda vp, mid, N: (vp.beta(mid) / N).clamp(max=1.0) ** 0.5 / 10,  # sqrt
                                 lambda vp, mid, N: vp.beta(mid) / 1000])  # N = 1000's betas for every N
def test_limit_check_fails_on_planted_bugs(bug):
    with pytest.raises(AssertionError, match="eq-ddpm-limit"):
        limit_check(bug)


# -- 2. the map of targets against the oracle ---------------------------------------------------------------------
def map_check(coefficients, path=DDPM, n=200):
    g = torch.Generator().manual_seed(0)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=F64)
    x_t = path.sample(MIX.sample(n, generator=g).double(), t, generator=g).x_t
    exact = {k: MIX.predict(x_t, t, path, k) for k in targets.TARGETS}
    co = [f(t)[:, None] for f in (path.alpha, path.sigma, path.d_alpha, path.d_sigma)]
    worst = 0.0
    for src, dst in itertools.product(targets.TARGETS, repeat=2):
        cx, cp = coefficients(src, dst, *co)
        converted = cx * x_t + cp * exact[src]
        back = targets.convert(converted, dst, src, x_t, t, path)
        worst = max(worst, ((converted - exact[dst]).abs() / (1 + exact[dst].abs())).max().item(),
                    ((back - exact[src]).abs() / (1 + exact[src].abs())).max().item())
    assert worst < 1e-9, f"map of targets: error {worst:.3g}"


def _with(target, a_b):
    """conversion_coefficients with one target's row replaced (a planted bug in target_coefficients)."""
    def coefficients(source, dest, alpha, sigma, d_alpha, d_sigma):
        def row(k):
            return a_b(alpha, sigma, d_alpha, d_sigma) if k == target else \
                unified.target_coefficients(k, alpha, sigma, d_alpha, d_sigma)
        (a_s, b_s), (a_d, b_d) = row(source), row(dest)
        det = alpha * b_s - sigma * a_s
        return (a_d * b_s - b_d * a_s) / det, (b_d * alpha - a_d * sigma) / det
    return coefficients


def test_map_check_passes_with_diffkits_coefficients():
    for path in (DDPM, LIN, paths.VEPath(sigma_max=10.0)):
        map_check(unified.conversion_coefficients, path)


@pytest.mark.parametrize("target,bug", [("v", lambda a, s, da, ds: (s, -a)),  # the other sign convention
                                        ("v", lambda a, s, da, ds: (-a, s)),  # alpha and sigma exchanged
                                        ("score", lambda a, s, da, ds: (0, -1 / s**2)),  # sigma^2 for sigma
                                        ("velocity", lambda a, s, da, ds: (-da, -ds))])  # time flipped
def test_map_check_fails_on_planted_bugs(target, bug):
    with pytest.raises(AssertionError, match="map of targets"):
        map_check(_with(target, bug))


# -- 3. DDIM is flow Euler on the re-timed path (eq-euler-is-ddim) ----------------------------------------------
def identity_check(retime, n_steps=10):
    model = MIX.as_model(DDPM, "eps")
    x = samplers.prior(DDPM, (200, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    ts = grids.ddpm_grid(n_steps)
    s_grid, k = retime(ts)
    flow = samplers.euler(unified.Reparameterised(model, DDPM, LIN), k[0] * x, s_grid, LIN)
    gap = (samplers.ddim(model, x, ts, DDPM) - flow).abs().max().item()
    assert gap < 1e-9, f"DDIM vs flow Euler: {gap:.3g}"


def test_identity_check_passes_with_matched_times():
    identity_check(lambda ts: unified.matched_time(DDPM, ts, LIN))


@pytest.mark.parametrize("bug", [lambda ts: (DDPM.sigma(ts), torch.ones_like(ts)),  # sigma as the flow time
                                 lambda ts: (unified.matched_time(DDPM, ts, LIN)[0], torch.ones_like(ts)),  # no k
                                 lambda ts: (ts, torch.ones_like(ts))])  # the same t on both paths
def test_identity_check_fails_on_planted_bugs(bug):
    with pytest.raises(AssertionError, match="DDIM vs flow Euler"):
        identity_check(bug)


# -- 4. first and second order against the exact endpoint (eq-gauss-endpoint) -------------------------------------
MU, D = torch.tensor([[1.0, -0.5]], dtype=F64), torch.tensor([0.5, 0.2], dtype=F64)
GAUSS = oracles.GaussianMixture(MU, covs=torch.diag_embed(D**2)[None])


def order_check(second_order_sampler, n=300):
    model = GAUSS.as_model(DDPM, "eps")
    x1 = torch.randn(n, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    one = torch.tensor(1.0, dtype=F64)
    a1, s1 = DDPM.alpha(one), DDPM.sigma(one)
    endpoint = MU + D * (x1 - a1 * MU) / (a1**2 * D**2 + s1**2).sqrt()
    err = {nfe: ((second_order_sampler(model, x1, grids.uniform(nfe // 2), DDPM) - endpoint).norm(dim=1)
                 .mean().item()) for nfe in (128, 256)}
    shrink = err[128] / err[256]
    assert 3.2 < shrink < 4.8, f"second order: shrink {shrink:.2f}"


def test_order_check_passes_on_heun():
    order_check(samplers.heun)


def test_order_check_fails_on_heun_without_its_corrector():
    with pytest.raises(AssertionError, match="second order"):
        order_check(samplers.euler)


def test_the_exact_endpoint_is_the_flow_maps_limit():
    """eq-gauss-endpoint: RK4 with many steps lands on it (an independent solver, not the one being checked)."""
    model = GAUSS.as_model(DDPM, "eps")
    x1 = torch.randn(50, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    s_grid, k = unified.matched_time(DDPM, grids.uniform(400), LIN)  # a smooth time variable for RK4
    out = samplers.rk4(unified.Reparameterised(model, DDPM, LIN), k[0] * x1, s_grid, LIN)
    one = torch.tensor(1.0, dtype=F64)
    a1, s1 = DDPM.alpha(one), DDPM.sigma(one)
    endpoint = MU + D * (x1 - a1 * MU) / (a1**2 * D**2 + s1**2).sqrt()
    assert (out - endpoint).abs().max() < 1e-4
