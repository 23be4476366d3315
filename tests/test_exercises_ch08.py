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
from tests.test_exercises import ANSWER_IN_WORDS as _ALL_WORDS
from tests.test_exercises import SLIPS as _ALL_SLIPS

EXERCISES = {e.name: e for e in ch08.EXERCISES}

# The answer in words and the planted slips live with every other exercise's in tests/test_exercises.py.
ANSWER_IN_WORDS = {name: words for name, words in _ALL_WORDS.items() if name in EXERCISES}
SLIPS = [slip for slip in _ALL_SLIPS if slip[0] in EXERCISES]


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
