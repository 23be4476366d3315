"""Chapter 8's exercises (diffkit.exercises.ch08), checked on their own: each reference passes its checker, each
plausible slip gets its own diagnosis that never prints the answer, the hints are graded, and the references agree
with diffkit.guidance."""

import math
import re

import pytest
import torch

from diffkit import guidance, oracles, paths
from diffkit.exercises import ch08
from diffkit.exercises._checking import run_check

EXERCISES = {e.name: e for e in ch08.EXERCISES}

# The answer in the words a message might use (the references' own expressions are checked too).
ANSWER_IN_WORDS = {
    "cfg_combine": ["uncond + w * (cond - uncond)", "(1 - w) * uncond + w * cond"],
    "classifier_guided_eps": ["eps - scale * sigma * grad", "eps - w sigma grad"],
    "tilt_accept": ["exp((w - 1) * log_p_y)", "p(y|x)^(w-1)", "p(y|x)**(w-1)"],
}

SLIPS = [
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
]


def _normal(text):
    return re.sub(r"[\s*]", "", text.lower().replace("^", "**").replace("torch.", ""))


def _gives_away(name, text):
    return [a for a in ANSWER_IN_WORDS[name] if _normal(a) in _normal(text)]


def _reference(name):
    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec(EXERCISES[name].source, namespace)  # the source shown to readers
    return namespace[name]


@pytest.mark.parametrize("name", list(EXERCISES))
def test_reference_solutions_pass_their_checkers(name):
    assert run_check(EXERCISES[name], _reference(name)).passed


@pytest.mark.parametrize("name,wrong,expected", SLIPS)
def test_each_slip_gets_its_own_diagnosis_without_the_answer(name, wrong, expected):
    result = run_check(EXERCISES[name], wrong)
    assert not result.passed
    assert expected in result.feedback[0], result.feedback
    assert not _gives_away(name, str(result)), str(result)


def test_every_exercise_diagnoses_at_least_three_slips():
    for name in EXERCISES:
        assert sum(1 for n, _, e in SLIPS if n == name and "values are off" not in e) >= 3


@pytest.mark.parametrize("name", list(EXERCISES))
def test_hints_are_graded_and_never_the_answer(name):
    hints = EXERCISES[name].hints
    assert len(hints) >= 2 and len(set(hints)) == len(hints)
    for text in hints:
        assert not _gives_away(name, text), text


def test_the_references_agree_with_diffkit_guidance():
    means = torch.tensor([[-2.0, 0.0], [0.5, 1.0], [1.5, -0.5]], dtype=torch.float64)
    mix = oracles.GaussianMixture(means, stds=0.5, labels=torch.tensor([0, 0, 1]))
    path = paths.DiscretePath.from_schedule("linear", 1000)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t, y, w = torch.full((16,), 0.3, dtype=torch.float64), torch.zeros(16, dtype=torch.long), 2.5
    model, clf = mix.as_model(path, "eps"), guidance.MixtureClassifier(mix, path)
    grad = guidance.classifier_grad(clf, x, t, y)
    sigma = path.sigma(t)[:, None]
    torch.testing.assert_close(ch08.classifier_guided_eps(model(x, t), grad, sigma, torch.tensor(w)),
                               guidance.ClassifierGuided(model, clf, path, w)(x, t, y))
    torch.testing.assert_close(ch08.cfg_combine(model(x, t), model(x, t, y), torch.tensor(w)),
                               (1 - w) * model(x, t) + w * model(x, t, y))
    log_p = clf(x, 0.0)[:, :1]
    torch.testing.assert_close(ch08.tilt_accept(log_p, torch.tensor(w)),
                               torch.exp((w - 1) * log_p))
    assert math.isclose(float(ch08.tilt_accept(torch.tensor(0.0), torch.tensor(4.0))), 1.0)
