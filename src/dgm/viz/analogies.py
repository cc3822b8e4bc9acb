"""Analogies (Kingma, Rezende, Mohamed & Welling 2014, fig. 1; seed 004): the style of an image, its label swapped.

For a class-conditional model with an encoder (the cvae, M2) each row takes one test image x, its code
z = encode(x) (given x's own label y where the model reads labels), and decodes that z with every label
0 .. K-1: z keeps what the label does not say (slant, stroke width), the label sets the content.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dgm.errors import DgmError
from dgm.models import given
from dgm.viz import require, save_grid


def has_analogies(model: nn.Module) -> bool:
    """Whether the model can draw `analogies`: conditional, with encode and decode, and classes."""
    return (getattr(model, "conditional", False) and callable(getattr(model, "encode", None))
            and callable(getattr(model, "decode", None)) and bool(getattr(model.cfg, "num_classes", None)))


@torch.no_grad()
def analogies(model: nn.Module, x: torch.Tensor, path: Path, y: torch.Tensor | None = None) -> Path:
    """One row per image of x [n, C, H, W] (floats in [0, 1]): the image, then decode(z, k) for k = 0 .. K-1 with
    z = encode(x) given the images' labels y [n] (a model that can do without them, M2, predicts them when y is
    None)."""
    require(model, "encode", "decode")
    if not has_analogies(model):
        raise DgmError(f"{type(model).__name__} is not class-conditional, so its decoder takes no label to swap; "
                       "analogies need a model such as cvae or m2")
    if x.dim() != 4:
        raise DgmError("analogies are drawn for images only")
    model.eval()
    device = next(model.parameters()).device
    x = x.to(device)
    num_classes = model.cfg.num_classes
    z = model.encode(x, **({} if y is None else given(model, y.to(device))))  # [n, D]
    labels = torch.arange(num_classes, device=device).repeat(len(x))  # row i: 0 .. K-1
    decoded = model.decode(z.repeat_interleave(num_classes, 0), **given(model, labels))
    decoded = decoded.reshape(len(x), num_classes, *decoded.shape[1:])
    grid = torch.cat([x[:, None].to(decoded.dtype), decoded], dim=1).flatten(0, 1)
    rows = [f"test image {i + 1}" + ("" if y is None else f" (y={int(y[i])})") for i in range(len(x))]
    return save_grid(grid, path, nrow=num_classes + 1, row_labels=rows,
                     col_labels=["image"] + [f"y={k}" for k in range(num_classes)],
                     title="analogies: each row decodes its image's code z with every label y")
