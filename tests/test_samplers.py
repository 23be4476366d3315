"""Samplers driven by exact oracles reproduce the data; single steps agree with diffusers in float64."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from diffkit import distances, grids, oracles, paths, samplers

N_SAMPLES = 3000
#: every sampler must land within this squared MMD of fresh true samples (the MMD between two independent
#: true sample sets of this size is itself up to ~0.003) ...
MMD_BOUND = 0.006
#: ... while the same sampler driven by a wrong model (each Gaussian blurred from std 0.3 to 0.5) must not.
MMD_WRONG_MIN = 0.011

_D = paths.DiscretePath.from_schedule
#: (sampler, path, grid, target, options): each sampler on a path and target it is used with in the book.
CASES = [
    ("ddpm", _D("linear", 1000), grids.ddpm_grid(100, 1000), "eps", {"variance": "beta_tilde"}),
    ("ddpm", _D("linear", 1000), grids.ddpm_grid(100, 1000), "eps", {"variance": "beta"}),
    ("ddim", _D("cosine", 1000), grids.ddpm_grid(50, 1000), "v", {"eta": 0.0}),
    ("ddim", paths.VPPath(), grids.uniform(100), "x0", {"eta": 0.5}),
    ("euler", paths.LinearPath(), grids.uniform(100), "velocity", {}),
    ("heun", paths.LinearPath(), grids.uniform(20), "velocity", {}),
    ("rk4", paths.LinearPath(), grids.uniform(10), "velocity", {}),
    ("euler", paths.VPPath(), grids.uniform(200), "eps", {}),
    ("euler_maruyama", paths.VPPath(), grids.uniform(500), "score", {}),
    ("predictor_corrector", paths.VPPath(), grids.uniform(200), "eps", {"snr": 0.16}),
    ("annealed_langevin", paths.VEPath(0.01, 10.0), grids.uniform(20), "score", {"n_steps_each": 50, "step_lr": 1e-4}),
    ("dpm_solver_pp_2m", paths.VPPath(), grids.uniform(20), "eps", {}),
    ("dpm_solver_pp_2m", paths.CosinePath(), grids.uniform(15), "v", {}),
]


def case_id(case):
    name, path, ts, target, opts = case
    return f"{name}-{type(path).__name__}-{target}-{len(ts) - 1}steps-" + "-".join(f"{k}={v}" for k, v in opts.items())


def oracle_distance(case, mixture, seed=0):
    """Squared MMD between the sampler's output (driven by ``mixture``'s oracle) and fresh 8-Gaussians samples."""
    name, path, ts, target, opts = case
    g = torch.Generator().manual_seed(seed)
    reference = oracles.eight_gaussians().sample(N_SAMPLES, generator=g)
    x = samplers.prior(path, (N_SAMPLES, 2), generator=g, dtype=torch.float64)
    out = samplers.get_sampler(name)(mixture.as_model(path, target), x, ts, path, target=target, generator=g, **opts)
    return distances.mmd(out, reference).item()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_sampler_reproduces_the_mixture(case):
    good = oracle_distance(case, oracles.eight_gaussians())
    blurred = oracles.GaussianMixture(oracles.eight_gaussians().means, stds=0.5)
    wrong = oracle_distance(case, blurred)
    assert good < MMD_BOUND, f"MMD {good:.5f} to the true mixture exceeds {MMD_BOUND}"
    assert wrong > MMD_WRONG_MIN, f"a wrong model reached MMD {wrong:.5f}: the test could not tell it apart"


# --- agreement with diffusers' schedulers (an independent implementation), float64 -------------------------
def _toy_eps(x, t):
    """A fixed, t-dependent stand-in for a network, so that a wrong timestep would show."""
    return torch.tanh(x) * (0.2 + t.view(-1, *([1] * (x.ndim - 1))))


def _diffusers_loop(sched, x, N, generator, **step_kwargs):
    states = [x]
    for k in sched.timesteps.tolist():
        t = torch.full((x.shape[0],), (k + 1) / N, dtype=torch.float64)
        x = sched.step(_toy_eps(x, t), k, x, generator=generator, **step_kwargs).prev_sample
        states.append(x)
    return torch.stack(states)


def _float64(sched):
    """Redo the scheduler's tables in float64 (diffusers builds them in float32)."""
    sched.betas = sched.betas.double()
    sched.alphas = 1.0 - sched.betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
    for name in ("final_alpha_cumprod", "one"):
        if hasattr(sched, name):
            setattr(sched, name, getattr(sched, name).double())
    return sched


