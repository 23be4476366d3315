import pytest
import torch

from diffkit import exercises


@pytest.mark.parametrize("name", list(exercises.EXERCISES))
def test_reference_solutions_pass_their_checkers(name):
    namespace = {"torch": torch, "Tensor": torch.Tensor}
    exec(exercises.solution(name), namespace)  # the source shown to readers is itself a correct solution
    assert exercises.check(name, namespace[name], verbose=False).passed


@pytest.mark.parametrize("name,wrong,expected", [
    ("forward_sample", lambda x0, e, ab: ab * x0 + (1 - ab) * e, "take their square roots"),
    ("forward_sample", lambda x0, e, ab: ((1 - ab).sqrt() * x0 + ab.sqrt() * e), "swapped"),
    ("forward_sample", lambda x0, e, ab: (ab.sqrt() * x0 + (1 - ab).sqrt() * e)[0], "should have shape (4, 3)"),
    ("v_to_eps", lambda v, x, a: (1 - a**2).sqrt() * v + a * x, "published code"),
    ("v_to_eps", lambda v, x, a: a * x - (1 - a**2).sqrt() * v, "that is x0"),
    ("rectified_flow_target", lambda x0, e: x0 - e, "sign is flipped"),
    ("gaussian_kl", lambda m1, v1, m2, v2: (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1).sum(-1), "1/2"),
    ("gaussian_kl", lambda m1, v1, m2, v2: 0.5 * (torch.log(v1 / v2) + (v2 + (m1 - m2) ** 2) / v1 - 1).sum(-1),
     "not symmetric"),
    ("gaussian_kl", lambda *a: 1.0, "return a torch.Tensor"),
    ("rectified_flow_target", lambda x0, e: x0 * 0.5, "values are off"),
    ("to_diffkit_time", lambda t, u: (t, -u), "time is unchanged"),
    ("to_diffkit_time", lambda t, u: (1 - t, u), "keeps its sign"),
    ("to_diffkit_time", lambda t, u: 1 - t, "return a pair"),
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
