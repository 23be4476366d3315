import pytest
import torch

from diffkit.models import MLP
from tests.models.helpers import (assert_batch_equivariant, assert_every_parameter_gets_gradient,
                                          assert_null_label_is_unconditional, assert_trains)


def batch(n=16, dim=2):
    return torch.randn(n, dim), torch.rand(n), torch.randint(0, 3, (n,))


def test_output_shape_and_time_dependence():
    model = MLP(dim=3, hidden=32, depth=2, time_dim=16).eval()
    x, t, _ = batch(dim=3)
    out = model(x, t)
    assert out.shape == x.shape
    assert (model(x, torch.full_like(t, 0.2)) - model(x, torch.full_like(t, 0.8))).abs().max() > 1e-3


def test_batch_equivariance():
    x, t, y = batch()
    assert_batch_equivariant(MLP(hidden=32, time_dim=16, num_classes=3), x, t, y)


def test_null_label_switches_conditioning_off():
    x, t, _ = batch()
    assert_null_label_is_unconditional(lambda p: MLP(hidden=32, time_dim=16, num_classes=3, label_dropout=p), x, t, 3)


@pytest.mark.parametrize("num_classes", [None, 3])
def test_gradient_reaches_every_parameter(num_classes):
    x, t, y = batch()
    assert_every_parameter_gets_gradient(MLP(hidden=32, time_dim=16, num_classes=num_classes), x, t,
                                         y if num_classes else None)


def test_trains():
    x, t, y = batch()
    assert_trains(MLP(hidden=64, time_dim=16, num_classes=3), x, t, y, factor=50.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=0), "depth must be an integer >= 1"),
    (dict(dim=0), "dim must be an integer >= 1"),
    (dict(hidden=2.5), "hidden must be an integer >= 1"),
    (dict(num_classes=3, label_dropout=-0.1), "dropout_prob must be >= 0"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLP(**kwargs)


def test_forward_errors():
    model = MLP(hidden=16, time_dim=8)
    x, t, y = batch()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        model(torch.randn(16, 3), t)
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        model(x, t * 5 + 1)
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, y)
    with pytest.raises(ValueError, match=r"labels in \[0, 3\]"):
        MLP(hidden=16, time_dim=8, num_classes=3)(x, t, torch.full((16,), 4))
