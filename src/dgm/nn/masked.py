"""Causal convolutions for autoregressive pixel models (PixelCNN family, seed 001).

A masked convolution's output at pixel (i, j) sees only inputs before (i, j) in raster
order; at (i, j) itself, channel groups follow the colour order R -> G -> B: with mask A
(first layer) output group g sees input groups < g, with mask B (later layers) <= g.
Feature k of a layer belongs to colour group k mod C, so every width must be a
multiple of C.

Every layer also runs one pixel (or one row) at a time against a cache of its padded
input, for incremental sampling: `start` makes the cache, `step` writes the input at
(i, j) and returns the output there, `row` does the same for a whole row, and `at`
reads a first layer's input, the image being sampled, straight from the image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(out_channels: int, in_channels: int, kernel: tuple[int, int], centre: tuple[int, int],
                mask: str | None, data_channels: int) -> torch.Tensor:
    """[out, in, kh, kw] of 0/1: ones before the centre in raster order, the channel rule at the centre,
    zeros after; all ones when mask is None."""
    kh, kw = kernel
    m = torch.zeros(out_channels, in_channels, kh, kw)
    if mask is None:
        return m + 1
    ci, cj = centre
    m[:, :, :ci] = 1
    m[:, :, ci, :cj] = 1
    g_out = torch.arange(out_channels)[:, None] % data_channels
    g_in = torch.arange(in_channels)[None, :] % data_channels
    m[:, :, ci, cj] = (g_in < g_out if mask == "A" else g_in <= g_out).float()
    return m


class MaskedConv2d(nn.Conv2d):
    """A convolution padded so that kernel position `centre` lies on the output pixel, its weights
    multiplied by `causal_mask`. The default centre is the middle of the last kernel row: a k x k
    masked convolution with its all-zero lower rows cropped away, kernel (k//2 + 1, k)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int], mask: str | None = "B",
                 data_channels: int = 1, centre: tuple[int, int] | None = None):
        super().__init__(in_channels, out_channels, kernel)
        kh, kw = kernel
        ci, cj = centre if centre is not None else (kh - 1, kw // 2)
        self.pad = (cj, kw - 1 - cj, ci, kh - 1 - ci)  # left, right, top, bottom
        self.register_buffer("mask", causal_mask(out_channels, in_channels, kernel, (ci, cj), mask, data_channels),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias)

    # --- incremental evaluation -------------------------------------------------------------
    def start(self, batch: int, height: int, width: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(zero padded input cache [B, in, H + pads, W + pads], or None for 1x1; the masked weight)."""
        left, right, top, bottom = self.pad
        weight = self.weight * self.mask
        if self.kernel_size == (1, 1):
            return None, weight[:, :, 0, 0]
        cache = weight.new_zeros(batch, self.in_channels, height + top + bottom, width + left + right)
        return cache, weight

    def step(self, state, value: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Write the input [B, in] at (i, j); the output there [B, out]."""
        cache, weight = state
        if cache is None:
            return F.linear(value, weight, self.bias)
        left, _, top, _ = self.pad
        cache[:, :, i + top, j + left] = value
        kh, kw = self.kernel_size
        return F.conv2d(cache[:, :, i : i + kh, j : j + kw], weight, self.bias).flatten(1)

    def at(self, state, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """The output [B, out] at (i, j) read straight from the whole input x [B, in, H, W], no cache: for a
        first layer, whose input (the image being sampled) changes at (i, j) after this call."""
        _, weight = state
        kh, kw = self.kernel_size
        return F.conv2d(F.pad(x, self.pad)[:, :, i : i + kh, j : j + kw], weight, self.bias).flatten(1)

    def row(self, state, values: torch.Tensor, i: int) -> torch.Tensor:
        """Write the inputs [B, in, W] of row i; the outputs of row i [B, out, W]."""
        cache, weight = state
        left, right, top, _ = self.pad
        cache[:, :, i + top, left : cache.shape[-1] - right] = values
        return F.conv2d(cache[:, :, i : i + self.kernel_size[0]], weight, self.bias)[:, :, 0]


def start_all(layers: nn.Module, batch: int, height: int, width: int) -> dict[MaskedConv2d, tuple]:
    """Caches for every masked convolution in `layers`."""
    return {m: m.start(batch, height, width) for m in layers.modules() if isinstance(m, MaskedConv2d)}


def step_sequential(layers: nn.Sequential, states: dict, value: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """A Sequential of masked convolutions and pointwise activations, at one pixel: [B, in] -> [B, out]."""
    for layer in layers:
        value = layer.step(states[layer], value, i, j) if isinstance(layer, MaskedConv2d) else layer(value)
    return value


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (zeros in row 0): row i then holds what row i - 1 saw."""
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every column one right (zeros in column 0)."""
    return F.pad(x, (1, 0))[..., :-1]


def gate(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The gated activation tanh(a) * sigmoid(b) of [a, b] split along `dim` (Gated PixelCNN)."""
    a, b = x.chunk(2, dim=dim)
    return torch.tanh(a) * torch.sigmoid(b)
