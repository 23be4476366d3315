import math

import pytest
import torch
import torch.nn.functional as F

from diffkit.models import ConditionEmbedding, LabelEmbedding, TimestepEmbedding, sinusoidal_embedding
from diffkit.models.embeddings import check_model_input


# --- sinusoidal features ------------------------------------------------------------------------------------
def test_scaled_time_features_separate_nearby_times_unscaled_do_not():
    t = torch.tensor([0.10, 0.11])
    scaled = sinusoidal_embedding(t, 128)  # default scale = 1000
    unscaled = sinusoidal_embedding(t, 128, scale=1.0)
    assert F.cosine_similarity(scaled[0], scaled[1], dim=0) < 0.9
    assert (scaled[0] - scaled[1]).norm() > 3.0
    assert F.cosine_similarity(unscaled[0], unscaled[1], dim=0) > 0.9999  # the pitfall: almost constant on [0, 1]
    assert (unscaled[0] - unscaled[1]).norm() < 0.05


def test_sinusoidal_embedding_matches_formula():
    t, dim = torch.tensor([0.0, 0.37, 1.0]), 10
    emb = sinusoidal_embedding(t, dim, max_period=100.0, scale=50.0)
    assert emb.shape == (3, dim)
    for i in range(dim // 2):
        w = 100.0 ** (-i / (dim // 2))
        torch.testing.assert_close(emb[:, i], torch.cos(50.0 * t * w))
        torch.testing.assert_close(emb[:, dim // 2 + i], torch.sin(50.0 * t * w))
    odd = sinusoidal_embedding(t, 7)
    assert odd.shape == (3, 7) and torch.equal(odd[:, -1], torch.zeros(3))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(t=torch.tensor([0.5, 1.2])), ValueError, r"t must lie in \[0.0, 1.0\]"),
    (dict(t=torch.tensor([-0.1])), ValueError, r"t must lie in"),
    (dict(t=torch.rand(2, 3)), ValueError, r"t must have 1 dimensions"),
    (dict(t=torch.tensor([1, 0])), TypeError, r"t must be a floating-point tensor"),
    (dict(t=torch.rand(3), dim=0), ValueError, r"dim must be an integer >= 1"),
    (dict(t=torch.rand(3), scale=0.0), ValueError, r"scale must be > 0"),
    (dict(t=torch.rand(3), max_period=1.0), ValueError, r"max_period must be > 1"),
])
def test_sinusoidal_embedding_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        sinusoidal_embedding(**{"dim": 16, **kwargs})


def test_timestep_embedding_distinguishes_times():
    emb = TimestepEmbedding(32)
    out = emb(torch.tensor([0.10, 0.11, 0.10]))
    assert out.shape == (3, 32)
    assert torch.equal(out[0], out[2])
    assert (out[0] - out[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="t must lie in"):
        emb(torch.tensor([2.0]))


# --- labels -------------------------------------------------------------------------------------------------
def test_label_embedding_null_row_and_none():
    emb = LabelEmbedding(10, 8).eval()
    assert emb.null_label == 10 and emb.table.weight.shape == (11, 8)
    y = torch.tensor([3, 10, 0])
    torch.testing.assert_close(emb(y), emb.table.weight[[3, 10, 0]], rtol=0, atol=0)
    torch.testing.assert_close(emb(None, batch=4), emb.table.weight[10].expand(4, 8), rtol=0, atol=0)


def test_label_dropout_train_vs_eval():
    emb = LabelEmbedding(10, 8, dropout_prob=1.0)
    y = torch.arange(10)
    assert torch.equal(emb.train().drop(y), torch.full((10,), 10))  # every label is null in training
    torch.testing.assert_close(emb(y), emb.table.weight[10].expand(10, 8), rtol=0, atol=0)
    assert torch.equal(emb.eval().drop(y), y)  # no dropout in eval mode
    half = LabelEmbedding(10, 8, dropout_prob=0.3).train()
    frac = (half.drop(torch.zeros(20000, dtype=torch.long)) == 10).float().mean().item()
    assert abs(frac - 0.3) < 0.02
    assert torch.equal(LabelEmbedding(10, 8).train().drop(y), y)  # dropout_prob 0: never drops


def test_force_drop_ids_drop_exactly_those_labels():
    emb = LabelEmbedding(5, 4).eval()
    y = torch.tensor([0, 1, 2, 3])
    assert torch.equal(emb.drop(y, force_drop_ids=torch.tensor([1, 0, 0, 1])), torch.tensor([5, 1, 2, 5]))
    with pytest.raises(ValueError, match="force_drop_ids must be a tensor of shape"):
        emb.drop(y, force_drop_ids=torch.tensor([1, 0]))


@pytest.mark.parametrize("y, batch, error, match", [
    (torch.tensor([0.0, 1.0]), None, TypeError, "integer"),
    (torch.tensor([0, 11]), None, ValueError, r"labels in \[0, 10\] \(10 is the null label\)"),
    (torch.tensor([-1, 0]), None, ValueError, r"labels in \[0, 10\]"),
    (torch.zeros(2, 1, dtype=torch.long), None, ValueError, r"y must have shape \(B,\)"),
    (torch.zeros(3, dtype=torch.long), 2, ValueError, r"y must have shape \(2,\)"),
    ([0, 1], None, TypeError, "y must be a torch.Tensor"),
    (None, None, ValueError, "needs batch"),
])
def test_label_embedding_errors(y, batch, error, match):
    with pytest.raises(error, match=match):
        LabelEmbedding(10, 4)(y, batch=batch)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=0, dim=4), "num_classes must be an integer >= 1"),
    (dict(num_classes=3, dim=4, dropout_prob=1.5), r"dropout_prob must be <= 1.0"),
    (dict(num_classes=3, dim=0), "dim must be an integer >= 1"),
])
def test_label_embedding_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LabelEmbedding(**kwargs)


