"""Reading a sprite's generating factors off its image: what a conditional model was asked for vs what it drew.

The shipped `FactorNet` (features.py; trained by `bench/train_feature_nets.py --only sprites` on the 50,000
training sprites, its test accuracies in the file's metadata) has one head per factor of `dgm.data.sprites`:

    shape (5), colour (8), background (5)                     classified
    size, row, column (3 each: the thirds the captions name)  classified
    x, y, scale                                               read out linearly, in the factors' units

with the thirds t(v) = min(2, floor(3 (v - low) / (high - low))) of scale (small / medium / big), y (top /
middle / bottom) and x (left / centre / right) over their ranges, as `dgm.data.sprites.captions_of` words them.
64x64 images are read as 2x2 pixel means (sprites64).

The object's box needs no network: the backgrounds are grey (R = G = B) and every object colour is saturated,
chroma = max(R, G, B) - min(R, G, B) >= 143/255, so the object's pixels are those with chroma above half the
weakest object colour's, and `measured_boxes` is the tight half-open box around them (`boxes_of`'s convention:
columns x0 .. x1-1, rows y0 .. y1-1). Boxes are compared by intersection over union,
IoU(A, B) = |A n B| / |A u B| (0 when the union is empty).
"""
from __future__ import annotations

import torch
from torch import nn

from dgm.data import sprites

CLASSES = {"shape": len(sprites.SHAPES), "colour": len(sprites.COLOURS), "background": len(sprites.BACKGROUNDS),
           "size": 3, "row": 3, "column": 3}
REGRESSION = {"x": sprites.POSITION, "y": sprites.POSITION, "scale": sprites.SCALE}
CODES = {"shape": sprites.SHAPE, "colour": sprites.COLOUR, "background": sprites.BACKGROUND}  # factor columns
THIRDS = {"size": (sprites.SCALE_, sprites.SCALE), "row": (sprites.Y, sprites.POSITION),
          "column": (sprites.X, sprites.POSITION)}
VALUES = {"x": sprites.X, "y": sprites.Y, "scale": sprites.SCALE_}
ATTRIBUTES = ("shape", "colour", "size", "row", "column", "background")  # the words of a caption
# half the chroma of the least saturated object colour: greys have 0, every object colour at least twice this
CHROMA_THRESHOLD = 0.5 * min(max(c) - min(c) for c in sprites.COLOURS.values()) / 255


