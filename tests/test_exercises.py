"""diffkit.exercises: every reference passes its checker, every plausible slip gets its own diagnosis (which
never prints the answer), hints are graded, and a notebook shows solutions collapsed."""

import ast
import html
import json
import math
import re
from pathlib import Path

import einops
import pytest
import torch
import torch.nn.functional as F
import yaml

from diffkit import exercises
from diffkit.exercises import ch04

ROOT = Path(__file__).resolve().parents[1]


def _run_solution(*names):
    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec("\n".join(str(exercises.solution(n)) for n in names), namespace)  # the source shown to readers
    return [namespace[n] for n in names]


# --- the references ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_reference_solutions_pass_their_checkers(name):
    (fn,) = _run_solution(name)
    assert exercises.check(name, fn, verbose=False).passed


def test_ddim_step_at_eta_1_is_the_ddpm_posterior_step():
    """Independent check of the reference: with eta = 1 the step is x0-hat's posterior mean plus sqrt(beta_tilde) z
    (chapter 3's eq-posterior), and with eta = 0 it keeps x_n's own eps_hat (deterministic)."""
    (ddim_step,) = _run_solution("ddim_step")
    g = torch.Generator().manual_seed(0)
    abp = torch.tensor([[0.5], [0.9]], dtype=torch.float64)
    ab = abp * torch.tensor([[0.95], [0.99]], dtype=torch.float64)
    x, e, z = (torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(3))
    beta = 1 - ab / abp
    x0 = (x - (1 - ab).sqrt() * e) / ab.sqrt()
    mean = (abp.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - abp) * x) / (1 - ab)
    std = ((1 - abp) / (1 - ab) * beta).sqrt()
    torch.testing.assert_close(ddim_step(x, e, ab, abp, 1.0, z), mean + std * z)
    torch.testing.assert_close(ddim_step(x, e, ab, abp, 0.0, z), abp.sqrt() * x0 + (1 - abp).sqrt() * e)


def test_the_extragradient_solution_converges_where_the_other_steps_do_not():
    """Chapter 1: on min_x max_y xy, the reference extragradient step contracts by sqrt(1 - lr^2 + lr^4) per step,
    the alternating one keeps x^2 + y^2 - lr x y, and gradient descent-ascent (diffkit.gan) spirals out."""
    from diffkit import gan

    extragradient_step, alternating_step = _run_solution("extragradient_step", "alternating_step")
    lr, x, y = 0.3, torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    r0 = (x**2 + y**2).sqrt()
    ex, ey, ax, ay = x, y, x, y
    for _ in range(50):
        ex, ey = extragradient_step(ex, ey, lr)
        ax, ay = alternating_step(ax, ay, lr)
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
    posterior_mean, mean_from_eps = _run_solution("posterior_mean", "mean_from_eps")
    torch.testing.assert_close(posterior_mean(x0, x_n, ab, abp), elbo.posterior(path, x0, x_n, n)[0])
    torch.testing.assert_close(mean_from_eps(x_n, eps_hat, ab, abp), elbo.model_mean(path, x_n, n, eps_hat))


def test_chapter_5_exercises_agree_with_the_exact_oracles():
    """The reference Gaussian score and Tweedie denoiser are what diffkit.oracles computes in closed form."""
    from diffkit import oracles, paths

    gaussian_score, tweedie_x0 = _run_solution("gaussian_score", "tweedie_x0")
    path, t = paths.VPPath(), torch.full((5,), 0.4, dtype=torch.float64)
    means = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    mix = oracles.GaussianMixture(means, stds=0.7)
    x = torch.randn(5, 3, dtype=torch.float64)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    var = a**2 * 0.7**2 + s**2  # p_t = N(alpha mean, (alpha^2 0.49 + sigma^2) I)
    score = gaussian_score(x, a * means, var)
    torch.testing.assert_close(score, mix.score(x, t, path))
    torch.testing.assert_close(tweedie_x0(x, score, a, s), mix.denoiser(x, t, path))


# --- diagnoses: one per plausible slip, never the answer ---------------------------------------------------------
def _normal(text: str) -> str:
    text = text.lower().replace("^", "**").replace("torch.", "")
    return re.sub(r"[\s*]", "", text)


