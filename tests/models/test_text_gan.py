"""Text-to-image GANs (seed 001; Reed et al. 2016): the matching-aware loss against its formula, the box's
conditioning map by the pixel-centre rule, GAN-INT's linearity, the conditions and their errors, and text-gan /
www-gan trained on sprites through `dgm.train`: samples, bitwise resume, the NaN guard, y ~ p_data(y) from the bank."""
import json
import math

import pytest
import torch

import dgm
from dgm.data import Split, bag_of_words, load_dataset
from dgm.errors import DgmError, DivergenceError
from dgm.io import load_tensors
from dgm.models import create_model
from dgm.models.text_gan import BANK_SIZE, box_map, matching_aware_discriminator_loss
from dgm.training.trainer import CHECKPOINT, WEIGHTS

VOCAB = ("a", "big", "blue", "red", "small", "square", "star")
SMALL = {"data_shape": (3, 8, 8), "vocabulary": VOCAB, "base_channels": 4, "latent_dim": 3, "text_dim": 5}
TINY = {"base_channels": 8, "batch_size": 16, "latent_dim": 8, "text_dim": 8, "quiet": True, "progress": False}
NAMES = ("text-gan", "www-gan")


def _small(name: str):
    torch.manual_seed(0)
    return create_model(name, SMALL).double()


# --- the matching-aware discriminator loss (GAN-CLS) -----------------------------------------------
def _by_hand(a: float, b: float, c: float) -> float:
    """-[log D(x, t) + 1/2 log(1 - D(x, t_wrong)) + 1/2 log(1 - D(G(z, t), t))], D = 1 / (1 + e^-s)."""
    d = lambda s: 1 / (1 + math.exp(-s))  # noqa: E731
    return -(math.log(d(a)) + 0.5 * math.log(1 - d(b)) + 0.5 * math.log(1 - d(c)))


def test_the_matching_aware_loss_is_2_log_2_at_one_half_and_weighs_its_terms_1_half_half():
    zero = torch.zeros(1, dtype=torch.float64)
    assert matching_aware_discriminator_loss(zero, zero, zero).item() == pytest.approx(2 * math.log(2), abs=1e-15)
    for s in (-3.0, -0.5, 1.0, 4.0):
        one = torch.tensor([s], dtype=torch.float64)
        for args in ((one, zero, zero), (zero, one, zero), (zero, zero, one)):  # each logit alone
            expected = _by_hand(*(float(t) for t in args))
            assert matching_aware_discriminator_loss(*args).item() == pytest.approx(expected, rel=1e-12)
        # the change from D = 1/2 is the term's own, times its weight: 1 for the real pair, 1/2 for the others
        term = -math.log(1 / (1 + math.exp(s)))  # -log(1 - D) at logit s
        assert (matching_aware_discriminator_loss(zero, one, zero) - 2 * math.log(2)).item() == pytest.approx(
            0.5 * (term - math.log(2)), rel=1e-12)
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(6, generator=g, dtype=torch.float64) * 3 for _ in range(3))
    expected = torch.tensor([_by_hand(*v) for v in zip(a.tolist(), b.tolist(), c.tolist())], dtype=torch.float64)
    assert torch.allclose(matching_aware_discriminator_loss(a, b, c), expected, rtol=1e-12, atol=0)


# --- the conditioning map ------------------------------------------------------------------------
def test_the_box_map_is_the_embedding_inside_the_box_and_zero_outside():
    e = torch.tensor([[1.5, -2.0], [0.25, 3.0]])
    # pixel centres of a 4x4 grid: 0.125, 0.375, 0.625, 0.875. Box 0 has edges on centres: [x0, x1) keeps the
    # centre at x0 = 0.375 and drops the one at x1 = 0.625; likewise rows: only pixel (row 0, column 1)
    boxes = torch.tensor([[0.375, 0.125, 0.625, 0.375], [0.2, 0.5, 1.0, 0.9]])
    m = box_map(e, boxes, 4, 4)
    inside = torch.zeros(2, 4, 4, dtype=torch.bool)
    inside[0, 0, 1] = True
    inside[1, 2:4, 1:4] = True  # columns with centres in [0.2, 1.0), rows in [0.5, 0.9)
    assert m.shape == (2, 2, 4, 4)
    assert torch.equal(m, torch.where(inside[:, None], e[:, :, None, None], torch.zeros(())))


