"""CycleGAN (seed 001; Zhu et al. 2017): the cycle and identity terms for exact inverse and identity maps, the
least-squares losses at hand values, the unpaired domains rendered from sprites' factors, the image history pool
against the authors' reference logic, and training through `dgm.train`: translation, bitwise resume, the NaN guard
and the one-sentence refusals of bad domains."""
import pytest
import torch

import dgm
from dgm.config import parse_value
from dgm.data.sprites import BACKGROUND, SHAPE, SHAPES, load_sprites
from dgm.errors import DgmError, DivergenceError
from dgm.io import load_tensors
from dgm.models import create_model
from dgm.models.cyclegan import (CycleGANConfig, ImagePool, cycle_losses, patch_discriminator_loss,
                                 patch_generator_loss)
from dgm.training import Trainer, TrainConfig
from dgm.training.trainer import CHECKPOINT, WEIGHTS

TINY = {"base_channels": 8, "n_blocks": 1}
RUN = {**TINY, "steps": 4, "batch_size": 8, "pool_size": 4, "quiet": True, "progress": False}


@pytest.fixture(scope="module")
def sprites():
    return load_sprites(sizes=(200, 20, 20))


def _with(factors: torch.Tensor, column: int, codes: list[int]) -> torch.Tensor:
    """factors with column set to codes[i mod len(codes)] in row i."""
    edited = factors.clone()
    edited[:, column] = torch.tensor(codes, dtype=factors.dtype)[torch.arange(len(factors)) % len(codes)]
    return edited


# --- the reconstruction terms ------------------------------------------------------------------------------
def test_the_cycle_term_is_exactly_zero_for_inverse_maps_and_positive_otherwise():
    torch.manual_seed(0)
    a, b = torch.rand(5, 3, 8, 8), torch.rand(5, 3, 8, 8)
    g = lambda x: x.roll(1, dims=1)  # noqa: E731  (R, G, B) -> (B, R, G), a bijection of the pixels
    f = lambda x: x.roll(-1, dims=1)  # noqa: E731  its inverse
    terms = cycle_losses(g, f, a, b)
    assert torch.equal(terms["cycle"], torch.zeros(5))
    assert torch.equal(terms["fake_b"], g(a)) and torch.equal(terms["fake_a"], f(b))
    assert (terms["identity"] > 0).all()  # a colour permutation is not the identity
    assert (cycle_losses(g, g, a, b)["cycle"] > 0).all()  # rolling twice is not undoing
    same = cycle_losses(lambda x: x, lambda x: x, a, b)
    assert torch.equal(same["identity"], torch.zeros(5)) and torch.equal(same["cycle"], torch.zeros(5))


def test_the_reconstruction_terms_are_mean_absolute_errors_at_hand_values():
    a = torch.randint(0, 8, (2, 1, 4, 4)) / 8  # eighths: every sum below is exact
    b = torch.randint(0, 8, (2, 1, 4, 4)) / 8
    terms = cycle_losses(lambda x: x + 0.25, lambda x: x, a, b)
    # cycle: |F(G(a)) - a| = 0.25 and |G(F(b)) - b| = 0.25 at every pixel; identity: |G(b) - b| = 0.25, |F(a) - a| = 0
    assert torch.equal(terms["cycle"], torch.full((2,), 0.5))
    assert torch.equal(terms["identity"], torch.full((2,), 0.25))
    assert torch.equal(cycle_losses(lambda x: x + 0.25, lambda x: x, a, b, identity=False)["identity"], torch.zeros(2))


def test_least_squares_losses_at_hand_values():
    d_real = torch.tensor([1.0, 0.0, 2.0, 1.0]).view(1, 1, 2, 2)
    d_fake = torch.tensor([0.0, 1.0, -1.0, 0.5]).view(1, 1, 2, 2)
    # per patch 1/2 [(D(b) - 1)^2 + D(G(a))^2] = 0, 1, 1, 1/8; averaged over the four patches
    assert patch_discriminator_loss(d_real, d_fake).tolist() == [2.125 / 4]
    # per patch (D(G(a)) - 1)^2 = 0, 1, 4, 1/4: the paper's generator loss, without LSGAN's 1/2
    assert patch_generator_loss(torch.tensor([1.0, 0.0, 3.0, 0.5]).view(1, 1, 2, 2)).tolist() == [5.25 / 4]
    assert patch_generator_loss(torch.ones(3, 1, 2, 2)).tolist() == [0.0] * 3  # G's optimum: D says real