# The answer in the words a message might use; the reference's own expressions are added from its source.
ANSWER_IN_WORDS = {
    "to_diffkit_time": ["t = 1 - t_fm", "u = -u_fm"],
    "optimal_discriminator_logit": ["log_p_data - log_p_g", "log p_data - log p_g"],
    "alternating_step": ["y + lr * x_new", "x - lr * y"],
    "extragradient_step": ["x - lr * y_half", "y + lr * x_half"],
    "alpha_bar_from_betas": ["cumprod(1 - betas", "cumprod(1 - b"],
    "forward_sample": ["sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps", "x0 is scaled by sqrt(alpha_bar)"],
    "snr_one_time": ["alpha_bar <= 1/2", "alpha_bar <= 0.5"],
    "gaussian_kl": ["log(var2/var1) + (var1 + (mu1 - mu2)^2)/var2 - 1", "(var1 + (mu1 - mu2)^2)/var2"],
    "posterior_mean": ["sqrt(alpha_bar_prev) beta_n / (1 - alpha_bar)",
                       "sqrt(alpha_bar_prev) * beta / (1 - alpha_bar)"],
    "mean_from_eps": ["beta_n / sqrt(1 - alpha_bar_n)", "(1 - alpha) / sqrt(1 - alpha_bar)"],
    "v_to_eps": ["alpha * v + sigma * x_t", "alpha v + sigma x_t"],
    "ddim_step": ["sqrt(1 - alpha_bar_prev - sigma^2)", "sqrt(1 - alpha_bar_prev - sigma**2)"],
    "min_snr_weight": ["min(SNR, gamma) / SNR", "min(snr, gamma)/snr"],
    "gaussian_score": ["-(x - mean) / var"],
    "langevin_step": ["sqrt(2 delta) z", "x + delta * score", "sqrt(2 * delta)"],
    "tweedie_x0": ["x_t + sigma^2 * score", "(x_t + sigma^2 score) / alpha", "add sigma^2 * score"],
    "rectified_flow_target": ["eps - x0", "dx_t/dt = eps"],
    "logit_normal_pdf": ["/ (t (1 - t))", "divided by t (1 - t)"],
    "ot_conditional_velocity": ["(1 - sigma_min) (x - (1 - t) x0) / (sigma_min + (1 - sigma_min) t)"],
    "straightness": ["h_k |v_k - chord|^2", "sum over k of h_k times"],
    "vp_marginal_variance": ["1 - exp(-integral", "one minus the exponential"],
    "pf_ode_velocity": ["f x - g^2 score / 2", "f * x - 0.5 * g2 * score", "minus half the squared diffusion times"],
    "hutchinson": ["z^t j z", "einsum"],
    "cfg_combine": ["uncond + w * (cond - uncond)", "(1 - w) * uncond + w * cond"],
    "classifier_guided_eps": ["eps - scale * sigma * grad", "eps - w sigma grad"],
    "tilt_accept": ["exp((w - 1) * log_p_y)", "p(y|x)^(w-1)", "p(y|x)**(w-1)"],
    "patchify": ["permute(0, 2, 4, 3, 5, 1)", "b c (h p1) (w p2) -> b (h w) (p1 p2 c)"],
    "multihead_attention": ["/ d**0.5", "reshape(b, a.shape[1], heads, d).transpose(1, 2)"],
    "sincos_1d": ["cat([cos(angles), sin(angles)]", "10000 ** (-i / (dim / 2))"],
    "eps_from_x0": ["(x_t - alpha * x0_hat) / sigma", "(x_t - alpha x0) / sigma"],
    "x0_mse_from_eps_mse": ["eps_mse / snr", "eps error / SNR"],
    "explained_variance": ["svdvals(centred) ** 2", "cumsum(0) / variances.sum()"],
    "rf_time_at_snr": ["1 / (1 + snr.sqrt())", "1 / (1 + sqrt(snr))"],
    "kl_to_prior": ["mean**2 + var - 1 - logvar", "mu^2 + sigma^2 - 1 - log sigma^2"],
    "reparameterize": ["mean + exp(0.5 * logvar) * eps", "exp(logvar / 2)", "mu + sigma * eps"],
    "latent_scale_factor": ["1 / z.std()", "1.0 / std(z)", "one over the standard deviation"],
    "frechet_diag": ["(sqrt(var1) - sqrt(var2))^2", "(var1.sqrt() - var2.sqrt()) ** 2"],
    "knn_radius": ["fill_diagonal_(float('inf'))", "kthvalue(k, dim=1)"],
    "dequantized_bits": ["log_pz + dim * log(width)", "+ log2(levels)"],
    "score_from_x0": ["(alpha x0 - x_t) / sigma^2", "(alpha * x0_hat - x_t) / sigma**2"],
    "to_flow_time": ["x_t / (alpha + sigma)", "sigma / (alpha + sigma)"],
    "velocity_from_x0": ["d_alpha * x0_hat + d_sigma * eps_hat", "d_alpha x0 + d_sigma eps"],
    "ddim_x0_step": ["alpha_s * x0_hat + sigma_s * eps_hat", "alpha_s x0 + sigma_s / sigma_t (x_t - alpha_t x0)"],
    "progressive_target": ["(x_s - ratio * x_t) / (alpha_s - ratio * alpha_t)",
                           "(x_s - r x_t) / (alpha_s - r alpha_t)"],
}


def _answers(name: str) -> list[str]:
    """The reference's returned and assigned expressions (its code), and the answer in words."""
    found = []
    for node in ast.walk(ast.parse(exercises.EXERCISES[name].source)):
        if isinstance(node, (ast.Return, ast.Assign)) and node.value is not None:
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            found += [ast.unparse(v) for v in values if not isinstance(v, ast.Name)]  # a bare name says nothing
    return [_normal(a) for a in found + ANSWER_IN_WORDS[name]]


def _gives_away(name: str, text: str) -> list[str]:
    return [a for a in _answers(name) if a in _normal(text)]


def _ddim(*args, **slip):
    return ch04._ddim(*args, **slip)


