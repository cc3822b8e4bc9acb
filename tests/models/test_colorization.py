"""Diverse colorization (seed 002; Deshpande et al. 2017): the MDN's density, the decoder's losses against hand
computations, the colour space, the three methods through `dgm.api.train`, `dgm sample RUN --grey` and the
colorization metrics on models whose answers are known."""
import math

import numpy as np
import pytest
import torch
from torch import distributions as D

import dgm
from dgm.cli import main
from dgm.data.sprites import COLOUR, COLOURS, load_sprites
from dgm.errors import DgmError
from dgm.evaluation.colorization import colorization_metrics, palette_chroma
from dgm.models import create_model
from dgm.models.colorization import (NEEDS_PAIRS, chroma_to_rgb, colour_bins, gradient_loss, hist_loss, histogram_weights,
                                     mahalanobis_loss, principal_components, rgb_to_ycbcr, ycbcr_to_rgb)
from conftest import one_sentence

TINY = {"conv_channels": (4,), "head_channels": 4, "latent_dim": 2, "mdn_channels": (4,), "n_components": 3,
        "n_principal": 4}
SHAPE = {"data_shape": (1, 32, 32), "levels": 256}
LUMA = torch.tensor([0.299, 0.587, 0.114])


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb * LUMA.view(3, 1, 1).to(rgb)).sum(-3)



@pytest.fixture(scope="module")
def sprites():
    return load_sprites(grey=True, sizes=(2000, 200, 200))


# --- the mixture density network ---------------------------------------------------------------------
def _mdn(m: int, sigma: float = 0.1, latent_dim: int = 2):
    torch.manual_seed(0)
    model = create_model("colorization", {**SHAPE, **TINY, "n_components": m, "mdn_sigma": sigma,
                                          "latent_dim": latent_dim}).double()
    with torch.no_grad():
        model.mdn.fc.weight.mul_(5)  # spread the components' means and weights apart
    return model


def test_the_mdn_density_integrates_to_one():
    model = _mdn(m=4, sigma=0.15)
    grey = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        p = model.mdn_distribution(grey)
    mu = p.component_distribution.base_dist.loc[0]  # [M, 2]
    assert (torch.cdist(mu, mu) + torch.eye(4, dtype=mu.dtype)).min() > 0.3  # distinct modes: a real mixture
    assert p.mixture_distribution.probs.min() > 0.01
    step = 0.01
    lo, hi = (mu.min(0).values - 1.5).tolist(), (mu.max(0).values + 1.5).tolist()  # 10 sigma beyond the means
    u = torch.arange(lo[0], hi[0], step, dtype=torch.float64)
    v = torch.arange(lo[1], hi[1], step, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(u, v, indexing="ij"), -1).reshape(-1, 1, 2)
    with torch.no_grad():
        total = p.log_prob(grid).exp().sum() * step * step
    assert abs(total.item() - 1) < 1e-3, total


def test_one_component_is_exactly_a_gaussian_log_density():
    model = _mdn(m=1, sigma=0.3, latent_dim=3)
    grey = torch.rand(5, 1, 32, 32, dtype=torch.float64)
    mu = model.mdn(grey)[:, :3]  # the network's output: the mean first, then the one weight's logit
    z = torch.randn(5, 3, dtype=torch.float64)
    expected = D.Normal(mu, 0.3).log_prob(z).sum(-1)
    assert torch.allclose(model.mdn_distribution(grey).log_prob(z), expected, atol=1e-12, rtol=0)


def test_the_mixture_reads_means_then_logits_from_the_network():
    model = _mdn(m=3, sigma=0.2)
    grey = torch.rand(4, 1, 32, 32, dtype=torch.float64)
    out = model.mdn(grey)
    means, log_pi = out[:, :6].reshape(4, 3, 2), torch.log_softmax(out[:, 6:], 1)
    z = torch.randn(4, 2, dtype=torch.float64)
    by_hand = torch.logsumexp(log_pi - ((z[:, None] - means) ** 2).sum(-1) / (2 * 0.2**2)
                              - 2 * math.log(0.2 * math.sqrt(2 * math.pi)), 1)
    assert torch.allclose(model.mdn_distribution(grey).log_prob(z), by_hand, atol=1e-10, rtol=0)


