import pytest
import torch

from diffkit import exercises


def _ddim(x, e, ab, abp, eta, z, var_as_std=False, no_sqrt=False, eta_twice=False, beta=False):
    """One DDIM step (Song et al., 2021, eq. 12) with one typical mistake switched on."""
    x0 = (x - (1 - ab).sqrt() * e) / ab.sqrt()
    var = (1 - ab / abp) if beta else (1 - abp) / (1 - ab) * (1 - ab / abp)
    sigma = eta * (var if no_sqrt else var.sqrt())
    direction = (1 - abp - (sigma if var_as_std else sigma**2)).sqrt() * e
    return abp.sqrt() * x0 + direction + (eta * sigma if eta_twice else sigma) * z


def test_ddim_step_at_eta_1_is_the_ddpm_posterior_step():
    """Independent check of the reference: with eta = 1 the step is x0-hat's posterior mean plus sqrt(beta_tilde) z
    (chapter 3's eq-posterior), and with eta = 0 it keeps x_n's own eps_hat (deterministic)."""
    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec(exercises.solution("ddim_step"), namespace)
    g = torch.Generator().manual_seed(0)
    abp = torch.tensor([[0.5], [0.9]], dtype=torch.float64)
    ab = abp * torch.tensor([[0.95], [0.99]], dtype=torch.float64)
    x, e, z = (torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(3))
    beta = 1 - ab / abp
    x0 = (x - (1 - ab).sqrt() * e) / ab.sqrt()
    mean = (abp.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - abp) * x) / (1 - ab)
    std = ((1 - abp) / (1 - ab) * beta).sqrt()
    torch.testing.assert_close(namespace["ddim_step"](x, e, ab, abp, 1.0, z), mean + std * z)
    torch.testing.assert_close(namespace["ddim_step"](x, e, ab, abp, 0.0, z),
                               abp.sqrt() * x0 + (1 - abp).sqrt() * e)


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_reference_solutions_pass_their_checkers(name):
    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec(exercises.solution(name), namespace)  # the source shown to readers is itself a correct solution
    assert exercises.check(name, namespace[name], verbose=False).passed


