"""Diversity and accuracy of colorizations (seed 002's diverse colorization) on data with colour targets and
object masks (`sprites-grey`).

For every grey image of the split a model with `colorize(grey, k, generator=...)` gives k colorizations. The
hue of each is read off its object region (the split's mask): the mean RGB over the mask is turned into its
YCbCr chroma and its hue angle atan2(Cr, Cb) matched to the nearest of the palette's hue angles (the eight
sprites colours are isoluminant, so hue is what tells them apart; an angle also ignores how saturated the
colour is, which `object_saturation` reports on its own). Scores, means over images:

- `distinct_hues`: distinct palette hues among the k (1 .. min(k, 8)); the truth is uniform over 8, so a
  model that has learnt the ambiguity reaches min(k, 8);
- `hue_coverage`: the fraction of the 8 hues reached by at least one of the k;
- `true_hue_in_k`: the fraction of images whose true hue is among the k;
- `best_of_k_error`: the smallest of the k mean per-pixel squared errors (RGB in [0, 1]) against the truth;
- `mean_error`: the mean of the k errors;
- `object_saturation`: the chroma radius of the object's mean colour over the palette's mean chroma radius
  (1: as vivid as the data; the L2 regressor's average of all hues is near 0, greyish).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dgm.errors import DgmError


def palette_chroma() -> torch.Tensor:
    """The sprites palette's chroma (Cb, Cr) in [-1, 1]: [8, 2], in the order of dgm.data.sprites.COLOURS."""
    from dgm.data.sprites import COLOURS
    from dgm.models.colorization import rgb_to_ycbcr

    rgb = torch.tensor(list(COLOURS.values()), dtype=torch.float64) / 255
    return rgb_to_ycbcr(rgb[:, :, None, None])[1][:, :, 0, 0]


def object_hues(images: torch.Tensor, masks: torch.Tensor, palette: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the nearest palette hue [N], chroma radius [N]) of the mean colour over each mask, for images
    [N, 3, H, W] in [0, 1], masks [N, H, W] (non-empty) and palette chroma [P, 2]."""
    from dgm.models.colorization import rgb_to_ycbcr

    m = masks[:, None].to(images.dtype)
    mean_rgb = (images * m).sum((-2, -1)) / m.sum((-2, -1)).clamp(min=1)  # [N, 3]
    chroma = rgb_to_ycbcr(mean_rgb.double()[:, :, None, None])[1][:, :, 0, 0]  # [N, 2]
    angle = torch.atan2(chroma[:, 1], chroma[:, 0])
    palette_angle = torch.atan2(palette[:, 1], palette[:, 0]).to(angle)
    gap = torch.remainder(angle[:, None] - palette_angle[None] + math.pi, 2 * math.pi) - math.pi  # circular
    return gap.abs().argmin(1), chroma.norm(dim=1)


@torch.no_grad()
def colorization_metrics(model: nn.Module, dataset, split: str = "test", k: int = 8, n_examples: int | None = 500,
                         seed: int = 0, batch_size: int = 64) -> dict[str, float | int]:
    """The scores of the module docstring for k colorizations of n_examples evenly strided images of `split`;
    {} for a model without `colorize` or data without colour targets and object masks."""
    from dgm.evaluation.likelihood import strided_subset

    colorize = getattr(model, "colorize", None)
    part = dataset.split(split)
    if not callable(colorize) or part.targets is None or part.masks is None:
        return {}
    for name, value in (("k", k), ("n_examples", n_examples)):
        if value is not None and value < 1:
            raise DgmError(f"{name} must be at least 1, got {value}")
    params = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    device = params.device if params is not None else torch.device("cpu")
    if isinstance(model, nn.Module):
        model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    palette = palette_chroma()
    palette_radius = palette.norm(dim=1).mean().item()
    idx = strided_subset(len(part), n_examples)
    idx = idx[part.masks[idx].flatten(1).any(1)]  # an image without an object has no object hue
    sums = dict.fromkeys(("distinct_hues", "hue_coverage", "true_hue_in_k", "best_of_k_error", "mean_error",
                          "object_saturation"), 0.0)
    for start in range(0, len(idx), batch_size):
        b = idx[start:start + batch_size]
        grey = dataset.to_float(part.x[b].to(device))
        out = colorize(grey, k, generator=generator).float().cpu()
        n, h, w = len(b), *grey.shape[-2:]
        if tuple(out.shape) != (n, k, 3, h, w):
            raise DgmError(f"colorize gave shape {tuple(out.shape)}, expected {(n, k, 3, h, w)}")
        truth = part.targets[b].float() / 255
        masks = part.masks[b]
        hues, radius = object_hues(out.reshape(n * k, 3, h, w), masks.repeat_interleave(k, 0), palette)
        hues, radius = hues.reshape(n, k), radius.reshape(n, k)
        true_hue, _ = object_hues(truth, masks, palette)
        reached = torch.zeros(n, len(palette), dtype=torch.bool).scatter_(1, hues, True)
        errors = (out - truth[:, None]).pow(2).flatten(2).mean(2)  # [n, k]
        sums["distinct_hues"] += reached.sum(1).double().sum().item()
        sums["hue_coverage"] += (reached.double().mean(1)).sum().item()
        sums["true_hue_in_k"] += reached.gather(1, true_hue[:, None]).double().sum().item()
        sums["best_of_k_error"] += errors.amin(1).double().sum().item()
        sums["mean_error"] += errors.mean(1).double().sum().item()
        sums["object_saturation"] += (radius.mean(1) / palette_radius).sum().item()
    if not len(idx):
        return {}
    return {"colorization_k": k, "colorization_examples": len(idx), **{key: v / len(idx) for key, v in sums.items()}}
