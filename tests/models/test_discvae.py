"""Attribute2Image's layered disCVAE (seeds 000 and 002): with the gate at 1 it is the cvae on the foreground, the
composite x = x_F g + x_B (1 - g) exactly, each term of the joint bound against a hand computation, its bounds of
log p(x|y), resume bitwise, the NaN guard, and the model through `dgm.api.train`, eval and its pictures."""
import json
import math

import pytest
import torch
from torch import distributions as D

import dgm
from dgm.cli import main
from dgm.data import Dataset, Split, load_dataset
from dgm.data.sprites import load_sprites
from dgm.errors import DgmError, DivergenceError
from dgm.io import load_tensors
from dgm.models import batch_fields, create_model, get_entry
from dgm.runs import model_values_for
from dgm.training import TrainConfig, Trainer
from dgm.training.trainer import CHECKPOINT
from dgm.viz import has_progression, progression_images

SMALL = {"data_shape": (3, 8, 8), "levels": 256, "factor_sizes": (3, 1), "conv_channels": (4, 6), "latent_dim": 3,
         "background_dim": 2, "scale": 0.3}
TINY = {"conv_channels": (8, 16), "latent_dim": 4, "background_dim": 3, "batch_size": 32, "progress": False}


def _small(**options):
    torch.manual_seed(0)
    return create_model("discvae", {**SMALL, **options}).double()