def test_the_generator_objective_weights_its_terms_as_zhu_et_al():
    torch.manual_seed(1)
    model = create_model("cyclegan", {**TINY, "data_shape": (3, 32, 32)})
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    terms = model.generator_losses(a, b)
    expected = terms["adv_g"] + 10 * (terms["cycle"] + 0.5 * terms["identity"])
    assert torch.allclose(terms["loss_g"], expected)
    adv = patch_generator_loss(model.d_b(model.g(a))) + patch_generator_loss(model.d_a(model.f(b)))
    assert torch.allclose(terms["adv_g"], adv)
    assert model.d_b(a).shape == (2, 1, 2, 2)  # PatchGAN: one score per patch


# --- the domains ------------------------------------------------------------------------------------------
def _match(images: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """For each image the index of the one candidate equal to it (each must have exactly one)."""
    same = (images.flatten(1)[:, None] == candidates.flatten(1)[None]).all(-1)
    assert (same.sum(1) == 1).all()
    return same.int().argmax(1)


def test_domains_are_the_rows_scenes_with_the_factor_set_and_b_is_unpaired(sprites):
    model = create_model("cyclegan", TINY)
    split, render = sprites.train, sprites.renderer.render
    a, b = model.batch_fields(sprites, split)
    circle, square = SHAPES.index("circle"), SHAPES.index("square")
    assert a.dtype == torch.uint8 and a.shape == b.shape == split.x.shape
    assert torch.equal(a, render(_with(split.factors, SHAPE, [circle])))  # row i's scene, as a circle
    targets = model.translation_targets(sprites, split)
    assert torch.equal(targets, render(_with(split.factors, SHAPE, [square])))  # ... and as a square
    perm = _match(b, targets)  # b_i is row perm(i)'s scene as a square
    assert sorted(perm.tolist()) == list(range(len(split)))  # a permutation of the rows
    assert (perm != torch.arange(len(split))).float().mean() > 0.9  # of other rows: unpaired
    # value lists cycle over the rows, b with the same fixed permutation
    cfg = {**TINY, "domain_factor": "background", "domain_a": ("black", "white"),
           "domain_b": ("stripes", "checks", "dots")}
    a2, b2 = create_model("cyclegan", cfg).batch_fields(sprites, split)
    assert torch.equal(a2, render(_with(split.factors, BACKGROUND, [0, 1])))
    assert torch.equal(b2, render(_with(split.factors[perm], BACKGROUND, [2, 3, 4])))
    assert torch.equal(create_model("cyclegan", cfg).translation_targets(sprites, split),
                       render(_with(split.factors, BACKGROUND, [2, 3, 4])))


# --- the image history pool ---------------------------------------------------------------------------------
class _ReferencePool:
    """The authors' ImagePool.query (util/image_pool.py) with its random draws given."""

    def __init__(self, size):
        self.size, self.images = size, []

    def query(self, fakes, draws):
        out = []
        for image, (u, slot) in zip(fakes, draws):
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif u > 0.5:
                out.append(self.images[slot])
                self.images[slot] = image
            else:
                out.append(image)
        return torch.stack(out)


def test_the_pool_returns_new_fakes_until_full_then_swaps_half_of_them():
    pool, reference = ImagePool(5, (1,)), _ReferencePool(5)
    torch.manual_seed(3)
    for k in range(40):
        fakes = torch.arange(4 * k, 4 * k + 4, dtype=torch.float32)[:, None]  # every fake its own number
        state = torch.get_rng_state()
        draws = list(zip(torch.rand(4).tolist(), torch.randint(5, (4,)).tolist()))  # what query draws, in order
        torch.set_rng_state(state)
        out = pool.query(fakes)
        assert torch.equal(out, reference.query(fakes, draws))
        assert torch.equal(pool.images[:len(reference.images)], torch.stack(reference.images))
        if k == 0:
            assert torch.equal(out, fakes) and int(pool.count) == 4
        if k == 1:  # one slot left: the first fake fills it, the second may already be swapped
            assert out[0].item() == 4 and int(pool.count) == 5
    swapped = 0
    for k in range(40, 540):
        fakes = torch.arange(4 * k, 4 * k + 4, dtype=torch.float32)[:, None]
        swapped += (pool.query(fakes) != fakes).sum().item()  # a stored fake came back instead
    assert abs(swapped / 2000 - 0.5) < 0.035  # 3 standard deviations of the binomial frequency
    assert {"pool_a.images", "pool_a.count", "pool_b.images", "pool_b.count"} <= set(
        create_model("cyclegan", {**TINY, "pool_size": 3}).state_dict())


def test_no_pool_shows_the_new_fakes_and_draws_nothing():
    pool = ImagePool(0, (3, 8, 8))
    fakes = torch.rand(4, 3, 8, 8)
    state = torch.get_rng_state()
    assert torch.equal(pool.query(fakes), fakes)
    assert torch.equal(torch.get_rng_state(), state)


# --- training through dgm.train ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cyclegan")
    whole = dgm.train("cyclegan", data="sprites", out=root / "whole", **RUN)
    part = dgm.train("cyclegan", data="sprites", out=root / "part", **{**RUN, "steps": 2})
    return whole, dgm.resume(part, steps=4, quiet=True)


def test_training_translates_and_draws_its_translations(runs):
    whole, _ = runs
    assert {f"train/{k}" for k in ("loss_g", "loss_d", "cycle", "identity", "adv_g")} <= set(whole.metrics[-1])
    assert (whole.path / "translations.png").is_file() and not (whole.path / "samples.png").exists()
    model = whole.model
    a = load_sprites(sizes=(200, 20, 20)).test.x[:5]
    out = model.translate(a)
    assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, model.translate(a.float() / 255))  # uint8 in, or floats in [0, 1]
    assert not torch.equal(model.translate(a, reverse=True), out)  # F is another network
    assert model.input_shape == (3, 32, 32) and model.sample is None
    assert int(model.pool_a.count) == int(model.pool_b.count) == 4  # 32 fakes went into pools of 4
    with pytest.raises(DgmError, match="--input"):
        dgm.sample(whole, 4)
    with pytest.raises(DgmError, match=r"translates images \[N, 3, 32, 32\]"):
        model.translate(torch.rand(2, 1, 32, 32))
    grid, nrow = model.figures(None, a[:2])["translations"]
    assert nrow == 3 and grid.shape == (6, 3, 32, 32)
    assert torch.equal(grid[3], a[1].float() / 255) and torch.equal(grid[4], out[1])


