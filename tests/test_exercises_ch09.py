"""Chapter 9's exercises (diffkit.exercises.ch09): each reference solution agrees with the diffkit code the chapter
builds on — the DiT's patchify, PyTorch's scaled_dot_product_attention, the sin-cos features of the position
and time embeddings — so the exercises teach exactly what diffkit ships."""

import torch
import torch.nn.functional as F

from diffkit.exercises import ch09
from diffkit.exercises._checking import run_check
from diffkit.models import dit, embeddings

EXERCISES = {e.name: e for e in ch09.EXERCISES}


def test_patchify_reference_is_diffkits_patchify():
    x = torch.randn(3, 2, 12, 8, generator=torch.Generator().manual_seed(0))
    for p in (1, 2, 4):
        torch.testing.assert_close(ch09.patchify(x, p), dit.patchify(x, p), rtol=0, atol=0)


def test_multihead_reference_is_diffkits_attention_and_one_head_is_scaled_dot_product_attention():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 5, 16, generator=g, dtype=torch.float64) for _ in range(3))
    k, v = k[:, :3], v[:, :3]  # 5 queries, 3 keys: the shapes are not symmetric
    for heads in (1, 2, 4):
        torch.testing.assert_close(ch09.multihead_attention(q, k, v, heads), dit.multihead_attention(q, k, v, heads))
    torch.testing.assert_close(ch09.multihead_attention(q, k, v, 1), F.scaled_dot_product_attention(q, k, v))


def test_sincos_reference_is_diffkits_position_features():
    pos = torch.arange(7)
    torch.testing.assert_close(ch09.sincos_1d(pos, 64).float(), embeddings.sincos_features(pos, 64),
                               rtol=0, atol=1e-5)


def test_a_float32_solution_passes():
    """A reader who builds the frequencies from an integer arange works in float32: that is not a mistake."""
    def sincos_float32(pos, dim):
        half = dim // 2
        omega = 10_000.0 ** (-torch.arange(half) / half)
        angles = pos.float()[:, None] * omega[None]
        return torch.cat([angles.cos(), angles.sin()], dim=-1)

    assert run_check(EXERCISES["sincos_1d"], sincos_float32).passed
    assert run_check(EXERCISES["multihead_attention"], lambda q, k, v, h: dit.multihead_attention(
        q.float(), k.float(), v.float(), h)).passed