@pytest.mark.parametrize("variance,diffusers_type", [("beta_tilde", "fixed_small"), ("beta", "fixed_large")])
@pytest.mark.parametrize("n_steps,clip", [(1000, None), (50, None), (50, 1.0)])
def test_ddpm_matches_diffusers_step_by_step(variance, diffusers_type, n_steps, clip):
    N = 1000
    sched = _float64(DDPMScheduler(num_train_timesteps=N, beta_schedule="linear", variance_type=diffusers_type,
                                   clip_sample=clip is not None, clip_sample_range=clip or 1.0,
                                   timestep_spacing="leading"))
    sched.set_timesteps(n_steps)
    path = paths.DiscretePath(sched.betas.clone())
    grid = grids.ddpm_grid(n_steps, N, "leading")
    assert torch.equal(paths.index_from_t(grid[:-1], N), sched.timesteps.long())
    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = _diffusers_loop(sched, x, N, torch.Generator().manual_seed(1))
    ours = samplers.ddpm(lambda x, t, y=None: _toy_eps(x, t), x, grid, path, variance=variance, clip_x0=clip,
                         generator=torch.Generator().manual_seed(1), return_trajectory=True).xs
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert (ours[-1] - ours[-2]).abs().max() > 0  # the last step did something
    if clip is not None:  # the clipping was active: without it the chain differs
        unclipped = samplers.ddpm(lambda x, t, y=None: _toy_eps(x, t), x, grid, path, variance=variance,
                                  generator=torch.Generator().manual_seed(1))
        assert (unclipped - ours[-1]).abs().max() > 0.1


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("schedule,clip", [("linear", None), ("squaredcos_cap_v2", None), ("linear", 0.5)])
def test_ddim_matches_diffusers_step_by_step(eta, schedule, clip):
    """``clip_x0`` recomputes eps from the clipped x0: diffusers' ``use_clipped_model_output=True``."""
    N, n = 1000, 20
    sched = _float64(DDIMScheduler(num_train_timesteps=N, beta_schedule=schedule, clip_sample=clip is not None,
                                   clip_sample_range=clip or 1.0, set_alpha_to_one=True, timestep_spacing="leading"))
    sched.set_timesteps(n)
    path = paths.DiscretePath(sched.betas.double())
    grid = grids.ddpm_grid(n, N, "leading")
    assert torch.equal(paths.index_from_t(grid[:-1], N), sched.timesteps.long())
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = _diffusers_loop(sched, x, N, torch.Generator().manual_seed(1), eta=eta, use_clipped_model_output=True)
    ours = samplers.ddim(lambda x, t, y=None: _toy_eps(x, t), x, grid, path, eta=eta, clip_x0=clip,
                         generator=torch.Generator().manual_seed(1), return_trajectory=True).xs
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    if clip is not None:
        unclipped = samplers.ddim(lambda x, t, y=None: _toy_eps(x, t), x, grid, path, eta=eta,
                                  generator=torch.Generator().manual_seed(1))
        assert (unclipped - ours[-1]).abs().max() > 0.1


def test_every_sampler_has_the_shared_signature():
    """One calling convention: the same positional arguments and the same shared keywords with the same defaults,
    sampler-specific options only after them."""
    import inspect

    shared = ["target", "y", "guidance", "null_label", "generator", "return_trajectory", "progress", "clip_x0"]
    reference = inspect.signature(samplers.ddpm).parameters
    for name, fn in samplers.SAMPLERS.items():
        params = inspect.signature(fn).parameters
        assert list(params)[:4] == ["model", "x", "ts", "path"], name
        assert list(params)[4:4 + len(shared)] == shared, name
        for key in shared:
            assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, (name, key)
            assert params[key].default == reference[key].default, (name, key)