def test_the_box_map_of_the_sprites_pixel_edge_boxes_is_the_tight_rectangle_around_the_mask():
    data = load_dataset("sprites")
    boxes, masks = data.test.boxes[:50], data.test.masks[:50]
    m = box_map(torch.ones(50, 1), boxes.float() / 32, 32, 32)[:, 0] > 0
    rect = torch.zeros_like(m)
    for r, (x0, y0, x1, y1) in zip(rect, boxes.tolist()):
        r[y0:y1, x0:x1] = True
    assert torch.equal(m, rect) and not (masks & ~m).any()


def test_text_gans_box_is_the_whole_canvas_so_its_map_is_the_embedding_everywhere():
    model = _small("text-gan")
    y = model.condition_of(["a red star", "a big blue square"])
    bags, boxes = model.split_conditions(y)
    assert torch.equal(bags, y) and torch.equal(boxes, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2, dtype=y.dtype))
    e = torch.randn(2, 5, dtype=torch.float64)
    assert torch.equal(box_map(e, boxes, 3, 7), e[:, :, None, None].expand(2, 5, 3, 7))


# --- GAN-INT and the wrong captions ----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_the_interpolated_captions_embedding_is_the_interpolation_of_the_embeddings(name):
    model = _small(name)
    captions = ["a red star", "a big blue square", "a small red square"]
    y = model.condition_of(captions, [[0, 0, 4, 4], [2, 1, 8, 5], [3, 3, 6, 8]] if name == "www-gan" else None)
    v, beta = len(VOCAB), model.cfg.interpolation_beta
    assert beta == 0.5
    y_int, y_wrong = model.interpolated_conditions(y), model.wrong_conditions(y)
    assert torch.equal(y_int[:, v:], y[:, v:]) and torch.equal(y_wrong[:, v:], y[:, v:])  # each keeps its box
    assert torch.equal(y_wrong[:, :v], y[[2, 0, 1], :v])  # the captions rolled by one
    for net in (model.generator, model.discriminator):  # W (b t + (1-b) t') + c = b (W t + c) + (1-b) (W t' + c)
        pre, pre_int = net.text(y[:, :v]), net.text(y_int[:, :v])
        assert torch.allclose(pre_int, beta * pre + (1 - beta) * pre.roll(1, 0), atol=1e-12, rtol=0)
        assert torch.allclose(net.embed(y_int[:, :v]), torch.nn.functional.leaky_relu(pre_int, 0.2))


# --- conditions and their errors -------------------------------------------------------------------
def test_condition_of_makes_bags_then_boxes_as_fractions_of_the_canvas():
    model = _small("www-gan")
    y = model.condition_of(["a red star", "a big blue square"], [[0, 2, 4, 8], [1, 1, 2, 3]])
    assert torch.equal(y[:, :7], bag_of_words(["a red star", "a big blue square"], VOCAB).double())
    assert torch.equal(y[:, 7:], torch.tensor([[0, 0.25, 0.5, 1], [0.125, 0.125, 0.25, 0.375]], dtype=y.dtype))
    assert torch.equal(model.condition_of(["a red star"] * 3, [0, 2, 4, 8])[:, 7:], y[:1, 7:].expand(3, 4))
    assert torch.equal(_small("text-gan").condition_of("a red star"), y[:1, :7])


@pytest.mark.parametrize("box,message", [
    ([4, 0, 4, 8], "x0 < x1"), ([0, 5, 4, 2], "y0 < y1"), ([-1, 0, 4, 4], "8x8 canvas"), ([0, 0, 9, 4], "8x8 canvas"),
    ([0, 0, 4, 9], "8x8 canvas"), ([0.5, 0, 4, 4], "whole pixel edges"),
])
def test_a_bad_box_is_refused_in_one_sentence(box, message):
    with pytest.raises(DgmError, match=message):
        _small("www-gan").condition_of(["a red star"], box)


def test_a_missing_or_unwanted_box_an_empty_caption_and_an_unknown_word_are_refused():
    with pytest.raises(DgmError, match="give one"):
        _small("www-gan").condition_of(["a red star"])
    with pytest.raises(DgmError, match="use www-gan"):
        _small("text-gan").condition_of(["a red star"], [0, 0, 4, 4])
    with pytest.raises(DgmError, match="caption is empty"):
        _small("text-gan").condition_of([" "])
    with pytest.raises(DgmError, match="'pink' is not in this model's vocabulary"):
        _small("www-gan").condition_of(["a pink star"], [0, 0, 4, 4])
    with pytest.raises(DgmError, match=r"conditions of shape \(2, 11\)"):
        _small("www-gan").generate(torch.zeros(2, 3), torch.zeros(2, 7))


