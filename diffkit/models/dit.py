r"""From ViT to DiT (chapter 9): patches, attention, transformer blocks and the Diffusion Transformer.

* :func:`patchify` / :func:`unpatchify` — an image (B, C, H, W) as :math:`N = HW/p^2` tokens of :math:`p^2C` pixels.
* :func:`sincos_position_embedding` — fixed 2-D position codes :math:`[\gamma(r), \gamma(c)]` of patch (r, c).
* :class:`Attention` — :math:`\mathrm{softmax}(QK^\top/\sqrt{d_h})V` per head, via ``scaled_dot_product_attention``.
* :class:`ViTBlock` — the pre-LN block :math:`x \mathrel{+}= \mathrm{Attn}(\mathrm{LN}(x))`,
  :math:`x \mathrel{+}= \mathrm{MLP}(\mathrm{LN}(x))`.
* :class:`DiTBlock` — the same block told :math:`c = \tau(t) + e(y)` in one of the four ways of Peebles & Xie
  (2023): adaLN-Zero, adaLN, in-context tokens, cross-attention.
* :class:`DiT` — patchify, embed, blocks, final layer, unpatchify.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .._checks import check_choice, check_number, check_positive_int, check_tensor
from .embeddings import ConditionEmbedding, DiffusionModel, check_model_input, sincos_features

__all__ = [
    "patchify", "unpatchify", "sincos_position_embedding", "modulate", "multihead_attention", "Attention",
    "CrossAttention", "Mlp", "ViTBlock", "DiTBlock", "FinalLayer", "DiT", "CONDITIONINGS",
]

#: The ways a DiT block can be conditioned (Peebles & Xie, 2023, section 3.2; chapter 9).
CONDITIONINGS = ("adaln_zero", "adaln", "in_context", "cross_attention")
_ADAPTIVE = ("adaln_zero", "adaln")


# --- patches and positions --------------------------------------------------------------------------------
def _check_divisible(p: int, height: int, width: int) -> None:
    if height % p or width % p:
        raise ValueError(f"image height and width ({height}, {width}) must be divisible by the patch size {p}")


def patchify(x: Tensor, p: int) -> Tensor:
    r"""(B, C, H, W) -> (B, N, p·p·C), :math:`N = (H/p)(W/p)`; token :math:`i\,(W/p) + j` holds the pixels
    ``x[:, :, i*p:(i+1)*p, j*p:(j+1)*p]`` in (row, column, channel) order."""
    check_tensor("x", x, ndim=4)
    check_positive_int("p", p)
    _check_divisible(p, x.shape[2], x.shape[3])
    return rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)


def unpatchify(tokens: Tensor, p: int, channels: int, height: int, width: int) -> Tensor:
    """The inverse of :func:`patchify`: (B, N, p·p·C) -> (B, C, H, W)."""
    check_tensor("tokens", tokens, ndim=3)
    for name, v in (("p", p), ("channels", channels), ("height", height), ("width", width)):
        check_positive_int(name, v)
    _check_divisible(p, height, width)
    h, w = height // p, width // p
    if tokens.shape[1:] != (h * w, p * p * channels):
        raise ValueError(f"tokens must have shape (B, {h * w}, {p * p * channels}) for a {channels}x{height}x{width} "
                         f"image in {p}x{p} patches, got {tuple(tokens.shape)}")
    return rearrange(tokens, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=h, w=w, p1=p, p2=p, c=channels)


def sincos_position_embedding(dim: int, grid_h: int, grid_w: int) -> Tensor:
    r"""Fixed 2-D position codes (N, dim), :math:`N = ` ``grid_h * grid_w`` in :func:`patchify`'s token order:
    patch (r, c) gets :math:`[\gamma_{d/2}(r), \gamma_{d/2}(c)]`, the 1-D sin-cos features of its row and column
    (MAE/DiT).  ``dim`` must be divisible by 4."""
    check_positive_int("dim", dim)
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for 2-D sin-cos position embeddings, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(check_positive_int("grid_h", grid_h)),
                                torch.arange(check_positive_int("grid_w", grid_w)), indexing="ij")  # (h, w) each
    return torch.cat([sincos_features(rows.flatten(), dim // 2),
                      sincos_features(cols.flatten(), dim // 2)], dim=-1)  # (N, dim)


# --- building blocks --------------------------------------------------------------------------------------
def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    r"""Adaptive normalisation :math:`x \odot (1 + \gamma) + \beta` per sample: x (B, N, D), shift/scale (B, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)  # (B, N, D)


