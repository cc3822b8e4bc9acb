"""pix2pix (seed 001; Isola et al. 2017): the U-Net keeps every size and has its skips, the PatchGAN's receptive
field by a gradient probe, the objective's exact values, the three tasks' inputs, and training end to end through
`dgm.train` (each task and the L1-only baseline, bitwise resume, the NaN guard, one-sentence refusals)."""
import math

import pytest
import torch

import dgm
from dgm.cli import main
from dgm.data import Dataset, Split
from dgm.data.sprites import luminance, load_sprites
from dgm.errors import DgmError, DivergenceError
from dgm.io import load_tensors
from dgm.models import create_model
from dgm.models.pix2pix import sobel_edges, task_input
from dgm.nn.translation import PatchDiscriminator, UNet, patch_receptive_field, unet_depth
from dgm.training import TrainConfig, Trainer
from dgm.training.trainer import CHECKPOINT
from conftest import one_sentence

TINY = {"base_channels": 4, "patch_layers": 1}
TRAIN = {"steps": 4, "base_channels": 8, "batch_size": 16, "quiet": True, "progress": False}



@pytest.fixture(scope="module")
def sprites():
    return load_sprites(sizes=(64, 16, 16))


# --- the U-Net ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,depth", [(8, 3), (16, 4), (28, 2), (32, 5), (64, 6), (7, 0)])
def test_the_unet_keeps_the_image_size_at_every_depth(size, depth):
    assert unet_depth(size, size) == depth
    net = UNet(2, 3, base=4, size=(size, size))
    assert net.depth == depth
    assert net(torch.rand(2, 2, size, size)).shape == (2, 3, size, size)
    # dropout on the three decoder layers nearest the bottleneck, never on the output layer
    dropouts = [any(isinstance(m, torch.nn.Dropout) for m in layer.modules()) for layer in net.decoder]
    assert dropouts == [j < min(3, depth - 1) for j in range(len(net.decoder))]


def test_the_unets_skips_carry_the_input_past_a_zeroed_bottleneck():
    torch.manual_seed(0)
    net = UNet(1, 3, base=4, dropout=0.0, size=(32, 32)).eval()
    seen = []

    def zero(module, inputs, out):
        seen.append(out.shape)
        return torch.zeros_like(out)

    net.encoder[-1].register_forward_hook(zero)
    x = torch.rand(2, 1, 32, 32)
    out = net(x)
    assert seen[0][-2:] == (1, 1)  # the bottleneck: 5 halvings, 32 -> 1
    assert not torch.allclose(out[0], out[1])  # the output still depends on the input
    x1 = x[:1].clone().requires_grad_(True)
    net(x1).sum().backward()
    assert x1.grad.abs().sum() > 0


