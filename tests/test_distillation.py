"""diffkit.distillation (chapter 12): the DDIM step written with x0, progressive distillation's target checked
exactly against two steps of an exact teacher, the loss and a short distillation that beats the teacher's one
step, reflow with an x0 target, and clear errors."""

import pytest
import torch

from diffkit import checkpoints, distillation, grids, losses, models, oracles, paths, samplers, training

DDPM = paths.DiscretePath.from_schedule("linear", 1000)
PATHS = [DDPM, paths.VPPath(), paths.LinearPath(), paths.CosinePath()]


def _mixture():
    means = torch.tensor([[-2.0, 0.0], [0.5, 1.0], [1.5, -0.5]], dtype=torch.float64)
    return oracles.GaussianMixture(means, stds=torch.tensor([0.5, 0.6, 0.7]),
                                   weights=torch.tensor([0.3, 0.2, 0.5]), labels=torch.tensor([0, 0, 1]))


def _noised(mix, path, t, n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = mix.sample(n, generator=g).double()
    return path.sample(x0, t, generator=g).x_t


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_one_step_with_the_target_lands_on_two_teacher_steps(path):
    mix = _mixture()
    oracle = mix.as_model(path, "x0")
    for t, s in [(0.9, 0.5), (0.5, 0.3), (0.3, 0.0), (1.0 if path is DDPM else 0.99, 0.0)]:
        x_t = _noised(mix, path, t)
        two = distillation.teacher_steps(oracle, x_t, [t, (t + s) / 2, s], path)
        target = distillation.progressive_target(x_t, two, t, s, path)
        one = distillation.ddim_jump(x_t, target, t, s, path)
        assert (one - two).abs().max() < 1e-9
        # the plain teacher prediction at t (one teacher step) does not land there: the check can fail
        plain = distillation.predict_x0(oracle, x_t, t, path)
        assert (distillation.ddim_jump(x_t, plain, t, s, path) - two).abs().max() > 1e-2


def test_planted_slips_in_the_target_miss_the_teacher():
    mix = _mixture()
    oracle = mix.as_model(DDPM, "x0")
    t, s = 0.6, 0.3
    x_t = _noised(mix, DDPM, t)
    two = distillation.teacher_steps(oracle, x_t, [t, 0.45, s], DDPM)
    tt = torch.tensor([t, s], dtype=torch.float64)
    (a_t, a_s), (s_t, s_s) = DDPM.alpha(tt), DDPM.sigma(tt)
    slips = [(two - s_t / s_s * x_t) / (a_s - s_t / s_s * a_t),  # the ratio upside down
             (two - s_s / s_t * x_t) / a_s,  # the alpha_t term dropped
             two / a_s]  # x_t's share ignored
    for slip in slips:
        assert (distillation.ddim_jump(x_t, slip, t, s, DDPM) - two).abs().max() > 1e-2


def test_teacher_steps_are_the_samplers_ddim_with_and_without_guidance():
    mix = _mixture()
    oracle = mix.as_model(DDPM, "eps")  # another target: converted on the way
    x1 = samplers.prior(DDPM, (300, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.zeros(300, dtype=torch.long)
    ts = grids.uniform(4)
    for w in (1.0, 3.0):
        ours = distillation.teacher_steps(oracle, x1, list(ts.tolist()), DDPM, y=y, guidance=w,
                                          null_label=mix.num_classes)
        theirs = samplers.ddim(oracle, x1, ts, DDPM, y=y, guidance=w, null_label=mix.num_classes)
        torch.testing.assert_close(ours, theirs)


def test_per_sample_times_match_one_time_at_a_time():
    mix = _mixture()
    oracle = mix.as_model(DDPM, "x0")
    x = _noised(mix, DDPM, 0.5, n=6)
    t = torch.tensor([0.9, 0.7, 0.5, 0.9, 0.3, 0.6], dtype=torch.float64)
    s = t - 0.2
    batched = distillation.ddim_jump(x, distillation.predict_x0(oracle, x, t, DDPM), t, s, DDPM)
    for k in range(6):
        single = distillation.ddim_jump(x[k:k + 1], distillation.predict_x0(oracle, x[k:k + 1], t[k].item(), DDPM),
                                        t[k].item(), s[k].item(), DDPM)
        torch.testing.assert_close(batched[k:k + 1], single)


def _mlp():
    torch.manual_seed(0)
    net = models.MLP(dim=2, hidden=128, depth=2)
    checkpoints.record_objective(net, losses.objective("ddpm", path=DDPM, target="x0"))
    return net


def test_a_short_distillation_beats_one_teacher_step():
    """300 steps of progressive distillation towards a one-step student of the exact two-step teacher: the
    student's single step lands far closer to the two-step point than the teacher's own single step does."""
    mix = oracles.eight_gaussians()
    oracle = mix.as_model(DDPM, "x0")
    config = training.TrainConfig(steps=300, batch_size=256, lr=2e-3, ema_decay=0.9)
    student = distillation.distil(_mlp(), lambda n, g: (mix.sample(n, generator=g).float(), None), config,
                                  teacher=oracle, path=DDPM, student_steps=1)
    z = samplers.prior(DDPM, (1000, 2), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    two = samplers.ddim(oracle, z, grids.uniform(2), DDPM)
    one_teacher = samplers.ddim(oracle, z, grids.uniform(1), DDPM)
    one_student = samplers.ddim(student, z, grids.uniform(1), DDPM, target="x0")
    teacher_gap = (one_teacher - two).norm(dim=1).mean()
    student_gap = (one_student - two).norm(dim=1).mean()
    assert student_gap < 0.3 * teacher_gap, (student_gap, teacher_gap)


def test_progressive_loss_is_zero_for_a_student_that_predicts_the_target():
    """A 'student' that computes the target itself (from the same teacher) has zero loss; the teacher itself,
    asked for one step where two were taken, does not."""
    mix = oracles.eight_gaussians()
    oracle = mix.as_model(DDPM, "x0")

    def perfect(x, t, y=None):  # one student step of 1/2 lands where two teacher steps of 1/4 land
        t = t.double()
        s = (t - 0.5).clamp_min(0.0)
        two = distillation.teacher_steps(oracle, x.double(), [t, (t + s) / 2, s], DDPM)
        return distillation.progressive_target(x.double(), two, t, s, DDPM).to(x.dtype)

    x0 = mix.sample(256, generator=torch.Generator().manual_seed(2))
    kw = dict(teacher=oracle, path=DDPM, student_steps=2)
    zero = distillation.progressive_loss(perfect, x0, None, torch.Generator().manual_seed(3), **kw)
    off = distillation.progressive_loss(oracle, x0, None, torch.Generator().manual_seed(3), **kw)
    assert zero < 1e-12 < 1e-3 < off


def test_reflow_loss_is_the_x0_regression_on_the_pairs():
    g = torch.Generator().manual_seed(4)
    pairs = torch.randn(64, 2, 3, generator=g, dtype=torch.float64)

    def zero(x, t, y=None):
        return torch.zeros_like(x)

    loss = distillation.reflow_x0_loss(zero, pairs, None, torch.Generator().manual_seed(0), path=DDPM)
    torch.testing.assert_close(loss, (pairs[:, 0] ** 2).mean())

    def knows(x, t, y=None):  # recovers x0 from x_t when it knows the pair's noise
        a, s = DDPM.alpha(t.double())[:, None], DDPM.sigma(t.double())[:, None]
        return (x - s * pairs[:, 1]) / a

    assert distillation.reflow_x0_loss(knows, pairs, None, torch.Generator().manual_seed(0), path=DDPM) < 1e-12


def test_student_copy_starts_as_the_teacher_and_leaves_it_untouched():
    teacher = models.MLP(dim=2, num_classes=3, label_dropout=0.1).eval()
    student = distillation.student_copy(teacher)
    x, t, y = torch.randn(5, 2), torch.rand(5), torch.tensor([0, 1, 2, 0, 1])
    torch.testing.assert_close(student(x, t, y), teacher(x, t, y))  # train mode, but no label dropout
    assert student.label_dropout == 0 and teacher.label_dropout == 0.1
    next(student.parameters()).data.add_(1.0)
    assert not torch.equal(student(x, t, y), teacher(x, t, y))


def test_errors_name_the_argument():
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="s must be smaller than t"):
        distillation.ddim_jump(x, x, 0.3, 0.5, DDPM)
    with pytest.raises(ValueError, match="x0_hat must have the shape"):
        distillation.ddim_jump(x, x[:, :1], 0.5, 0.3, DDPM)
    with pytest.raises(ValueError, match="t must lie in"):
        distillation.progressive_target(x, x, 1.5, 0.3, DDPM)
    with pytest.raises(ValueError, match="pairs must have shape"):
        distillation.reflow_x0_loss(lambda x, t, y=None: x, torch.randn(4, 3, 2), path=DDPM)
    with pytest.raises(TypeError, match="path must be"):
        distillation.ddim_jump(x, x, 0.5, 0.3, "ddpm")
    with pytest.raises(ValueError, match="student_steps is needed"):
        distillation.distil(models.MLP(), x, training.TrainConfig(steps=1), teacher=lambda x, t: x, path=DDPM)
    with pytest.raises(TypeError, match="teacher must be a torch.nn.Module"):
        distillation.student_copy(lambda x, t: x)
    with pytest.raises(ValueError, match="times must hold"):
        distillation.teacher_steps(lambda x, t: x, x, [0.5], DDPM)
