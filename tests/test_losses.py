import json
import math

import pytest
import torch

from diffkit import losses, oracles, paths, targets
from diffkit.coupling import ot_pair


class TinyNet(torch.nn.Module):
    """A small float64 MLP model(x, t) for 2-D data."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()

    def forward(self, x, t, y=None):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def _draws(n, seed=0, path=None):
    g = torch.Generator().manual_seed(seed)
    gmm = oracles.eight_gaussians()
    x0 = gmm.sample(n, generator=g)
    t = 0.01 + 0.98 * torch.rand(n, generator=g, dtype=torch.float64)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return gmm, x0, t, eps


def _grad(loss, model):
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_cfm_and_marginal_fm_have_equal_gradients():
    """Lipman et al. (2023), Thm 2: the conditional loss has the gradient of the (intractable) marginal one."""
    path, model = paths.LinearPath(), TinyNet(0)
    gmm, x0, t, eps = _draws(200_000)
    g_cfm = _grad(losses.cfm_loss(model, x0, t=t, eps=eps), model)
    x_t = path.sample(x0, t, eps).x_t
    u_marginal = gmm.velocity(x_t, t, path)
    g_fm = _grad(((model(x_t, t) - u_marginal) ** 2).mean(1).mean(), model)
    rel = ((g_cfm - g_fm).norm() / g_fm.norm()).item()
    assert rel < 0.03, rel
    # a wrong conditional target (the sign of the velocity flipped) gives a clearly different gradient
    wrong = ((model(x_t, t) - (x0 - eps)) ** 2).mean(1).mean()
    assert ((_grad(wrong, model) - g_fm).norm() / g_fm.norm()).item() > 0.5


def test_cfm_minus_fm_is_constant_exactly():
    """Averaging the conditional loss over the exact posterior p(x0 | x_t) of a finite data set leaves the
    marginal loss plus a constant: the difference is the same for every model, to float64 precision."""
    path = paths.LinearPath(0.05)
    data = torch.randn(7, 2, dtype=torch.float64) * 2
    oracle = oracles.GaussianMixture.from_data(data)
    x_t = torch.randn(50, 2, dtype=torch.float64) * 2
    t = torch.full((50,), 0.6, dtype=torch.float64)
    r = oracle.responsibilities(x_t, t, path)  # (B, K)
    a, s = path.alpha(t)[0], path.sigma(t)[0]
    eps_i = (x_t[:, None, :] - a * data[None]) / s  # eps that maps data point i to x_t
    u_cond = path.d_alpha(t)[0] * data[None] + path.d_sigma(t)[0] * eps_i  # (B, K, 2)
    u_marg = oracle.velocity(x_t, t, path)
    diffs = []
    for seed in range(3):
        u = TinyNet(seed)(x_t, t).detach()
        cfm = (r * ((u[:, None] - u_cond) ** 2).sum(-1)).sum(-1).mean()
        fm = ((u - u_marg) ** 2).sum(-1).mean()
        diffs.append((cfm - fm).item())
    assert max(diffs) - min(diffs) < 1e-10 and abs(diffs[0]) > 1e-3


def test_denoising_and_explicit_score_matching_differ_by_a_constant():
    """Vincent (2011): E sigma^2 ||s - grad log q(x_t|x0)||^2 = E sigma^2 ||s - grad log p_t||^2 + C."""
    path = paths.VPPath()
    gmm, x0, t, eps = _draws(200_000, seed=1)
    x_t = path.sample(x0, t, eps).x_t
    true_score = gmm.score(x_t, t, path)
    sig2 = path.sigma(t) ** 2
    out = {}
    for seed in (0, 1):
        model = TinyNet(seed)
        with torch.no_grad():
            dsm = losses.dsm_loss(model, x0, path, t=t, eps=eps)
            esm = (sig2 * ((model(x_t, t) - true_score) ** 2).mean(1)).mean()
        out[seed] = (dsm.item(), esm.item())
    c0, c1 = out[0][0] - out[0][1], out[1][0] - out[1][1]
    assert abs(out[0][0] - out[1][0]) > 0.05  # the two models really differ ...
    assert abs(c0 - c1) < 0.01 * abs(out[0][0] - out[1][0])  # ... yet DSM - ESM is the same constant


def test_dsm_is_eps_loss_of_the_tweedie_model():
    path, model = paths.VEPath(0.01, 10.0), TinyNet(0)
    gmm, x0, t, eps = _draws(1000)
    eps_model = lambda x, t, y=None: -path.sigma(t)[:, None] * model(x, t)  # noqa: E731
    torch.testing.assert_close(losses.dsm_loss(model, x0, path, t=t, eps=eps),
                               losses.ddpm_loss(eps_model, x0, path, t=t, eps=eps))


@pytest.mark.parametrize("path", [paths.VPPath(), paths.LinearPath(), paths.CosinePath(), paths.VEPath(0.01, 20.0)],
                         ids=repr)
@pytest.mark.parametrize("target", ["x0", "v", "score", "velocity"])
def test_snr_weighting_equals_the_eps_loss_for_every_target(path, target):
    """With w = SNR on the x0 scale every parameterisation gives exactly the epsilon loss (chapter 4)."""
    eps_model = TinyNet(0)
    gmm, x0, t, eps = _draws(500)

    def model(x, t, y=None):
        return targets.convert(eps_model(x, t), "eps", target, x, t, path)

    reference = losses.diffusion_loss(eps_model, x0, path, target="eps", t=t, eps=eps)
    weighted = losses.diffusion_loss(model, x0, path, target=target, t=t, eps=eps, weighting="snr")
    torch.testing.assert_close(weighted, reference, rtol=1e-9, atol=0)


@pytest.mark.parametrize("path", [paths.VPPath(), paths.LinearPath(), paths.DiscretePath.from_schedule("linear", 1000)],
                         ids=repr)
@pytest.mark.parametrize("target", ["eps", "v", "score", "velocity"])
def test_x0_weighting_is_the_x0_loss_for_every_target(path, target):
    """weighting="x0" (w = 1) trains any parameterisation on exactly the x0-loss; without it, an eps-network's
    loss is SNR times that (chapter 10)."""
    x0_model = TinyNet(0)
    _, x0, t, eps = _draws(500)
    if path.discrete:  # on its grid
        t = (t * 1000).ceil().clamp(1, 1000) / 1000

    def model(x, t, y=None):
        return targets.convert(x0_model(x, t), "x0", target, x, t, path)

    reference = losses.diffusion_loss(x0_model, x0, path, target="x0", t=t, eps=eps)
    weighted = losses.diffusion_loss(model, x0, path, target=target, t=t, eps=eps, weighting="x0")
    torch.testing.assert_close(weighted, reference, rtol=1e-9, atol=0)
    if target == "eps":
        plain = losses.diffusion_loss(model, x0, path, target="eps", t=t, eps=eps, reduce=False)
        per_x0 = losses.diffusion_loss(x0_model, x0, path, target="x0", t=t, eps=eps, reduce=False)
        torch.testing.assert_close(plain, path.snr(t) * per_x0, rtol=1e-9, atol=0)


def test_min_snr_and_truncated_snr_match_their_papers():
    path, model = paths.CosinePath(), TinyNet(0)
    gmm, x0, t, eps = _draws(500)
    snr = path.snr(t)
    per_eps = losses.diffusion_loss(model, x0, path, target="eps", t=t, eps=eps, reduce=False)
    # Hang et al. (2023): for epsilon-prediction, weight min(SNR, gamma) / SNR
    torch.testing.assert_close(losses.diffusion_loss(model, x0, path, target="eps", t=t, eps=eps, weighting="min_snr",
                                                     gamma=5.0), (snr.clamp_max(5.0) / snr * per_eps).mean())
    # ... and for v-prediction (alpha^2 + sigma^2 = 1), weight min(SNR, gamma) / (SNR + 1)
    per_v = losses.diffusion_loss(model, x0, path, target="v", t=t, eps=eps, reduce=False)
    torch.testing.assert_close(losses.diffusion_loss(model, x0, path, target="v", t=t, eps=eps, weighting="min_snr"),
                               (snr.clamp_max(5.0) / (snr + 1) * per_v).mean())
    # Salimans & Ho (2022): truncated SNR max(SNR, 1) on the x0 scale = max(SNR, 1)/(SNR + 1) on the v scale
    torch.testing.assert_close(
        losses.diffusion_loss(model, x0, path, target="v", t=t, eps=eps, weighting="truncated_snr"),
        (snr.clamp_min(1.0) / (snr + 1) * per_v).mean())


def test_oracle_attains_the_minimum():
    path = paths.VPPath()
    gmm, x0, t, eps = _draws(20000)
    best = losses.ddpm_loss(gmm.as_model(path, "eps"), x0, path, t=t, eps=eps)
    for scale in (0.9, 1.1):
        worse = losses.ddpm_loss(lambda x, t, y=None: scale * gmm.as_model(path, "eps")(x, t), x0, path, t=t, eps=eps)
        assert worse > best


@pytest.mark.parametrize("path", [paths.VPPath(), paths.LinearPath(), paths.DiscretePath.from_schedule("linear", 1000)],
                         ids=repr)
def test_denoising_mse_of_the_posterior_mean_is_the_mmse(path):
    """Gaussian data N(m, s^2 I): E[x0|x_t] has the closed-form error s^2 sigma^2 / (alpha^2 s^2 + sigma^2) per
    dimension, whatever target the model predicts it through; the data mean scores s^2 at every t."""
    m, s, d, n = torch.tensor([[1.0, -2.0, 0.5, 0.0]], dtype=torch.float64), 0.7, 4, 20_000
    gauss = oracles.GaussianMixture(m, stds=s)
    x0 = gauss.sample(n, generator=torch.Generator().manual_seed(0))
    ts = [0.05, 0.3, 0.6, 0.9, 0.999]
    a, sig = path.alpha(torch.tensor(ts, dtype=torch.float64)), path.sigma(torch.tensor(ts, dtype=torch.float64))
    mmse = s**2 * sig**2 / (a**2 * s**2 + sig**2)
    by_target = {target: losses.denoising_mse(gauss.as_model(path, target), x0, path, ts, target=target,
                                              generator=torch.Generator().manual_seed(1))
                 for target in targets.TARGETS}
    # ||x0 - E[x0|x_t]||^2 / d has mean v and std v sqrt(2/d): allow 5 standard errors of the mean
    torch.testing.assert_close(by_target["eps"], mmse, rtol=5 * math.sqrt(2 / (d * n)), atol=0)
    for target, mse in by_target.items():  # the same draws: every target implies the same x0 estimate
        torch.testing.assert_close(mse, by_target["eps"], rtol=1e-7, atol=0, msg=target)
    # the data mean as a constant x0 prediction: its error is the sample variance, exactly, at every t
    mean_model = lambda x, t, y=None: x0.mean(0).expand_as(x)  # noqa: E731
    variance = ((x0 - x0.mean(0)) ** 2).mean()
    torch.testing.assert_close(losses.denoising_mse(mean_model, x0, path, ts, target="x0"),
                               variance.expand(len(ts)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("target", ["eps", "v", "velocity"])
def test_denoising_mse_is_the_loss_on_the_x0_scale(target):
    """Through the independent route of diffusion_loss and target_scale (||d target||^2 = k ||d x0||^2): for eps
    the x0 error is the loss divided by the SNR."""
    path, model = paths.CosinePath(), TinyNet(0)
    _, x0, _, _ = _draws(2000)
    for t in (0.1, 0.5, 0.95):
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        t_b = torch.full((len(x0),), t, dtype=torch.float64)
        loss = losses.diffusion_loss(model, x0, path, target=target, t=t_b, eps=eps)
        k = losses.target_scale(target, t_b, path)[0]
        mse = losses.denoising_mse(model, x0, path, [t], target=target, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(mse, (loss / k).reshape(1), rtol=1e-9, atol=0)


def test_denoising_mse_in_batches_is_the_mse_in_one_batch_with_each_label_on_its_image():
    """The model sees the images a batch at a time; each batch must get its own labels and times."""
    path = paths.DiscretePath.from_schedule("linear", 1000)
    x0 = torch.randn(103, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(103) % 10
    model = lambda x, t, y: 0.5 * x + 0.1 * y[:, None, None, None] * t[:, None, None, None]  # noqa: E731
    runs = [losses.denoising_mse(model, x0, path, [0.2, 0.7], target="x0", y=y, batch_size=b,
                                 generator=torch.Generator().manual_seed(1)) for b in (1000, 10, 1)]
    for run in runs[1:]:
        torch.testing.assert_close(run, runs[0], rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="batch_size"):
        losses.denoising_mse(model, x0, path, [0.2], target="x0", y=y, batch_size=0)


def test_time_distributions():
    g = torch.Generator().manual_seed(0)
    t = losses.sample_t(100_000, paths.LinearPath(), t_dist="logit_normal", generator=g, dtype=torch.float64)
    for u in (0.1, 0.3, 0.5, 0.8):
        cdf = 0.5 * (1 + math.erf(math.log(u / (1 - u)) / math.sqrt(2)))  # P(sigmoid(n) < u) = Phi(logit(u))
        assert (t < u).double().mean().item() == pytest.approx(cdf, abs=0.005)
    seen = []
    model = lambda x, t, y=None: (seen.append(t), x)[1]  # noqa: E731
    losses.ddpm_loss(model, torch.zeros(4096, 2), paths.DiscretePath.from_schedule("cosine", 10), generator=g)
    assert set((seen[0] * 10).round().long().tolist()) == set(range(1, 11))


@pytest.mark.parametrize("t_dist", ["uniform", "logit_normal"])
def test_the_time_shift_adds_log_a_to_every_logit_and_divides_the_snr_by_a_squared(t_dist):
    """SD3's shift t -> a t / (1 + (a - 1) t) (chapter 10, eq-shift-log-snr): logit t + log a, draw by draw, so on
    the rectified-flow path SNR / a^2; shift 1 is the unshifted draw itself, bit for bit."""
    path, a = paths.LinearPath(), 3.0

    def draw(**kw):
        return losses.sample_t(20_000, path, t_dist=t_dist, generator=torch.Generator().manual_seed(4),
                               dtype=torch.float64, **kw)

    plain, shifted = draw(), draw(shift=a)
    assert torch.equal(draw(shift=1.0), plain)
    inner = (plain > 1e-5) & (plain < 1 - 1e-5)  # away from the clamps
    torch.testing.assert_close(torch.logit(shifted[inner]) - torch.logit(plain[inner]),
                               torch.full((int(inner.sum()),), math.log(a), dtype=torch.float64))
    torch.testing.assert_close(path.snr(plain[inner]) / path.snr(shifted[inner]),
                               torch.full((int(inner.sum()),), a * a, dtype=torch.float64))
    assert (shifted >= plain).all() and shifted.max() <= 1.0  # toward noise, still in (0, 1]
    g = torch.Generator().manual_seed(0)
    t32 = losses.sample_t(8, path, t_dist=t_dist, generator=g)
    assert torch.equal(t32, losses.sample_t(8, path, t_dist=t_dist, generator=torch.Generator().manual_seed(0),
                                            dtype=torch.float64).float())


def test_losses_train_on_the_shifted_times():
    """The objective's ``t_shift`` reaches the times the model sees (the same draws as sample_t's)."""
    seen = []

    def model(x, t, y=None):
        seen.append(t)
        return x

    x0, path = torch.zeros(64, 2), paths.LinearPath()
    for kind in ("diffusion", "cfm"):
        seen.clear()
        objective = losses.objective(kind, path=path, target="x0" if kind == "diffusion" else None,
                                     t_dist="logit_normal", t_shift=3.0)
        assert objective.options["t_shift"] == 3.0
        objective(model, x0, None, torch.Generator().manual_seed(2))
        expected = losses.sample_t(64, path, t_dist="logit_normal", shift=3.0,
                                   generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(seen[0], expected)
    seen.clear()
    losses.dsm_loss(model, x0, paths.VPPath(), t_shift=2.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(seen[0], losses.sample_t(64, paths.VPPath(), shift=2.0,
                                                        generator=torch.Generator().manual_seed(1)))


def test_ot_coupling_is_used():
    model = TinyNet(0)
    gmm, x0, t, eps = _draws(64)
    x0p, epsp = ot_pair(x0, eps)
    torch.testing.assert_close(losses.cfm_loss(model, x0, t=t, eps=eps, coupling="ot"),
                               losses.cfm_loss(model, x0p, t=t, eps=epsp))
    assert not torch.allclose(losses.cfm_loss(model, x0, t=t, eps=eps, coupling="ot"),
                              losses.cfm_loss(model, x0, t=t, eps=eps))


def test_bad_input():
    path, x0 = paths.VPPath(), torch.randn(8, 2)
    with pytest.raises(ValueError, match="model output must have the shape of x0"):
        losses.ddpm_loss(lambda x, t, y=None: x[:, :1], x0, path)
    with pytest.raises(ValueError, match="weighting must be one of"):
        losses.diffusion_loss(lambda x, t, y=None: x, x0, path, weighting="p2")
    with pytest.raises(ValueError, match="t must lie in"):
        losses.ddpm_loss(lambda x, t, y=None: x, x0, path, t=torch.full((8,), 2.0))
    with pytest.raises(ValueError, match="sigma_t = 0"):
        losses.ddpm_loss(lambda x, t, y=None: x, x0, path, t=torch.zeros(8))
    with pytest.raises(ValueError, match="needs a continuous path"):
        losses.sample_t(8, paths.DiscretePath.from_schedule("cosine", 10), t_dist="logit_normal")
    with pytest.raises(ValueError, match="shift=2 needs a continuous path"):
        losses.sample_t(8, paths.DiscretePath.from_schedule("cosine", 10), shift=2.0)
    with pytest.raises(ValueError, match="shift must be > 0.0, got 0.0"):
        losses.sample_t(8, path, shift=0.0)
    with pytest.raises(ValueError, match="t_shift must be > 0.0, got -1.0"):
        losses.objective("cfm", t_shift=-1.0)
    with pytest.raises(ValueError, match="t_shift needs a continuous path"):
        losses.objective("ddpm", path=paths.DiscretePath.from_schedule("linear", 100), t_shift=3.0)
    with pytest.raises(ValueError, match="target must be one of 'eps', 'x0', 'v'"):
        losses.ddpm_loss(lambda x, t, y=None: x, x0, path, target="velocity")
    with pytest.raises(TypeError, match="path must be a diffkit.paths.GaussianPath"):
        losses.ddpm_loss(lambda x, t, y=None: x, x0, "linear")
    with pytest.raises(ValueError, match="ts must lie in"):
        losses.denoising_mse(lambda x, t, y=None: x, x0, path, [0.5, 0.0])
    with pytest.raises(ValueError, match="ts must be a non-empty 1-D"):
        losses.denoising_mse(lambda x, t, y=None: x, x0, path, [])
    with pytest.raises(ValueError, match="alpha_t = 0"):
        losses.denoising_mse(lambda x, t, y=None: x, x0, paths.LinearPath(), [1.0], target="eps")
    with pytest.raises(ValueError, match="coupling must be one of"):
        losses.cfm_loss(lambda x, t, y=None: x, x0, coupling="sinkhorn")


# --- objectives: the Trainer's loss_fn -------------------------------------------------------------------------
@pytest.mark.parametrize("kind,path,target,options,direct", [
    ("ddpm", paths.DiscretePath.from_schedule("linear", 100), "v", {"weighting": "min_snr"},
     lambda m, x0, p, y, g: losses.ddpm_loss(m, x0, p, target="v", weighting="min_snr", y=y, generator=g)),
    ("diffusion", paths.VPPath(), "score", {"t_dist": "logit_normal"},
     lambda m, x0, p, y, g: losses.diffusion_loss(m, x0, p, target="score", t_dist="logit_normal", generator=g)),
    ("dsm", paths.VEPath(), None, {}, lambda m, x0, p, y, g: losses.dsm_loss(m, x0, p, generator=g)),
    ("cfm", None, None, {"coupling": "ot"}, lambda m, x0, p, y, g: losses.cfm_loss(m, x0, coupling="ot", generator=g)),
])
def test_an_objective_is_its_loss_with_the_trainer_signature(kind, path, target, options, direct):
    objective = losses.objective(kind, path=path, target=target, **options)
    model, (_, x0, _, _) = TinyNet(0), _draws(64)
    y = torch.zeros(64, dtype=torch.long)
    got = objective(model, x0, y, torch.Generator().manual_seed(5))  # called as the Trainer calls it
    want = direct(model, x0, objective.path, y, torch.Generator().manual_seed(5))
    assert torch.equal(got, want)
    assert objective.target == (target or {"ddpm": "eps", "dsm": "score", "cfm": "velocity"}[kind])


@pytest.mark.parametrize("path", [paths.VPPath(0.2, 15.0), paths.SubVPPath(), paths.VEPath(0.02, 20.0),
                                  paths.LinearPath(0.05), paths.CosinePath(),
                                  paths.DiscretePath.from_schedule("cosine", 1000, zero_terminal_snr=True)], ids=repr)
def test_an_objective_is_recorded_in_json_and_rebuilt_exactly(path):
    objective = losses.objective("diffusion", path=path, target="x0", weighting="snr")
    record = json.loads(json.dumps(objective.to_dict()))
    rebuilt = losses.Objective.from_dict(record)
    assert rebuilt == objective and hash(rebuilt) == hash(objective) and type(rebuilt.path) is type(path)
    t = torch.linspace(0.01, 1.0, 37, dtype=torch.float64)
    assert torch.equal(rebuilt.path.alpha(t), path.alpha(t)) and torch.equal(rebuilt.path.sigma(t), path.sigma(t))
    assert objective != losses.objective("diffusion", path=path, target="x0")  # the options count


def test_objective_bad_input():
    vp = paths.VPPath()
    with pytest.raises(ValueError, match=r"objective\('ddpm'\) needs path="):
        losses.objective("ddpm")
    with pytest.raises(ValueError, match="target must be one of 'velocity'"):
        losses.objective("cfm", target="eps")
    with pytest.raises(ValueError, match="kind must be one of"):
        losses.objective("edm", path=vp)
    with pytest.raises(TypeError, match="unexpected option.*generator.*come from the Trainer"):
        losses.objective("ddpm", path=vp, generator=None)
    with pytest.raises(TypeError, match="sigma_min is an option of objective\\('cfm'\\) without a path"):
        losses.objective("cfm", path=paths.LinearPath(), sigma_min=0.1)
    with pytest.raises(ValueError, match="needs a continuous path"):
        losses.objective("ddpm", path=paths.DiscretePath.from_schedule("linear", 100), t_dist="logit_normal")
    with pytest.raises(TypeError, match="a loss of your own needs no adapter"):
        losses.objective(lambda m, x, y, g: x.sum())
    assert losses.objective("cfm", sigma_min=0.1).path.sigma_min == 0.1
