"""diffkit.unified (chapter 14): the frameworks' formulas against diffkit.paths, the generated map of targets against
diffkit.targets and the exact oracles, one model moved between paths, DDPM's step on any path, and the tests of
four mistakes common in published code — each passes on diffkit's function and fails on the planted bug."""

import math

import pytest
import sympy as sp
import torch

from diffkit import elbo, grids, oracles, paths, samplers, targets, unified

F64 = torch.float64
MIX = oracles.eight_gaussians()
PATHS = [paths.DiscretePath.from_schedule("linear", 1000), paths.VPPath(), paths.SubVPPath(),
         paths.VEPath(sigma_max=10.0), paths.CosinePath(), paths.LinearPath()]


def _inputs(path, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=F64)
    x_t = path.sample(MIX.sample(n, generator=g).double(), t, generator=g).x_t
    return x_t, t


def _coefs(path, t):
    return path.alpha(t)[:, None], path.sigma(t)[:, None], path.d_alpha(t)[:, None], path.d_sigma(t)[:, None]


# --- the map of targets -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_conversion_coefficients_reproduce_the_exact_oracles_targets(path):
    """Every one of the 20 conversions, from the generated coefficients, turns the oracle's exact prediction of
    one kind into its exact prediction of the other (computed by the oracle from the densities)."""
    x_t, t = _inputs(path)
    exact = {k: MIX.predict(x_t, t, path, k) for k in targets.TARGETS}
    for source in targets.TARGETS:
        for dest in targets.TARGETS:
            cx, cp = unified.conversion_coefficients(source, dest, *_coefs(path, t))
            torch.testing.assert_close(cx * x_t + cp * exact[source], exact[dest], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_conversion_coefficients_agree_with_targets_convert_and_round_trip(path):
    x_t, t = _inputs(path, seed=1)
    pred = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    for source in targets.TARGETS:
        for dest in targets.TARGETS:
            cx, cp = unified.conversion_coefficients(source, dest, *_coefs(path, t))
            mine = cx * x_t + cp * pred
            torch.testing.assert_close(mine, targets.convert(pred, source, dest, x_t, t, path))
            back_x, back_p = unified.conversion_coefficients(dest, source, *_coefs(path, t))
            torch.testing.assert_close(back_x * x_t + back_p * mine, pred)


def test_coefficients_are_symbolic_identities():
    """With sympy symbols, converting a target to itself is the identity and a round trip composes to it."""
    a, s, da, ds = sp.symbols("a s da ds", positive=True)
    for source in targets.TARGETS:
        cx, cp = unified.conversion_coefficients(source, source, a, s, da, ds)
        assert sp.simplify(cx) == 0 and sp.simplify(cp - 1) == 0
        for dest in targets.TARGETS:
            fx, fp = unified.conversion_coefficients(source, dest, a, s, da, ds)
            bx, bp = unified.conversion_coefficients(dest, source, a, s, da, ds)
            assert sp.simplify(bx + bp * fx) == 0 and sp.simplify(bp * fp - 1) == 0


def test_conversion_table_is_the_known_map():
    rows = {r[0]: r[1:] for r in unified.conversion_table()}
    assert list(rows) == list(targets.TARGETS)
    assert rows["v"] == ("α·ε − σ·x0", "(α·x − σ·v)/(α² + σ²)", "(σ·x + α·v)/(α² + σ²)")
    assert rows["score"] == ("−ε/σ", "(x + σ²·s)/α", "−σ·s")
    assert rows["eps"][1] == "(x − σ·ε)/α"
    vp = {r[0]: r[1:] for r in unified.conversion_table(vp=True)}
    assert vp["v"][1:] == ("α·x − σ·v", "σ·x + α·v")  # eps = alpha v + sigma x_t when alpha^2 + sigma^2 = 1
    assert vp["velocity"] == rows["velocity"]


def test_format_table_aligns_columns_ignoring_combining_marks():
    text = unified.format_table([("α̇", "1"), ("ab", "2")], ("h", "v"))
    lines = text.splitlines()
    assert [line.index(c) - sum(ch == "\u0307" for ch in line[:line.index(c)]) for line, c in
            zip(lines, "v12")] == [4, 4, 4]
    with pytest.raises(ValueError, match="as many cells"):
        unified.format_table([("a",)], ("h", "v"))


# --- the frameworks -------------------------------------------------------------------------------------------
def test_every_frameworks_formula_is_its_path():
    ts = torch.linspace(0, 1, 21, dtype=F64)
    for fw in unified.FRAMEWORKS:
        assert unified.path_formula_error(fw, ts) < 1e-12, fw.name
    assert len(unified.framework_table()) == len(unified.FRAMEWORKS)


@pytest.mark.parametrize("alpha,sigma", [("exp(-(beta_min*t + (beta_max - beta_min)*t**2/2)/2)",
                                          "1 - exp(-(beta_min*t + (beta_max - beta_min)*t**2/2))"),  # variance
                                         ("exp(-(beta_min*t + (beta_max - beta_min)*t**2/2))",  # no 1/2
                                          "sqrt(1 - exp(-(beta_min*t + (beta_max - beta_min)*t**2/2)))")])
def test_the_formula_check_fails_on_a_wrong_formula(alpha, sigma):
    wrong = unified.Framework("VP, wrong", paths.VPPath(), alpha, sigma, "score", "euler_maruyama", "6")
    assert unified.path_formula_error(wrong, torch.linspace(0, 1, 11, dtype=F64)) > 0.01


def test_ddpm_formula_check_fails_off_grid_and_on_a_shifted_index():
    ddpm = unified.FRAMEWORKS[0]
    with pytest.raises(ValueError, match="grid"):
        unified.path_formula_error(ddpm, torch.tensor([0.0005], dtype=F64))
    shifted = paths.DiscretePath(ddpm.path.betas)
    shifted.alpha_bar = torch.cat([shifted.alpha_bar[1:2], shifted.alpha_bar[1:]])  # off by one step
    shifted._alpha_grid = shifted.alpha_bar.sqrt()
    wrong = unified.Framework("DDPM, shifted", shifted, None, None, "eps", "ddpm", "3")
    assert unified.path_formula_error(wrong, torch.tensor([0.0, 0.5], dtype=F64)) > 1e-6  # limit: 1e-12


# --- one model, any path ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path_to", [paths.LinearPath(), paths.CosinePath(), paths.VPPath()],
                         ids=lambda p: type(p).__name__)
