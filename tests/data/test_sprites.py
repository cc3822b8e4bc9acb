"""The procedural sprites dataset: determinism, masks/boxes/colours, factors, captions, grey view, loading."""
from __future__ import annotations

import math
import re
import time

import pytest
import torch

from dgm.cli import main
from dgm.data import dataset_specs, load_dataset
from dgm.data import sprites as S

CAPTION = re.compile(r"^a (small|medium|big) (\w+) (\w+) (at the [a-z ]+|in the centre) on (\w+)$")


def scenes(n: int = 256, seed: int = 0, size: int = 32, **fixed):
    """n rendered scenes from `seed`, with any factor (by name) fixed to a value: (factors, images, masks)."""
    f = S.sample_factors(n, torch.Generator().manual_seed(seed))
    for name, value in fixed.items():
        f[:, [spec.name for spec in S.FACTORS].index(name)] = value
    images, masks = S.render(f, size)
    return f, images, masks


@pytest.fixture(scope="module")
def full():
    """The default dataset, generated once here (timed: 60,000 images must take seconds)."""
    S._generate.cache_clear()
    start = time.perf_counter()
    ds = load_dataset("sprites")
    seconds = time.perf_counter() - start
    print(f"sprites: 60,000 images generated in {seconds:.1f} s")
    assert seconds < 30
    return ds


def test_same_seed_same_bytes_other_seed_differs():
    f0, x0, m0 = scenes(seed=3)
    f1, x1, m1 = scenes(seed=3)
    assert torch.equal(f0, f1) and torch.equal(x0, x1) and torch.equal(m0, m1)
    assert not torch.equal(x0, scenes(seed=4)[1])


@pytest.mark.parametrize("size", [32, 64])
def test_masks_boxes_and_colours(size):
    f, x, m = scenes(512, size=size)
    assert x.shape == (512, 3, size, size) and x.dtype == torch.uint8 and m.dtype == torch.bool
    assert m.any(2).any(1).all(), "every mask is non-empty"
    boxes = S.boxes_of(m)
    for mask, (x0, y0, x1, y1) in zip(m, boxes.tolist()):
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        assert mask[y0:y1, x0:x1].sum() == mask.sum()  # nothing outside the box
        assert mask[y0].any() and mask[y1 - 1].any() and mask[:, x0].any() and mask[:, x1 - 1].any()  # tight
    palette = torch.tensor(list(S.COLOURS.values()), dtype=torch.uint8)
    colour = palette[f[:, S.COLOUR].long()][:, :, None, None].expand_as(x)
    background = S._backgrounds(size)[f[:, S.BACKGROUND].long()]
    inside = m[:, None].expand_as(x)
    assert torch.equal(x[inside], colour[inside]) and torch.equal(x[~inside], background[~inside])
    plain = f[:, S.BACKGROUND] <= 1
    levels = torch.tensor([S.PLAIN["black"], S.PLAIN["white"]], dtype=torch.uint8)[f[plain, S.BACKGROUND].long()]
    outside = ~inside[plain]
    assert torch.equal(x[plain][outside], levels[:, None, None, None].expand_as(x[plain])[outside])
    # every object lies in the disc of radius scale around (x, y), so wholly on the canvas
    c = (torch.arange(size) + 0.5) / size
    dist = ((c[None, None, :] - f[:, S.X, None, None]) ** 2 + (c[None, :, None] - f[:, S.Y, None, None]) ** 2).sqrt()
    assert (dist[m] <= f[:, S.SCALE_, None, None].expand_as(dist)[m] + 1e-6).all()


def test_centroid_gives_x_and_y_within_a_pixel():
    size = 32
    f, _, m = scenes(1000, seed=5, size=size)
    rows, cols = torch.arange(size) + 0.5, torch.arange(size) + 0.5
    area = m.sum((1, 2)).float()
    cx = (m.sum(1) * cols).sum(1) / area
    cy = (m.sum(2) * rows).sum(1) / area
    assert (cx - f[:, S.X] * size).abs().max() < 1 and (cy - f[:, S.Y] * size).abs().max() < 1


@pytest.mark.parametrize("shape", range(len(S.SHAPES)))
def test_rotation_and_scale(shape):
    f, _, m = scenes(64, seed=shape, shape=shape)
    if S.SHAPES[shape] in ("square", "circle"):  # exact: the inside test is evaluated in float64
        turn = math.pi / 2 if S.SHAPES[shape] == "square" else 1.234
        g = f.clone()
        g[:, S.ROTATION] += turn
        assert torch.equal(S.render(g)[1], m)
    scales = torch.linspace(*S.SCALE, 5)
    f = f[:8].repeat_interleave(5, 0)
    f[:, S.SCALE_] = scales.repeat(8)
    area = S.render(f)[1].sum((1, 2)).view(8, 5)
    assert (area.diff(dim=1) > 0).all(), area


def test_factor_ranges_coverage_and_labels(full):
    for split, n in zip(("train", "valid", "test"), S.SIZES):
        s = full.split(split)
        assert len(s) == n and s.factors.shape == (n, 7) and s.factors.dtype == torch.float32
        assert s.masks.shape == (n, 32, 32) and s.boxes.shape == (n, 4) and len(s.captions) == n
        assert s.targets is None and torch.equal(s.y, s.factors[:, S.SHAPE].long())
    f = full.train.factors
    for i, spec in enumerate(full.factors):
        if spec.discrete:
            assert torch.equal(f[:, i].unique(), torch.arange(len(spec.values), dtype=torch.float32)), spec.name
        else:
            assert spec.low <= f[:, i].min() and f[:, i].max() <= spec.high, spec.name
            assert f[:, i].max() - f[:, i].min() > 0.95 * (spec.high - spec.low), spec.name
    assert full.factor_names == ["shape", "scale", "rotation", "x", "y", "colour", "background"]