@pytest.mark.parametrize("name,wrong,expected", [
    ("forward_sample", lambda x0, e, ab: ab * x0 + (1 - ab) * e, "take their square roots"),
    ("forward_sample", lambda x0, e, ab: ((1 - ab).sqrt() * x0 + ab.sqrt() * e), "swapped"),
    ("forward_sample", lambda x0, e, ab: (ab.sqrt() * x0 + (1 - ab).sqrt() * e)[0], "should have shape (4, 3)"),
    ("alpha_bar_from_betas", lambda b: 1 - torch.cumsum(b, 0), "first-order approximation"),
    ("alpha_bar_from_betas", lambda b: torch.cumprod(b, 0), "product of the betas"),
    ("alpha_bar_from_betas", lambda b: 1 - torch.cumprod(1 - b, 0), "1 - (product of the alphas)"),
    ("alpha_bar_from_betas", lambda b: torch.cat([b.new_ones(1), torch.cumprod(1 - b, 0)[:-1]]), "shifted"),
    ("alpha_bar_from_betas", lambda b: torch.cumprod(1 - b, 0).sum(), "should have shape"),
    ("snr_one_time", lambda ab: torch.tensor(float((ab <= 0.5).nonzero()[0]) / len(ab)), "one step early"),
    ("snr_one_time", lambda ab: torch.tensor(float((ab <= 0.5).nonzero()[0]) + 1), "not the step n"),
    ("snr_one_time", lambda ab: torch.tensor((float((ab <= 0.25).nonzero()[0]) + 1) / len(ab)),
     "ratio of variances"),
    ("snr_one_time", lambda ab: (float((ab <= 0.5).nonzero()[0]) + 1) / len(ab), "0-dimensional tensor"),
    ("snr_one_time", lambda ab: torch.tensor(0.3), "the values are off"),
    ("v_to_eps", lambda v, x, a: (1 - a**2).sqrt() * v + a * x, "published code"),
    ("v_to_eps", lambda v, x, a: a * x - (1 - a**2).sqrt() * v, "that is x0"),
    ("rectified_flow_target", lambda x0, e: x0 - e, "sign is flipped"),
    ("gaussian_kl", lambda m1, v1, m2, v2: (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1).sum(-1), "1/2"),
    ("gaussian_kl", lambda m1, v1, m2, v2: 0.5 * (torch.log(v1 / v2) + (v2 + (m1 - m2) ** 2) / v1 - 1).sum(-1),
     "not symmetric"),
    ("gaussian_kl", lambda *a: 1.0, "return a torch.Tensor"),
    ("rectified_flow_target", lambda x0, e: x0 * 0.5, "values are off"),
    ("posterior_mean", lambda x0, xn, ab, abp: (ab / abp).sqrt() * xn, "forward step's mean"),
    ("posterior_mean", lambda x0, xn, ab, abp: (abp.sqrt() * (1 - ab / abp) * xn
                                                + (ab / abp).sqrt() * (1 - abp) * x0) / (1 - ab), "swapped"),
    ("posterior_mean", lambda x0, xn, ab, abp: (abp * (1 - ab / abp) * x0
                                                + (ab / abp) * (1 - abp) * xn) / (1 - ab), "square roots"),
    ("mean_from_eps", lambda xn, e, ab, abp: (xn - (1 - ab).sqrt() * e) / ab.sqrt(), "that is x0-hat"),
    ("mean_from_eps", lambda xn, e, ab, abp: (xn + (1 - ab / abp) / (1 - ab).sqrt() * e) / (ab / abp).sqrt(),
     "sign is flipped"),
    ("mean_from_eps", lambda xn, e, ab, abp: xn, "values are off"),
    ("gaussian_score", lambda x, m, v: -(x - m) / v.sqrt(), "not the standard deviation"),
    ("gaussian_score", lambda x, m, v: (x - m) / v, "points towards the mean"),
    ("gaussian_score", lambda x, m, v: -(x - m) / (2 * v), "the 1/2 cancels"),
    ("gaussian_score", lambda x, m, v: -(x - m) ** 2 / (2 * v), "log-density itself"),
    ("langevin_step", lambda x, s, d, z: x + d * s + d.sqrt() * z, "samples p^2"),
    ("langevin_step", lambda x, s, d, z: x + d * s + 2 * d * z, "noise's variance"),
    ("langevin_step", lambda x, s, d, z: x - d * s + (2 * d).sqrt() * z, "move up the score"),
    ("langevin_step", lambda x, s, d, z: x + d / 2 * s + d.sqrt() * z, "twice as large"),
    ("langevin_step", lambda x, s, d, z: x + d * s, "gradient ascent"),
    ("tweedie_x0", lambda x, s, a, sg: (x + sg * s) / a, "not sigma times"),
    ("tweedie_x0", lambda x, s, a, sg: (x - sg**2 * s) / a, "add sigma^2 * score"),
    ("tweedie_x0", lambda x, s, a, sg: x + sg**2 * s, "divide by alpha to get x0"),
    ("tweedie_x0", lambda x, s, a, sg: (x + sg**2 * s) / a**2, "not alpha^2"),
    ("to_diffkit_time", lambda t, u: (t, -u), "time is unchanged"),
    ("to_diffkit_time", lambda t, u: (1 - t, u), "keeps its sign"),
    ("to_diffkit_time", lambda t, u: 1 - t, "return a pair"),
    ("optimal_discriminator_logit", lambda lp, lq: lq - lp, "logit of 1 - D*"),
    ("optimal_discriminator_logit", lambda lp, lq: torch.sigmoid(lp - lq), "that is D* itself"),
    ("optimal_discriminator_logit", lambda lp, lq: lp - torch.logaddexp(lp, lq), "that is log D*"),
    ("optimal_discriminator_logit", lambda lp, lq: torch.log(lp.exp() / lq.exp()), "stay in log space"),
    ("alternating_step", lambda x, y, lr: (x - lr * y, y + lr * x), "that is the simultaneous step"),
    ("alternating_step", lambda x, y, lr: (x + lr * y, y - lr * (x + lr * y)), "x minimises f = x y"),
    ("alternating_step", lambda x, y, lr: x - lr * y, "return a pair"),
    ("extragradient_step", lambda x, y, lr: (x - lr * y, y + lr * x), "plain simultaneous step"),
    ("extragradient_step", lambda x, y, lr: (x - lr * y - lr * (y + lr * x), y + lr * x + lr * (x - lr * y)),
     "must start from (x, y)"),
    ("extragradient_step", lambda x, y, lr: (x - lr * y, y + lr * (x - lr * y)), "that is the alternating step"),
    ("ddim_step", lambda x, e, ab, abp, eta, z: _ddim(x, e, ab, abp, eta, z, var_as_std=True), "sigma squared"),
    ("ddim_step", lambda x, e, ab, abp, eta, z: _ddim(x, e, ab, abp, eta, z, no_sqrt=True), "needs a square root"),
    ("ddim_step", lambda x, e, ab, abp, eta, z: _ddim(x, e, ab, abp, eta, z, eta_twice=True), "applied twice"),
    ("ddim_step", lambda x, e, ab, abp, eta, z: _ddim(x, e, ab, abp, eta, z, beta=True), "forward beta"),
    ("ddim_step", lambda x, e, ab, abp, eta, z: _ddim(x, e, ab, abp, eta, 0 * z), "sigma * z is missing"),
    ("ddim_step", lambda x, e, ab, abp, eta, z: (x - (1 - ab).sqrt() * e) / ab.sqrt(), "values are off"),
    ("min_snr_weight", lambda ab, g: (ab / (1 - ab)).clamp(max=g), "the weight on the x0 scale"),
    ("min_snr_weight", lambda ab, g: (ab / (1 - ab)).clamp(min=g) / (ab / (1 - ab)), "not max(SNR, gamma)"),
    ("min_snr_weight", lambda ab, g: (ab / (1 - ab)).sqrt().clamp(max=g) / (ab / (1 - ab)).sqrt(),
     "ratio of variances"),
    ("min_snr_weight", lambda ab, g: g * (1 - ab) / ab, "without the cap"),
])
def test_wrong_answers_get_specific_feedback(name, wrong, expected):
    result = exercises.check(name, wrong, verbose=False)
    assert not result.passed
    assert any(expected in line for line in result.feedback), result.feedback