def test_condition_embedding_is_sum_of_tokens():
    t, y = torch.rand(3), torch.tensor([0, 2, 4])
    cond = ConditionEmbedding(16, num_classes=4).eval()
    tokens = cond.tokens(t, y)
    assert tokens.shape == (3, 2, 16)
    torch.testing.assert_close(tokens[:, 0], cond.time(t))
    torch.testing.assert_close(tokens[:, 1], cond.label(y))
    torch.testing.assert_close(cond(t, y), tokens.sum(1))
    assert cond.null_label == 4
    uncond = ConditionEmbedding(16)
    assert uncond.tokens(t).shape == (3, 1, 16) and uncond.null_label is None
    with pytest.raises(ValueError, match=r"unconditional \(num_classes=None\)"):
        uncond(t, y)


def test_check_model_input():
    x = torch.randn(4, 2)
    assert torch.equal(check_model_input(x, 0.5, (2,)), torch.full((4,), 0.5))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        check_model_input(x, torch.rand(4), (3,))
    with pytest.raises(ValueError, match=r"t must be a number or a tensor of shape \(4,\)"):
        check_model_input(x, torch.rand(5), (2,))
    with pytest.raises(ValueError, match=r"x must have 2 dimensions"):
        check_model_input(torch.randn(4), torch.rand(4), (2,))
    assert math.isclose(float(check_model_input(x, torch.tensor(1.0), (2,))[0]), 1.0)


# --- constructor arguments and guidance support ---------------------------------------------------------------
def test_models_record_their_constructor_arguments_and_rebuild_from_them():
    import inspect

    from diffkit.models import MLP, DiT, UNet

    for model in (MLP(hidden=16, num_classes=4), UNet(base_channels=8, channel_mults=(1, 2), attention_resolutions=(),
                                                    image_size=8), DiT(image_size=8, hidden=32, depth=1)):
        cls = type(model)
        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
        assert model.config.keys() == defaults.keys()  # every argument, defaults included
        rebuilt = cls(**model.config)
        assert rebuilt.config == model.config
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    assert UNet(channel_mults=(1, 2, 2)).config["channel_mults"] == [1, 2, 2]  # JSON form


def test_a_subclass_records_its_own_arguments():
    from diffkit.models import MLP

    class Wide(MLP):
        def __init__(self, width: int = 8, **kwargs):
            super().__init__(hidden=width, **kwargs)

    class Same(MLP):
        pass

    assert Wide(width=4, depth=1).config == {"width": 4, "depth": 1}
    assert Same(hidden=4).config == MLP(hidden=4).config


def test_every_model_defaults_to_label_dropout_01():
    import inspect

    from diffkit.models import MLP, DiT, UNet

    for cls in (MLP, UNet, DiT):
        assert inspect.signature(cls).parameters["label_dropout"].default == 0.1
    assert MLP(num_classes=3).label_dropout == 0.1 and MLP().label_dropout is None


def test_guidance_on_a_model_trained_without_the_null_label_warns():
    import warnings

    from diffkit.models import MLP, check_guidance_support

    never = MLP(hidden=8, num_classes=3, label_dropout=0.0)
    with pytest.warns(UserWarning, match="label_dropout=0: it never trained on the null label"):
        check_guidance_support(never, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_guidance_support(never, 1.0)  # no guidance: nothing to warn about
        check_guidance_support(MLP(hidden=8, num_classes=3), 3.0)  # trained with the null label
        check_guidance_support(lambda x, t, y=None: x, 3.0)  # a model that cannot tell
