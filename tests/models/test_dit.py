import math

import pytest
import torch

from diffkit import grids, paths, samplers
from diffkit.models import (CONDITIONINGS, Attention, DiT, DiTBlock, ViTBlock, patchify, sincos_position_embedding,
                            unpatchify)
from diffkit.models.embeddings import sincos_features
from tests.models.helpers import (assert_batch_equivariant, assert_every_parameter_gets_gradient,
                                          assert_null_label_is_unconditional, assert_trains, perturbed)


def small(**kwargs):
    """An 8x8 DiT with 2x2 patches: 16 tokens of width 32."""
    return DiT(**{"image_size": 8, "in_channels": 1, "patch_size": 2, "hidden": 32, "depth": 2, "heads": 2,
                  **kwargs})


def batch(n=6, channels=1, size=8):
    return torch.randn(n, channels, size, size), torch.rand(n), torch.randint(0, 3, (n,))


# --- patches ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p, c, h, w", [(1, 1, 4, 6), (2, 3, 8, 6), (4, 1, 28, 28), (7, 2, 28, 14), (3, 4, 9, 9)])
def test_patchify_and_unpatchify_are_inverse(p, c, h, w):
    x = torch.randn(2, c, h, w)
    tokens = patchify(x, p)
    assert tokens.shape == (2, (h // p) * (w // p), p * p * c)
    assert torch.equal(unpatchify(tokens, p, c, h, w), x)
    z = torch.randn_like(tokens)
    assert torch.equal(patchify(unpatchify(z, p, c, h, w), p), z)


def test_patchify_puts_each_patch_in_its_token():
    x = torch.randn(2, 3, 12, 8)
    p, tokens = 4, patchify(x, 4)
    for i, j in [(0, 0), (1, 1), (2, 0), (2, 1)]:
        patch = x[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p]  # (B, C, p, p)
        token = tokens[:, i * (8 // p) + j]  # row-major over the patch grid
        assert torch.equal(token, patch.permute(0, 2, 3, 1).reshape(2, -1))  # (row, column, channel) order


@pytest.mark.parametrize("call, error, match", [
    (lambda: patchify(torch.randn(1, 1, 28, 28), 5), ValueError, r"\(28, 28\) must be divisible by the patch size 5"),
    (lambda: patchify(torch.randn(1, 1, 8, 6), 4), ValueError, r"\(8, 6\) must be divisible"),
    (lambda: patchify(torch.randn(1, 8, 8), 2), ValueError, "x must have 4 dimensions"),
    (lambda: patchify(torch.randn(1, 1, 8, 8), 0), ValueError, "p must be an integer >= 1"),
    (lambda: unpatchify(torch.randn(1, 16, 4), 2, 1, 8, 6), ValueError,
     r"tokens must have shape \(B, 12, 4\) for a 1x8x6 image in 2x2 patches"),
    (lambda: unpatchify(torch.randn(1, 16, 4), 3, 1, 8, 8), ValueError, "must be divisible by the patch size 3"),
])
def test_patch_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_position_embedding_codes_row_and_column():
    pos = sincos_position_embedding(16, 3, 5)
    assert pos.shape == (15, 16)
    assert torch.cdist(pos, pos).add(torch.eye(15)).min() > 0.1  # every patch position gets a distinct code
    r, c = 2, 3
    torch.testing.assert_close(pos[r * 5 + c, :8], sincos_features(torch.tensor([r]), 8)[0])
    torch.testing.assert_close(pos[r * 5 + c, 8:], sincos_features(torch.tensor([c]), 8)[0])
    with pytest.raises(ValueError, match="dim must be divisible by 4"):
        sincos_position_embedding(18, 3, 3)


# --- attention and plain blocks -----------------------------------------------------------------------------
def test_attention_matches_explicit_softmax():
    attn, x, heads = Attention(12, 3), torch.randn(2, 5, 12), 3
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    split = lambda a: a.reshape(2, 5, heads, 4).transpose(1, 2)  # noqa: E731  (B, h, N, d)
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(4), dim=-1)
    expected = attn.proj((weights @ split(v)).transpose(1, 2).reshape(2, 5, 12))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="width 12 must be divisible by heads=5"):
        Attention(12, 5)


def test_vit_block_is_token_permutation_equivariant_and_not_identity():
    block, x = ViTBlock(16, 2), torch.randn(2, 7, 16)
    perm = torch.randperm(7)
    out = block(x)
    torch.testing.assert_close(block(x[:, perm]), out[:, perm], rtol=1e-5, atol=1e-6)
    assert (out - x).abs().max() > 1e-2


# --- conditioning at initialisation -------------------------------------------------------------------------
def test_adaln_zero_blocks_are_the_identity_and_dit_outputs_zero_at_init():
    model = small(num_classes=3)
    x, t, y = batch()
    tokens, c = torch.randn(6, 16, 32), torch.randn(6, 32)
    for block in model.blocks:
        assert torch.equal(block(tokens, c), tokens)  # gates alpha = 0
    assert torch.equal(model(x, t, y), torch.zeros_like(x))


def test_adaln_without_gates_is_not_the_identity():
    model = small(conditioning="adaln")
    tokens, c = torch.randn(6, 16, 32), torch.randn(6, 32)
    for block in model.blocks:
        assert torch.equal(block.modulation[-1].weight, torch.zeros_like(block.modulation[-1].weight))
        assert (block(tokens, c) - tokens).abs().max() > 1e-2  # residual branches are on
        assert torch.equal(block(tokens, c), block(tokens, torch.randn(6, 32)))  # but c is ignored at init
    x, t, _ = batch()
    assert torch.equal(model(x, t), torch.zeros_like(x))  # the zero final layer still outputs 0


def test_cross_attention_block_ignores_context_at_init():
    block = DiTBlock(32, 2, conditioning="cross_attention")
    tokens = torch.randn(2, 16, 32)
    out = block(tokens, torch.randn(2, 2, 32))
    assert torch.equal(out, block(tokens, torch.randn(2, 2, 32)))  # zero output projection of the cross-attention
    assert (out - tokens).abs().max() > 1e-2
    block = perturbed(block)
    assert (block(tokens, torch.randn(2, 2, 32)) - block(tokens, torch.randn(2, 2, 32))).abs().max() > 1e-3


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_every_conditioning_outputs_zero_at_init_and_reinitialises(conditioning):
    model = small(num_classes=3, conditioning=conditioning)
    x, t, y = batch()
    assert torch.equal(model(x, t, y), torch.zeros_like(x))
    model = perturbed(model)
    assert model(x, t, y).abs().max() > 1e-2
    model.initialize_weights()
    assert torch.equal(model(x, t, y), torch.zeros_like(x))
    table = model.cond.label.table.weight
    assert abs(table.std().item() - 0.02) < 0.01  # label table ~ N(0, 0.02)


def test_in_context_appends_and_removes_condition_tokens():
    model = perturbed(small(num_classes=3, conditioning="in_context")).eval()
    x, t, y = batch()
    lengths = []
    hooks = [b.register_forward_hook(lambda m, i, o: lengths.append(o.shape[1])) for b in model.blocks]
    hooks.append(model.final.register_forward_hook(lambda m, i, o: lengths.append(o.shape[1])))
    model(x, t, y)
    for h in hooks:
        h.remove()
    assert lengths == [16 + 2, 16 + 2, 16]  # patch tokens + [tau(t), e(y)] in the blocks, patches only after


# --- the model contract ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_batch_equivariance(conditioning):
    x, t, y = batch()
    assert_batch_equivariant(small(num_classes=3, conditioning=conditioning), x, t, y)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_null_label_switches_conditioning_off(conditioning):
    x, t, _ = batch()
    assert_null_label_is_unconditional(lambda p: small(num_classes=3, label_dropout=p, conditioning=conditioning),
                                       x, t, 3)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_gradient_reaches_every_parameter(conditioning):
    x, t, y = batch(4)
    assert_every_parameter_gets_gradient(small(num_classes=3, conditioning=conditioning), x, t, y)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_trains(conditioning):
    x, t, y = batch(4)
    assert_trains(small(num_classes=3, label_dropout=0.0, conditioning=conditioning), x, t, y, factor=10.0)


def test_output_depends_on_token_position():
    """With the position embedding, moving patches around is not just moving the output patches; without it a
    transformer is blind to order and the output patches move with the input patches."""
    model = perturbed(small(num_classes=3)).eval()
    x, t, y = batch()
    perm = torch.randperm(16)
    shuffle = lambda img: unpatchify(patchify(img, 2)[:, perm], 2, 1, 8, 8)  # noqa: E731
    with torch.no_grad():
        assert (model(shuffle(x), t, y) - shuffle(model(x, t, y))).abs().max() > 1e-2
        model.pos_embed.zero_()
        torch.testing.assert_close(model(shuffle(x), t, y), shuffle(model(x, t, y)), rtol=1e-4, atol=1e-5)


def test_default_dit_is_49_tokens_of_width_128():
    model = DiT(num_classes=10)
    assert model.num_patches == 49 and model.pos_embed.shape == (49, 128) and len(model.blocks) == 4
    x, t = torch.randn(2, 1, 28, 28), torch.rand(2)
    assert torch.equal(model(x, t, torch.tensor([0, 10])), torch.zeros_like(x))


def test_guided_sampling_runs_with_the_model_null_label():
    model = perturbed(small(num_classes=3), std=0.02).eval()
    x, _, y = batch()
    out = samplers.ddim(model, x, grids.uniform(4), paths.CosinePath(), target="v", y=y, guidance=3.0,
                        null_label=model.null_label)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert small().null_label is None


def test_learn_sigma_returns_prediction_and_variance_channels():
    model = perturbed(small(in_channels=2, learn_sigma=True))
    x, t, _ = batch(3, 2)
    pred, v = model.forward_with_variance(x, t)
    assert pred.shape == v.shape == x.shape
    torch.testing.assert_close(model(x, t), pred)
    assert (pred - v).abs().max() > 1e-3
    with pytest.raises(ValueError, match="learn_sigma=True"):
        small().forward_with_variance(x[:, :1], t)


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=10, patch_size=4), "image_size 10 must be divisible by patch_size 4"),
    (dict(conditioning="film"), r"conditioning must be one of 'adaln_zero', 'adaln', 'in_context', "
                                r"'cross_attention'; got 'film'"),
    (dict(hidden=30, heads=4), "width 30 must be divisible by heads=4"),
    (dict(hidden=18, heads=2), "dim must be divisible by 4"),
    (dict(depth=0), "depth must be an integer >= 1"),
    (dict(mlp_ratio=0.0), "mlp_ratio must be > 0"),
    (dict(num_classes=3, label_dropout=1.5), r"dropout_prob must be <= 1.0"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_forward_errors():
    model = small(num_classes=3)
    x, t, y = batch()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 8, 8\)"):
        model(torch.randn(6, 1, 12, 12), t, y)
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        model(x, t + 1.5, y)
    with pytest.raises(ValueError, match=r"labels in \[0, 3\] \(3 is the null label\)"):
        model(x, t, torch.full((6,), 4))
    with pytest.raises(TypeError, match="integer"):
        model(x, t, y.float())
    with pytest.raises(ValueError, match="unconditional"):
        small()(x, t, y)
    with pytest.raises(ValueError, match="needs the conditioning c"):
        model.blocks[0](torch.randn(6, 16, 32))
