"""MIG and the FactorVAE score: their exact values for codes that copy the factors, near 0 (MIG) or 1/K
(FactorVAE) for codes that ignore them, the gap of a duplicated code, collapsed units, and the whole metric on
sprites through a model's `encode` (a conditional one given its labels)."""
import math

import pytest
import torch
from torch import nn

from dgm.data import load_dataset
from dgm.data.sprites import load_sprites
from dgm.evaluation.disentanglement import (discretize, disentanglement_metrics, factorvae_score,
                                            mutual_information_gap)

SIZES = (3, 4, 5)  # values of three discrete factors


def _grid(repeats: int) -> torch.Tensor:
    """Every combination of the factors' values, `repeats` times: float [repeats * 60, 3]. On a full grid the
    factors are exactly independent in the empirical distribution, so the plug-in I(v_k; v_l) is 0."""
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in SIZES), indexing="ij")
    return torch.stack([a.flatten() for a in axes], 1).repeat(repeats, 1)


# --- MIG ------------------------------------------------------------------------------------
def test_discretize_is_equal_width_with_the_maximum_in_the_last_bin():
    v = torch.tensor([0.0, 0.049, 0.05, 0.5, 0.951, 1.0])
    assert discretize(v, 20).tolist() == [0, 0, 1, 10, 19, 19]
    assert discretize(torch.full((4,), 3.0)).tolist() == [0, 0, 0, 0]


def test_mig_is_one_for_codes_that_copy_the_factors_in_any_order_and_scale():
    factors = _grid(10)
    discrete = [True] * 3
    mig, gaps = mutual_information_gap(factors.clone(), factors, discrete)
    assert abs(mig - 1) < 1e-9 and all(abs(g - 1) < 1e-9 for g in gaps)
    # 20 equal-width bins keep the <= 5 values of each factor apart, and an affine map keeps the bins
    permuted = 3 * factors[:, [2, 0, 1]] - 7
    mig, gaps = mutual_information_gap(permuted, factors, discrete)
    assert abs(mig - 1) < 1e-9 and all(abs(g - 1) < 1e-9 for g in gaps)


def test_mig_of_a_code_mixing_two_factors_is_below_one():
    factors = _grid(10)
    mixed = torch.stack([factors[:, 0] + 5 * factors[:, 1], factors[:, 1], factors[:, 2]], 1)
    mig, gaps = mutual_information_gap(mixed, factors, [True] * 3)
    # code 0 determines factors 0 and 1 both, so factor 1's top two informations are equal: gap 0
    assert abs(gaps[1]) < 1e-9 and abs(gaps[0] - 1) < 1e-9 and abs(gaps[2] - 1) < 1e-9
    assert abs(mig - 2 / 3) < 1e-9


def test_mig_is_zero_for_a_factor_copied_twice():
    factors = _grid(10)
    codes = torch.stack([factors[:, 0], factors[:, 0], factors[:, 1], factors[:, 2]], 1)
    mig, gaps = mutual_information_gap(codes, factors, [True] * 3)
    assert abs(gaps[0]) < 1e-9 and abs(gaps[1] - 1) < 1e-9 and abs(gaps[2] - 1) < 1e-9
    assert abs(mig - 2 / 3) < 1e-9


def test_mig_is_near_zero_for_codes_independent_of_the_factors():
    g = torch.Generator().manual_seed(1)
    factors = _grid(400)  # 24,000 rows
    codes = torch.randn(len(factors), 6, generator=g)
    mig, gaps = mutual_information_gap(codes, factors, [True] * 3)
    # plug-in bias of each I: about (20 - 1)(5 - 1) / 2N = 0.0016 nats against H >= ln 3
    assert 0 <= mig < 0.05 and all(0 <= gap < 0.05 for gap in gaps)


def test_mig_bins_a_continuous_factor_and_skips_a_constant_one():
    g = torch.Generator().manual_seed(2)
    u = torch.rand(20_000, generator=g)
    factors = torch.stack([u, torch.zeros_like(u)], 1)
    mig, gaps = mutual_information_gap(u[:, None] * 2 + 1, factors, [False, True])
    # the code and the factor fall in the same 20 bins, so I = H(binned v) = ln 20 - (small non-uniformity)
    assert abs(gaps[0] - 1) < 1e-9 and math.isnan(gaps[1]) and abs(mig - 1) < 1e-9


# --- FactorVAE score ------------------------------------------------------------------------
def test_factorvae_score_is_one_for_copying_codes_and_drops_collapsed_units():
    factors = _grid(20)
    codes = torch.cat([factors[:, [1, 2, 0]], torch.full((len(factors), 1), 0.3)], 1)  # + a dead unit
    out = factorvae_score(codes, factors, codes, factors, [True] * 3)
    assert out["factorvae_active_dims"] == 3
    assert out["factorvae_score"] == 1.0 and out["factorvae_train_accuracy"] == 1.0


