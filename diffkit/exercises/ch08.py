"""Chapter 8's exercises: guidance — the classifier-free combination, a classifier-guided noise prediction, the
acceptance probability of the tilt's rejection sampler."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, randn, uniform


def cfg_combine(uncond: Tensor, cond: Tensor, w: Tensor) -> Tensor:
    return uncond + w * (cond - uncond)  # w = 0: unconditional, w = 1: conditional


def _diagnose_cfg_combine(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(81)
    cases = [(randn(g, 4, 3), randn(g, 4, 3), uniform(g, 0.3, 6.0, 4, 1)) for _ in range(4)]
    return compare(fn, cfg_combine, cases, {
        "that is the other convention (Ho & Salimans'), in which w = 0 is already conditional sampling; in this "
        "book w = 1 is plain conditional sampling and w = 0 unconditional":
            lambda u, c, w: c + w * (c - u),
        "the two predictions are swapped: guidance moves from the unconditional prediction towards (and past) "
        "the conditional one": lambda u, c, w: c + w * (u - c),
        "the difference is missing: w scales how far the conditional prediction lies from the unconditional "
        "one, not the conditional prediction itself": lambda u, c, w: u + w * c,
        "the unconditional prediction is dropped: at w = 0 the result should be the unconditional prediction, "
        "not zero": lambda u, c, w: w * c,
        "off by one: at w = 1 the result should be the conditional prediction, and yours is the unconditional "
        "one there": lambda u, c, w: u + (w - 1) * (c - u),
    })


def classifier_guided_eps(eps: Tensor, grad_log_prob: Tensor, sigma: Tensor, scale: Tensor) -> Tensor:
    return eps - scale * sigma * grad_log_prob  # eps_hat = -sigma * score; the score gains scale * grad


def _diagnose_classifier_guided_eps(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(82)
    cases = [(randn(g, 4, 3), randn(g, 4, 3), uniform(g, 0.2, 0.9, 4, 1), uniform(g, 1.5, 8.0, 4, 1))
             for _ in range(4)]
    return compare(fn, classifier_guided_eps, cases, {
        "the sign is flipped: eps points away from the data, the score towards it, so a push up the classifier's "
        "log-probability lowers eps": lambda e, gr, s, w: e + w * s * gr,
        "multiplied by the variance: eps and the score differ by one factor of the noise's standard deviation":
            lambda e, gr, s, w: e - w * s**2 * gr,
        "divided by sigma: that converts eps into a score, the opposite direction":
            lambda e, gr, s, w: e - w * gr / s,
        "the gradient is used on the score's scale: eps and the score differ by a factor of the noise's standard "
        "deviation": lambda e, gr, s, w: e - w * gr,
        "the guidance scale is missing": lambda e, gr, s, w: e - s * gr,
        "the model's own prediction is missing: guidance shifts eps, it does not replace it":
            lambda e, gr, s, w: -w * s * gr,
    })


def tilt_accept(log_p_y: Tensor, w: Tensor) -> Tensor:
    return torch.exp((w - 1) * log_p_y)  # p(y|x)^(w-1) <= 1 for w >= 1


def _diagnose_tilt_accept(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(83)
    cases = [(uniform(g, -4.0, -0.01, 5, 1), uniform(g, 1.5, 6.0, 5, 1)) for _ in range(4)]
    return compare(fn, tilt_accept, cases, {
        "that is the acceptance for proposals from the unconditional p(x); these proposals come from p(x|y), "
        "which already carries one factor of p(y|x)": lambda lp, w: torch.exp(w * lp),
        "the exponent has the wrong sign: for w > 1 your values exceed 1, which no probability does":
            lambda lp, w: torch.exp((1 - w) * lp),
        "that is the log of the acceptance probability: return the probability itself":
            lambda lp, w: (w - 1) * lp,
        "that is the probability of rejecting the proposal": lambda lp, w: 1 - torch.exp((w - 1) * lp),
        "the input is already a logarithm: raise p(y|x), not log p(y|x), to the power":
            lambda lp, w: lp.abs() ** (w - 1),
    })


EXERCISES = [
    Exercise("cfg_combine", 8, "the classifier-free guided prediction from the unconditional and conditional "
             "predictions uncond, cond (B, D) and the guidance scale w (B, 1)", cfg_combine, _diagnose_cfg_combine, (
                 "Check your formula at w = 0 and at w = 1 first: which prediction should each give?",
                 "Start from the unconditional prediction and move along the difference between the two "
                 "predictions, w times as far as the conditional one lies.",
             )),
    Exercise("classifier_guided_eps", 8, "the noise prediction of classifier guidance from the model's eps (B, D), "
             "the classifier's gradient grad_x log p(y|x_t) (B, D), sigma_t and the scale (B, 1)",
             classifier_guided_eps, _diagnose_classifier_guided_eps, (
                 "Guidance adds scale times the classifier's gradient to the score. How is eps related to the "
                 "score (Tweedie, chapter 5)?",
                 "eps_hat is minus sigma times the score: a change of the score by some amount changes eps by "
                 "minus sigma times that amount.",
             )),
    Exercise("tilt_accept", 8, "the acceptance probability of the tilt's rejection sampler, proposals from "
             "p(x|y), from log p(y|x) (B, 1) and w >= 1 (B, 1)", tilt_accept, _diagnose_tilt_accept, (
                 "Write the tilt p(x|y)^w p(x)^(1-w) as p(x|y) times something, using Bayes' rule for p(x).",
                 "p(x) = p(x|y) p(y) / p(y|x). What is left after dividing the tilt by the proposal p(x|y) is a "
                 "power of p(y|x), up to a constant; it is at most 1 when w >= 1.",
             )),
]
