"""DC-IGN (seed 000): the clamp's forward and backward rules exactly, the batches with one factor varying, the
ELBO of a clamped batch against a hand computation, and the model through `dgm.api.train`, resume and the CLI."""
import dataclasses

import pytest
import torch

import dgm
from dgm import viz
from dgm.cli import main
from dgm.data import load_dataset
from dgm.data.sprites import load_sprites
from dgm.errors import DgmError
from dgm.io import load_tensors
from dgm.models import create_model
from dgm.models.dcign import clamp_to_batch_mean, clamped_units, factor_batch, factor_columns
from dgm.models.vae import diagonal_normal, gaussian_kl
from dgm.training.trainer import CHECKPOINT

SPRITES = {"data_shape": (3, 32, 32), "levels": 256, "factor_sizes": (5, 1, 1, 1, 1, 8, 5)}
TINY = {"conv_channels": (4, 8), "latent_dim": 6, "likelihood": "gaussian", "progress": False}
NAMED = ["scale", "rotation", "x", "y"]


@pytest.fixture(scope="module")
def sprites():
    return load_sprites()  # generated once per process (cached), shared with the runs below


def _model(**options):
    torch.manual_seed(0)
    return create_model("dcign", {**SPRITES, "conv_channels": (4, 8), "latent_dim": 6, "likelihood": "gaussian",
                                  **options}).double()


# --- the clamp ---------------------------------------------------------------------------------
def test_the_clamp_forward_is_the_batch_mean_and_its_gradient_the_difference_from_it():
    g = torch.Generator().manual_seed(1)
    u = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    clamped = torch.tensor([True, False, True, True, False, False, True])
    out = clamp_to_batch_mean(u, clamped)
    mean = u.detach().sum(0) / 5
    for j in range(7):
        if clamped[j]:
            assert torch.allclose(out[:, j], mean[j].expand(5), rtol=0, atol=1e-15)
            assert torch.equal(out[:, j], out[0, j].expand(5))  # the same for every image
        else:
            assert torch.equal(out[:, j], u[:, j])
    upstream = torch.randn(5, 7, generator=g, dtype=torch.float64)
    out.backward(upstream)
    expected = torch.where(clamped, u.detach() - u.detach().mean(0), upstream)
    assert torch.equal(u.grad, expected)
    hand = u.detach()[:, 2] - (u.detach()[:, 2].sum() / 5)
    assert torch.allclose(u.grad[:, 2], hand, rtol=0, atol=1e-15)
    assert not torch.allclose(u.grad[:, 2], upstream[:, 2])  # not the ordinary gradient
    u.grad = None
    (clamp_to_batch_mean(u, clamped, 0.25) * upstream).sum().backward()
    assert torch.allclose(u.grad, torch.where(clamped, 0.25 * (u.detach() - u.detach().mean(0)), upstream),
                          rtol=0, atol=1e-15)


def test_which_units_each_batch_type_clamps():
    named, d = 4, 6
    for k in range(named):
        assert clamped_units(torch.tensor(k), named, d).tolist() == [j != k for j in range(d)]
    assert clamped_units(torch.tensor([named]), named, d).tolist() == [True] * named + [False] * (d - named)


# --- the batches ---------------------------------------------------------------------------------
def test_a_factor_batch_varies_only_its_factor(sprites):
    named = factor_columns(NAMED, sprites.factors)
    assert named == [1, 2, 3, 4]
    n = 16
    for k in range(len(named) + 1):
        f = factor_batch(sprites.renderer.sample_factors, named, k, n, torch.Generator().manual_seed(k))
        varied = [named[k]] if k < len(named) else [0, 5, 6]
        for c in range(f.shape[1]):
            same = torch.equal(f[:, c], f[0, c].expand(n))
            assert same == (c not in varied), (k, c)
        if k < len(named):
            assert len(set(f[:, named[k]].tolist())) == n  # continuous: n distinct values
        spec = sprites.factors
        for c in varied:  # within each factor's range or set
            if spec[c].discrete:
                assert set(f[:, c].tolist()) <= set(range(len(spec[c].values)))
            else:
                assert spec[c].low <= f[:, c].min() and f[:, c].max() <= spec[c].high


