import pytest
import torch

from diffkit.models import UNet
from diffkit.models.unet import ResBlock, SpatialSelfAttention
from tests.models.helpers import (assert_batch_equivariant, assert_every_parameter_gets_gradient,
                                          assert_null_label_is_unconditional, assert_trains, perturbed)


def small(**kwargs):
    """An 8x8 UNet (8 -> 4) small enough for CPU tests."""
    return UNet(**{"base_channels": 8, "channel_mults": (1, 2), "attention_resolutions": (4,), "image_size": 8,
                   "groups": 4, "heads": 2, **kwargs})


def batch(n=6, channels=1, size=8):
    return torch.randn(n, channels, size, size), torch.rand(n), torch.randint(0, 3, (n,))


def test_mnist_unet_visits_28_14_7_and_outputs_zero_at_init():
    model = UNet(num_classes=10)
    x, t, _ = batch(2, 1, 28)
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.setdefault(type(m).__name__, set()).add(o.shape[-1]))
             for m in model.modules() if isinstance(m, (ResBlock, SpatialSelfAttention))]
    out = model(x, t, torch.tensor([3, 10]))
    for h in hooks:
        h.remove()
    assert seen["ResBlock"] == {28, 14, 7}
    assert seen["SpatialSelfAttention"] == {7}  # attention_resolutions=(7,) (the middle also runs at 7)
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(x))  # zero-initialised output conv


def test_blocks_are_the_identity_at_init():
    x, c = torch.randn(2, 8, 4, 4), torch.randn(2, 16)
    assert torch.equal(ResBlock(8, 8, 16, groups=4)(x, c), x)  # zero last conv of the residual branch
    assert torch.equal(SpatialSelfAttention(8, heads=2, groups=4)(x), x)  # zero output projection
    widen = ResBlock(8, 16, 16, groups=4)
    assert torch.equal(widen(x, c), widen.skip(x))  # a channel-changing block starts as its 1x1 skip convolution
    assert not torch.equal(widen(x, c)[:, :8], x)


def test_time_and_class_reach_the_output():
    model = UNet(base_channels=8, channel_mults=(1, 2), attention_resolutions=(), image_size=8, groups=4,
                 num_classes=3)
    model = perturbed(model).eval()
    x, t, y = batch()
    with torch.no_grad():
        base = model(x, t, y)
        assert (model(x, 1 - t, y) - base).abs().max() > 1e-3
        assert (model(x, t, (y + 1) % 3) - base).abs().max() > 1e-3


def test_batch_equivariance():
    x, t, y = batch()
    assert_batch_equivariant(small(num_classes=3), x, t, y)


def test_null_label_switches_conditioning_off():
    x, t, _ = batch()
    assert_null_label_is_unconditional(lambda p: small(num_classes=3, label_dropout=p), x, t, 3)


def test_gradient_reaches_every_parameter():
    x, t, y = batch(4)
    assert_every_parameter_gets_gradient(small(num_classes=3, num_res_blocks=2), x, t, y)


def test_trains():
    x, t, y = batch(4)
    assert_trains(small(num_classes=3, label_dropout=0.0), x, t, y, lr=1e-2, factor=50.0)


def test_multichannel_and_three_levels():
    model = UNet(in_channels=3, base_channels=8, channel_mults=(1, 1, 2), attention_resolutions=(8, 2),
                 image_size=8, groups=4, heads=2)
    x, t, _ = batch(2, 3, 8)
    assert model(x, t).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=30), r"image_size 30 must be divisible by 2\*\*\(len\(channel_mults\) - 1\) = 4"),
    (dict(attention_resolutions=(5,)), r"attention_resolutions must be among the resolutions the UNet visits "
                                       r"\(28, 14, 7\)"),
    (dict(channel_mults=()), "channel_mults must list at least one"),
    (dict(channel_mults=(1, 0)), "channel_mults entry must be an integer >= 1"),
    (dict(base_channels=12), r"divisible by groups=8"),
    (dict(dropout=2.0), r"dropout must be <= 1.0"),
    (dict(num_classes=0), "num_classes must be an integer >= 1"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_forward_errors():
    model = small()
    x, t, y = batch()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 8, 8\)"):
        model(torch.randn(6, 1, 16, 16), t)
    with pytest.raises(ValueError, match=r"x must have 4 dimensions"):
        model(torch.randn(6, 64), t)
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        model(x, -t)
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, y)
    with pytest.raises(ValueError, match=r"labels in \[0, 3\]"):
        small(num_classes=3)(x, t, torch.full((6,), 7))