# --- the decoder's losses ---------------------------------------------------------------------------
def test_gradient_loss_ignores_a_constant_shift_and_matches_a_hand_value():
    torch.manual_seed(0)
    c = torch.rand(3, 2, 5, 6) * 2 - 1
    shift = torch.tensor([0.3, -0.7]).view(1, 2, 1, 1)
    assert torch.allclose(gradient_loss(c + shift, c), torch.zeros(3), atol=1e-6)
    target = torch.zeros(1, 1, 3, 3)
    pred = target.clone()
    pred[0, 0, 1, 1] = 2.0  # a bump in the middle: two horizontal and two vertical steps of 2
    assert gradient_loss(pred, target).item() == pytest.approx(16.0)
    pred[0, 0, 1, 1], pred[0, 0, 0, 0] = 0.0, 1.0  # in a corner: one step of 1 each way
    assert gradient_loss(pred, target).item() == pytest.approx(2.0)
    assert gradient_loss(c + 0.1 * torch.rand_like(c), c).min() > 0


def test_hist_weights_are_inverse_to_a_hand_made_histogram():
    """16 pixels: 8 grey, 4 red, 3 green, 1 blue; w(b) = N / (Q_seen n_b) = 16 / (4 n_b)."""
    model = create_model("colorization", {**SHAPE, **TINY, "data_shape": (1, 4, 4)})
    colours = [(128, 128, 128)] * 8 + [COLOURS["red"]] * 4 + [COLOURS["green"]] * 3 + [COLOURS["blue"]]
    target = torch.tensor(colours, dtype=torch.uint8).T.reshape(1, 3, 4, 4)
    model.fit_before_training(torch.zeros(1, 1, 4, 4), target)
    chroma = model.colour_field(target)
    bins = colour_bins(chroma, model.cfg.hist_bins).flatten()
    pixel_w = model.hist_weights[bins]
    expected = torch.tensor([16 / (4 * n) for n in [8] * 8 + [4] * 4 + [3] * 3 + [1]])
    assert torch.allclose(pixel_w, expected)
    assert pixel_w.mean().item() == pytest.approx(1.0)
    assert model.hist_weights.max().item() == pytest.approx(4.0)  # unseen bins: as rare as the rarest seen
    # L_hist of an error of 0.5 on the blue pixel's Cb and on a grey pixel's Cr: 4 * 0.25 + 0.5 * 0.25
    pred = chroma.clone()
    pred[0, 0, 3, 3] += 0.5
    pred[0, 1, 0, 0] += 0.5
    assert hist_loss(pred, chroma, model.hist_weights, model.cfg.hist_bins).item() == pytest.approx(1.125)
    assert torch.allclose(histogram_weights(torch.tensor([0, 2, 6, 0])), torch.tensor([2.0, 2.0, 2 / 3, 2.0]))


def test_mahalanobis_loss_by_hand():
    components = torch.tensor([[1.0, 0.0, 0.0]])  # k = 1, lambda_1 = 4
    d = torch.tensor([[2.0, 1.0, 1.0]])
    # (v . d)^2 / 4 + ||d - (v . d) v||^2 / 4 = 4 / 4 + 2 / 4
    assert mahalanobis_loss(d, torch.zeros(1, 3), components, torch.tensor([4.0])).item() == pytest.approx(1.5)


def test_mahalanobis_loss_is_the_distance_under_the_covariance_with_trailing_eigenvalues_lambda_k():
    torch.manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    v = q.T  # orthonormal rows
    lam = torch.tensor([9.0, 4.0, 2.0], dtype=torch.float64)
    full = torch.cat([lam, lam[-1:].expand(2)])  # eigenvalues past the k-th taken as lambda_k
    sigma = v.T @ torch.diag(full) @ v
    pred, target = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    d = pred - target
    exact = (d @ torch.linalg.inv(sigma) * d).sum(1)
    assert torch.allclose(mahalanobis_loss(pred, target, v[:3], lam), exact)
    assert torch.allclose(mahalanobis_loss(pred, target, v, full), exact)  # k = D: the full distance