def test_captions_agree_with_factors(full):
    f, captions = full.valid.factors, full.valid.captions
    for row, text in zip(f[:500].tolist(), captions[:500]):
        size, colour, shape, where, background = CAPTION.match(text).groups()
        assert shape == S.SHAPES[int(row[S.SHAPE])] and colour == list(S.COLOURS)[int(row[S.COLOUR])]
        assert background == S.BACKGROUNDS[int(row[S.BACKGROUND])]
        lo, hi = S.SCALE
        assert size == S.SIZE_WORDS[min(int((row[S.SCALE_] - lo) / (hi - lo) * 3), 2)]
        assert ("left" in where) == (row[S.X] < 0.25 + 0.5 / 3) and ("right" in where) == (row[S.X] >= 0.75 - 0.5 / 3)
        assert ("top" in where) == (row[S.Y] < 0.25 + 0.5 / 3) and ("bottom" in where) == (row[S.Y] >= 0.75 - 0.5 / 3)
    base = S.sample_factors(1, torch.Generator().manual_seed(0))
    for (x, y), place in {(0.3, 0.3): "at the top left", (0.5, 0.5): "in the centre", (0.7, 0.5): "at the right",
                          (0.5, 0.74): "at the bottom", (0.74, 0.26): "at the top right"}.items():
        g = base.clone()
        g[0, S.X], g[0, S.Y] = x, y
        assert f" {place} on " in S.captions_of(g)[0]
    g = base.clone()
    g[0, [S.SHAPE, S.SCALE_, S.COLOUR, S.X, S.Y, S.BACKGROUND]] = torch.tensor([3, 0.15, 0, 0.3, 0.3, 2])
    assert S.captions_of(g) == ["a small red heart at the top left on stripes"]


def test_grey_view_is_the_luminance_of_its_colour_target(full):
    grey = load_dataset("sprites-grey")
    assert grey.shape == (1, 32, 32) and grey.levels == 256 and grey.num_classes == len(S.SHAPES)
    s = grey.test
    assert s.x.dtype == torch.uint8 and s.targets.shape == (len(s), 3, 32, 32)
    assert torch.equal(s.targets, full.test.x) and torch.equal(s.masks, full.test.masks)
    r, g, b = s.targets.long().unbind(1)
    assert torch.equal(s.x[:, 0].long(), (299 * r + 587 * g + 114 * b + 500) // 1000)
    # isoluminant objects: the grey image does not depend on the object's colour
    assert {S.luminance(torch.tensor(c, dtype=torch.uint8).view(1, 3, 1, 1)).item() for c in S.COLOURS.values()} == {128}
    f, x, _ = scenes(64)
    f[:, S.COLOUR] = (f[:, S.COLOUR] + 3) % len(S.COLOURS)
    assert torch.equal(S.luminance(S.render(f)[0]), S.luminance(x))


def test_registered_and_listed(capsys):
    specs = {s.name: s for s in dataset_specs()}
    assert specs["sprites"].shape == (3, 32, 32) and specs["sprites64"].shape == (3, 64, 64)
    assert specs["sprites-grey"].shape == (1, 32, 32) and specs["sprites64-grey"].shape == (1, 64, 64)
    assert main(["data", "list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["sprites"])
    assert "factors shape(5), scale, rotation, x, y, colour(8), background(5)" in line
    assert load_dataset("digits").train.factors is None


def test_split_sizes_checked():
    from dgm.errors import DgmError
    with pytest.raises(DgmError, match="outside 1 .. 50000"):
        S.load_sprites(sizes=(60_000, 1, 1))


def test_vocabulary_and_bag_of_words(full):
    from dgm.data import bag_of_words, caption_words
    from dgm.errors import DgmError

    words = set(full.vocabulary)
    expected = {*S.SIZE_WORDS, *S.COLOURS, *S.SHAPES, *S.BACKGROUNDS, "top", "bottom", "left", "right", "centre",
                "a", "at", "the", "in", "on"}
    assert words == expected and list(full.vocabulary) == sorted(words)
    bags = bag_of_words(["a small red heart at the top left on stripes", "A big Cyan star, in the centre on dots."],
                        full.vocabulary)
    assert torch.allclose(bags.sum(1), torch.ones(2))
    index = {w: i for i, w in enumerate(full.vocabulary)}
    assert bags[0, index["the"]] == pytest.approx(1 / 10) and bags[1, index["cyan"]] == pytest.approx(1 / 9)
    assert caption_words("A big Cyan star, in the centre.") == ["a", "big", "cyan", "star", "in", "the", "centre"]
    with pytest.raises(DgmError, match="empty"):
        bag_of_words(["  , "], full.vocabulary)
    with pytest.raises(DgmError, match="'pink' is not in this model's vocabulary"):
        bag_of_words(["a pink square"], full.vocabulary)
    assert load_dataset("digits").vocabulary is None