def test_unfinished_and_crashing_code_is_reported_not_raised(capsys):
    def todo(x0, eps, alpha_bar):
        raise NotImplementedError

    result = exercises.check("forward_sample", todo)
    assert not result.passed and "not implemented yet" in capsys.readouterr().out
    result = exercises.check("forward_sample", lambda x0, eps, ab: x0 @ x0)
    assert not result.passed and "raised RuntimeError" in result.feedback[0]


def test_bad_input():
    with pytest.raises(ValueError, match="name must be one of"):
        exercises.check("ddpm_sampler", lambda: None)
    with pytest.raises(TypeError, match="fn must be the function you wrote"):
        exercises.check("forward_sample", 42)


def test_list_show_and_hint_lead_to_the_solution(capsys):
    names = exercises.list()
    out = capsys.readouterr().out
    assert names == list(exercises.EXERCISES) and "chapter  2  forward_sample(x0, eps, alpha_bar)" in out
    assert exercises.list(chapter=7, verbose=False) == ["rectified_flow_target"]
    text = exercises.show("v_to_eps")
    assert capsys.readouterr().out.strip() == text
    assert "def v_to_eps(v, x_t, alpha):" in text and "sigma = sqrt(1 - alpha^2)" in text and "hint" in text
    for name in exercises.EXERCISES:
        hint = exercises.hint(name, verbose=False)
        assert hint and hint not in exercises.solution(name)  # a nudge, not the answer
    result = exercises.check("v_to_eps", lambda v, x_t, alpha: v, verbose=False)
    assert result.feedback[-1] == "stuck? exercises.hint('v_to_eps'), then exercises.solution('v_to_eps')"


