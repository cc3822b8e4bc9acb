"""`sprites`: procedural RGB images of one object on a background, with known generating factors.

Registered names (all embedded, generated in code, no download):

- `sprites`: uint8 RGB [3, 32, 32]; `sprites64`: the same scenes at [3, 64, 64].
- `sprites-grey` / `sprites64-grey`: the same data for colorization: `x` is the grey image
  [1, H, W] and `Split.targets` the colour image [3, H, W].

Splits: 50,000 / 5,000 / 5,000 images, the factors drawn once from seed 0 (every machine
sees the same images). Class label `y`: the shape code (5 classes), so the existing
conditional models train on it. Rendering is vectorised over the batch (a hard inside test
at every pixel centre, no anti-aliasing); 60,000 images at 32x32 take about 2 s. A loaded set
is cached per process (`functools.lru_cache`, two entries): datasets loaded twice share their
tensors, so treat them as read-only.

Factors (columns of `Split.factors`, float32 [N, 7]; discrete ones hold their integer code):

| column | name | values |
|---|---|---|
| 0 | shape | 0 square, 1 circle, 2 triangle, 3 heart, 4 star |
| 1 | scale | [0.14, 0.25]: the radius of the disc around (x, y) that holds the object, as a fraction of the canvas width |
| 2 | rotation | [0, 2 pi]: counter-clockwise angle in radians (a circle looks the same at every angle, a square every pi/2) |
| 3 | x | [0.25, 0.75]: centroid of the shape, fraction of the width from the left edge |
| 4 | y | [0.25, 0.75]: centroid of the shape, fraction of the height from the top edge |
| 5 | colour | 0 red, 1 orange, 2 yellow, 3 green, 4 cyan, 5 blue, 6 purple, 7 magenta |
| 6 | background | 0 black, 1 white (plain), 2 stripes, 3 checks, 4 dots (grey textures) |

`Dataset.factors` describes the columns (`dgm.data.Factor`: name, value names or range).
The object colours are isoluminant: all eight have luma exactly 128 under the grey formula
below, so a grey image says nothing about the object's colour (the point of seed 002's
diverse colorization); yellow and orange are darker than usual for it. Backgrounds are grey
(luma 16, 240, or textures of 40 and 200), so the object stands out in the grey image too.
Every shape lies inside the disc of radius `scale` around (x, y), and x, y >= 0.25 >= scale,
so the object is always wholly on the canvas.

Per-image extras on each `Split` (None for datasets without factors):

- `masks`: bool [N, H, W], the object's pixels: exactly the pixels with the object's colour;
  every other pixel has the background's colour.
- `boxes`: int64 [N, 4] (x0, y0, x1, y1) in pixel edges, half-open and tight on the mask:
  the mask's columns are x0 .. x1-1 and its rows y0 .. y1-1.
- `captions`: "a {size} {colour} {shape} {where} on {background}", e.g.
  "a small red heart at the top left on stripes". size: small / medium / big (thirds of the
  scale range); where: thirds of the x and y ranges, "at the top left", "at the top",
  "at the left", "in the centre", ... (row word before column word, middle/centre dropped).
- `targets` (grey views only): the colour image; `x` = luma = (299 R + 587 G + 114 B + 500) // 1000.

`sample_factors`, `render`, `boxes_of`, `captions_of` and `luminance` are public, and `Dataset.renderer`
draws fresh scenes of the dataset's own kind, so a model can draw its own batches (with one factor
varying, as DC-IGN trains). `Dataset.attributes(split)` gives the attribute vectors of the factors
(`dgm.data.attribute_vectors`: one-hot shape, colour and background, scale, rotation, x and y in [0, 1]).
"""
from __future__ import annotations

import functools
import math

import torch

from dgm.data import Dataset, DatasetSpec, Factor, Renderer, Split, register_dataset
from dgm.errors import DgmError

SIZES = (50_000, 5_000, 5_000)
SHAPES = ("square", "circle", "triangle", "heart", "star")
COLOURS = {  # isoluminant: luma 128 each (see `luminance`)
    "red": (255, 74, 74), "orange": (216, 108, 0), "yellow": (144, 144, 0), "green": (0, 218, 0),
    "cyan": (0, 183, 183), "blue": (112, 112, 255), "purple": (169, 83, 255), "magenta": (255, 39, 255),
}
BACKGROUNDS = ("black", "white", "stripes", "checks", "dots")
PLAIN = {"black": 16, "white": 240}
DARK, LIGHT = 40, 200  # the two greys of the textures
SCALE = (0.14, 0.25)
POSITION = (0.25, 0.75)
FACTORS = (
    Factor("shape", SHAPES),
    Factor("scale", low=SCALE[0], high=SCALE[1]),
    Factor("rotation", low=0.0, high=2 * math.pi),
    Factor("x", low=POSITION[0], high=POSITION[1]),
    Factor("y", low=POSITION[0], high=POSITION[1]),
    Factor("colour", tuple(COLOURS)),
    Factor("background", BACKGROUNDS),
)
SHAPE, SCALE_, ROTATION, X, Y, COLOUR, BACKGROUND = range(7)  # column indices
SIZE_WORDS = ("small", "medium", "big")
ROW_WORDS = ("top", "middle", "bottom")
COL_WORDS = ("left", "centre", "right")