def test_draw_renders_the_factor_batch_and_is_a_function_of_step_and_seed(sprites):
    model = _model(latent_dim=6)
    draw = model.batch_source(sprites)
    named = factor_columns(NAMED, sprites.factors)
    for step in range(10):
        x, y, k = draw(step, 8, torch.Generator().manual_seed(100 + step))
        assert y is None and k.dtype == torch.long and int(k) == step % 5
        assert model.batch_types[int(k)] == (NAMED + ["intrinsic"])[step % 5]
        f = factor_batch(sprites.renderer.sample_factors, named, int(k), 8, torch.Generator().manual_seed(100 + step))
        assert torch.equal(x, sprites.to_float(sprites.renderer.render(f)))
        assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
        again = draw(step, 8, torch.Generator().manual_seed(100 + step))
        assert torch.equal(again[0], x) and torch.equal(again[2], k)
        if k != 1:  # a rotation batch of a circle may render equal images; x, y, scale, intrinsic never do
            assert any(not torch.equal(x[i], x[0]) for i in range(1, 8)), step
    assert not torch.equal(draw(3, 8, torch.Generator().manual_seed(0))[0], draw(3, 8, torch.Generator().manual_seed(1))[0])
    binary = model.batch_source(dataclasses.replace(sprites, binarize="dynamic"))  # the binarization too
    x = binary(2, 8, torch.Generator().manual_seed(9))[0]
    assert torch.equal(x, binary(2, 8, torch.Generator().manual_seed(9))[0]) and set(x.unique().tolist()) == {0.0, 1.0}


# --- the objective -------------------------------------------------------------------------------
def test_a_plain_batch_gives_the_vae_loss_and_a_clamped_batch_the_clamped_elbo(sprites):
    model = _model()
    vae = create_model("vae", {k: v for k, v in {**SPRITES, "conv_channels": (4, 8), "latent_dim": 6,
                                                 "likelihood": "gaussian", "architecture": "conv"}.items()
                               if k != "factor_sizes"}).double()
    vae.load_state_dict(model.state_dict())
    x = sprites.to_float(sprites.train.x[:8]).double()
    torch.manual_seed(4)
    ours = model.loss((x, None))
    torch.manual_seed(4)
    theirs = vae.loss((x, None))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)
    # a batch of factor k = 2: every unit but z_2 has the batch mean of its mu and log sigma^2
    with torch.no_grad():
        out = model.encoder(x)
    mu, log_var = out.chunk(2, -1)
    k = 2
    keep = torch.arange(6) == k
    mu_c = torch.where(keep, mu, mu.mean(0))
    lv_c = torch.where(keep, log_var, log_var.mean(0))
    kl_units = 0.5 * (mu_c ** 2 + lv_c.exp() - 1 - lv_c)  # [B, D] by hand
    for j in range(6):
        if j != k:  # a clamped unit costs every image the same KL
            assert torch.allclose(kl_units[:, j], kl_units[0, j].expand(8), rtol=1e-12)
    torch.manual_seed(5)
    clamped = model.loss((x, None, torch.tensor(k)))
    torch.manual_seed(5)
    log_px_z = model.log_px_z(diagonal_normal(torch.cat([mu_c, lv_c], -1)).rsample((1,)), x).mean(0)
    assert torch.allclose(clamped["kl"], kl_units.sum(1).mean(), rtol=1e-10)
    assert torch.allclose(clamped["loss"], -(log_px_z - kl_units.sum(1)).mean(), rtol=1e-10)
    assert not torch.allclose(clamped["kl"], ours["kl"])
    assert model._clamped is None  # the clamp is only on for that call


def test_the_encoder_gradient_is_the_free_units_elbo_gradient_plus_the_pull_to_the_mean(sprites):
    """grad of the clamped loss = grad of [ -ELBO with the clamped outputs held at their (constant) batch means
    + clamp_weight/2 sum over clamped outputs (u - sg(mean))^2 ]: the paper's backward rule, through the encoder."""
    model = _model(clamp_weight=0.5)
    x = sprites.to_float(sprites.train.x[:8]).double()
    k = 4  # the intrinsic batch: z_0 .. z_3 clamped, z_4, z_5 free
    torch.manual_seed(6)
    model.loss((x, None, torch.tensor([k])))["loss"].backward()
    ours = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    out = model.encoder(x)
    clamped = torch.cat([torch.arange(6) < 4] * 2)
    mean = out.detach().mean(0)
    held = torch.where(clamped, mean, out)
    q = diagonal_normal(held)
    torch.manual_seed(6)
    log_px_z = model.log_px_z(q.rsample((1,)), x).mean(0)
    pull = 0.5 * 0.5 * ((out - mean)[:, clamped] ** 2).sum()
    (-(log_px_z - gaussian_kl(q)).mean() + pull).backward()
    for a, p in zip(ours, model.encoder.parameters()):
        assert torch.allclose(a, p.grad, rtol=1e-9, atol=1e-12)
    assert any(a.abs().max() > 0 for a in ours)