def third(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """The third of [low, high] each value lies in, int64 (0, 1, 2): the captions' size / row / column word."""
    return torch.floor((values.double() - low) / (high - low) * 3).clamp(0, 2).long()


def factor_targets(factors: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each head of the factor net should say for sprites' factors [N, 7]: class codes (int64 [N]) for the
    classified factors and thirds, values (float32 [N], factor units) for x, y and scale."""
    out = {k: factors[:, c].long() for k, c in CODES.items()}
    out.update({k: third(factors[:, c], *rng) for k, (c, rng) in THIRDS.items()})
    out.update({k: factors[:, c].float() for k, c in VALUES.items()})
    return {k: out[k] for k in (*CLASSES, *REGRESSION)}


def factor_net() -> nn.Module:
    """The shipped sprites factor net (`dgm.evaluation.features.FactorNet`), in eval mode."""
    from dgm.evaluation.features import load_feature_net

    return load_feature_net("sprites")[0]


def _float_images(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


@torch.no_grad()
def read_factors(images: torch.Tensor, net: nn.Module | None = None, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """The factors read off RGB sprites [N, 3, H, W] in [0, 1] (uint8 0..255 also taken), H = W = 32 or 64.

    Returns, on the CPU: shape, colour, background, size, row, column (int64 [N], the heads' argmax), x, y, scale
    (float32 [N], factor units) and box (int64 [N, 4], `measured_boxes`)."""
    net = factor_net() if net is None else net
    device = next(net.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(images), batch_size):
        out = net.outputs(_float_images(images[i : i + batch_size]).to(device))
        for k, v in out.items():
            parts.setdefault(k, []).append((v.argmax(1) if k in CLASSES else v.float()).cpu())
    result = {k: torch.cat(v) for k, v in parts.items()}
    result["box"] = measured_boxes(images)
    return result


def object_masks(images: torch.Tensor, threshold: float = CHROMA_THRESHOLD) -> torch.Tensor:
    """Pixels of a saturated colour on a grey background: chroma max(R,G,B) - min(R,G,B) > threshold, bool [N, H, W]."""
    x = _float_images(images)
    return (x.amax(1) - x.amin(1)) > threshold


def measured_boxes(images: torch.Tensor, threshold: float = CHROMA_THRESHOLD) -> torch.Tensor:
    """The tight half-open box (x0, y0, x1, y1) around each image's object pixels (`object_masks`), int64 [N, 4]
    in pixel edges like `dgm.data.sprites.boxes_of`; (0, 0, 0, 0) where no pixel is saturated."""
    masks = object_masks(images, threshold)
    boxes = sprites.boxes_of(masks)
    return torch.where(masks.flatten(1).any(1)[:, None], boxes, torch.zeros_like(boxes))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of paired boxes a, b [N, 4] (x0, y0, x1, y1), float64 [N]; 0 where the union has no area."""
    a, b = a.double(), b.double()
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = w * h
    area = lambda box: (box[:, 2] - box[:, 0]).clamp(min=0) * (box[:, 3] - box[:, 1]).clamp(min=0)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def caption_accuracy(images: torch.Tensor, factors: torch.Tensor, net: nn.Module | None = None,
                     read: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """The fraction of images whose read-off caption word matches the true / requested factors [N, 7], per
    attribute (shape, colour, size, row, column, background), and "all": every one of the six words right.
    `read`: the images' `read_factors`, when already at hand (then the images are not read again)."""
    read = read_factors(images, net) if read is None else read
    want = factor_targets(factors)
    hits = {k: read[k] == want[k] for k in ATTRIBUTES}
    out = {k: v.double().mean().item() for k, v in hits.items()}
    out["all"] = torch.stack(list(hits.values())).all(0).double().mean().item()
    return out


def reads_factors(dataset) -> bool:
    """Whether the shipped factor net reads this dataset's images (RGB sprites at 32 or 64 pixels)."""
    from dgm.evaluation.features import SHIPPED

    return SHIPPED.get(dataset.name) == "sprites" and dataset.factors is not None


@torch.no_grad()
def conditioning_metrics(model: nn.Module, dataset, split: str = "test", n_examples: int | None = 1000,
                         seed: int = 0, batch_size: int = 250) -> dict[str, float | int]:
    """Does a conditional generator draw what its condition asks for? One sample per example of `split` (an
    evenly strided subset of n_examples), conditioned on that example's condition (its first batch field: a
    class label, an attribute vector, a caption, a caption and box), read by the shipped factor net against the
    example's true factors: `conditioning_<word>` the fraction whose caption word matches (shape, colour, size,
    row, column, background; `conditioning_all`: all six), and `conditioning_box_iou` the mean IoU of the
    object's measured box with the example's box. What the condition does not say is read at chance (a class
    label names only the shape). {} for a model that does not sample given a condition, or data the factor net
    cannot read."""
    from dgm.evaluation.likelihood import strided_subset
    from dgm.models import batch_fields

    conditioned = (getattr(model, "conditional", False) or getattr(model, "samples_by_label", False)
                   or callable(getattr(model, "condition_of", None)))
    if not (conditioned and callable(getattr(model, "sample", None)) and reads_factors(dataset)):
        return {}
    data = dataset.split(split)
    idx = strided_subset(len(data), n_examples or len(data))
    y = batch_fields(model, dataset, data)[0][idx]
    device = next(model.parameters()).device
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    images = torch.cat([model.sample(len(part), y=part.to(device), generator=g).float().cpu()
                        for part in y.split(batch_size)])
    read = read_factors(images)
    out: dict[str, float | int] = {f"conditioning_{k}": v
                                   for k, v in caption_accuracy(images, data.factors[idx], read=read).items()}
    out["conditioning_box_iou"] = box_iou(read["box"], data.boxes[idx]).mean().item()
    out["conditioning_examples"] = len(idx)
    return out
