"""The course's MNIST classifier, its FID and class accuracy (trained once, then loaded from the cache)."""

import pytest
import torch
import torch.nn.functional as F

from diffkit import data, evaluation


@pytest.fixture(scope="module")
def classifier():
    return evaluation.mnist_classifier(progress=False)


@pytest.fixture(scope="module")
def digits():
    return data.mnist_tensors("train", n=1000, seed=1), data.mnist_tensors("test")


def test_classifier_generalises(classifier, digits):
    _, (x_test, y_test) = digits
    assert evaluation.class_accuracy(classifier, x_test, y_test) >= 0.95
    shuffled = y_test[torch.randperm(len(y_test), generator=torch.Generator().manual_seed(0))]
    assert evaluation.class_accuracy(classifier, x_test, shuffled) < 0.2  # the accuracy measures agreement


def test_fid_orders_sample_quality(classifier, digits):
    (x_train, _), (x_test, _) = digits
    same = evaluation.mnist_fid(classifier, x_test, x_test)
    real = evaluation.mnist_fid(classifier, x_train, x_test)
    blurred = evaluation.mnist_fid(classifier, F.avg_pool2d(x_test, 3, 1, 1), x_test)
    noise = evaluation.mnist_fid(classifier, torch.rand(1000, 1, 28, 28) * 2 - 1, x_test)
    assert same == pytest.approx(0.0, abs=1e-6)
    assert real < 0.2 * blurred and blurred < 0.1 * noise  # real digits << blurred digits << noise


def test_fid_floor_is_each_disjoint_set_scored_against_the_held_out_digits(classifier):
    """Recomputed by hand: the floor is the mean of the per-set FIDs of class-balanced disjoint sets, with the
    standard error of that mean; and real digits score far below blurred ones at the same size."""
    x, y = data.mnist_tensors("train", verbose=False)
    x_test, y_test = data.mnist_tensors("test", verbose=False)
    real = torch.cat([x_test[y_test == c][:20] for c in range(10)])
    mean, se = evaluation.fid_floor(classifier, x, y, real, 20, sets=3)
    fids = torch.tensor([evaluation.mnist_fid(classifier, torch.cat([x[y == c][20 * k:20 * (k + 1)] for c in range(10)]),
                                              real) for k in range(3)], dtype=torch.float64)
    assert mean == pytest.approx(fids.mean().item()) and se == pytest.approx(fids.std().item() / 3**0.5)
    assert len(set(fids.tolist())) == 3  # three different sets
    assert mean + 10 * se < evaluation.mnist_fid(classifier, F.avg_pool2d(real, 3, 1, 1), real)  # blur: far above
    with pytest.raises(ValueError, match="n_per_class: 5 disjoint sets of 1000 digits"):
        evaluation.fid_floor(classifier, x, y, real, 1000)
    with pytest.raises(ValueError, match="sets must be an integer >= 2"):
        evaluation.fid_floor(classifier, x, y, real, 20, sets=1)


def test_bad_input(classifier):
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 28, 28\)"):
        evaluation.features(classifier, torch.zeros(4, 1, 8, 8))
    with pytest.raises(ValueError, match=r"labels must be a tensor of shape \(4,\)"):
        evaluation.class_accuracy(classifier, torch.zeros(4, 1, 28, 28), torch.zeros(3, dtype=torch.long))


def test_the_classifier_starts_from_the_same_weights_whatever_ran_before(monkeypatch):
    """The FID network is one network on every machine and in every chapter: its initial weights come from its
    own seed, not from the global random state of the notebook that first asks for it (which they once did)."""
    from diffkit import cache

    builds = []
    monkeypatch.setattr(cache, "cached_model", lambda name, config, build, train, verbose: builds.append(build))
    evaluation.mnist_classifier(verbose=False)
    torch.manual_seed(123)
    first = builds[0]()
    torch.manual_seed(456)
    before = torch.get_rng_state()
    second = builds[0]()
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state is untouched
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