# --- clipping x0 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["eps", "v", "velocity"])
def test_clipped_denoiser_stays_on_the_line_through_x(target):
    """With clip_x0 = c: |x0_hat| <= c, the pair still satisfies x = alpha x0_hat + sigma eps_hat exactly, and
    predictions already inside [-c, c] are untouched."""
    path = paths.CosinePath()
    oracle = oracles.eight_gaussians(radius=1.0, std=0.3).as_model(path, target)
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    plain = samplers.Denoiser(oracle, path, target)
    clipped = samplers.Denoiser(oracle, path, target, clip_x0=0.8)
    n_inside = n_outside = 0
    for t in (0.2, 0.7, 0.99):
        x0, eps = clipped(x, t)
        a, s = (float(f(torch.tensor(t, dtype=torch.float64))) for f in (path.alpha, path.sigma))
        assert x0.abs().max() <= 0.8
        torch.testing.assert_close(a * x0 + s * eps, x, rtol=0, atol=1e-12)
        x0_plain, eps_plain = plain(x, t)
        inside = (x0_plain.abs() < 0.8).all(dim=1)
        n_inside, n_outside = n_inside + int(inside.sum()), n_outside + int((~inside).sum())
        torch.testing.assert_close(x0[inside], x0_plain[inside], rtol=0, atol=1e-12)
        torch.testing.assert_close(eps[inside], eps_plain[inside], rtol=0, atol=1e-12)
    assert n_inside > 100 and n_outside > 100  # both cases were exercised


