"""Chapter 14's exercises (diffkit.exercises.ch14), checked on their own: each reference passes its checker, each
plausible slip gets its own diagnosis that never prints the answer, and the references agree with diffkit.targets
and diffkit.unified on real paths."""

import re

import pytest
import torch

from diffkit import oracles, paths, unified
from diffkit.exercises import ch14
from diffkit.exercises._checking import run_check
from tests.test_exercises import ANSWER_IN_WORDS as _ALL_WORDS
from tests.test_exercises import SLIPS as _ALL_SLIPS

EXERCISES = {e.name: e for e in ch14.EXERCISES}
ANSWER_IN_WORDS = {name: words for name, words in _ALL_WORDS.items() if name in EXERCISES}
SLIPS = [slip for slip in _ALL_SLIPS if slip[0] in EXERCISES]
F64 = torch.float64


def _normal(text):
    return re.sub(r"[\s*]", "", text.lower().replace("^", "**").replace("torch.", ""))


def _reference(name):
    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec(EXERCISES[name].source, namespace)  # the source shown to readers
    return namespace[name]


def test_every_exercise_has_its_words_and_at_least_three_slips():
    assert set(ANSWER_IN_WORDS) == set(EXERCISES)
    assert all(sum(s[0] == name for s in SLIPS) >= 3 for name in EXERCISES)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_reference_solutions_pass_their_checkers(name):
    assert run_check(EXERCISES[name], _reference(name)).passed


@pytest.mark.parametrize("name,wrong,expected", SLIPS)
def test_each_slip_gets_its_own_diagnosis_without_the_answer(name, wrong, expected):
    result = run_check(EXERCISES[name], wrong)
    assert not result.passed
    assert expected in result.feedback[0], result.feedback
    assert not [a for a in ANSWER_IN_WORDS[name] if _normal(a) in _normal(str(result))], str(result)


def _point(path, n=50):
    mix = oracles.eight_gaussians()
    g = torch.Generator().manual_seed(140)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=F64)
    x_t = path.sample(mix.sample(n, generator=g).double(), t, generator=g).x_t
    return mix, x_t, t


@pytest.mark.parametrize("path", [paths.DiscretePath.from_schedule("linear", 1000), paths.VEPath(sigma_max=10.0),
                                  paths.LinearPath()], ids=lambda p: type(p).__name__)
def test_the_references_agree_with_the_exact_oracle(path):
    mix, x_t, t = _point(path)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    da, ds = path.d_alpha(t)[:, None], path.d_sigma(t)[:, None]
    x0 = mix.denoiser(x_t, t, path)
    torch.testing.assert_close(ch14.score_from_x0(x_t, x0, a, s), mix.score(x_t, t, path))
    torch.testing.assert_close(ch14.velocity_from_x0(x_t, x0, a, s, da, ds), mix.velocity(x_t, t, path))


def test_to_flow_time_agrees_with_matched_time():
    cos = paths.CosinePath()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(141), dtype=F64)
    y, s = ch14.to_flow_time(x, cos.alpha(t)[:, None], cos.sigma(t)[:, None])
    s_ref, k = unified.matched_time(cos, t, paths.LinearPath())
    torch.testing.assert_close(s[:, 0], s_ref)
    torch.testing.assert_close(y, k[:, None] * x)