def test_data_without_captions_or_boxes_is_refused_and_the_model_is_not_class_conditional(tmp_path):
    digits = load_dataset("digits")
    with pytest.raises(DgmError, match="train on sprites"):
        dgm.train("text-gan", data="digits", out=tmp_path / "run", steps=1, quiet=True, progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(DgmError, match="train on sprites"):
        _small("text-gan").batch_fields(digits, digits.train)
    sprites = load_dataset("sprites")
    no_boxes = Split(sprites.test.x[:4], captions=sprites.test.captions[:4])
    with pytest.raises(DgmError, match="captions and boxes.*train on sprites"):
        _small("www-gan").batch_fields(sprites, no_boxes)
    assert not hasattr(_small("www-gan"), "conditional")  # that name means class labels in dgm


def test_the_bank_keeps_evenly_strided_training_conditions_and_can_be_refilled():
    model = _small("www-gan")
    with pytest.raises(DgmError, match="never trained"):
        model.sample(2)
    y = torch.rand(3000, 11, dtype=torch.float64)
    model.fit_before_training(torch.zeros(3000, 3, 8, 8), y)
    assert int(model.bank_size) == BANK_SIZE
    assert torch.equal(model.condition_bank, y[torch.arange(BANK_SIZE) * 3000 // BANK_SIZE])
    model.fit_before_training(torch.zeros(10, 3, 8, 8), y[:10])  # called again: a smaller bank
    assert int(model.bank_size) == 10 and torch.equal(model.condition_bank[:10], y[:10])
    assert not model.condition_bank[10:].any()
    drawn = model.sample_conditions(200, torch.Generator().manual_seed(0))
    assert (drawn[:, None] == y[None, :10]).all(-1).any(1).all()  # only the kept rows
    assert set(model.state_dict()) >= {"condition_bank", "bank_size"}


# --- training through the API ----------------------------------------------------------------------
@pytest.fixture(scope="module", params=NAMES)
def trained(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    return request.param, root, dgm.train(request.param, data="sprites", out=root / "whole", steps=4, **TINY)


def test_training_writes_samples_in_the_unit_interval_and_the_models_picture(trained):
    name, _, run = trained
    names = {p.name for p in run.pictures}
    assert {"samples.png", "captions.png" if name == "text-gan" else "boxes.png"} <= names
    record = run.metrics[-1]
    assert {"train/loss_d", "train/loss_g", "train/loss_int", "train/d_real_right", "train/d_real_wrong",
            "train/d_fake"} <= set(record)
    model = run.model
    x = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert x.shape == (6, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    data = load_dataset("sprites")
    (y,) = model.batch_fields(data, data.test)
    figures = model.figures(data.to_float(data.test.x[:8]), y[:8])
    ((grid, nrow),) = figures.values()
    assert grid.shape == (64, 3, 32, 32) and nrow == 8
    assert torch.equal(grid[::8], data.to_float(data.test.x[:8]))  # the first column: the real images
    if name == "www-gan":
        assert torch.equal(y[:, -4:], data.test.boxes.float() / 32)


def test_stop_and_resume_is_bitwise_identical(trained):
    name, root, whole = trained
    part = dgm.train(name, data="sprites", out=root / "part", steps=2, **TINY)
    dgm.resume(part, steps=4, quiet=True)
    for file in (WEIGHTS, CHECKPOINT):
        a, b = load_tensors(whole.path / file)[0], load_tensors(part.path / file)[0]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file


def test_sampling_without_captions_draws_them_from_the_training_conditions(trained):
    _, _, run = trained
    model = run.model
    data = load_dataset("sprites")
    (y_train,) = model.batch_fields(data, data.train)
    assert int(model.bank_size) == BANK_SIZE
    assert torch.equal(model.condition_bank, y_train[torch.arange(BANK_SIZE) * len(y_train) // BANK_SIZE])
    x = model.sample(5, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    z = model.sample_latent(5, g)
    y = model.sample_conditions(5, g)
    assert (y[:, None] == model.condition_bank[None]).all(-1).any(1).all()
    assert torch.equal(x, model.generate(z, y))


@pytest.mark.parametrize("name", NAMES)
def test_a_diverging_run_stops_with_the_divergence_error_and_keeps_its_last_good_checkpoint(tmp_path, name):
    # g_lr 1e30: Adam moves every weight of G by about 1e30 at step 1, so step 2's images are NaN
    with pytest.raises(DivergenceError, match=r"diverged: .*loss_d.*last good checkpoint \(step 1\)"):
        dgm.train(name, data="sprites", out=tmp_path / "run", steps=4, checkpoint_every=1, g_lr=1e30, **TINY)
    tensors, meta = load_tensors(tmp_path / "run" / CHECKPOINT)
    assert json.loads(meta["trainer"])["step"] == 1
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