# --- every grid lands on clean data ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ddpm", "ddim", "euler", "heun", "rk4", "annealed_langevin", "dpm_solver_pp_2m"])
def test_single_point_data_is_reached_exactly(name):
    """With one training point x*, the ideal denoiser always says x0 = x*: the last step must land on it."""
    star = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
    oracle = oracles.GaussianMixture.from_data(star)
    path = paths.LinearPath() if name in ("euler", "heun", "rk4") else paths.VPPath()
    target = "velocity" if path is not None and isinstance(path, paths.LinearPath) else "eps"
    x = samplers.prior(path, (16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    opts = {"n_steps_each": 3} if name == "annealed_langevin" else {}
    traj = samplers.get_sampler(name)(oracle.as_model(path, target), x, grids.uniform(7), path, target=target,
                                      return_trajectory=True, generator=torch.Generator().manual_seed(1), **opts)
    assert traj.xs.shape == (8, 16, 2) and traj.ts[-1].item() == 0.0
    torch.testing.assert_close(traj.samples, star.expand(16, 2), rtol=0, atol=1e-9)
    assert (traj.xs[0] - star).abs().max() > 0.5  # it did start from noise


# --- classifier-free guidance -------------------------------------------------------------------------------
def test_guidance_scale_one_samples_the_conditional():
    gmm, path = oracles.eight_gaussians(), paths.VPPath()
    g = torch.Generator().manual_seed(0)
    y = torch.full((N_SAMPLES,), 3)
    x = samplers.prior(path, (N_SAMPLES, 2), generator=g, dtype=torch.float64)
    out = samplers.ddim(gmm.as_model(path), x, grids.uniform(200), path, y=y, guidance=1.0, null_label=8)
    ref = gmm.sample(N_SAMPLES, y=y, generator=g)
    assert distances.mmd(out, ref).item() < MMD_BOUND
    # guidance 0 ignores the label: back to the full mixture
    x = samplers.prior(path, (N_SAMPLES, 2), generator=g, dtype=torch.float64)
    out0 = samplers.ddim(gmm.as_model(path), x, grids.uniform(50), path, y=y, guidance=0.0, null_label=8)
    assert distances.mmd(out0, gmm.sample(N_SAMPLES, generator=g)).item() < MMD_BOUND


def test_guided_prediction_is_the_cfg_formula_on_every_channel():
    def model(x, t, y=None):  # a toy conditional "network" for images (B, C, H, W)
        scale = (y.to(x.dtype) + 1).view(-1, 1, 1, 1)
        return torch.sin(x * scale) + t.view(-1, 1, 1, 1)

    x, y, w = torch.randn(5, 3, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0]), 4.0
    den = samplers.Denoiser(model, paths.VPPath(), "eps", y=y, guidance=w, null_label=9)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    expected = model(x, t, torch.full_like(y, 9)) + w * (model(x, t, y) - model(x, t, torch.full_like(y, 9)))
    torch.testing.assert_close(den.prediction(x, 0.3), expected, rtol=0, atol=1e-12)


def test_stronger_guidance_makes_samples_more_typical_of_their_class():
    """Two overlapping classes: guidance w > 1 moves samples to where the class is more probable, p(y|x) grows."""
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    gmm, path = oracles.GaussianMixture(means, stds=1.0, labels=torch.tensor([0, 1])), paths.VPPath()
    y = torch.ones(2000, dtype=torch.long)
    p_class = {}
    for w in (1.0, 3.0):
        x = samplers.prior(path, (2000, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        out = samplers.ddim(gmm.as_model(path), x, grids.uniform(100), path, y=y, guidance=w, null_label=2)
        p_class[w] = gmm.responsibilities(out, 1e-4, path)[:, 1].mean().item()
    # w = 1 is exact conditional sampling: E[p(y=1|x)] over x ~ N((1, 0), I) with p(y=1|x) = sigmoid(2 x_1)
    u = torch.linspace(-10, 12, 200001, dtype=torch.float64)
    expected = (torch.sigmoid(2 * u) * torch.exp(-((u - 1) ** 2) / 2)).sum() * (u[1] - u[0]) / (2 * torch.pi) ** 0.5
    assert p_class[1.0] == pytest.approx(expected.item(), abs=0.02)
    assert p_class[3.0] > p_class[1.0] + 0.05


# --- clear errors ---------------------------------------------------------------------------------------------
def test_bad_input():
    with pytest.raises(ValueError, match="clip_x0 must"):
        samplers.ddim(lambda x, t, y=None: x, torch.zeros(4, 2), grids.uniform(3), paths.VPPath(), clip_x0=0.0)
    gmm, path = oracles.eight_gaussians(), paths.VPPath()
    model, x = gmm.as_model(path), torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="at least 2 times"):
        samplers.ddim(model, x, torch.tensor([1.0]), path)
    with pytest.raises(ValueError, match="must end exactly at 0"):
        samplers.ddim(model, x, torch.tensor([1.0, 0.5]), path)
    with pytest.raises(ValueError, match="strictly decreasing"):
        samplers.ddim(model, x, torch.tensor([0.5, 1.0, 0.0]), path)
    with pytest.raises(ValueError, match=r"ts\[0\] must be <= 1"):
        samplers.ddim(model, x, torch.tensor([1.5, 0.0]), path)
    with pytest.raises(ValueError, match="needs null_label"):
        samplers.ddim(model, x, grids.uniform(5), path, y=torch.zeros(4, dtype=torch.long), guidance=3.0)
    with pytest.raises(ValueError, match="needs class labels y"):
        samplers.ddim(model, x, grids.uniform(5), path, guidance=3.0, null_label=8)
    with pytest.raises(ValueError, match="target must be one of"):
        samplers.euler(model, x, grids.uniform(5), path, target="noise")
    with pytest.raises(ValueError, match="name must be one of"):
        samplers.get_sampler("dpm_solver_3")
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        grids.uniform(0)
    with pytest.raises(ValueError, match="model output must have the shape of x"):
        samplers.euler(lambda x, t, y=None: x[:, :1], x, grids.uniform(3), path)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        samplers.euler(model, [[0.0, 0.0]], grids.uniform(3), path)
    with pytest.raises(ValueError, match="use target='v'"):  # eps-prediction on rectified flow at t = 1
        samplers.euler(gmm.as_model(paths.LinearPath(), "eps"), x, grids.uniform(3), paths.LinearPath())
    with pytest.raises(TypeError, match="path must be a diffkit.paths.GaussianPath"):
        samplers.ddim(model, x, grids.uniform(3), "vp")
    with pytest.raises(TypeError, match="path must be a diffkit.paths.GaussianPath"):
        samplers.prior("vp", (4, 2))
    with pytest.raises(ValueError, match="y must be a 1-D integer tensor"):
        samplers.ddim(model, x, grids.uniform(3), path, y=torch.zeros(4))
    with pytest.raises(FloatingPointError, match="NaN"):
        samplers.euler(lambda x, t, y=None: x * float("nan"), x, grids.uniform(3), path)