def test_stop_and_resume_is_bitwise_identical(runs):
    """2 + 2 steps end as 4: the pools (full within the first step, swapping from then on) draw from the
    checkpointed RNG."""
    whole, resumed = runs
    for name in (CHECKPOINT, WEIGHTS):
        ta, tb = load_tensors(whole.path / name)[0], load_tensors(resumed.path / name)[0]
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name


def test_a_nan_stops_training_with_the_divergence_error(sprites):
    model = create_model("cyclegan", TINY)
    with torch.no_grad():
        model.g[1].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="NaN"):
        Trainer(model, sprites, TrainConfig(steps=2, batch_size=8, progress=False, device="cpu")).fit()


@pytest.mark.parametrize("options, message", [
    ({"domain_factor": "size"}, "domain_factor 'size' is not one of this dataset's factors; choose a discrete "
                                "factor: shape, colour, background"),
    ({"domain_factor": "x"}, "domain_factor 'x' is continuous; choose a discrete factor"),
    ({"domain_a": ("hexagon",)}, "factor 'shape' has no value 'hexagon'; choose domain_a among square, circle"),
    ({"domain_a": ("circle",), "domain_b": ("square", "circle")}, "domain_a and domain_b both hold 'circle'"),
    ({"domain_b": ()}, "domain_b is empty"),
    ({"patch_layers": 4}, "patch_layers=4 leaves the discriminators no patch of a 32-pixel side .* use "
                          "patch_layers <= 3"),
])
def test_bad_domains_are_refused_in_one_sentence_and_leave_no_folder(tmp_path, options, message):
    with pytest.raises(DgmError, match=message) as err:
        dgm.train("cyclegan", data="sprites", out=tmp_path / "x", **{**RUN, **options})
    assert "\n" not in str(err.value) and str(err.value).count(". ") == 0
    assert not (tmp_path / "x").exists()


def test_data_without_factors_is_refused_and_value_lists_parse(tmp_path):
    with pytest.raises(DgmError, match="which dataset 'digits' does not have; train on sprites"):
        dgm.train("cyclegan", data="digits", out=tmp_path / "x", **{**RUN, "patch_layers": 1})
    assert not (tmp_path / "x").exists()
    assert parse_value(CycleGANConfig, "domain_b", "stripes,checks,dots") == ("stripes", "checks", "dots")