@pytest.mark.parametrize("wrong,expected", [
    (lambda x0, eps: x0, "your function takes (x0, eps) but is called with 3 argument(s): "
                         "forward_sample(x0, eps, alpha_bar)"),
    (lambda x0, eps, alpha_bar, t: x0, "your function takes (x0, eps, alpha_bar, t) but is called with 3"),
    (lambda eps, x0, alpha_bar: alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps,
     "the arguments come in the order (x0, eps, alpha_bar), your function takes (eps, x0, alpha_bar)"),
    (lambda alpha_bar, x0, eps: alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps,  # names fine, order read wrong
     "the arguments come in the order (x0, eps, alpha_bar), your function takes (alpha_bar, x0, eps)"),
    (lambda a, b, c: a.sqrt() * b + (1 - a).sqrt() * c,  # unnamed, but right in another order
     "your function is right for the arguments in the order (alpha_bar, x0, eps), but it is called as "
     "forward_sample(x0, eps, alpha_bar)"),
])
def test_wrong_number_or_order_of_arguments_is_named(wrong, expected):
    result = exercises.check("forward_sample", wrong, verbose=False)
    assert not result.passed and result.feedback[0].startswith(expected)


def test_signature():
    assert exercises.signature("gaussian_kl") == "gaussian_kl(mu1, var1, mu2, var2)"
    with pytest.raises(ValueError, match="name must be one of"):
        exercises.show("ddpm_sampler")


def test_the_extragradient_solution_converges_where_the_other_steps_do_not():
    """Chapter 1: on min_x max_y xy, the reference extragradient step contracts by sqrt(1 - lr^2 + lr^4) per step,
    the alternating one keeps x^2 + y^2 - lr x y, and gradient descent-ascent (diffkit.gan) spirals out."""
    from diffkit import gan

    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec(exercises.solution("extragradient_step") + exercises.solution("alternating_step"), namespace)
    lr, x, y = 0.3, torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    r0 = (x**2 + y**2).sqrt()
    ex, ey, ax, ay = x, y, x, y
    for _ in range(50):
        ex, ey = namespace["extragradient_step"](ex, ey, lr)
        ax, ay = namespace["alternating_step"](ax, ay, lr)
    rate = (1 - lr**2 + lr**4) ** 0.5
    assert torch.allclose((ex**2 + ey**2).sqrt(), r0 * rate**50, rtol=1e-10)
    q = gan.bilinear_invariant(torch.stack([ax, ay], -1), lr)
    assert torch.allclose(q, gan.bilinear_invariant(torch.stack([x, y], -1), lr), rtol=1e-10)
    assert torch.allclose(torch.stack([ax, ay], -1)[0], gan.bilinear_game(1.0, 0.5, lr, 50, "alternating")[-1])


def test_chapter_3_exercises_agree_with_diffkit_elbo():
    """The reference posterior mean and eps-mean are the formulas diffkit.elbo ships (chapter 3)."""
    from diffkit import elbo, paths

    path = paths.DiscretePath.from_schedule("linear", 1000)
    n = torch.tensor([2, 10, 500, 1000])
    x0, x_n, eps_hat = torch.randn(3, 4, 3, dtype=torch.float64)
    ab, abp = path.alpha_bar[n][:, None], path.alpha_bar[n - 1][:, None]
    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec(exercises.solution("posterior_mean") + exercises.solution("mean_from_eps"), namespace)
    torch.testing.assert_close(namespace["posterior_mean"](x0, x_n, ab, abp), elbo.posterior(path, x0, x_n, n)[0])
    torch.testing.assert_close(namespace["mean_from_eps"](x_n, eps_hat, ab, abp),
                               elbo.model_mean(path, x_n, n, eps_hat))


def test_chapter_5_exercises_agree_with_the_exact_oracles():
    """The reference Gaussian score and Tweedie denoiser are what diffkit.oracles computes in closed form."""
    from diffkit import oracles, paths

    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec(exercises.solution("gaussian_score") + exercises.solution("tweedie_x0"), namespace)
    path, t = paths.VPPath(), torch.full((5,), 0.4, dtype=torch.float64)
    means = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    mix = oracles.GaussianMixture(means, stds=0.7)
    x = torch.randn(5, 3, dtype=torch.float64)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    var = a**2 * 0.7**2 + s**2  # p_t = N(alpha mean, (alpha^2 0.49 + sigma^2) I)
    score = namespace["gaussian_score"](x, a * means, var)
    torch.testing.assert_close(score, mix.score(x, t, path))
    torch.testing.assert_close(namespace["tweedie_x0"](x, score, a, s), mix.denoiser(x, t, path))