def test_principal_components_match_an_eigendecomposition():
    torch.manual_seed(2)
    x = torch.randn(400, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    comps, var = principal_components(x, 3)
    evals, evecs = torch.linalg.eigh(torch.cov(x.T))
    assert torch.allclose(var.double(), evals.flip(0)[:3], rtol=1e-5)
    overlap = (comps.double() @ evecs.flip(1)[:, :3]).abs()  # equal up to sign
    assert torch.allclose(overlap, torch.eye(3, dtype=torch.float64), atol=1e-5)
    decaying = torch.randn(600, 300) @ torch.diag(0.8 ** torch.arange(300.0))  # a spectrum like colour fields'
    exact_c, exact_v = principal_components(decaying, 5)
    comps, var = principal_components(decaying, 5, randomized=True)
    assert torch.allclose(var, exact_v, rtol=1e-4)
    assert torch.allclose((comps @ exact_c.T).abs(), torch.eye(5), atol=1e-3)
    from dgm.models.colorization import Colorization

    targets = load_sprites(grey=True, sizes=(2000, 200, 200)).train.targets[:600]
    fields = Colorization.colour_field(targets).flatten(1)  # real colour fields, 600 x 2048
    exact_c, exact_v = principal_components(fields, 20)
    comps, var = principal_components(fields, 20, randomized=True)
    assert torch.allclose(var, exact_v, rtol=1e-3)


# --- the colour space ------------------------------------------------------------------------------
def test_rgb_ycbcr_round_trip_and_the_palette_is_isoluminant():
    levels = torch.arange(0, 256, 5, dtype=torch.float64) / 255
    rgb = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, -1, 1)[None]
    y, chroma = rgb_to_ycbcr(rgb)
    assert chroma.abs().max() <= 1 + 1e-12 and (y >= 0).all() and (y <= 1).all()
    assert (ycbcr_to_rgb(y, chroma) - rgb).abs().max() < 1 / 255
    assert torch.allclose(chroma_to_rgb(y, chroma), rgb, atol=1e-9)  # in gamut: nothing moves
    palette_y = rgb_to_ycbcr(torch.tensor(list(COLOURS.values()), dtype=torch.float64)[:, :, None, None] / 255)[0]
    assert (palette_y * 255 - 128).abs().max() < 0.5


def test_out_of_gamut_chroma_keeps_the_luma_and_the_hue():
    torch.manual_seed(3)
    y = torch.rand(1, 1, 8, 8)
    chroma = torch.randn(1, 2, 8, 8) * 2  # mostly impossible colours at these lumas
    rgb = chroma_to_rgb(y, chroma)
    assert (rgb >= 0).all() and (rgb <= 1).all()
    assert (_luma(rgb[0]) - y[0, 0]).abs().max() < 1e-5
    got = rgb_to_ycbcr(rgb)[1]
    cos = (got * chroma).sum(1) / (got.norm(dim=1) * chroma.norm(dim=1)).clamp(min=1e-12)
    assert (cos[got.norm(dim=1) > 1e-3] > 1 - 1e-4).all()  # the same direction, less saturated
    assert (got.norm(dim=1) <= chroma.norm(dim=1) + 1e-5).all()


# --- the three methods through dgm.api.train ----------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("colorization")
    return {m: dgm.train("colorization", "sprites-grey", root / m, method=m, steps=3, batch_size=16, quiet=True,
                         progress=False, **TINY) for m in ("mdn", "cvae", "l2")}