# --- the PatchGAN ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_layers,size,rf", [(1, 48, 16), (2, 72, 34), (3, 128, 70)])
def test_the_patchgans_receptive_field_by_a_gradient_probe(n_layers, size, rf):
    """With positive weights and LeakyReLU (no dead zone) every input pixel a logit reads gets a positive gradient,
    so the gradient's support is exactly the logit's receptive field."""
    assert patch_receptive_field(n_layers) == rf
    torch.manual_seed(0)
    d = PatchDiscriminator(1, base=2, n_layers=n_layers, norm="none").double()
    with torch.no_grad():
        for p in d.parameters():
            p.uniform_(0.01, 0.1)
    x = torch.rand(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    out = d(x)
    i, j = out.shape[-2] // 2, out.shape[-1] // 2
    out[0, 0, i, j].backward()
    support = x.grad[0, 0] != 0
    rows, cols = support.any(1).nonzero().squeeze(1), support.any(0).nonzero().squeeze(1)
    assert len(rows) == rf and len(cols) == rf
    assert rows[0] > 0 and cols[0] > 0 and rows[-1] < size - 1 and cols[-1] < size - 1  # inside the image
    assert support[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and support.sum() == rf * rf


def test_the_patchgan_is_the_papers_c64_c128_c256_c512():
    d = PatchDiscriminator(4)
    convs = [m for m in d if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride for c in convs] == [(2, 2)] * 3 + [(1, 1)] * 2
    assert not isinstance(d[1], torch.nn.BatchNorm2d) and sum(isinstance(m, torch.nn.BatchNorm2d) for m in d) == 3
    assert d(torch.rand(2, 4, 32, 32)).shape == (2, 1, 2, 2)


# --- the objective -----------------------------------------------------------------------------------------
def _frozen(model):
    """Optimizers that change nothing, so a train_step's reported losses can be checked against the model."""
    opt = {"generator": torch.optim.SGD(model.generator.parameters(), lr=0.0)}
    if model.discriminator is not None:
        opt["discriminator"] = torch.optim.SGD(model.discriminator.parameters(), lr=0.0)
    return opt


def _batch(n=4, size=16):
    torch.manual_seed(1)
    b = torch.rand(n, 3, size, size, dtype=torch.float64)
    a = (torch.rand(n, 1, size, size) > 0.5).to(torch.uint8) * 255
    return b, a


def test_without_the_gan_term_the_loss_is_lambda_times_the_mean_absolute_error():
    torch.manual_seed(0)
    model = create_model("pix2pix", {"data_shape": (3, 16, 16), **TINY, "gan_weight": 0.0, "dropout": 0.0,
                                     "l1_weight": 100.0}).double()
    assert model.discriminator is None and list(model.optimizers(TrainConfig())) == ["generator"]
    b, a = _batch()
    expected = 100 * (torch.sigmoid(model.generator(a.double() / 255)) - b).abs().mean()
    out = model.train_step((b, a), _frozen(model), 0)
    assert set(out) == {"loss_g", "l1"}
    assert torch.allclose(out["loss_g"], expected, rtol=1e-12, atol=0)
    assert torch.allclose(out["l1"], expected / 100, rtol=1e-12, atol=0)


def test_at_zero_logits_ds_halved_loss_is_log_2():
    """D = 1/2 everywhere: L_D = 1/2 (log 2 + log 2) = log 2; G's non-saturating term is log 2 as well."""
    torch.manual_seed(0)
    model = create_model("pix2pix", {"data_shape": (3, 16, 16), **TINY, "dropout": 0.0, "l1_weight": 10.0,
                                     "gan_weight": 2.0}).double()
    last = model.discriminator[-1]
    assert model.discriminator[0].in_channels == 1 + 3  # D sees the input beside the target
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    b, a = _batch()
    l1 = (torch.sigmoid(model.generator(a.double() / 255)) - b).abs().mean()
    out = model.train_step((b, a), _frozen(model), 0)
    assert out["loss_d"].item() == pytest.approx(math.log(2), abs=1e-12)
    assert out["d_real"].item() == out["d_fake"].item() == 0.5
    assert out["adversarial"].item() == pytest.approx(math.log(2), abs=1e-12)
    assert out["loss_g"].item() == pytest.approx(2 * math.log(2) + 10 * l1.item(), abs=1e-10)


# --- the tasks' inputs -------------------------------------------------------------------------------------
def test_the_task_inputs_are_the_mask_the_luma_and_a_binary_edge_map(sprites):
    split = sprites.train
    model = create_model("pix2pix", {"data_shape": (3, 32, 32), **TINY, "task": "mask"})
    (a,) = model.batch_fields(sprites, split)
    assert a.dtype == torch.uint8 and a.shape == (64, 1, 32, 32)
    assert torch.equal(a, split.masks[:, None].to(torch.uint8) * 255)
    assert torch.equal(task_input("grey", split.x), luminance(split.x))
    assert torch.equal(task_input("grey", split.x.float() / 255), luminance(split.x))  # floats in [0, 1] too
    edges = task_input("edges", split.x)
    assert set(edges.unique().tolist()) == {0, 255}
    assert edges.shape == (64, 1, 32, 32)
    assert not task_input("edges", torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)).any()  # a constant image


def test_sobel_edges_mark_the_two_columns_beside_a_step():
    """A vertical step of height s gives g_x = 4 s in the columns on either side of it and 0 elsewhere."""
    grey = torch.zeros(1, 1, 6, 10)
    grey[..., 5:] = 100  # 4 * 100 = 400 > 128
    edges = sobel_edges(grey)
    assert (edges[0, 0, :, 4:6] == 255).all() and edges[0, 0].sum() == 2 * 6 * 255
    grey[..., 5:] = 30  # 4 * 30 = 120 < 128: no edge
    assert not sobel_edges(grey).any()


# --- training end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pix2pix")
    out = {task: dgm.train("pix2pix", data="sprites", out=root / task, task=task, **TRAIN)
           for task in ("mask", "grey", "edges")}
    out["l1"] = dgm.train("pix2pix", data="sprites", out=root / "l1", gan_weight=0.0, **TRAIN)
    return out


@pytest.mark.parametrize("kind", ["mask", "grey", "edges", "l1"])
def test_each_task_trains_and_translates_into_images(runs, sprites, kind):
    run = runs[kind]
    terms = {"loss_g", "l1"} | (set() if kind == "l1" else {"loss_d", "d_real", "d_fake", "adversarial"})
    assert {f"train/{t}" for t in terms} == {k for k in run.metrics[-1] if k.startswith("train/")}
    assert (run.path / "translations.png").is_file() and not (run.path / "samples.png").exists()
    model = run.model
    a = task_input(model.cfg.task, sprites.test.x[:5], sprites.test.masks[:5])
    out = model.translate(a, generator=torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, model.translate(a.float() / 255, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(out, model.translate(a, generator=torch.Generator().manual_seed(1)))  # dropout is on
    grid, nrow = model.figures(sprites.test.x[:2].float() / 255, a[:2])["translations"]
    assert nrow == 3 and grid.shape == (6, 3, 32, 32)


def test_no_sampling_from_nothing_and_a_wrong_input_shape_is_refused(runs):
    with pytest.raises(DgmError, match="--input"):
        dgm.sample(runs["mask"], 4)
    with pytest.raises(DgmError, match=r"\[N, 1, 32, 32\]"):
        runs["mask"].model.translate(torch.zeros(2, 3, 32, 32))


def test_resume_is_bitwise(tmp_path):
    options = {**TRAIN, "steps": 2, "base_channels": 4}
    whole = dgm.train("pix2pix", data="sprites", out=tmp_path / "whole", **{**options, "steps": 4})
    part = dgm.train("pix2pix", data="sprites", out=tmp_path / "part", **options)
    dgm.resume(part, steps=4, quiet=True)
    for name in (CHECKPOINT, "model.safetensors"):
        a, b = load_tensors(whole.path / name)[0], load_tensors(part.path / name)[0]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert any(k.startswith("opt/discriminator") for k in load_tensors(whole.path / CHECKPOINT)[0])


def test_a_nan_loss_stops_training_with_the_divergence_error(sprites):
    x = sprites.train.x.float()
    x[::4] = float("nan")
    data = Dataset("sprites", Split(x, masks=sprites.train.masks), sprites.valid, sprites.test, levels=256)
    model = create_model("pix2pix", {"data_shape": (3, 32, 32), **TINY})
    with pytest.raises(DivergenceError, match="NaN"):
        Trainer(model, data, TrainConfig(steps=2, batch_size=32, progress=False, device="cpu")).fit()


def test_data_that_cannot_make_the_task_is_refused_inone_sentence(tmp_path, capsys):
    for data, task, words in [("sprites-grey", "grey", "train on sprites"), ("sprites-grey", "edges", "colour"),
                              ("digits", "mask", "masks")]:
        assert main(["train", "pix2pix", "--data", data, "--steps", "1", "--out", str(tmp_path / task),
                     "--no-progress", f"task={task}", "base_channels=4"]) == 1
        assert words in one_sentence(capsys.readouterr().err)
        assert not (tmp_path / task).exists()
    with pytest.raises(DgmError, match="unknown task"):
        task_input("depth", torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