def test_matched_time_keeps_the_snr_and_scales_both_coefficients(path_to):
    ddpm = paths.DiscretePath.from_schedule("linear", 1000)
    t = torch.tensor([0.001, 0.1, 0.5, 0.9, 0.99], dtype=F64)  # within the VP path's range of SNR
    s, k = unified.matched_time(ddpm, t, path_to)
    torch.testing.assert_close(path_to.log_snr(s), ddpm.log_snr(t), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(path_to.alpha(s), k * ddpm.alpha(t), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(path_to.sigma(s), k * ddpm.sigma(t), rtol=1e-9, atol=1e-12)


def test_matched_time_on_the_flow_path_is_closed_form():
    cos = paths.CosinePath()
    t = torch.tensor([0.2, 0.7], dtype=F64)
    s, k = unified.matched_time(cos, t, paths.LinearPath())
    a, sig = torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)
    torch.testing.assert_close(s, sig / (a + sig))
    torch.testing.assert_close(k, 1 / (a + sig))


@pytest.mark.parametrize("path,target", [(paths.DiscretePath.from_schedule("linear", 1000), "eps"),
                                         (paths.VPPath(), "x0"), (paths.CosinePath(), "v")],
                         ids=["ddpm-eps", "vp-x0", "cosine-v"])
def test_a_reparameterised_oracle_is_the_oracle_of_the_flow_path(path, target):
    lin = paths.LinearPath()
    model = unified.Reparameterised(MIX.as_model(path, target), path, lin, dest="velocity")
    x_s, s = _inputs(lin, seed=3)
    s = s.clamp(max=0.9)  # below the flow time of the source path's t = 1
    torch.testing.assert_close(model(x_s, s), MIX.velocity(x_s, s, lin), rtol=1e-8, atol=1e-8)
    assert model.diffkit_objective.target == "velocity" and model.diffkit_objective.path is lin


@pytest.mark.parametrize("path", [paths.DiscretePath.from_schedule("linear", 1000), paths.VPPath(),
                                  paths.CosinePath()], ids=lambda p: type(p).__name__)
def test_ddim_is_euler_on_the_retimed_flow_path(path):
    lin = paths.LinearPath()
    model = MIX.as_model(path, "eps")
    ts = grids.uniform(12, t_max=0.99)
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    s, k = unified.matched_time(path, ts, lin)
    flow = samplers.euler(unified.Reparameterised(model, path, lin), k[0] * x, s, lin)
    torch.testing.assert_close(flow, samplers.ddim(model, x, ts, path), rtol=1e-9, atol=1e-9)
    probability_flow = samplers.euler(model, x, ts, path)  # Euler in the path's own time: another method
    assert (probability_flow - flow).abs().max() > 1e-3


def test_reparameterised_passes_labels_and_guidance_through():
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=F64)
    mix = oracles.GaussianMixture(means, stds=0.5, labels=torch.tensor([0, 1]))
    ddpm, lin = paths.DiscretePath.from_schedule("linear", 1000), paths.LinearPath()
    model = mix.as_model(ddpm, "x0")
    ts = grids.uniform(10, t_max=0.99)
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    y = torch.zeros(100, dtype=torch.long)
    s, k = unified.matched_time(ddpm, ts, lin)
    wrapped = unified.Reparameterised(model, ddpm, lin)
    assert wrapped.null_label == mix.num_classes
    flow = samplers.euler(wrapped, k[0] * x, s, lin, y=y, guidance=3.0, null_label=wrapped.null_label)
    ddim = samplers.ddim(model, x, ts, ddpm, y=y, guidance=3.0, null_label=mix.num_classes)
    torch.testing.assert_close(flow, ddim, rtol=1e-9, atol=1e-9)