@pytest.mark.parametrize("method", ["mdn", "cvae", "l2"])
def test_each_method_trains_and_colorizes_with_the_input_luma(runs, sprites, method):
    run = runs[method]
    terms = {"mdn": {"l_hist", "l_mah", "l_grad", "kl", "mdn_nll", "l2"}, "cvae": {"l2", "kl"}, "l2": {"l2"}}[method]
    assert {f"train/{t}" for t in terms} <= set(run.metrics[-1])
    assert (run.path / "colorizations.png").is_file() and not (run.path / "samples.png").exists()
    model = run.model
    grey = sprites.to_float(sprites.test.x[:5])
    k = 3
    out = model.colorize(grey, k, generator=torch.Generator().manual_seed(0))
    assert out.shape == (5, k, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    assert (_luma(out) - grey).abs().max() < 1e-5  # Y is the grey image: every colorization keeps it
    same = model.colorize(grey, k, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    if method == "l2":
        assert torch.equal(out, out[:, :1].expand_as(out))
    if method == "cvae":
        other = model.colorize(grey, k, generator=torch.Generator().manual_seed(1))
        assert not torch.allclose(out, other)
    if method == "mdn":
        p = model.mdn_distribution(grey)
        first = p.mixture_distribution.probs.argmax(1)
        z = p.component_distribution.base_dist.loc[torch.arange(5), first]
        expected = chroma_to_rgb(grey, model.decode_chroma(z, grey))
        assert torch.allclose(out[:, 0], expected, atol=1e-6)  # the most probable mode comes first
        with pytest.raises(DgmError, match="at most 3 colorizations"):
            model.colorize(grey, 4)
        assert bool(model.fitted) and model.variances.min() > 0  # the fitted statistics were saved


def test_no_sampling_from_nothing_and_no_training_without_colour_targets(runs, tmp_path):
    with pytest.raises(DgmError, match="--grey"):
        dgm.sample(runs["l2"], 4)
    with pytest.raises(DgmError, match=NEEDS_PAIRS):
        dgm.train("colorization", "sprites", tmp_path / "x", steps=1, quiet=True, progress=False, **TINY)
    assert not (tmp_path / "x").exists()


# --- dgm sample RUN --grey FILE ------------------------------------------------------------------------
def test_cli_writes_the_colorization_grid(runs, sprites, tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "one.png"
    Image.fromarray(sprites.test.x[0, 0].numpy()).save(png)
    out = tmp_path / "grid.png"
    assert main(["sample", str(runs["cvae"].path), "--grey", str(png), "--k", "4", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    cell = 64 + 2  # 32 px enlarged to 64 (min_size 48), 2 px padding
    assert Image.open(out).size == (5 * cell + 2, cell + 2)  # the input and 4 colorizations
    npz = tmp_path / "three.npz"
    np.savez(npz, x=sprites.test.x[:3].numpy())
    assert main(["sample", str(runs["mdn"].path), "--grey", str(npz), "--k", "3"]) == 0
    written = runs["mdn"].path / "colorizations.png"
    assert capsys.readouterr().out.strip() == str(written)
    assert Image.open(written).size == (4 * cell + 2, 3 * cell + 2)


def test_cli_refuses_a_wrong_size_and_a_model_that_cannot_colorize(runs, tmp_path, capsys):
    from PIL import Image

    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(small)
    assert main(["sample", str(runs["l2"].path), "--grey", str(small)]) == 1
    assert "the model needs [N, 1, 32, 32]" in one_sentence(capsys.readouterr().err)
    vae = tmp_path / "vae"
    assert main(["train", "vae", "--steps", "2", "--out", str(vae), "--no-progress", "hidden_dims=8",
                 "latent_dim=2"]) == 0
    capsys.readouterr()
    assert main(["sample", str(vae), "--grey", str(small)]) == 1
    assert "cannot colorize" in one_sentence(capsys.readouterr().err)


# --- the metrics on models whose answers are known ------------------------------------------------------
class _Truth:
    """Colours every grey image as its true colour image (found by its grey pixels in the split)."""

    def __init__(self, split):
        self.split = split

    def colorize(self, grey, k, generator=None):
        stored = self.split.x.flatten(1).float() / 255
        idx = torch.cdist(grey.flatten(1), stored).argmin(1)
        return (self.split.targets[idx].float() / 255)[:, None].expand(-1, k, -1, -1, -1)


class _Cycle:
    """Colours the object (the pixels of luma 128, which only objects have) with palette colour j in the j-th of
    the k colorizations and keeps the grey background: one of 8 is the truth."""

    def colorize(self, grey, k, generator=None):
        palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255
        obj = (grey * 255).round() == 128
        out = grey[:, None].expand(-1, k, 3, -1, -1).clone()
        for j in range(k):
            out[:, j] = torch.where(obj, palette[j % 8].view(3, 1, 1), grey)
        return out


def test_metrics_of_the_truth_and_of_every_palette_colour(sprites):
    truth = colorization_metrics(_Truth(sprites.test), sprites, k=4, n_examples=60)
    assert truth["distinct_hues"] == 1 and truth["hue_coverage"] == pytest.approx(1 / 8)
    assert truth["true_hue_in_k"] == 1 and truth["best_of_k_error"] == 0 and truth["mean_error"] == 0
    idx = torch.linspace(0, len(sprites.test) - 1, 60).round().long()
    codes = sprites.test.factors[idx, COLOUR].long()
    radius = palette_chroma().norm(dim=1)
    assert truth["object_saturation"] == pytest.approx((radius[codes] / radius.mean()).mean().item(), rel=1e-4)
    cycle = colorization_metrics(_Cycle(), sprites, k=8, n_examples=60)
    assert cycle["distinct_hues"] == 8 and cycle["hue_coverage"] == 1 and cycle["true_hue_in_k"] == 1
    assert cycle["best_of_k_error"] == 0 and cycle["mean_error"] > 0.01
    three = colorization_metrics(_Cycle(), sprites, k=3, n_examples=60)
    first_three = (codes < 3).double().mean().item()  # hues 0, 1, 2 offered
    assert three["distinct_hues"] == 3 and three["hue_coverage"] == pytest.approx(3 / 8)
    assert three["true_hue_in_k"] == pytest.approx(first_three)


def test_no_metrics_without_colorize_or_colour_targets(sprites):
    assert colorization_metrics(torch.nn.Linear(2, 2), sprites) == {}
    assert colorization_metrics(_Cycle(), load_sprites(sizes=(2000, 200, 200))) == {}
    assert palette_chroma().norm(dim=1).min() > 0.3  # every palette colour has a hue to find
    # what the L2 regressor converges to, the mean of the 8 equally likely hues, is nearly grey
    assert palette_chroma().mean(0).norm() / palette_chroma().norm(dim=1).mean() < 0.15