def multihead_attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    r""":math:`\mathrm{softmax}(Q_hK_h^\top/\sqrt{d_h})V_h` for each of ``heads`` heads, concatenated:
    q (B, N, D), k and v (B, M, D) -> (B, N, D)."""
    q, k, v = (rearrange(a, "b n (h d) -> b h n d", h=heads) for a in (q, k, v))  # (B, h, N|M, D/h)
    out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, D/h)
    return rearrange(out, "b h n d -> b n (h d)")  # (B, N, D)


def _check_heads(dim: int, heads: int) -> None:
    check_positive_int("dim", dim)
    check_positive_int("heads", heads)
    if dim % heads:
        raise ValueError(f"the width {dim} must be divisible by heads={heads}")


class Attention(nn.Module):
    r"""Multi-head self-attention :math:`W_o\,\mathrm{MHA}(xW_q, xW_k, xW_v)` over tokens x (B, N, D)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        _check_heads(dim, heads)
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)  # [W_q W_k W_v]
        self.proj = nn.Linear(dim, dim)  # W_o

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, N, D)
        return self.proj(multihead_attention(q, k, v, self.heads))  # (B, N, D)


class CrossAttention(nn.Module):
    r"""Multi-head cross-attention :math:`W_o\,\mathrm{MHA}(xW_q, cW_k, cW_v)`: tokens x (B, N, D) read context
    c (B, M, D)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        _check_heads(dim, heads)
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        k, v = self.kv(context).chunk(2, dim=-1)  # 2 x (B, M, D)
        return self.proj(multihead_attention(self.q(x), k, v, self.heads))  # (B, N, D)


class Mlp(nn.Module):
    r"""The transformer's pointwise MLP :math:`W_2\,\mathrm{GELU}(W_1x)`, hidden width ``mlp_ratio * dim``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(check_positive_int("dim", dim) * check_number("mlp_ratio", mlp_ratio, low=0.0, low_open=True))
        if hidden < 1:
            raise ValueError(f"mlp_ratio * dim must be >= 1, got {mlp_ratio} * {dim}")
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, N, D)


class ViTBlock(nn.Module):
    r"""Pre-LN transformer block of the ViT (chapter 9), no conditioning:
    :math:`x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x))`, :math:`x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))`.

    ``affine=False`` drops the LayerNorms' own scale and shift (the DiT's adaptive blocks supply them)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, affine: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))  # (B, N, D)
        return x + self.mlp(self.norm2(x))  # (B, N, D)