SLIPS = [
    ("to_diffkit_time", lambda t, u: (t, -u), "time is unchanged"),
    ("to_diffkit_time", lambda t, u: (1 - t, u), "velocity is unchanged"),
    ("to_diffkit_time", lambda t, u: (-t, -u), "time is negated"),
    ("to_diffkit_time", lambda t, u: (1 - t, 1 - u), "shifted like a time"),
    ("to_diffkit_time", lambda t, u: (-u, 1 - t), "wrong order"),
    ("to_diffkit_time", lambda t, u: 1 - t, "return a pair"),
    ("optimal_discriminator_logit", lambda lp, lq: lq - lp, "logit of 1 - D*"),
    ("optimal_discriminator_logit", lambda lp, lq: torch.sigmoid(lp - lq), "that is D* itself"),
    ("optimal_discriminator_logit", lambda lp, lq: lp - torch.logaddexp(lp, lq), "that is log D*"),
    ("optimal_discriminator_logit", lambda lp, lq: torch.exp(lp - lq), "density ratio"),
    ("optimal_discriminator_logit", lambda lp, lq: lp / lq, "ratio of log densities"),
    ("optimal_discriminator_logit", lambda lp, lq: torch.log(lp.abs()) - torch.log(lq.abs()), "already log"),
    ("optimal_discriminator_logit", lambda lp, lq: torch.log(lp.exp() / lq.exp()), "stay in log space"),
    ("alternating_step", lambda x, y, lr: (x - lr * y, y + lr * x), "that is the simultaneous step"),
    ("alternating_step", lambda x, y, lr: (x + lr * y, y - lr * (x + lr * y)), "x minimises f = x y"),
    ("alternating_step", lambda x, y, lr: (x - lr * x, y + lr * (x - lr * x)), "df/dx is y, not x"),
    ("alternating_step", lambda x, y, lr: (x - lr * (y + lr * x), y + lr * x), "order is reversed"),
    ("alternating_step", lambda x, y, lr: x - lr * y, "return a pair"),
    ("extragradient_step", lambda x, y, lr: (x - lr * y, y + lr * x), "plain simultaneous step"),
    ("extragradient_step", lambda x, y, lr: (x - lr * y - lr * (y + lr * x), y + lr * x + lr * (x - lr * y)),
     "must start from (x, y)"),
    ("extragradient_step", lambda x, y, lr: (x - lr * y, y + lr * (x - lr * y)), "that is the alternating step"),
    ("extragradient_step", lambda x, y, lr: (x - lr * (y + lr * (x - lr * y)), y + lr * (x - lr * y)),
     "look-ahead step is alternating"),
    ("alpha_bar_from_betas", lambda b: 1 - torch.cumsum(b, 0), "first-order approximation"),
    ("alpha_bar_from_betas", lambda b: torch.exp(-torch.cumsum(b, 0)), "exp(-sum of the betas)"),
    ("alpha_bar_from_betas", lambda b: torch.cumprod(b, 0), "product of the betas"),
    ("alpha_bar_from_betas", lambda b: 1 - torch.cumprod(1 - b, 0), "one minus the right product"),
    ("alpha_bar_from_betas", lambda b: torch.cat([b.new_ones(1), torch.cumprod(1 - b, 0)[:-1]]), "shifted"),
    ("alpha_bar_from_betas", lambda b: torch.prod(1 - b) * torch.ones_like(b), "over all N steps"),
    ("alpha_bar_from_betas", lambda b: torch.cumprod((1 - b).sqrt(), 0), "those are square roots"),
    ("alpha_bar_from_betas", lambda b: torch.cumprod(1 - b, 0).sum(), "should have shape"),
    ("forward_sample", lambda x0, e, ab: ab * x0 + (1 - ab) * e, "their square roots"),
    ("forward_sample", lambda x0, e, ab: (1 - ab).sqrt() * x0 + ab.sqrt() * e, "swapped"),
    ("forward_sample", lambda x0, e, ab: ab.sqrt() * x0 + (1 - ab.sqrt()) * e, "not the two coefficients"),
    ("forward_sample", lambda x0, e, ab: x0 + (1 - ab).sqrt() * e, "x0 must be scaled down too"),
    ("forward_sample", lambda x0, e, ab: ab.sqrt() * x0 + (1 - ab) * e, "noise coefficient has no square root"),
    ("forward_sample", lambda x0, e, ab: ab.sqrt() * (x0 + e), "the noise got the signal's coefficient"),
    ("forward_sample", lambda x0, e, ab: (ab.sqrt() * x0 + (1 - ab).sqrt() * e)[0], "should have shape (4, 3)"),
    ("snr_one_time", lambda ab: torch.tensor(float((ab <= 0.5).nonzero()[0]) / len(ab)), "one step early"),
    ("snr_one_time", lambda ab: torch.tensor(float((ab <= 0.5).nonzero()[0]) + 1), "not the step n"),
    ("snr_one_time", lambda ab: torch.tensor((float((ab <= 0.25).nonzero()[0]) + 1) / len(ab)),
     "ratio of variances"),
    ("snr_one_time", lambda ab: torch.tensor((float(((1 - ab) / ab <= 1).nonzero()[0]) + 1) / len(ab)),
     "the very first step"),
    ("snr_one_time", lambda ab: (ab <= 0.5).double().mean(), "fraction of steps"),
    ("snr_one_time", lambda ab: (float((ab <= 0.5).nonzero()[0]) + 1) / len(ab), "0-dimensional tensor"),
    ("snr_one_time", lambda ab: torch.tensor(0.3), "the values are off"),
    ("gaussian_kl", lambda m1, v1, m2, v2: (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1).sum(-1), "1/2"),
    ("gaussian_kl", lambda m1, v1, m2, v2: 0.5 * (torch.log(v1 / v2) + (v2 + (m1 - m2) ** 2) / v1 - 1).sum(-1),
     "not symmetric"),
    ("gaussian_kl", lambda m1, v1, m2, v2: 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2).sum(-1),
     "constant -1"),
    ("gaussian_kl", lambda m1, v1, m2, v2: 0.5 * (torch.log(v1 / v2) + (v1 + (m1 - m2) ** 2) / v2 - 1).sum(-1),
     "upside down"),
    ("gaussian_kl", lambda m1, v1, m2, v2: 0.5 * ((v1 + (m1 - m2) ** 2) / v2 - 1).sum(-1), "log-ratio term"),
    ("gaussian_kl", lambda m1, v1, m2, v2: (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5).sum(-1),
     "the log term lacks the factor 1/2"),
    ("gaussian_kl", lambda m1, s1, m2, s2: (torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5)
     .sum(-1), "squared again"),
    ("gaussian_kl", lambda m1, v1, m2, v2: 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2)) / v2 - 1).sum(-1),
     "must be squared"),
    ("gaussian_kl", lambda m1, v1, m2, v2: 0.5 * (torch.log(v2 / v1) + v1 / v2 + (m1 - m2) ** 2 / v1 - 1).sum(-1),
     "divided by var1"),
    ("gaussian_kl", lambda m1, v1, m2, v2: 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1).mean(-1),
     "mean over the dimensions"),
    ("gaussian_kl", lambda *a: 1.0, "return a torch.Tensor"),
    ("posterior_mean", lambda x0, xn, ab, abp: (ab / abp).sqrt() * xn, "forward step's mean"),
    ("posterior_mean", lambda x0, xn, ab, abp: (abp.sqrt() * (1 - ab / abp) * xn
                                                + (ab / abp).sqrt() * (1 - abp) * x0) / (1 - ab), "swapped"),
    ("posterior_mean", lambda x0, xn, ab, abp: (abp * (1 - ab / abp) * x0
                                                + (ab / abp) * (1 - abp) * xn) / (1 - ab), "square roots"),
    ("posterior_mean", lambda x0, xn, ab, abp: (abp.sqrt() * (1 - ab) * x0
                                                + ab.sqrt() * (1 - abp) * xn) / (1 - ab), "step n alone"),
    ("posterior_mean", lambda x0, xn, ab, abp: (abp.sqrt() * (1 - ab / abp) * x0
                                                + ab.sqrt() * (1 - abp) * xn) / (1 - ab), "of the last step only"),
    ("posterior_mean", lambda x0, xn, ab, abp: (abp.sqrt() * (1 - ab / abp) * x0
                                                + (ab / abp).sqrt() * (1 - abp) * xn) / (1 - abp),
     "shared denominator"),
    ("mean_from_eps", lambda xn, e, ab, abp: (xn - (1 - ab).sqrt() * e) / ab.sqrt(), "that is x0-hat"),
    ("mean_from_eps", lambda xn, e, ab, abp: (xn - (1 - ab).sqrt() * e) / (ab / abp).sqrt(), "that of x0-hat"),
    ("mean_from_eps", lambda xn, e, ab, abp: (xn - (1 - ab / abp) * e) / (ab / abp).sqrt(), "lacks the noise scale"),
    ("mean_from_eps", lambda xn, e, ab, abp: (xn - (1 - ab / abp) / (1 - ab) * e) / (ab / abp).sqrt(),
     "is a standard deviation"),
    ("mean_from_eps", lambda xn, e, ab, abp: (xn - (1 - ab / abp) / (1 - ab).sqrt() * e) / (ab / abp),
     "divided by alpha_n itself"),
    ("mean_from_eps", lambda xn, e, ab, abp: (xn - (1 - ab / abp) / (1 - ab).sqrt() * e) / ab.sqrt(),
     "square root of alpha_bar_n"),
    ("mean_from_eps", lambda xn, e, ab, abp: (xn + (1 - ab / abp) / (1 - ab).sqrt() * e) / (ab / abp).sqrt(),
     "sign is flipped"),
    ("mean_from_eps", lambda xn, e, ab, abp: xn, "values are off"),
    ("v_to_eps", lambda v, x, a: (1 - a**2).sqrt() * v + a * x, "published code"),
    ("v_to_eps", lambda v, x, a: a * x - (1 - a**2).sqrt() * v, "that is x0"),
    ("v_to_eps", lambda v, x, a: a * v - (1 - a**2).sqrt() * x, "one sign is flipped"),
    ("v_to_eps", lambda v, x, a: a * v + (1 - a) * x, "not 1 - alpha"),
    ("v_to_eps", lambda v, x, a: a * v + (1 - a**2) * x, "its square"),
    ("v_to_eps", lambda v, x, a: (x - a * v) / (1 - a**2).sqrt(), "v is not x0"),
    ("v_to_eps", lambda v, x, a: (v + (1 - a**2).sqrt() * x) / a, "x_t is not x0"),
    ("ddim_step", lambda *a: _ddim(*a, var_as_std=True), "treats it as a variance"),
    ("ddim_step", lambda *a: _ddim(*a, no_sqrt=True), "needs a square root"),
    ("ddim_step", lambda *a: _ddim(*a, eta_twice=True), "applied twice"),
    ("ddim_step", lambda *a: _ddim(*a, forward_beta=True), "forward beta_n"),
    ("ddim_step", lambda *a: _ddim(*a, no_noise=True), "fresh noise term is missing"),
    ("ddim_step", lambda *a: _ddim(*a, signal=lambda v: v), "scaled by alpha_bar_prev itself"),
    ("ddim_step", lambda x, e, ab, abp, eta, z: (x - (1 - ab).sqrt() * e) / ab.sqrt(), "only the first ingredient"),
    ("ddim_step", lambda x, e, ab, abp, eta, z: x - e, "values are off"),
    ("min_snr_weight", lambda ab, g: (ab / (1 - ab)).clamp(max=g), "the weight on the x0 scale"),
    ("min_snr_weight", lambda ab, g: (ab / (1 - ab)).clamp(min=g) / (ab / (1 - ab)), "the larger of the two"),
    ("min_snr_weight", lambda ab, g: (ab / (1 - ab)).sqrt().clamp(max=g) / (ab / (1 - ab)).sqrt(),
     "ratio of variances"),
    ("min_snr_weight", lambda ab, g: g * (1 - ab) / ab, "never capped"),
    ("min_snr_weight", lambda ab, g: ((1 - ab) / ab).clamp(max=g) / ((1 - ab) / ab), "upside down"),
    ("min_snr_weight", lambda ab, g: (ab / (1 - ab)).clamp(max=g) / (ab / (1 - ab) + 1), "v-prediction"),
    ("gaussian_score", lambda x, m, v: -(x - m) / v.sqrt(), "divided by the standard deviation"),
    ("gaussian_score", lambda x, m, v: (x - m) / v, "sign is flipped"),
    ("gaussian_score", lambda x, m, v: -(x - m) / (2 * v), "a factor 1/2 too many"),
    ("gaussian_score", lambda x, m, v: -(x - m) ** 2 / (2 * v), "not its gradient"),
    ("gaussian_score", lambda x, m, v: (m - x) / v**2, "variance squared"),
    ("gaussian_score", lambda x, m, v: -(x - m) * v, "multiplied by the variance"),
    ("langevin_step", lambda x, s, d, z: x + d * s + d.sqrt() * z, "sample p^2"),
    ("langevin_step", lambda x, s, d, z: x + d * s + 2 * d * z, "scaled by a standard deviation"),
    ("langevin_step", lambda x, s, d, z: x - d * s + (2 * d).sqrt() * z, "move up it"),
    ("langevin_step", lambda x, s, d, z: x + d / 2 * s + d.sqrt() * z, "the other convention"),
    ("langevin_step", lambda x, s, d, z: x + d * s, "gradient ascent"),
    ("langevin_step", lambda x, s, d, z: x + s + (2 * d).sqrt() * z, "missing the step size"),
    ("langevin_step", lambda x, s, d, z: x + d / 2 * s + (2 * d).sqrt() * z, "factor 1/2 that this noise"),
    ("langevin_step", lambda x, s, d, z: x + d * s + 2 * d.sqrt() * z, "sqrt(time)"),
    ("tweedie_x0", lambda x, s, a, sg: (x + sg * s) / a, "multiplied by sigma"),
    ("tweedie_x0", lambda x, s, a, sg: (x - sg**2 * s) / a, "goes against the score"),
    ("tweedie_x0", lambda x, s, a, sg: x + sg**2 * s, "undo the scaling"),
    ("tweedie_x0", lambda x, s, a, sg: (x + sg**2 * s) / a**2, "divided by alpha^2"),
    ("tweedie_x0", lambda x, s, a, sg: (x + sg**2 * s) * a, "multiplied by alpha"),
    ("tweedie_x0", lambda x, s, a, sg: (x + s) / a, "without a factor"),
    ("tweedie_x0", lambda x, s, a, sg: x / a + sg**2 * s, "only x_t is unscaled"),
    ("tweedie_x0", lambda x, s, a, sg: -sg * s, "estimate of eps"),
    ("vp_marginal_variance", lambda b: torch.exp(-b), "signal's scale"),
    ("vp_marginal_variance", lambda b: 1 - torch.exp(-b / 2), "factor 1/2 in the exponent"),
    ("vp_marginal_variance", lambda b: (1 - torch.exp(-b)).sqrt(), "standard deviation"),
    ("vp_marginal_variance", lambda b: (1 - torch.exp(-b)) ** 2, "sub-VP"),
    ("vp_marginal_variance", lambda b: b, "without limit"),
    ("vp_marginal_variance", lambda b: 1 - torch.exp(-2 * b), "factor 2 in the exponent"),
    ("pf_ode_velocity", lambda x, s, f, g2: f * x - g2 * s, "reverse SDE's drift"),
    ("pf_ode_velocity", lambda x, s, f, g2: f * x + 0.5 * g2 * s, "down the score"),
    ("pf_ode_velocity", lambda x, s, f, g2: f * x - 0.5 * g2.sqrt() * s, "square root of g2"),
    ("pf_ode_velocity", lambda x, s, f, g2: -0.5 * g2 * s, "drift of the forward SDE is missing"),
    ("pf_ode_velocity", lambda x, s, f, g2: -f * x - 0.5 * g2 * s, "drift's sign"),
    ("pf_ode_velocity", lambda x, s, f, g2: f * x, "score term is missing"),
    ("hutchinson", lambda J, z: J.diagonal(dim1=1, dim2=2).sum(-1), "exact trace"),
    ("hutchinson", lambda J, z: (J @ z.unsqueeze(-1)).squeeze(-1).pow(2).sum(-1), "|J z|^2"),
    ("hutchinson", lambda J, z: (J @ z.unsqueeze(-1)).squeeze(-1).sum(-1), "probe appears only once"),
    ("hutchinson", lambda J, z: (z * z).sum(-1), "probe's length"),
    ("cfg_combine", lambda u, c, w: c + w * (c - u), "other convention"),
    ("cfg_combine", lambda u, c, w: c + w * (u - c), "predictions are swapped"),
    ("cfg_combine", lambda u, c, w: u + w * c, "the difference is missing"),
    ("cfg_combine", lambda u, c, w: w * c, "unconditional prediction is dropped"),
    ("cfg_combine", lambda u, c, w: (1 - w) * c + w * u, "predictions are swapped"),  # the same slip
    ("cfg_combine", lambda u, c, w: u + (w - 1) * (c - u), "off by one"),
    ("cfg_combine", lambda u, c, w: u * 0.5, "values are off"),
    ("classifier_guided_eps", lambda e, g, s, w: e + w * s * g, "sign is flipped"),
    ("classifier_guided_eps", lambda e, g, s, w: e - w * s**2 * g, "multiplied by the variance"),
    ("classifier_guided_eps", lambda e, g, s, w: e - w * g / s, "divided by sigma"),
    ("classifier_guided_eps", lambda e, g, s, w: e - w * g, "used on the score's scale"),
    ("classifier_guided_eps", lambda e, g, s, w: e - s * g, "scale is missing"),
    ("classifier_guided_eps", lambda e, g, s, w: -w * s * g, "own prediction is missing"),
    ("tilt_accept", lambda lp, w: torch.exp(w * lp), "unconditional p(x)"),
    ("tilt_accept", lambda lp, w: torch.exp((1 - w) * lp), "wrong sign"),
    ("tilt_accept", lambda lp, w: (w - 1) * lp, "log of the acceptance"),
    ("tilt_accept", lambda lp, w: 1 - torch.exp((w - 1) * lp), "probability of rejecting"),
    ("tilt_accept", lambda lp, w: lp.abs() ** (w - 1), "already a logarithm"),
    ("rectified_flow_target", lambda x0, e: x0 - e, "sign is flipped"),
    ("rectified_flow_target", lambda x0, e: e, "only the noise"),
    ("rectified_flow_target", lambda x0, e: x0, "only the data"),
    ("rectified_flow_target", lambda x0, e: x0 + e, "that is the sum"),
    ("rectified_flow_target", lambda x0, e: (x0 + e) / 2, "midpoint"),
    ("rectified_flow_target", lambda x0, e: x0 * 0.5, "values are off"),
    ("logit_normal_pdf", lambda t, m, s: _logit_normal(t, m, s), "without the change of variables"),
    ("logit_normal_pdf", lambda t, m, s: _logit_normal(t, m, s) * t * (1 - t), "Jacobian is inverted"),
    ("logit_normal_pdf", lambda t, m, s: _logit_normal(t, m, s) / t, "only one factor"),
    ("logit_normal_pdf", lambda t, m, s: torch.exp(-(t - m) ** 2 / (2 * s**2)), "values are off"),
    ("ot_conditional_velocity", lambda x, x0, t, s: (x - (1 - t) * x0) / t - x0, "rectified flow's field"),
    ("ot_conditional_velocity", lambda x, x0, t, s: (x0 - (1 - s) * x) / (1 - (1 - s) * t), "Lipman et al."),
    ("ot_conditional_velocity", lambda x, x0, t, s: (1 - s) * (x - (1 - t) * x0) / (s + (1 - s) * t),
     "is missing: the mean"),
    ("ot_conditional_velocity", lambda x, x0, t, s: (1 - s) * (x - x0) / (s + (1 - s) * t) - x0, "not x0"),
    ("straightness", lambda xs, ts: ((xs[:-1] - xs[1:]) ** 2).sum(-1).sum(0), "values are off"),
    ("straightness", lambda xs, ts: (((xs[:-1] - xs[1:]) / (ts[:-1] - ts[1:])[:, None, None]) ** 2).sum(-1)
     .mul((ts[:-1] - ts[1:])[:, None]).sum(0), "kinetic energy alone"),
    ("straightness", lambda xs, ts: (((xs[:-1] - xs[1:]) / (ts[:-1] - ts[1:])[:, None, None] - xs[0] + xs[-1])
     ** 2).sum(-1).mean(0), "equal weights"),
    ("straightness", lambda xs, ts: ((ts[:-1] - ts[1:])[:, None] * ((xs[:-1] - xs[1:] - xs[0] + xs[-1]) ** 2)
     .sum(-1)).sum(0), "displacement divided by the step's length"),
    ("patchify", lambda x, p: x.reshape(x.shape[0], -1, p * p * x.shape[1]), "values are off"),
    ("patchify", lambda x, p: einops.rearrange(x, "b c (h p1) (w p2) -> b (w h) (p1 p2 c)", p1=p, p2=p),
     "column-major"),
    ("patchify", lambda x, p: einops.rearrange(x, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p),
     "channel should vary fastest"),
    ("patchify", lambda x, p: einops.rearrange(x, "b c (h p1) (w p2) -> b (h w) (p2 p1 c)", p1=p, p2=p),
     "column by column"),
    ("patchify", lambda x, p: einops.rearrange(x, "b c (p1 h) (p2 w) -> b (h w) (p1 p2 c)", p1=p, p2=p),
     "pixels p apart"),
    ("patchify", lambda x, p: einops.rearrange(x, "b c (h p1) (w p2) -> b (p1 p2 c) (h w)", p1=p, p2=p),
     "should have shape (B, N, p*p*C)"),
    ("multihead_attention", lambda q, k, v, h: _mha(q, k, v, h, q.shape[-1]), "full width D"),
    ("multihead_attention", lambda q, k, v, h: _mha(q, k, v, h, 1), "not scaled"),
    ("multihead_attention", lambda q, k, v, h: _mha(q, k, v, h, (q.shape[-1] // h) ** 2), "head's width itself"),
    ("multihead_attention", lambda q, k, v, h: einops.rearrange(F.scaled_dot_product_attention(
        *(einops.rearrange(a, "b n (d h) -> b h n d", h=h) for a in (q, k, v))), "b h n d -> b n (d h)"),
     "interleaved columns"),
    ("multihead_attention", lambda q, k, v, h: F.scaled_dot_product_attention(q, k, v), "one head"),
    ("multihead_attention", lambda q, k, v, h: _mha(q, k, v, h, 2.0), "values are off"),
    ("sincos_1d", lambda p, d: _sincos(p, d, lambda i, h: -i / h, "sin_cos"), "sines come first"),
    ("sincos_1d", lambda p, d: _sincos(p, d, lambda i, h: -i / h, "interleaved"), "interleaved"),
    ("sincos_1d", lambda p, d: _sincos(p, d, lambda i, h: -i / (2 * h)), "half the range"),
    ("sincos_1d", lambda p, d: _sincos(p, d, lambda i, h: i / h), "grow instead of shrink"),
    ("sincos_1d", lambda p, d: _sincos(p, d, lambda i, h: -i / h)[:, : d // 2], "should have shape (N, dim)"),
    ("kl_to_prior", lambda m, lv: (0.5 * (m**2 + (0.5 * lv).exp() - 1 - lv)).sum(-1), "standard deviation stands"),
    ("kl_to_prior", lambda m, lv: (0.5 * (m**2 + (2 * lv).exp() - 1 - 2 * lv)).sum(-1), "read as log sigma"),
    ("kl_to_prior", lambda m, lv: (m**2 + lv.exp() - 1 - lv).sum(-1), "factor 1/2"),
    ("kl_to_prior", lambda m, lv: (0.5 * (m**2 + lv.exp() - lv)).sum(-1), "-1 per dimension"),
    ("kl_to_prior", lambda m, lv: (0.5 * (m**2 + lv.exp() - 1 - lv)).mean(-1), "averaged"),
    ("kl_to_prior", lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv), "one KL per row"),
    ("reparameterize", lambda m, lv, e: m + lv.exp() * e, "scaled by the variance"),
    ("reparameterize", lambda m, lv, e: m + lv * e, "logvar itself"),
    ("reparameterize", lambda m, lv, e: m + (-0.5 * lv).exp() * e, "1/sigma"),
    ("reparameterize", lambda m, lv, e: m + e, "not scaled at all"),
    ("reparameterize", lambda m, lv, e: (0.5 * lv).exp() * e, "mean is missing"),
    ("latent_scale_factor", lambda z: z.std(), "standard deviation itself"),
    ("latent_scale_factor", lambda z: 1.0 / z.var(), "one over the variance"),
    ("latent_scale_factor", lambda z: 1.0 / z.square().mean().sqrt(), "root mean square"),
    ("latent_scale_factor", lambda z: 1.0 / z.transpose(0, 1).flatten(1).std(1).mean(), "channels"),
    ("latent_scale_factor", lambda z: 1.0 / z.flatten(1).std(1), "return one number"),
    ("frechet_diag", lambda m1, v1, m2, v2: ((m1 - m2) ** 2 + (v1 - v2) ** 2).sum(-1), "variances where"),
    ("frechet_diag", lambda m1, v1, m2, v2: ((v1.sqrt() - v2.sqrt()) ** 2).sum(-1), "means are missing"),
    ("frechet_diag", lambda m1, v1, m2, v2: ((m1 - m2) ** 2).sum(-1), "covariance part is missing"),
    ("frechet_diag", lambda m1, v1, m2, v2: ((m1 - m2) ** 2 + v1 + v2 + 2 * (v1 * v2).sqrt()).sum(-1),
     "wrong sign"),
    ("frechet_diag", lambda m1, v1, m2, v2: ((m1 - m2) ** 2 + (v1.sqrt() - v2.sqrt()) ** 2), "should have shape"),
    ("knn_radius", lambda x, k: torch.cdist(x, x).kthvalue(k, dim=1).values, "its own nearest neighbour"),
    ("knn_radius", lambda x, k: torch.cdist(x, x).fill_diagonal_(float("inf")).kthvalue(k + 1, dim=1).values,
     "one neighbour too far"),
    ("knn_radius", lambda x, k: torch.cdist(x, x).fill_diagonal_(float("inf")).kthvalue(k, dim=1).values ** 2,
     "squared distances"),
    ("knn_radius", lambda x, k: torch.cdist(x, x).mean(1), "values are off"),
    ("dequantized_bits", lambda lp, d, L, w: -lp / (d * math.log(2)) + math.log2(L), "change of variables"),
    ("dequantized_bits", lambda lp, d, L, w: -(lp - d * math.log(w)) / (d * math.log(2)) + math.log2(L),
     "Jacobian has the wrong sign"),
    ("dequantized_bits", lambda lp, d, L, w: -(lp + d * math.log(w)) / d + math.log2(L), "nats, not bits"),
    ("dequantized_bits", lambda lp, d, L, w: -(lp + d * math.log(w)) / (d * math.log(2)), "bin width"),
    ("dequantized_bits", lambda lp, d, L, w: -(lp + d * math.log(w)) / math.log(2) + d * math.log2(L),
     "per image"),
    ("score_from_x0", lambda x, x0, a, s: (a * x0 - x) / s, "divided by the standard deviation"),
    ("score_from_x0", lambda x, x0, a, s: (x - a * x0) / s, "noise prediction"),
    ("score_from_x0", lambda x, x0, a, s: (x - a * x0) / s**2, "sign is flipped"),
    ("score_from_x0", lambda x, x0, a, s: (x0 - x) / s**2, "x0_hat is not scaled"),
    ("score_from_x0", lambda x, x0, a, s: (x0 - x / a) / s**2, "rescaled point"),
    ("to_flow_time", lambda x, a, s: (x, s / (a + s)), "not rescaled"),
    ("to_flow_time", lambda x, a, s: (x / (a + s), s), "time is sigma itself"),
    ("to_flow_time", lambda x, a, s: (x / (a + s), a / (a + s)), "wrong way"),
    ("to_flow_time", lambda x, a, s: (x / a, s / a), "DDIM's coordinates"),
    ("to_flow_time", lambda x, a, s: (x / (a**2 + s**2).sqrt(), s / (a**2 + s**2).sqrt()), "variance-preserving"),
    ("velocity_from_x0", lambda x, x0, a, s, da, ds: da * x0 + ds * x, "in place of the noise"),
    ("velocity_from_x0", lambda x, x0, a, s, da, ds: ds * x0 + da * (x - a * x0) / s, "derivatives are swapped"),
    ("velocity_from_x0", lambda x, x0, a, s, da, ds: -(da * x0 + ds * (x - a * x0) / s), "sign is flipped"),
    ("velocity_from_x0", lambda x, x0, a, s, da, ds: da * x0 + ds * (x - a * x0) / s**2, "divided by the variance"),
    ("velocity_from_x0", lambda x, x0, a, s, da, ds: x + 0 * da * ds, "x_t itself"),
    ("eps_from_x0", lambda x, x0, a, s: (x - x0) / s, "x0_hat is not scaled"),
    ("eps_from_x0", lambda x, x0, a, s: (a * x0 - x) / s, "sign is flipped"),
    ("eps_from_x0", lambda x, x0, a, s: (x - a * x0) / s**2, "divided by the variance"),
    ("eps_from_x0", lambda x, x0, a, s: (x - s * x0) / a, "are swapped"),
    ("eps_from_x0", lambda x, x0, a, s: x - a * x0, "not divided by sigma"),
    ("x0_mse_from_eps_mse", lambda e, snr: e * snr, "multiplied by the SNR"),
    ("x0_mse_from_eps_mse", lambda e, snr: e / snr.sqrt(), "square root of the SNR"),
    ("x0_mse_from_eps_mse", lambda e, snr: e / (snr + 1), "SNR + 1"),
    ("explained_variance", lambda p: (torch.linalg.svdvals(p) ** 2).cumsum(0) / (torch.linalg.svdvals(p) ** 2).sum(),
     "not centred"),
    ("explained_variance", lambda p: torch.linalg.svdvals(p - p.mean(0)).cumsum(0)
     / torch.linalg.svdvals(p - p.mean(0)).sum(), "not squared"),
    ("explained_variance", lambda p: torch.linalg.svdvals(p - p.mean(0)) ** 2
     / (torch.linalg.svdvals(p - p.mean(0)) ** 2).sum(), "not cumulative"),
    ("explained_variance", lambda p: (torch.linalg.svdvals(p - p.mean(0)).flip(0) ** 2).cumsum(0)
     / (torch.linalg.svdvals(p - p.mean(0)) ** 2).sum(), "smallest first"),
    ("rf_time_at_snr", lambda snr: 1 / (1 + snr), "ratio of variances"),
    ("rf_time_at_snr", lambda snr: snr.sqrt() / (1 + snr.sqrt()), "wrong way"),
    ("rf_time_at_snr", lambda snr: 1 / (1 + snr).sqrt(), "variance-preserving"),
    ("rf_time_at_snr", lambda snr: 1 / snr.sqrt(), "not t itself"),
    ("ddim_x0_step", lambda x, x0, at, st, as_, ss: as_ * x0 + ss * (x - at * x0), "not divided by sigma_t"),
    ("ddim_x0_step", lambda x, x0, at, st, as_, ss: as_ * x0 + st / ss * (x - at * x0), "are swapped"),
    ("ddim_x0_step", lambda x, x0, at, st, as_, ss: as_ * x0 + ss / st * (x - x0), "not scaled by alpha_t"),
    ("ddim_x0_step", lambda x, x0, at, st, as_, ss: as_ * x0 + ss / st * x, "whole of x_t"),
    ("ddim_x0_step", lambda x, x0, at, st, as_, ss: x0 + ss / st * (x - at * x0), "not rescaled"),
    ("progressive_target", lambda x, xs, at, st, as_, ss: xs, "landing point itself"),
    ("progressive_target", lambda x, xs, at, st, as_, ss: xs / as_, "is ignored"),
    ("progressive_target", lambda x, xs, at, st, as_, ss: (xs - st / ss * x) / (as_ - st / ss * at), "upside down"),
    ("progressive_target", lambda x, xs, at, st, as_, ss: (xs - ss / st * x) / as_, "misses a term"),
    ("progressive_target", lambda x, xs, at, st, as_, ss: (xs + ss / st * x) / (as_ + ss / st * at), "sign is flipped"),
]


def _mha(q, k, v, heads, variance):  # heads as diffkit splits them, scores divided by sqrt(variance)
    split = [einops.rearrange(a, "b n (h d) -> b h n d", h=heads) for a in (q, k, v)]
    weights = torch.softmax(split[0] @ split[1].transpose(-2, -1) / variance**0.5, dim=-1)
    return einops.rearrange(weights @ split[2], "b h n d -> b n (h d)")


def _sincos(pos, dim, exponent, order="cos_sin"):  # the 1-D features with a planted slip, written independently
    half = dim // 2
    angles = torch.outer(pos.double(), 10_000.0 ** exponent(torch.arange(half, dtype=torch.float64), half))
    pairs = (angles.sin(), angles.cos()) if order == "sin_cos" else (angles.cos(), angles.sin())
    if order == "interleaved":
        return torch.stack(pairs, dim=-1).reshape(len(pos), dim)
    return torch.cat(pairs, dim=-1)


def _logit_normal(t, loc, scale):  # the normal density of logit t (no change of variables)
    z = torch.log(t / (1 - t))
    return torch.exp(-((z - loc) ** 2) / (2 * scale**2)) / (scale * (2 * torch.pi) ** 0.5)


@pytest.mark.parametrize("name,wrong,expected", SLIPS)
def test_each_slip_gets_its_own_diagnosis_without_the_answer(name, wrong, expected):
    result = exercises.check(name, wrong, verbose=False)
    assert not result.passed
    assert expected in result.feedback[0], result.feedback
    assert not _gives_away(name, str(result)), str(result)


def test_every_exercise_diagnoses_at_least_three_slips():
    specific = {}
    for name, _, expected in SLIPS:
        if not expected.startswith(("values are off", "the values are off", "should have shape", "return ")):
            specific[name] = specific.get(name, 0) + 1
    assert {n: specific.get(n, 0) for n in exercises.EXERCISES if specific.get(n, 0) < 3} == {}


def test_the_giveaway_detector_catches_the_old_messages():
    """The messages the issue found: they print the answer, and the detector above says so."""
    assert _gives_away("v_to_eps", "alpha and sigma are swapped: eps = alpha * v + sigma * x_t")
    assert _gives_away("gaussian_score", "the score points towards the mean: -(x - mean) / var")
    assert _gives_away("gaussian_kl", "KL = 1/2 [log(var2/var1) + (var1 + (mu1 - mu2)^2)/var2 - 1]")
    assert _gives_away("forward_sample", "return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps")


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
    with pytest.raises(ValueError, match="name must be one of"):
        exercises.show("ddpm_sampler")
    with pytest.raises(ValueError, match="level must be an integer >= 1"):
        exercises.hint("forward_sample", 0)


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


# --- hints: graded, never the answer -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_hints_are_graded_and_never_the_answer(name, capsys):
    hints = exercises.EXERCISES[name].hints
    assert len(hints) >= 2 and len(set(hints)) == len(hints)
    shown = [str(exercises.hint(name, level)) for level in range(1, len(hints) + 1)]
    assert capsys.readouterr().out == ""  # a bare hint() in a notebook is shown once, by its display
    assert str(exercises.hint(name)) == shown[0] and f"exercises.hint({name!r}, 2)" in shown[0]
    assert "exercises.solution" in shown[-1] and str(exercises.hint(name, 99)) == shown[-1]
    for level, text in enumerate(shown, 1):
        assert not _gives_away(name, text), (level, text)
        assert hints[level - 1] in text


def test_a_hint_displays_as_escaped_html():
    hint = exercises.hint("gaussian_kl")
    assert isinstance(hint, exercises.Note) and repr(hint) == str(hint)
    page = hint._repr_html_()
    assert page.startswith("<pre") and html.unescape(re.sub(r"<[^>]+>", "", page)) == str(hint)


# --- what a notebook shows ---------------------------------------------------------------------------------------
def test_check_prints_its_feedback_and_its_echo_adds_nothing(capsys):
    from IPython.core.formatters import DisplayFormatter

    result = exercises.check("v_to_eps", lambda v, x_t, alpha: v)
    printed = capsys.readouterr().out
    assert printed.startswith("✗ exercise 'v_to_eps': not yet") and printed.strip() == str(result)
    assert result.feedback[-1] == "stuck? exercises.hint('v_to_eps'), then exercises.solution('v_to_eps')"
    assert repr(result) == "Result('v_to_eps', passed=False)"
    assert DisplayFormatter().format(result) == ({}, {})  # already printed: the cell's echo shows nothing
    quiet = exercises.check("v_to_eps", lambda v, x_t, alpha: v, verbose=False)
    assert capsys.readouterr().out == "" and "✗" in quiet._repr_html_() and "<li>" in quiet._repr_html_()


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_a_solution_is_a_closed_details_block_around_the_reference_source(name):
    shown = exercises.solution(name)
    source = exercises.EXERCISES[name].source
    assert str(shown) == source and source.startswith(f"def {name}(")
    page = shown._repr_html_()
    opening = re.match(r"<details\b[^>]*>", page)
    assert opening and " open" not in opening.group(0) and page.rstrip().endswith("</details>")
    assert f"<summary>Show the reference solution to {name}</summary>" in page
    body = page[page.index("</summary>"):]
    assert "<pre" in body and html.unescape(re.sub(r"<[^>]+>", "", body)).strip() == source.strip()
    assert source.splitlines()[-1] not in repr(shown)  # the plain echo does not show it either
    markdown = shown._repr_markdown_()
    assert markdown.startswith("<details><summary>") and f"```python\n{source}```" in markdown


def test_solution_without_pygments_is_escaped_code(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pygments(name, *args, **kwargs):
        if name.startswith("pygments"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pygments)
    page = exercises.solution("optimal_discriminator_logit")._repr_html_()
    assert "<pre><code>def optimal_discriminator_logit(log_p_data: Tensor, log_p_g: Tensor) -&gt; Tensor:" in page


# --- chapters: only those in the book, later ones marked as coming -----------------------------------------------
def test_chapters_in_book_are_those_of_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    chapters = tuple(dict.fromkeys(int(Path(f).name[:2]) for f in files if f.startswith("notebooks/")))
    assert chapters == exercises.CHAPTERS_IN_BOOK  # (chapter 10's four notebooks are one chapter)


def test_list_shows_the_chapters_in_the_book_and_marks_coming_ones(capsys, monkeypatch):
    names = exercises.list()
    assert capsys.readouterr().out == ""
    assert names == [n for n, e in exercises.EXERCISES.items() if e.chapter in exercises.CHAPTERS_IN_BOOK]
    assert "chapter  2  forward_sample(x0, eps, alpha_bar)" in str(names)
    assert all(exercises.EXERCISES[n].chapter in exercises.CHAPTERS_IN_BOOK for n in names)
    assert exercises.list(chapter=2) == ["alpha_bar_from_betas", "forward_sample", "snr_one_time"]
    assert "<pre" in names._repr_html_()
    in_book = exercises.CHAPTERS_IN_BOOK
    monkeypatch.setattr(exercises, "CHAPTERS_IN_BOOK", tuple(c for c in in_book if c != 7))  # 7 not yet written
    assert "rectified_flow_target" not in exercises.list()
    coming = exercises.list(chapter=7)
    assert "rectified_flow_target" in coming and "(chapter 7 is coming)" in str(coming)
    assert "(chapter 7 is coming)" in str(exercises.show("rectified_flow_target"))


def test_show_gives_the_prompt_and_the_signature():
    text = str(exercises.show("v_to_eps"))
    assert "def v_to_eps(v, x_t, alpha):" in text and "sigma = sqrt(1 - alpha^2)" in text and "hint" in text
    assert exercises.signature("gaussian_kl") == "gaussian_kl(mu1, var1, mu2, var2)"


# --- the stored notebooks (pass once the notebooks are re-executed with bare exercises.solution cells) -----------
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_notebooks_keep_each_solution_collapsed(notebook):
    """Jupyter, Colab and the HTML book all show the stored output: a solution cell's must be one closed
    <details> block (the book builds from stored outputs, so a cell stored without output would vanish)."""
    cells = [c for c in json.loads(notebook.read_text())["cells"]
             if c["cell_type"] == "code" and "exercises.solution(" in "".join(c["source"])]
    problems = []
    for cell in cells:
        source = "".join(cell["source"])
        outputs = cell.get("outputs", [])
        htmls = ["".join(o.get("data", {}).get("text/html", "")) for o in outputs]
        if len(outputs) != 1 or not htmls[0].startswith("<details"):
            problems.append(f"{source!r}: {len(outputs)} output(s), not one text/html <details> block")
        elif " open" in htmls[0][:htmls[0].index(">")]:
            problems.append(f"{source!r}: the <details> block is stored open")
    assert not problems, problems
