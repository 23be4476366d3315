r"""The DDPM UNet (Ho et al., 2020; chapter 3), class-conditional for guidance (chapter 8).

A convolutional encoder-decoder with skip connections.  Every residual block reads the conditioning vector
:math:`c = \tau(t) + e(y)` by scale-shift normalisation,

.. math:: h = \mathrm{Conv}(\mathrm{SiLU}(\mathrm{GN}(x))), \qquad
          x' = \mathrm{Skip}(x) + \mathrm{Conv}\big(\mathrm{SiLU}(\mathrm{GN}(h)\,(1 + \gamma(c)) + \beta(c))\big),

and self-attention over the :math:`H W` pixels (as tokens) runs at the resolutions listed in
``attention_resolutions`` and in the middle.  The last convolution of each residual branch, of each attention
block and of the output starts at zero (improved DDPM), so at initialisation every residual block whose input
and output channels agree and every attention block is the identity, a channel-changing residual block is its
1x1 skip convolution, the resampling layers (strided and nearest-neighbour convolutions) are ordinary
layers, and the network's output is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .._checks import check_number, check_positive_int
from .dit import Attention
from .embeddings import ConditionEmbedding, DiffusionModel, check_model_input

__all__ = ["ResBlock", "SpatialSelfAttention", "Downsample", "Upsample", "UNet"]


def _zero(module: nn.Module) -> nn.Module:
    """``module`` with every parameter set to zero."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    r"""Residual block with scale-shift conditioning (equation in the module docstring); x (B, C_in, H, W),
    c (B, E) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels)  # c -> (gamma, beta)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        scale, shift = rearrange(self.emb(F.silu(c)), "b (two ch) -> two b ch 1 1", two=2)  # (B, C_out, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))  # (B, C_out, H, W)


class SpatialSelfAttention(nn.Module):
    r""":math:`x + \mathrm{Attn}(\mathrm{GN}(x))` with the :math:`HW` pixels as tokens (multi-head, chapter 9's
    :class:`~diffkit.models.dit.Attention`); output projection zero at init."""

    def __init__(self, channels: int, heads: int = 4, groups: int = 8):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attn = Attention(channels, heads)
        _zero(self.attn.proj)

    def forward(self, x: Tensor) -> Tensor:
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")  # (B, HW, C)
        out = rearrange(self.attn(tokens), "b (h w) c -> b c h w", h=x.shape[2])  # (B, C, H, W)
        return x + out


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour then a 3x3 convolution, (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Stage(nn.Sequential):
    """A sequence of blocks; residual blocks also receive the conditioning ``c``."""

    def forward(self, x: Tensor, c: Tensor) -> Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, c) if isinstance(block, ResBlock) else block(x)
        return x


class UNet(DiffusionModel):
    r"""``forward(x, t, y=None)``: (B, C, S, S) -> (B, C, S, S), :math:`S` = ``image_size`` (see module docstring).

    Level :math:`\ell` (resolution :math:`S/2^\ell`) has width ``base_channels * channel_mults[l]`` and
    ``num_res_blocks`` residual blocks on the way down (``num_res_blocks + 1`` on the way up, each reading one
    skip connection); :math:`S` must be divisible by :math:`2^{L-1}`.  Default: 28 -> 14 -> 7, attention at 7.
    The conditioning width is ``4 * base_channels``.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32, channel_mults: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 1, attention_resolutions: Sequence[int] = (7,), image_size: int = 28,
                 num_classes: int | None = None, label_dropout: float = 0.1, dropout: float = 0.0,
                 groups: int = 8, heads: int = 4):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = check_positive_int("image_size", image_size)
        check_positive_int("base_channels", base_channels)
        check_positive_int("num_res_blocks", num_res_blocks, minimum=0)
        check_positive_int("groups", groups)
        check_positive_int("heads", heads)
        dropout = check_number("dropout", dropout, low=0.0, high=1.0)
        mults = tuple(check_positive_int("channel_mults entry", m) for m in channel_mults)
        if not mults:
            raise ValueError("channel_mults must list at least one multiplier, e.g. (1, 2, 2)")
        factor = 2 ** (len(mults) - 1)
        if image_size % factor:
            raise ValueError(f"image_size {image_size} must be divisible by 2**(len(channel_mults) - 1) = {factor} "
                             f"to be halved {len(mults) - 1} times; use fewer channel_mults")
        resolutions = [image_size // 2**level for level in range(len(mults))]
        attn_res = set(attention_resolutions)
        if not attn_res <= set(resolutions):
            raise ValueError(f"attention_resolutions must be among the resolutions the UNet visits {tuple(resolutions)}, "
                             f"got {tuple(attention_resolutions)}")
        for m in mults:
            ch = base_channels * m
            if ch % groups or ch % heads:
                raise ValueError(f"every width base_channels * mult (here {ch}) must be divisible by groups={groups} "
                                 f"and heads={heads}")
        emb_dim = 4 * base_channels
        self.cond = ConditionEmbedding(emb_dim, num_classes, label_dropout)

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout, groups)

        def attn(ch: int) -> SpatialSelfAttention:
            return SpatialSelfAttention(ch, heads, groups)

        ch = base_channels
        self.inp = nn.Conv2d(in_channels, ch, 3, padding=1)
        skips = [ch]
        self.down = nn.ModuleList()
        for level, mult in enumerate(mults):
            for _ in range(num_res_blocks):
                blocks = [res(ch, base_channels * mult)] + ([attn(base_channels * mult)]
                                                            if resolutions[level] in attn_res else [])
                ch = base_channels * mult
                self.down.append(_Stage(*blocks))
                skips.append(ch)
            if level < len(mults) - 1:
                self.down.append(_Stage(Downsample(ch)))
                skips.append(ch)
        self.mid = _Stage(res(ch, ch), attn(ch), res(ch, ch))
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for i in range(num_res_blocks + 1):
                blocks = [res(ch + skips.pop(), base_channels * mult)]
                ch = base_channels * mult
                if resolutions[level] in attn_res:
                    blocks.append(attn(ch))
                if level > 0 and i == num_res_blocks:
                    blocks.append(Upsample(ch))
                self.up.append(_Stage(*blocks))
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), _zero(nn.Conv2d(ch, in_channels, 3, padding=1)))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t = check_model_input(x, t, (self.in_channels, self.image_size, self.image_size), self)  # (B,)
        c = self.cond(t, y)  # (B, E)
        h = self.inp(x)  # (B, C0, S, S)
        hs = [h]
        for stage in self.down:
            h = stage(h, c)
            hs.append(h)
        h = self.mid(h, c)  # (B, C_L, S/2^(L-1), S/2^(L-1))
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), c)
        return self.out(h)  # (B, C, S, S)