def test_factorvae_score_is_one_for_copied_continuous_factors_binned():
    g = torch.Generator().manual_seed(3)
    factors = torch.rand(4000, 3, generator=g)
    codes = 10 * factors[:, [2, 1, 0]]
    out = factorvae_score(codes[:2000], factors[:2000], codes[2000:], factors[2000:], [False] * 3)
    # within a bin the copied dim's normalised variance is about 1/400 of the others'
    assert out["factorvae_score"] == 1.0


def test_factorvae_score_is_one_over_k_for_codes_that_ignore_the_factors():
    g = torch.Generator().manual_seed(4)
    factors = torch.cat([_grid(40), torch.rand(2400, 1, generator=g)], 1)  # K = 4: three discrete, one not
    codes = torch.randn(2 * len(factors), 5, generator=g)
    out = factorvae_score(codes[:2400], factors, codes[2400:], factors, [True, True, True, False])
    # every vote's dim is independent of its factor, so each is right with probability 1/K; 0.06 is four
    # binomial standard errors sqrt(1/4 * 3/4 / 800) = 0.015
    assert abs(out["factorvae_score"] - 1 / 4) < 0.06
    assert out["factorvae_active_dims"] == 5


def test_factorvae_score_is_seeded():
    factors = _grid(5)
    codes = torch.randn(len(factors), 4)
    a = factorvae_score(codes, factors, codes, factors, [True] * 3, seed=7)
    b = factorvae_score(codes, factors, codes, factors, [True] * 3, seed=7)
    assert a == b


# --- the whole metric on sprites ----------------------------------------------------------
class _Centroid(nn.Module):
    """Reads the object's centroid and area from a sprite: its pixels are the only coloured ones (every
    background is grey), so the codes carry x, y and (with the shape) the scale, nothing of colour."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def centroid(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = x.unbind(1)
        mask = (((r - g).abs() > 1e-6) | ((g - b).abs() > 1e-6)).double()
        h, w = mask.shape[1:]
        n = mask.sum((1, 2))
        cols = (torch.arange(w, dtype=torch.float64) + 0.5) / w
        rows = (torch.arange(h, dtype=torch.float64) + 0.5) / h
        cx = (mask * cols).sum((1, 2)) / n
        cy = (mask * rows[:, None]).sum((1, 2)) / n
        return torch.stack([cx, cy, 10 * n / (h * w)], 1) * self.gain  # area x 10: a std above 0.05

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.centroid(x)


class _ConditionalCentroid(_Centroid):
    """A conditional model: its code is the given label (the shape, sprites' y) beside the centroid."""

    conditional = True

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y[:, None].double(), self.centroid(x)], 1)


@pytest.fixture(scope="module")
def sprites():
    return load_sprites(sizes=(2000, 200, 200))


def test_disentanglement_metrics_on_sprites(sprites):
    out = disentanglement_metrics(_Centroid(), sprites)
    names = sprites.factor_names
    assert {"mig", "factorvae_score", "factorvae_train_accuracy", "factorvae_active_dims",
            "disentanglement_codes", "disentanglement_train_codes"} | {f"mig_{n}" for n in names} == set(out)
    assert out["disentanglement_codes"] == 200 and out["disentanglement_train_codes"] == 2000
    assert out["factorvae_active_dims"] == 3
    for key, value in out.items():
        if key.startswith(("mig", "factorvae_score", "factorvae_train")):
            assert math.isfinite(value) and 0 <= value <= 1, (key, value)
    # the code reads x and y off one dim each: at least their votes (2 of 7 factors) are right
    assert out["factorvae_score"] > 2 / 7 - 0.06


def test_disentanglement_metrics_find_the_factors_a_code_reads(sprites):
    out = disentanglement_metrics(_Centroid(), sprites, split="train")
    assert out["mig_x"] > 0.5 and out["mig_y"] > 0.5  # the centroid's dims
    assert out["mig_colour"] < 0.05 and out["mig_background"] < 0.05  # nothing of them in the code
    assert out["mig"] < 0.5  # five of seven factors are not read


def test_a_conditional_model_is_given_its_labels(sprites):
    out = disentanglement_metrics(_ConditionalCentroid(), sprites, split="train")
    # the first code dim is the shape label itself: I = H(shape); the area's information about the shape
    # is the only rival
    plain = disentanglement_metrics(_Centroid(), sprites, split="train")
    assert out["mig_shape"] > plain["mig_shape"] + 0.3 and out["factorvae_active_dims"] == 4


def test_no_scores_without_factors_or_without_encode(sprites):
    assert disentanglement_metrics(_Centroid(), load_dataset("digits")) == {}
    assert disentanglement_metrics(nn.Linear(2, 2), sprites) == {}