def _batch(n: int = 4, seed: int = 0):
    """Images with values k / 255, attribute vectors [one-hot of 3, U(0, 1)] and random masks, in float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g).double() / 255
    y = torch.cat([torch.nn.functional.one_hot(torch.randint(3, (n,), generator=g), 3), torch.rand(n, 1, generator=g)],
                  1).double()
    return x, y, torch.rand(n, 8, 8, generator=g) < 0.4


def _binned_normal(loc: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """log P(x) of every subpixel under N(loc, scale^2) integrated over x's bin of the 256 levels, the edge bins
    open: [..., C, H, W] (written out from the normal CDF, not with dgm.distributions)."""
    half = 0.5 / 255
    normal = D.Normal(loc, scale)
    upper = torch.where(x > 1 - half, torch.ones_like(loc), normal.cdf(x + half))
    lower = torch.where(x < half, torch.zeros_like(loc), normal.cdf(x - half))
    return torch.log(upper - lower)


def _force_gate(model, logit: float) -> None:
    """Make the foreground decoder's gating map the constant `logit` (its last conv's gate channel: no weights)."""
    last = model.decoder_fg.deconvs[-1]
    with torch.no_grad():
        last.weight[3:] = 0
        last.bias[3:] = logit


def _one_sentence(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("dgm: error: "), err
    return err


# --- the layered model -----------------------------------------------------------------------
def test_with_the_gate_at_one_the_model_is_the_cvae_on_the_foreground():
    model = _small()
    _force_gate(model, 1e4)
    x, y, _ = _batch()
    z = torch.randn(4, 5, dtype=torch.float64)
    with torch.no_grad():
        x_fg, g, x_bg, composite = model.layers(z, y)
        assert torch.equal(g, torch.ones_like(g)) and torch.equal(composite, x_fg)  # x = x_F exactly
        log_px_z, log_pxf, _ = model.log_p_terms(z, x, y, torch.ones(4, 8, 8, dtype=torch.bool))
        # p(x|z,y) is the cvae's binned Gaussian around the foreground decoder's mean image
        assert torch.allclose(log_px_z, _binned_normal(x_fg, x, 0.3).sum((1, 2, 3)), rtol=1e-10)
        assert torch.allclose(log_pxf, log_px_z, rtol=1e-12)  # with the whole image as the mask: the same term
        other = z.clone()
        other[:, 3:] = torch.randn(4, 2, dtype=torch.float64)  # another background code: nothing changes
        assert torch.equal(model.decode(other, y), composite)
        assert torch.equal(model.log_p_terms(other, x, y)[0], log_px_z)
        with torch.no_grad():  # nor do other background weights
            for p in model.decoder_bg.parameters():
                p.add_(0.5)
        assert torch.equal(model.log_p_terms(z, x, y)[0], log_px_z)


def test_the_composite_is_x_F_g_plus_x_B_one_minus_g_exactly():
    model = _small()
    x, y, _ = _batch()
    z = torch.randn(4, 5, dtype=torch.float64)
    with torch.no_grad():
        x_fg, g, x_bg, composite = model.layers(z, y)
        assert g.shape == (4, 1, 8, 8) and x_fg.shape == x_bg.shape == composite.shape == (4, 3, 8, 8)
        assert torch.equal(composite, x_fg * g + x_bg * (1 - g)) and torch.equal(model.decode(z, y), composite)
        assert ((0 < g) & (g < 1)).all()
        assert (composite >= torch.minimum(x_fg, x_bg)).all() and (composite <= torch.maximum(x_fg, x_bg)).all()
        _force_gate(model, -1e4)  # the gate at 0: the background alone, whatever the foreground code and y
        x_fg, g, x_bg, composite = model.layers(z, y)
        assert torch.equal(g, torch.zeros_like(g)) and torch.equal(composite, x_bg)
        other = z.clone()
        other[:, :3] = 0
        assert torch.equal(model.decode(other, y.flip(0)), x_bg)


@pytest.mark.parametrize("beta,mask_weight", [(1.0, 1.0), (0.5, 0.3)])
def test_every_term_of_the_joint_bound_against_a_hand_computation(beta, mask_weight):
    model = _small(beta=beta, mask_weight=mask_weight)
    x, y, mask = _batch()
    torch.manual_seed(7)
    out = model.loss((x, y, mask))
    torch.manual_seed(7)  # the same draws: z_F ~ q(z_F|x,y), then z_B ~ q(z_B|z_F,x,y)
    with torch.no_grad():
        q_fg = model.posterior_fg(x, y)
        z_fg = q_fg.rsample((1,))
        q_bg = model.posterior_bg(x, y, z_fg)
        z = torch.cat([z_fg, q_bg.rsample()], -1)[0]
        x_fg, g, x_bg, composite = model.layers(z, y)
    m = mask.double()
    log_px_z = _binned_normal(composite, x, 0.3).sum((1, 2, 3))
    log_pxf = (_binned_normal(x_fg, x, 0.3) * m[:, None]).sum((1, 2, 3))  # the foreground pixels only
    g = g[:, 0]
    log_pg = (m * torch.log(g) + (1 - m) * torch.log(1 - g)).sum((1, 2))  # Bernoulli(m | g) per pixel
    standard = D.Normal(0.0, 1.0)
    kl = D.kl_divergence(q_fg, standard).sum(-1) + D.kl_divergence(q_bg, standard).sum(-1)[0]
    expected = {"recon": -log_px_z, "fg_recon": -log_pxf, "mask_bce": -log_pg, "kl": kl,
                "joint_bound": log_px_z + log_pxf + log_pg - kl,
                "loss": -(log_px_z + log_pxf + mask_weight * log_pg - beta * kl)}
    assert set(out) == set(expected)  # no `elbo`: the bound is of log p(x, x_F, g | y)
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value.mean().item(), rel=1e-9), key
    assert out["loss"].requires_grad and not out["joint_bound"].requires_grad


def test_the_bounds_of_log_p_x_given_y_need_no_mask_and_order_as_they_should():
    model = _small()
    with torch.no_grad():  # encoders whose q(z_F|x,y) and q(z_B|z_F,x,y) miss the posterior: gaps to see
        model.encoder_fg.fc.bias[:3] += 1.5
        model.encoder_bg.fc.bias[:2] += 1.5
    x, y, _ = _batch(3)
    reps = 60
    xr, yr = x.repeat(reps, 1, 1, 1), y.repeat(reps, 1)
    torch.manual_seed(0)
    with torch.no_grad():
        draws = {"elbo": model.elbo(xr, y=yr), 1: model.iwae(xr, 1, y=yr), 20: model.iwae(xr, 20, y=yr)}
    mean = {k: d.reshape(reps, 3).mean(0) for k, d in draws.items()}
    se = {k: d.reshape(reps, 3).std(0) / math.sqrt(reps) for k, d in draws.items()}
    assert torch.all((mean[1] - mean["elbo"]).abs() < 4 * (se[1] + se["elbo"]))  # IWAE_1: the same expectation
    assert torch.all(mean[20] - mean["elbo"] > 3 * (se[20] + se["elbo"]))


def test_sampling_encoding_and_the_figures_have_the_shapes_and_ranges():
    model = _small()
    x, y, _ = _batch(5)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        s = model.sample(5, generator=g)
        assert s.shape == (5, 3, 8, 8) and 0 <= s.min() and s.max() <= 1
        g = torch.Generator().manual_seed(1)  # z, then attribute vectors drawn uniformly
        z = torch.randn(5, 5, generator=g, dtype=torch.float64)
        drawn = model.random_attributes(5, g)
        assert torch.equal(drawn[:, :3].sum(1), torch.ones(5)) and ((0 <= drawn[:, 3]) & (drawn[:, 3] <= 1)).all()
        assert torch.equal(s, model.decode(z, drawn))
        assert model.sample(5, y=y).shape == (5, 3, 8, 8)
        code = model.encode(x, y)
        assert code.shape == (5, 5) and model.reconstruct(x, y).shape == x.shape
        figures = model.figures(x, y)
        layers, nrow = figures["layers"]
        x_fg, gate, x_bg, composite = model.layers(code, y)
        assert nrow == 5 and layers.shape == (25, 3, 8, 8)
        assert torch.equal(layers[0::5], x) and torch.equal(layers[1::5], x_fg) and torch.equal(layers[4::5], composite)
        assert torch.equal(layers[2::5], gate.expand(-1, 3, -1, -1)) and torch.equal(layers[3::5], x_bg)
        sampled, nrow = figures["sampled_layers"]
        assert nrow == 4 and sampled.shape == (20, 3, 8, 8) and 0 <= sampled.min() and sampled.max() <= 1
    assert has_progression(model)
    y_min, y_max = model.attribute_ends(drawn[0])
    with torch.no_grad():
        rows = progression_images(model, z[:1], list(zip(y_min, y_max)), torch.tensor([0.0, 0.5, 1.0]))
        assert rows.shape == (2, 1, 3, 3, 8, 8)
        assert torch.allclose(rows[1, 0, 1], model.decode(z[:1], (y_min[1] + y_max[1])[None] / 2)[0], atol=1e-12)
    with pytest.raises(DgmError, match="not class labels"):
        model.sample(2, y=1)
    with pytest.raises(DgmError, match="latent_dim \\+ background_dim"):
        model.decode(torch.zeros(2, 3, dtype=torch.float64), y[:2])


def test_refusals():
    with pytest.raises(DgmError, match="sprites"):
        create_model("discvae", {"data_shape": (1, 8, 8), "levels": 17})
    model = _small()
    x, y, _ = _batch()
    with pytest.raises(DgmError, match="masks"):
        model.loss((x, y))
    digits = load_dataset("digits")
    with pytest.raises(DgmError, match="has none"):
        model.batch_fields(digits, digits.test)
    with pytest.raises(DgmError, match="attribute vectors y"):
        model.encode(x)


# --- training ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sprites():
    return load_sprites(sizes=(96, 32, 32))


def _fit(out, data, steps, resume=False):
    torch.manual_seed(0)
    values = model_values_for(data, get_entry("discvae").config_cls)
    model = create_model("discvae", {**values, "conv_channels": (4, 8), "latent_dim": 3, "background_dim": 2})
    Trainer(model, data, TrainConfig(steps=steps, batch_size=16, checkpoint_every=3, progress=False, device="cpu"),
            out_dir=out).fit(resume_from=out / CHECKPOINT if resume else None)
    return model


def test_stop_and_resume_is_bitwise_identical(tmp_path, sprites):
    straight = _fit(tmp_path / "a", sprites, 8)  # 6 steps an epoch: a validation, then a stop mid-epoch
    _fit(tmp_path / "b", sprites, 5)
    resumed = _fit(tmp_path / "b", sprites, 8, resume=True)
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key
    ckpt_a, ckpt_b = load_tensors(tmp_path / "a" / CHECKPOINT)[0], load_tensors(tmp_path / "b" / CHECKPOINT)[0]
    assert ckpt_a.keys() == ckpt_b.keys() and all(torch.equal(ckpt_a[k], ckpt_b[k]) for k in ckpt_a)
    record = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert any("valid/joint_bound" in r for r in record) and not any("valid/elbo" in r for r in record)


def test_a_nan_in_the_data_stops_training_with_the_divergence_error(sprites):
    x = sprites.train.x[:64].float()
    x[5] = float("nan")
    train = Split(x, sprites.train.y[:64], factors=sprites.train.factors[:64], masks=sprites.train.masks[:64])
    data = Dataset("sprites", train, sprites.valid, sprites.test, levels=256, num_classes=5, factors=sprites.factors)
    torch.manual_seed(0)
    model = create_model("discvae", {**model_values_for(data, get_entry("discvae").config_cls),
                                     "conv_channels": (4, 8), "latent_dim": 3, "background_dim": 2})
    with pytest.raises(DivergenceError, match="NaN"):
        Trainer(model, data, TrainConfig(epochs=1, batch_size=32, progress=False, device="cpu")).fit()


def test_train_eval_pictures_and_samples_through_the_api_and_cli(tmp_path, capsys):
    run = dgm.train("discvae", data="sprites", out=tmp_path / "run", steps=30, quiet=True, **TINY)
    names = {p.name for p in run.pictures}
    assert {"samples.png", "reconstructions.png", "progression.png", "layers.png", "sampled_layers.png"} <= names
    record = run.metrics[-1]
    assert {"train/loss", "train/joint_bound", "train/recon", "train/fg_recon", "train/mask_bce",
            "train/kl"} <= set(record) and "train/elbo" not in record
    model = run.model
    assert model.cfg.factor_sizes == (5, 1, 1, 1, 1, 8, 5)
    data = load_dataset("sprites")
    attributes, masks = batch_fields(model, data, data.test)
    assert torch.equal(attributes, data.attributes(data.test)) and torch.equal(masks, data.test.masks)
    scores = dgm.evaluate(run, ["likelihood"], n_examples=20, k=5, progress=False)  # log p(x|y), no masks needed
    idx = torch.linspace(0, len(data.test) - 1, 20).round().long()
    x = data.to_float(data.test.x[idx])
    torch.manual_seed(0)
    with torch.no_grad():
        elbo, iwae = model.elbo(x, y=attributes[idx]), model.iwae(x, 5, y=attributes[idx])
    assert scores["conditional_elbo"] == pytest.approx(elbo.mean().item(), rel=1e-5)
    assert scores["conditional_log_likelihood"] == pytest.approx(iwae.mean().item(), rel=1e-5)
    s = dgm.sample(run, 6, seed=2)
    assert s.shape == (6, 3, 32, 32) and 0 <= s.min() and s.max() <= 1
    capsys.readouterr()
    assert main(["plot", str(run.path), "progression"]) == 0
    assert main(["sample", str(run.path), "--label", "1"]) == 1
    assert "not class labels" in _one_sentence(capsys.readouterr().err)


def test_zoo_lists_the_discvae_under_seeds_000_and_002(capsys):
    assert main(["zoo", "--json"]) == 0
    zoo = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert zoo["discvae"]["seeds"] == "000,002" and zoo["discvae"]["family"] == "vae"
    assert {"loss", "sample", "encode", "decode", "elbo", "iwae"} <= set(zoo["discvae"]["capabilities"].split())