# --- DDPM's step on any path -----------------------------------------------------------------------------------
def test_posterior_step_is_ddpms_posterior_on_the_ddpm_grid():
    ddpm = paths.DiscretePath.from_schedule("linear", 1000)
    g = torch.Generator().manual_seed(6)
    x0, x_n, z = (torch.randn(8, 3, generator=g, dtype=F64) for _ in range(3))
    for n in (2, 500, 1000):
        mean, var = elbo.posterior(ddpm, x0, x_n, n)
        got = unified.posterior_step(x_n, x0, n / 1000, (n - 1) / 1000, ddpm, z)
        torch.testing.assert_close(got, mean + var.sqrt()[:, None] * z)


def test_an_ancestral_loop_of_posterior_steps_is_diffkits_ddpm_sampler():
    ddpm = paths.DiscretePath.from_schedule("linear", 1000)
    model = MIX.as_model(ddpm, "x0")
    ts = grids.ddpm_grid(20, 1000)
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(7), dtype=F64)
    g, out, grid = torch.Generator().manual_seed(8), x, ts.tolist()
    for t, s in zip(grid[:-1], grid[1:]):
        x0 = model(out, torch.full((100,), t, dtype=F64))
        out = x0 if s == 0 else unified.posterior_step(out, x0, t, s, ddpm, torch.randn(out.shape, generator=g,
                                                                                         dtype=F64))
    torch.testing.assert_close(out, samplers.ddpm(model, x, ts, ddpm, generator=torch.Generator().manual_seed(8)))


# --- four mistakes and the tests that catch them ---------------------------------------------------------------
def v_to_eps(v, x_t, t, path):
    return targets.convert(v, "v", "eps", x_t, t, path)


def v_to_eps_swapped(v, x_t, t, path):  # alpha and sigma exchanged
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    return s * v + a * x_t


def v_to_eps_sign(v, x_t, t, path):  # from v = sigma x0 - alpha eps, the other sign convention
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    return s * x_t - a * v


def score_from_eps(eps, x_t, t, path):
    return targets.convert(eps, "eps", "score", x_t, t, path)


def score_over_variance(eps, x_t, t, path):  # sigma^2 where sigma belongs
    return -eps / path.sigma(t)[:, None] ** 2


def score_without_sign(eps, x_t, t, path):
    return eps / path.sigma(t)[:, None]