def sample_factors(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n independent draws of the factors, uniform over each range / set: float32 [n, 7]."""
    f = torch.rand(n, len(FACTORS), generator=generator, dtype=torch.float64)
    for i, spec in enumerate(FACTORS):
        if spec.discrete:
            f[:, i] = torch.floor(f[:, i] * len(spec.values)).clamp(max=len(spec.values) - 1)
        else:
            f[:, i] = spec.low + (spec.high - spec.low) * f[:, i]
    return f.float()


def _inside(shape: int, qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
    """Inside test in the object's frame (y up), every shape within the unit disc, centroid at 0."""
    if shape == 0:  # square, half-side 0.7
        return torch.maximum(qx.abs(), qy.abs()) <= 0.7
    if shape == 1:  # circle, radius 0.85
        return qx * qx + qy * qy <= 0.85 ** 2
    if shape == 2:  # equilateral triangle, circumradius 1, a vertex up: three half-planes at distance 1/2
        inside = qy >= -0.5
        for a in (math.pi / 6, 5 * math.pi / 6):
            inside &= qx * math.cos(a) + qy * math.sin(a) <= 0.5
        return inside
    if shape == 3:  # (X^2 + Y^2 - 1)^3 <= X^2 Y^3, moved so its area centroid is 0 and scaled into the disc
        hx, hy = 1.3 * qx, 1.3 * qy + 0.2935
        r = hx * hx + hy * hy - 1
        return r * r * r <= hx * hx * hy * hy * hy
    # five-pointed star, outer radius 1, inner 0.45: fold the angle onto one half-arm
    a = 2 * math.pi / 5
    psi = torch.remainder(torch.atan2(qy, qx) - math.pi / 2, a)
    psi = torch.minimum(psi, a - psi)
    rho = torch.sqrt(qx * qx + qy * qy)
    px, py = rho * torch.cos(psi), rho * torch.sin(psi)
    ex, ey = 0.45 * math.cos(a / 2) - 1, 0.45 * math.sin(a / 2)  # edge from the tip (1, 0) to the inner vertex
    return ex * py - ey * (px - 1) >= 0  # on the centre's side of the edge


@functools.lru_cache(maxsize=4)
def _backgrounds(size: int) -> torch.Tensor:
    """The five background images, uint8 [5, 3, size, size]; textures scale with the canvas."""
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    v, u = torch.meshgrid(c, c, indexing="ij")
    cell = lambda t, n: torch.floor(t * n).long()  # noqa: E731
    stripes = cell(v, 8) % 2 == 0
    checks = (cell(u, 8) + cell(v, 8)) % 2 == 1
    du, dv = u - (cell(u, 4) + 0.5) / 4, v - (cell(v, 4) + 0.5) / 4
    dots = du * du + dv * dv <= 0.05 ** 2
    grey = [torch.full((size, size), PLAIN["black"]), torch.full((size, size), PLAIN["white"])]
    grey += [torch.where(t, LIGHT, DARK) for t in (stripes, checks, dots)]
    return torch.stack(grey).to(torch.uint8)[:, None].expand(-1, 3, -1, -1).contiguous()


def render(factors: torch.Tensor, size: int = 32, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the scenes: factors [N, 7] -> (images uint8 [N, 3, size, size], masks bool [N, size, size]).

    The geometry is in float64 at pixel centres ((j + 0.5) / size, (i + 0.5) / size), so the same
    factors give the same scene at every size, and the same bytes on every run.
    """
    n = factors.shape[0]
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    masks = torch.empty(n, size, size, dtype=torch.bool)
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.uint8)
    backgrounds = _backgrounds(size)
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    for s in range(0, n, chunk):
        f = factors[s:s + chunk].to(torch.float64)
        shape = f[:, SHAPE].long()
        dx = c[None, None, :] - f[:, X, None, None]
        dy = f[:, Y, None, None] - c[None, :, None]  # y up
        cos, sin = torch.cos(f[:, ROTATION])[:, None, None], torch.sin(f[:, ROTATION])[:, None, None]
        scale = f[:, SCALE_, None, None]
        qx, qy = (cos * dx + sin * dy) / scale, (cos * dy - sin * dx) / scale  # rotate by -angle
        mask = torch.zeros(f.shape[0], size, size, dtype=torch.bool)
        for k in range(len(SHAPES)):
            idx = (shape == k).nonzero().squeeze(1)
            if len(idx):
                mask[idx] = _inside(k, qx[idx], qy[idx])
        colour = palette[f[:, COLOUR].long()][:, :, None, None]
        images[s:s + chunk] = torch.where(mask[:, None], colour, backgrounds[f[:, BACKGROUND].long()])
        masks[s:s + chunk] = mask
    return images, masks


def boxes_of(masks: torch.Tensor) -> torch.Tensor:
    """Tight half-open boxes (x0, y0, x1, y1) around non-empty masks [N, H, W]: int64 [N, 4]."""
    def first_last(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = hit.to(torch.uint8).argmax(1)
        last = hit.shape[1] - hit.flip(1).to(torch.uint8).argmax(1)
        return first, last
    x0, x1 = first_last(masks.any(1))
    y0, y1 = first_last(masks.any(2))
    return torch.stack([x0, y0, x1, y1], 1)


def _third(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return torch.floor((values.double() - low) / (high - low) * 3).clamp(0, 2).long()


def captions_of(factors: torch.Tensor) -> list[str]:
    """One sentence per row of factors: "a {size} {colour} {shape} {where} on {background}"."""
    size = _third(factors[:, SCALE_], *SCALE).tolist()
    row = _third(factors[:, Y], *POSITION).tolist()
    col = _third(factors[:, X], *POSITION).tolist()
    codes = factors[:, [SHAPE, COLOUR, BACKGROUND]].long().tolist()
    names = tuple(COLOURS)
    out = []
    for s, r, c, (shape, colour, bg) in zip(size, row, col, codes):
        where = [w for w, centre in ((ROW_WORDS[r], r == 1), (COL_WORDS[c], c == 1)) if not centre]
        place = f"at the {' '.join(where)}" if where else "in the centre"
        out.append(f"a {SIZE_WORDS[s]} {names[colour]} {SHAPES[shape]} {place} on {BACKGROUNDS[bg]}")
    return out


def luminance(images: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of uint8 RGB [N, 3, H, W], in integers: (299 R + 587 G + 114 B + 500) // 1000, [N, 1, H, W]."""
    out = torch.empty(images.shape[0], 1, *images.shape[2:], dtype=torch.uint8)
    for s in range(0, images.shape[0], 8192):  # in chunks: int32 temporaries of the whole set would be large
        r, g, b = images[s:s + 8192].to(torch.int32).unbind(1)
        out[s:s + 8192, 0] = ((299 * r + 587 * g + 114 * b + 500) // 1000).to(torch.uint8)
    return out


@functools.lru_cache(maxsize=2)
def _generate(size: int, seed: int) -> dict:
    factors = sample_factors(sum(SIZES), torch.Generator().manual_seed(seed))
    images, masks = render(factors, size)
    return {"factors": factors, "images": images, "masks": masks, "boxes": boxes_of(masks),
            "captions": captions_of(factors)}


def load_sprites(size: int = 32, grey: bool = False, seed: int = 0, sizes: tuple[int, int, int] = SIZES) -> Dataset:
    """The sprites dataset (see the module docstring); `sizes` smaller than SIZES take a prefix of each split."""
    for n, n_full in zip(sizes, SIZES):
        if not 0 < n <= n_full:
            raise DgmError(f"sprites: a split of {n} images is outside 1 .. {n_full}")
    data = _generate(size, seed)
    starts = (0, SIZES[0], SIZES[0] + SIZES[1])
    splits = []
    for start, n in zip(starts, sizes):
        sl = slice(start, start + n)
        colour, factors = data["images"][sl], data["factors"][sl]
        splits.append(Split(luminance(colour) if grey else colour, factors[:, SHAPE].long(), factors=factors,
                            masks=data["masks"][sl], boxes=data["boxes"][sl], captions=data["captions"][sl],
                            targets=colour if grey else None))
    name = f"sprites{'' if size == 32 else size}{'-grey' if grey else ''}"
    draw = (lambda f: luminance(render(f, size)[0])) if grey else (lambda f: render(f, size)[0])
    return Dataset(name, *splits, levels=256, num_classes=len(SHAPES), class_names=list(SHAPES), factors=FACTORS,
                   renderer=Renderer(sample_factors, draw))


_FACTOR_TEXT = "factors shape(5), scale, rotation, x, y, colour(8), background(5)"
for _size in (32, 64):
    for _grey in (False, True):
        _name = f"sprites{'' if _size == 32 else _size}{'-grey' if _grey else ''}"
        _what = ("grey input, colour image as `targets` (colorization); " if _grey
                 else "one object on a background, with masks, boxes, captions; ")
        register_dataset(DatasetSpec(
            name=_name, loader=lambda data_dir, _s=_size, _g=_grey: load_sprites(_s, _g),
            shape=(1 if _grey else 3, _size, _size), num_classes=len(SHAPES), levels=256,
            description=f"procedural sprites {_size}x{_size}: {_what}{_FACTOR_TEXT} (embedded, no download)"))
