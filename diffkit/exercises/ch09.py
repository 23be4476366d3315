"""Chapter 9's exercises: from ViT to DiT — cutting an image into patch tokens, multi-head scaled dot-product
attention, the sin-cos position features."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checking import Exercise, compare, randn


def patchify(x: Tensor, p: int) -> Tensor:
    b, c, h, w = x.shape
    tiles = x.reshape(b, c, h // p, p, w // p, p)  # (B, C, rows, p, cols, p)
    tiles = tiles.permute(0, 2, 4, 3, 5, 1)  # (B, rows, cols, p, p, C): row-major patches
    return tiles.reshape(b, (h // p) * (w // p), p * p * c)  # (B, N, p*p*C)


def _shape_first(fn: Callable, expected: Callable, cases: list[tuple], describe: str) -> list[str]:
    """A wrong shape is named with the shape that was expected (the outputs here are not shaped like an input)."""
    for args in cases:
        got, want = fn(*args), expected(*args)
        if isinstance(got, Tensor) and got.shape != want.shape:
            return [f"the result should have shape {describe}, here {tuple(want.shape)}; got {tuple(got.shape)}"]
    return []


def _diagnose_patchify(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(91)
    cases = [(randn(g, 2, 2, 8, 12), 4), (randn(g, 3, 2, 6, 6), 2), (randn(g, 1, 3, 9, 6), 3)]

    def tiles(x: Tensor, p: int) -> Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, c, h // p, p, w // p, p)

    shape = _shape_first(fn, patchify, cases, "(B, N, p*p*C) with N = (H/p)(W/p)")
    return shape or compare(fn, patchify, cases, {
        "the patches are in column-major order: token i*(W/p) + j should be the patch in row i, column j":
            lambda x, p: tiles(x, p).permute(0, 4, 2, 3, 5, 1).reshape(x.shape[0], -1, p * p * x.shape[1]),
        "within a token the channel should vary fastest, (row, column, channel) order, not channel first":
            lambda x, p: tiles(x, p).permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], -1, p * p * x.shape[1]),
        "the pixels of a patch are read column by column: read each patch row by row":
            lambda x, p: tiles(x, p).permute(0, 2, 4, 5, 3, 1).reshape(x.shape[0], -1, p * p * x.shape[1]),
        "each token gathers pixels p apart across the whole image, not a p x p block of neighbours: split each "
        "axis as (blocks, p), not (p, blocks)":
            lambda x, p: x.reshape(x.shape[0], x.shape[1], p, x.shape[2] // p, p, x.shape[3] // p)
            .permute(0, 3, 5, 2, 4, 1).reshape(x.shape[0], -1, p * p * x.shape[1]),
    })


def multihead_attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    b, n, width = q.shape
    d = width // heads  # each head's width

    def split(a: Tensor) -> Tensor:  # (B, L, D) -> (B, heads, L, d): head h owns columns h*d ... (h+1)*d - 1
        return a.reshape(b, a.shape[1], heads, d).transpose(1, 2)

    qh, kh, vh = split(q), split(k), split(v)
    weights = torch.softmax(qh @ kh.transpose(-2, -1) / d**0.5, dim=-1)  # (B, heads, N, M), rows sum to 1
    return (weights @ vh).transpose(1, 2).reshape(b, n, width)  # heads side by side again: (B, N, D)


def _heads(q: Tensor, k: Tensor, v: Tensor, heads: int, scale: float, interleaved: bool = False,
           axis: int = -1) -> Tensor:
    """Multi-head attention written independently, with the knobs the slips below turn."""
    b, n, width = q.shape
    d = width // heads
    if interleaved:
        split = lambda a: a.reshape(b, a.shape[1], d, heads).permute(0, 3, 1, 2)  # noqa: E731
        join = lambda o: o.permute(0, 2, 3, 1).reshape(b, n, width)  # noqa: E731
    else:
        split = lambda a: a.reshape(b, a.shape[1], heads, d).transpose(1, 2)  # noqa: E731
        join = lambda o: o.transpose(1, 2).reshape(b, n, width)  # noqa: E731
    weights = torch.softmax(split(q) @ split(k).transpose(-2, -1) / scale, dim=axis)
    return join(weights @ split(v))


def _diagnose_multihead_attention(fn: Callable) -> list[str]:
    g = torch.Generator().manual_seed(92)
    cases = [(2 * randn(g, 2, 5, 12), 2 * randn(g, 2, 6, 12), randn(g, 2, 6, 12), heads) for heads in (3, 4, 2)]
    return compare(fn, multihead_attention, cases, {
        "scaled by the square root of the full width D: each head's scores are dot products of D/heads numbers, "
        "so their variance is D/heads": lambda q, k, v, h: _heads(q, k, v, h, q.shape[-1] ** 0.5),
        "the scores are not scaled: divide them by the square root of the head's width":
            lambda q, k, v, h: _heads(q, k, v, h, 1.0),
        "divided by the head's width itself: the dot product's variance is the width, its standard deviation "
        "the square root of it": lambda q, k, v, h: _heads(q, k, v, h, q.shape[-1] / h),
        "the heads take interleaved columns: head h owns the block of D/heads consecutive columns starting at "
        "h*D/heads": lambda q, k, v, h: _heads(q, k, v, h, (q.shape[-1] / h) ** 0.5, interleaved=True),
        "the softmax runs over the queries: each query's weights over the keys (the last axis) should sum to 1":
            lambda q, k, v, h: _heads(q, k, v, h, (q.shape[-1] / h) ** 0.5, axis=-2),
        "one head over the whole width: split the width into heads first": lambda q, k, v, h: _heads(
            q, k, v, 1, q.shape[-1] ** 0.5),
    })


def sincos_1d(pos: Tensor, dim: int) -> Tensor:
    half = dim // 2
    omega = 10_000.0 ** (-torch.arange(half, dtype=torch.float64) / half)  # (d/2,) from 1 down to ~1/10,000
    angles = pos.double()[:, None] * omega[None]  # (N, d/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (N, d)


def _diagnose_sincos_1d(fn: Callable) -> list[str]:
    cases = [(torch.arange(7, dtype=torch.float64), 8), (torch.tensor([0.0, 1.5, 3.0, 6.0]), 16),
             (torch.arange(5, dtype=torch.float64) * 2.5, 6)]

    def features(pos: Tensor, dim: int, omega_exp: Callable[[Tensor, int], Tensor], order: str = "cos_sin") -> Tensor:
        half = dim // 2
        angles = pos.double()[:, None] * (10_000.0 ** omega_exp(torch.arange(half, dtype=torch.float64), half))
        c, s = torch.cos(angles), torch.sin(angles)
        if order == "interleaved":
            return torch.stack([c, s], dim=-1).reshape(len(pos), dim)
        return torch.cat([s, c] if order == "sin_cos" else [c, s], dim=-1)

    shape = _shape_first(fn, sincos_1d, cases, "(N, dim)")
    return shape or compare(fn, sincos_1d, cases, {
        "the sines come first: the book's convention is [cos(p w_i), sin(p w_i)]":
            lambda p, d: features(p, d, lambda i, h: -i / h, "sin_cos"),
        "the cosines and sines are interleaved: put all d/2 cosines first, then the d/2 sines":
            lambda p, d: features(p, d, lambda i, h: -i / h, "interleaved"),
        "the frequencies span only half the range: w_i = 10000^(-i/(d/2)), the exponent divides by d/2, not d":
            lambda p, d: features(p, d, lambda i, h: -i / (2 * h)),
        "the frequencies grow instead of shrink: w_i = 10000 to the power minus i/(d/2)":
            lambda p, d: features(p, d, lambda i, h: i / h),
    })


EXERCISES = [
    Exercise("patchify", 9, "the tokens (B, N, p*p*C) of images x (B, C, H, W) cut into p x p patches, patches in "
             "row-major order and each patch's pixels in (row, column, channel) order", patchify, _diagnose_patchify, (
                 "Reshape x to (B, C, H/p, p, W/p, p): which of those axes name the patch, which a pixel in it?",
                 "Permute to (B, H/p, W/p, p, p, C) and reshape: the first two axes become the token index, the "
                 "last three the token's p*p*C values.",
             )),
    Exercise("multihead_attention", 9, "multi-head scaled dot-product attention of queries q (B, N, D) and keys "
             "and values k, v (B, M, D) with `heads` heads of width D/heads -> (B, N, D), no projections",
             multihead_attention, _diagnose_multihead_attention, (
                 "Give each head its own D/heads consecutive columns of q, k and v, run one head of attention in "
                 "each, and put the heads' outputs side by side again.",
                 "Reshape (B, L, D) to (B, L, heads, D/heads) and move the head axis forward; the scores of a head "
                 "are dot products of D/heads numbers, and that is the width whose square root scales them.",
             )),
    Exercise("sincos_1d", 9, "the sin-cos features (N, dim) of positions pos (N,): [cos(p w_i), sin(p w_i)] with "
             "w_i = 10000^(-i/(dim/2)), i < dim/2 (dim even)", sincos_1d, _diagnose_sincos_1d, (
                 "Build the dim/2 frequencies first, then the (N, dim/2) angles p * w_i by broadcasting.",
                 "Join the two (N, dim/2) halves along the last axis, cosines before sines; the exponent of "
                 "10000 runs from 0 down to almost -1 in steps of 1/(dim/2).",
             )),
]