def step_variance_for_std(x_t, x0, t, s, path, z):
    c = [float(f(torch.tensor(v, dtype=F64))) for f, v in ((path.alpha, t), (path.sigma, t),
                                                             (path.alpha, s), (path.sigma, s))]
    var_ts = c[1] ** 2 - (c[0] / c[2]) ** 2 * c[3] ** 2
    mean = (c[0] / c[2] * c[3] ** 2 / c[1] ** 2) * x_t + (c[2] * var_ts / c[1] ** 2) * x0
    return mean + (var_ts * c[3] ** 2 / c[1] ** 2) * z  # the variance, not its square root


def step_forward_variance(x_t, x0, t, s, path, z):  # beta (the forward step's variance) for beta-tilde
    mean = unified.posterior_step(x_t, x0, t, s, path, torch.zeros_like(z))
    a_t, a_s = float(path.alpha(torch.tensor(t))), float(path.alpha(torch.tensor(s)))
    s_t, s_s = float(path.sigma(torch.tensor(t))), float(path.sigma(torch.tensor(s)))
    return mean + (s_t**2 - (a_t / a_s) ** 2 * s_s**2) ** 0.5 * z


def flip_time_only(model_fm):
    return lambda x, t, y=None: model_fm(x, 1 - t)


def flip_velocity_only(model_fm):
    return lambda x, t, y=None: -model_fm(x, t)


def test_the_four_checks_pass_on_diffkits_functions():
    assert unified.check_v_to_eps(v_to_eps) < 1e-12
    assert unified.check_flow_time(unified.flow_time_adapter) < 1e-12
    assert unified.check_posterior_step(unified.posterior_step) < 5
    assert unified.check_score_from_eps(score_from_eps) < 1e-10


@pytest.mark.parametrize("check,bug,message", [
    (unified.check_v_to_eps, v_to_eps_swapped, "v -> eps"),
    (unified.check_v_to_eps, v_to_eps_sign, "v -> eps"),
    (unified.check_flow_time, flip_time_only, "time convention"),
    (unified.check_flow_time, flip_velocity_only, "time convention"),
    (unified.check_posterior_step, step_variance_for_std, "variance"),
    (unified.check_posterior_step, step_forward_variance, "variance"),
    (unified.check_score_from_eps, score_over_variance, "eps -> score"),
    (unified.check_score_from_eps, score_without_sign, "eps -> score"),
], ids=["v-swapped", "v-sign", "flip-time-only", "flip-velocity-only", "variance-for-std", "beta-for-beta-tilde",
        "sigma-squared", "score-sign"])
def test_each_check_fails_on_the_planted_bug(check, bug, message):
    with pytest.raises(AssertionError, match=message):
        check(bug)


def test_a_shape_slip_is_reported_not_raised_as_a_crash():
    with pytest.raises(AssertionError, match="shape"):
        unified.check_v_to_eps(lambda v, x, t, p: v[:, :1])


# --- bad input -----------------------------------------------------------------------------------------------
def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="source"):
        unified.conversion_coefficients("noise", "eps", 1.0, 0.5)
    with pytest.raises(ValueError, match="dest"):
        unified.conversion_coefficients("eps", "velocity_field", 1.0, 0.5)
    with pytest.raises(ValueError, match="target"):
        unified.target_coefficients("flow", 1.0, 0.5)
    x = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="t and s"):
        unified.posterior_step(x, x, 0.3, 0.5, paths.CosinePath(), x)
    with pytest.raises(ValueError, match="z must have the shape"):
        unified.posterior_step(x, x, 0.5, 0.3, paths.CosinePath(), x[:, :1])
    with pytest.raises(TypeError, match="path"):
        unified.matched_time("vp", 0.5, paths.LinearPath())
    with pytest.raises(ValueError, match="source"):
        unified.Reparameterised(lambda x, t, y=None: x, paths.VPPath(), paths.LinearPath())
    with pytest.raises(TypeError, match="model"):
        unified.Reparameterised(3, paths.VPPath(), paths.LinearPath(), "eps")
    with pytest.raises(ValueError, match="ts"):
        unified.path_formula_error(unified.FRAMEWORKS[2], torch.tensor([1.5], dtype=F64))