def test_one_image_repeated_is_not_changed_by_the_clamp(sprites):
    model = _model()
    x = sprites.to_float(sprites.train.x[3:4]).double().expand(8, -1, -1, -1)
    torch.manual_seed(7)
    plain = model.loss((x, None))
    torch.manual_seed(7)
    clamped = model.loss((x, None, torch.tensor(0)))
    assert torch.allclose(plain["loss"], clamped["loss"], rtol=1e-12)
    plain["loss"].backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    clamped["loss"].backward()
    for name, p in model.named_parameters():  # the decoder sees the same codes
        if name.startswith("decoder"):
            assert torch.allclose(p.grad, grads[name], rtol=1e-9, atol=1e-12), name
    # the encoder's last layer: mu_0 and log sigma^2_0 (free) get their ordinary gradient, the clamped outputs
    # none (each equals its batch mean, so unit - mean = 0)
    free = torch.tensor([0, 6])
    held = torch.tensor([j for j in range(12) if j not in (0, 6)])
    for name in ("encoder.fc.weight", "encoder.fc.bias"):
        g = dict(model.named_parameters())[name].grad
        assert torch.allclose(g[free], grads[name][free], rtol=1e-9, atol=1e-12)
        assert torch.equal(g[held], torch.zeros_like(g[held])) and grads[name][held].abs().max() > 0


# --- refusals ---------------------------------------------------------------------------------------
def _one_sentence(e) -> str:
    text = str(e.value)
    assert "\n" not in text and text.count(". ") == 0, text
    return text


def test_refusals(tmp_path, sprites):
    with pytest.raises(DgmError, match="procedural dataset such as sprites") as e:
        dgm.train("dcign", "digits", out=tmp_path / "d", steps=1, quiet=True, **TINY)
    _one_sentence(e)
    assert not (tmp_path / "d").exists()
    with pytest.raises(DgmError, match="no factor 'hue'; choose factors among shape, scale") as e:
        dgm.train("dcign", "sprites", out=tmp_path / "h", steps=1, quiet=True, factors=("scale", "hue"), **TINY)
    _one_sentence(e)
    assert not (tmp_path / "h").exists()
    with pytest.raises(DgmError, match="'colour' is discrete, so it belongs to the intrinsic units") as e:
        _model(factors=("x", "colour")).batch_source(sprites)
    _one_sentence(e)
    with pytest.raises(DgmError, match="latent_dim=4 leaves no intrinsic units") as e:
        _model(latent_dim=4)
    _one_sentence(e)
    with pytest.raises(DgmError, match="flow=none"):
        _model(flow="planar")
    with pytest.raises(DgmError, match="name a factor twice"):
        _model(factors=("x", "x")).batch_source(sprites)
    assert _model(factors=("y", "scale")).unit_names == {0: "y", 1: "scale"}


# --- through the API, resume and the CLI ----------------------------------------------------------------
def _same_tensors(a, b) -> bool:
    ta, tb = load_tensors(a)[0], load_tensors(b)[0]
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_train_resume_bitwise_and_traverse(tmp_path, sprites, capsys, monkeypatch):
    whole = dgm.train("dcign", "sprites", out=tmp_path / "whole", steps=7, batch_size=16, quiet=True, **TINY)
    part = dgm.train("dcign", "sprites", out=tmp_path / "part", steps=3, batch_size=16, quiet=True, **TINY)
    dgm.resume(part, steps=7, quiet=True)
    assert _same_tensors(whole.path / CHECKPOINT, part.path / CHECKPOINT)
    record = whole.metrics[-1]
    assert record["step"] == 7 and {"train/loss", "train/kl", "train/elbo"} <= set(record)
    assert {"samples.png", "reconstructions.png"} <= {p.name for p in whole.pictures}
    model = whole.model
    assert model.unit_names == {0: "scale", 1: "rotation", 2: "x", 3: "y"}
    assert main(["plot", str(whole.path), "traverse"]) == 0, capsys.readouterr().err
    assert (whole.path / "traverse.png").is_file()
    seen = {}
    monkeypatch.setattr(viz, "save_grid", lambda images, path, **kw: seen.update(kw) or path)
    viz.traversal(model, sprites.to_float(sprites.test.x[:16]), tmp_path / "t.png")
    rows = {label.split(" (")[0] for label in seen["row_labels"]}
    assert rows == {"z0 scale", "z1 rotation", "z2 x", "z3 y", "z4", "z5"}


def test_zoo_lists_dcign_under_seed_000(capsys):
    import json

    assert main(["zoo", "--json"]) == 0
    zoo = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert zoo["dcign"]["family"] == "vae" and "000" in zoo["dcign"]["seeds"]
    assert load_dataset("sprites").renderer is not None