class DiTBlock(ViTBlock):
    r"""A :class:`ViTBlock` conditioned on :math:`c` (chapter 9); ``forward(x, c)`` with x (B, N, D).

    * ``"adaln_zero"`` — c (B, D); one Linear gives :math:`(\beta_1, \gamma_1, \alpha_1, \beta_2, \gamma_2, \alpha_2)`:
      :math:`x \mathrel{+}= \alpha_1 \odot \mathrm{Attn}(\mathrm{LN}(x)(1+\gamma_1)+\beta_1)`, the same for the MLP.
      The Linear starts at zero, so the gates :math:`\alpha = 0` and the block starts as the identity.
    * ``"adaln"`` — the same without gates (4 D outputs): at zero init it is a plain pre-LN block, not the identity.
    * ``"in_context"`` — a plain :class:`ViTBlock`; the conditioning is already in the sequence as extra tokens
      (the :class:`DiT` appends them), so ``c`` is ignored.
    * ``"cross_attention"`` — c (B, K, D) tokens; a cross-attention sublayer :math:`x \mathrel{+}= \mathrm{XAttn}
      (\mathrm{LN}(x), c)` between self-attention and MLP, its output projection zero at init.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, conditioning: str = "adaln_zero"):
        check_choice("conditioning", conditioning, CONDITIONINGS)
        super().__init__(dim, heads, mlp_ratio, affine=conditioning not in _ADAPTIVE)
        self.conditioning = conditioning
        if conditioning in _ADAPTIVE:
            n = 6 if conditioning == "adaln_zero" else 4
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, n * dim))  # c -> (shift, scale[, gate]) x 2
            nn.init.zeros_(self.modulation[-1].weight)
            nn.init.zeros_(self.modulation[-1].bias)
        elif conditioning == "cross_attention":
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross_attn = CrossAttention(dim, heads)
            nn.init.zeros_(self.cross_attn.proj.weight)
            nn.init.zeros_(self.cross_attn.proj.bias)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        if self.conditioning == "in_context":
            return super().forward(x)
        if c is None:
            raise ValueError(f"a DiTBlock with conditioning={self.conditioning!r} needs the conditioning c")
        if self.conditioning == "cross_attention":
            check_tensor("c", c, ndim=3)  # (B, K, D)
            x = x + self.attn(self.norm1(x))
            x = x + self.cross_attn(self.norm_cross(x), c)
            return x + self.mlp(self.norm2(x))  # (B, N, D)
        check_tensor("c", c, ndim=2)  # (B, D)
        mods = self.modulation(c).chunk(6 if self.conditioning == "adaln_zero" else 4, dim=-1)  # each (B, D)
        if self.conditioning == "adaln_zero":
            shift1, scale1, gate1, shift2, scale2, gate2 = mods
        else:
            (shift1, scale1, shift2, scale2), gate1, gate2 = mods, None, None
        x = x + _gated(gate1, self.attn(modulate(self.norm1(x), shift1, scale1)))  # (B, N, D)
        return x + _gated(gate2, self.mlp(modulate(self.norm2(x), shift2, scale2)))  # (B, N, D)


def _gated(gate: Tensor | None, h: Tensor) -> Tensor:
    """:math:`\\alpha \\odot h` per sample (gate (B, D), h (B, N, D)); no gate = 1."""
    return h if gate is None else gate.unsqueeze(1) * h


class FinalLayer(nn.Module):
    r"""Tokens (B, N, D) -> patches (B, N, p·p·C): :math:`W(\mathrm{LN}(x)(1+\gamma)+\beta)` with
    :math:`(\beta, \gamma)` from c when ``adaptive`` (adaLN variants), else :math:`W\,\mathrm{LN}(x)`."""

    def __init__(self, dim: int, patch_size: int, out_channels: int, adaptive: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=not adaptive, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim)) if adaptive else None
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        h = self.norm(x)  # (B, N, D)
        if self.modulation is not None:
            shift, scale = self.modulation(c).chunk(2, dim=-1)  # (B, D) each
            h = modulate(h, shift, scale)
        return self.linear(h)  # (B, N, p*p*C)


# --- the model --------------------------------------------------------------------------------------------
class DiT(DiffusionModel):
    r"""Diffusion Transformer (Peebles & Xie, 2023; chapter 9): ``forward(x, t, y=None)`` (B, C, H, W) -> same.

    :math:`z_0 = \mathrm{patchify}(x)W_e + P` (fixed 2-D sin-cos :math:`P`), :math:`z_{l} = \mathrm{Block}_l(z_{l-1}, c)`
    with :math:`c = \tau(t) + e(y)`, output :math:`\mathrm{unpatchify}(\mathrm{Final}(z_L, c))`.  ``conditioning``
    picks how the blocks see :math:`c` (see :class:`DiTBlock`); with ``"in_context"`` the model is literally a
    ViT of :class:`ViTBlock` over the patch tokens plus the tokens :math:`[\tau(t), e(y)]`, which are dropped
    before the final layer.  Defaults (28x28, patch 4 -> 49 tokens, width 128, depth 4) train on a CPU.

    ``learn_sigma=True`` doubles the output channels (improved DDPM's learned variance, chapter 3):
    :meth:`forward` still returns the C prediction channels; :meth:`forward_with_variance` returns both halves.
    """

    def __init__(self, image_size: int = 28, in_channels: int = 1, patch_size: int = 4, hidden: int = 128,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0, num_classes: int | None = None,
                 label_dropout: float = 0.1, conditioning: str = "adaln_zero", learn_sigma: bool = False):
        super().__init__()
        self.image_size = check_positive_int("image_size", image_size)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.patch_size = check_positive_int("patch_size", patch_size)
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be divisible by patch_size {patch_size}")
        self.depth = check_positive_int("depth", depth)
        _check_heads(hidden, heads)
        self.conditioning = check_choice("conditioning", conditioning, CONDITIONINGS)
        self.learn_sigma = bool(learn_sigma)
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        grid = image_size // patch_size
        self.num_patches = grid * grid

        self.patch_embed = nn.Linear(patch_size * patch_size * in_channels, hidden)  # W_e
        self.register_buffer("pos_embed", sincos_position_embedding(hidden, grid, grid), persistent=False)  # (N, D)
        self.cond = ConditionEmbedding(hidden, num_classes, label_dropout)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, mlp_ratio, conditioning) for _ in range(depth))
        self.final = FinalLayer(hidden, patch_size, self.out_channels, adaptive=conditioning in _ADAPTIVE)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """(Re)initialise every parameter; each choice follows DiT's ``initialize_weights``."""
        for m in self.modules():
            if isinstance(m, nn.Linear):  # every Linear (patch embedding, attention, MLPs): Xavier-uniform, zero bias
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:  # affine LayerNorms start as plain LN
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # pos_embed: a fixed sin-cos buffer, not learned, nothing to initialise.
        for layer in self.cond.time.mlp:  # timestep MLP: N(0, 0.02) weights (zero biases from above)
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)
        if self.cond.label is not None:  # label table, null row included: N(0, 0.02)
            nn.init.normal_(self.cond.label.table.weight, std=0.02)
        zero = [block.modulation[-1] for block in self.blocks if hasattr(block, "modulation")]  # adaLN(-Zero): 0
        zero += [block.cross_attn.proj for block in self.blocks if hasattr(block, "cross_attn")]  # cross-attn out: 0
        zero += [self.final.linear] + ([self.final.modulation[-1]] if self.final.modulation is not None else [])
        for layer in zero:  # ... and the final layer: the model outputs exactly 0 at init
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward_with_variance(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(prediction, v)``, both (B, C, H, W); ``v`` are the learned-variance channels (``learn_sigma=True``)."""
        if not self.learn_sigma:
            raise ValueError("forward_with_variance needs a DiT built with learn_sigma=True")
        return self._forward(x, t, y).chunk(2, dim=1)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self._forward(x, t, y)[:, : self.in_channels]  # (B, C, H, W)

    def _forward(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        t = check_model_input(x, t, (self.in_channels, self.image_size, self.image_size), self)  # (B,)
        z = self.patch_embed(patchify(x, self.patch_size)) + self.pos_embed  # (B, N, D)
        adaptive = self.conditioning in _ADAPTIVE
        c = self.cond(t, y) if adaptive else self.cond.tokens(t, y)  # (B, D) or (B, K, D)
        if self.conditioning == "in_context":
            z = torch.cat([z, c], dim=1)  # (B, N + K, D)
        for block in self.blocks:
            z = block(z, c)
        z = z[:, : self.num_patches]  # (B, N, D): drop in-context tokens
        out = self.final(z, c if adaptive else None)  # (B, N, p*p*C_out)
        return unpatchify(out, self.patch_size, self.out_channels, self.image_size, self.image_size)
