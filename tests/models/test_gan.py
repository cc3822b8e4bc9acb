"""The GAN family's mathematics: the optimal discriminator, the two generator losses, the
gradient penalty, weight clipping; exact resume; DCGAN shapes; conditioning; mode coverage."""
import json

import pytest
import torch
from torch import nn

from dgm.cli import main
from dgm.data import Dataset, Split, load_dataset
from dgm.data.toy import TOY_MIXTURES
from dgm.errors import DgmError
from dgm.evaluation.modes import mode_coverage
from dgm.io import load_tensors
from dgm.models import create_model
from dgm.models.gan import (
    dcgan_plan,
    gradient_penalty,
    minimax_generator_loss,
    non_saturating_generator_loss,
    vector_arithmetic,
)
from dgm.training import TrainConfig, Trainer
from dgm.training.trainer import CHECKPOINT, METRICS


class Shift(nn.Module):
    """A fixed generator G(z) = z + mu: with z ~ N(0, 1), p_g = N(mu, 1)."""

    def __init__(self, mu: float = 1.0):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor([mu]))

    def forward(self, z):
        return z + self.mu


@pytest.mark.parametrize("name", ["gan", "lsgan"])
def test_discriminator_trained_against_a_fixed_generator_approaches_the_density_ratio(name):
    # D*(x) = p_data / (p_data + p_g) (seed 003); for LSGAN (b p_data + a p_g) / (p_data + p_g), the same with a=0, b=1
    model = create_model(name, {"data_shape": (1,), "levels": 0, "latent_dim": 1, "hidden_dims": (32, 32),
                                "g_lr": 0.0, "d_lr": 3e-3, "betas": (0.9, 0.999)})
    model.generator = Shift(1.0)  # p_g = N(1, 1); g_lr = 0 keeps it fixed
    optimizers = model.optimizers(TrainConfig())
    for step in range(300):
        model.train_step((torch.randn(2048, 1), None), optimizers, step)  # p_data = N(0, 1)
    grid = torch.linspace(-2, 3, 51)[:, None]
    with torch.no_grad():
        d = model.critic(grid)[0]
    d = torch.sigmoid(d) if name == "gan" else d
    d_star = torch.sigmoid(0.5 - grid[:, 0])  # log N(x; 0, 1) - log N(x; 1, 1) = 1/2 - x
    assert (d - d_star).abs().max() < 0.05
    assert model.generator.mu.item() == 1.0


def test_gradient_penalty_is_zero_exactly_for_unit_gradient_norm():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 2, 3, generator=g)
    w = w / w.norm()
    x_real, x_fake = torch.rand(7, 1, 2, 3, generator=g), torch.rand(7, 1, 2, 3, generator=g)
    for scale, expected in ((1.0, 0.0), (2.0, 1.0), (0.5, 0.25)):  # gp = (|scale w| - 1)^2 at every x_hat
        gp = gradient_penalty(lambda x: (scale * w * x).flatten(1).sum(1), x_real, x_fake)
        assert gp.shape == (7,)
        assert torch.allclose(gp, torch.full((7,), expected), atol=1e-6)
    # a non-linear critic: the gradient at x_hat = eps x + (1 - eps) x_fake, checked by hand for f(x) = |x|^2
    eps = torch.rand(7, generator=g)
    x_hat = eps[:, None, None, None] * x_real + (1 - eps[:, None, None, None]) * x_fake
    gp = gradient_penalty(lambda x: x.pow(2).flatten(1).sum(1), x_real, x_fake, eps=eps)
    assert torch.allclose(gp, (2 * x_hat.flatten(1).norm(dim=1) - 1).pow(2), atol=1e-5) and (gp > 0).all()


def test_minimax_and_non_saturating_losses_differ_where_d_rejects_the_samples():
    logit = torch.tensor([-10.0, -5.0, 0.0, 5.0], requires_grad=True)  # D(G(z)) = sigmoid(logit)
    (grad_minimax,) = torch.autograd.grad(minimax_generator_loss(logit).sum(), logit)
    (grad_ns,) = torch.autograd.grad(non_saturating_generator_loss(logit).sum(), logit)
    d = torch.sigmoid(logit.detach())
    assert torch.allclose(grad_minimax, -d) and torch.allclose(grad_ns, -(1 - d))  # d/da log(1-D), d/da -log D
    assert (grad_minimax < 0).all() and (grad_ns < 0).all()  # both push D(G(z)) up: the same direction
    assert grad_minimax[0].abs() < 1e-4 < 0.99 < grad_ns[0].abs()  # D -> 0: minimax saturates, -log D does not


@pytest.mark.parametrize("loss", [minimax_generator_loss, non_saturating_generator_loss])
def test_both_generator_losses_have_the_same_fixed_point(loss):
    # p_data = N(0, 1), G(z) = z + mu, D fixed at its optimum D*_mu: logit(x) = log p_data - log p_g = mu^2/2 - mu x
    z = torch.special.ndtri(torch.linspace(0.0005, 0.9995, 2001))  # deterministic quantiles of N(0, 1)
    for mu0, sign in ((0.0, 0), (1.0, 1), (-1.0, -1), (0.3, 1)):
        mu = torch.tensor(mu0, requires_grad=True)
        x_fake = z + mu
        logit = mu0**2 / 2 - mu0 * x_fake  # D*_mu0 held fixed, as in alternating training
        (grad,) = torch.autograd.grad(loss(logit).mean(), mu)
        if sign == 0:
            assert grad.abs() < 1e-7  # p_g = p_data is stationary for both losses
        else:
            assert torch.sign(grad) == sign  # gradient descent moves mu towards 0 for both


def test_weight_clipping_keeps_every_critic_parameter_in_range():
    for arch, shape in (("mlp", (2,)), ("conv", (1, 8, 8))):
        model = create_model("wgan", {"data_shape": shape, "levels": 0 if arch == "mlp" else 17, "architecture": arch,
                                      "hidden_dims": (16, 16), "base_channels": 4, "d_lr": 0.05})
        optimizers = model.optimizers(TrainConfig())
        x = torch.rand(32, *shape)
        for step in range(3):
            model.train_step((x, None), optimizers, step)
        params = torch.cat([p.detach().flatten() for p in model.discriminator.parameters()])
        assert params.abs().max() <= 0.01
        assert (params.abs() == 0.01).float().mean() > 0.25  # the clip was active, not vacuous


def test_generator_step_leaves_no_gradient_in_the_discriminator():
    model = create_model("gan", {"data_shape": (2,), "levels": 0, "hidden_dims": (8,)})
    optimizers = model.optimizers(TrainConfig())
    seen = {}

    def record(opt, args, kwargs):
        seen["d"] = [p.grad.clone() for p in model.discriminator.parameters()]

    optimizers["discriminator"].register_step_pre_hook(record)
    model.train_step((torch.randn(16, 2), None), optimizers, 0)
    for before, p in zip(seen["d"], model.discriminator.parameters()):
        assert torch.equal(before, p.grad) and p.requires_grad
    assert all(p.grad is not None for p in model.generator.parameters())


def _points(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda m: Split(torch.randn(m, 2, generator=g), torch.randint(0, 4, (m,), generator=g))  # noqa: E731
    return Dataset("points", make(n), make(16), make(16), levels=0, num_classes=4)


def _images(n=48, shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda m: Split(torch.randint(0, 17, (m, *shape), generator=g, dtype=torch.uint8),  # noqa: E731
                           torch.randint(0, 10, (m,), generator=g))
    return Dataset("tiny", make(n), make(16), make(16), levels=17, num_classes=10)


def _run(tmp, name, options, dataset, resume_from=None, **cfg):
    torch.manual_seed(0)
    model = create_model(name, {"data_shape": dataset.shape, "levels": dataset.levels,
                                "num_classes": dataset.num_classes, **options})
    Trainer(model, dataset, TrainConfig(batch_size=16, progress=False, device="cpu", **cfg), out_dir=tmp).fit(
        resume_from=resume_from)
    return model


@pytest.mark.parametrize("name,options,dataset", [
    ("wgan-gp", {"hidden_dims": (16, 16), "latent_dim": 4}, _points()),
    ("dcgan", {"base_channels": 4, "latent_dim": 8}, _images()),
    ("acgan", {"hidden_dims": (16,), "latent_dim": 4}, _points()),
])
def test_stop_and_resume_is_bitwise_identical(tmp_path, name, options, dataset):
    total = {"steps": 10, "checkpoint_every": 3}
    straight = _run(tmp_path / "straight", name, options, dataset, **total)
    _run(tmp_path / "stopped", name, options, dataset, steps=6, checkpoint_every=3)  # 4 steps/epoch: mid-epoch
    resumed = _run(tmp_path / "stopped", name, options, dataset, resume_from=tmp_path / "stopped" / CHECKPOINT,
                   **total)
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key  # batch-norm running statistics included
    ckpt_a, _ = load_tensors(tmp_path / "straight" / CHECKPOINT)
    ckpt_b, _ = load_tensors(tmp_path / "stopped" / CHECKPOINT)
    assert any(k.startswith("opt/generator") for k in ckpt_a) and any(k.startswith("opt/discriminator") for k in ckpt_a)
    assert ckpt_a.keys() == ckpt_b.keys() and all(torch.equal(ckpt_a[k], ckpt_b[k]) for k in ckpt_a)
    records = [json.loads(line) for line in open(tmp_path / "straight" / METRICS)]
    assert {"train/loss_d", "train/loss_g", "train/d_real", "train/d_fake"} <= records[-1].keys()
    assert "train/loss" not in records[-1]


@pytest.mark.parametrize("shape,plan", [((1, 8, 8), (2, 2, 2)), ((1, 28, 28), (7, 7, 2)), ((3, 32, 32), (4, 4, 3))])
def test_dcgan_is_sized_from_the_image_shape(shape, plan):
    assert dcgan_plan(*shape[1:]) == plan
    model = create_model("dcgan", {"data_shape": shape, "levels": 256, "base_channels": 8})
    x = model.sample(5)
    assert x.shape == (5, *shape) and x.min() >= 0 and x.max() <= 1
    d_real, class_logits = model.critic(torch.rand(5, *shape))
    assert d_real.shape == (5,) and class_logits is None
    strided = [m for m in model.generator.modules() if isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2)]
    assert len(strided) == plan[2]
    model.train_step((torch.rand(4, *shape), None), model.optimizers(TrainConfig()), 0)


def test_sampling_leaves_batch_norm_statistics_and_mode_alone():
    model = create_model("dcgan", {"data_shape": (1, 8, 8), "levels": 17, "base_channels": 4})
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = model.sample(4, generator=torch.Generator().manual_seed(1))
    b = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and model.generator.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name,arch", [("cgan", "mlp"), ("cgan", "conv"), ("acgan", "mlp"), ("acgan", "conv")])
def test_conditional_sampling_respects_the_labels(name, arch):
    shape = (1, 8, 8)
    model = create_model(name, {"data_shape": shape, "levels": 17, "num_classes": 10, "architecture": arch,
                                "hidden_dims": (32,), "base_channels": 4}).eval()
    y = torch.tensor([0, 3, 3, 9])
    assert model.sample(4, y=y).shape == (4, *shape) and model.sample(3, y=7).shape == (3, *shape)
    assert model.sample(12).shape == (12, *shape)  # labels cycle 0..9, 0, 1
    z = torch.randn(1, model.cfg.latent_dim).expand(10, -1)
    x = model.generate(z, torch.arange(10))
    assert not torch.allclose(x[0], x[1])  # the same z with another label gives another image
    with pytest.raises(DgmError, match="labels"):
        model.sample(4, y=torch.tensor([0, 1]))
    d_real, class_logits = model.critic(torch.rand(4, *shape), y)
    assert d_real.shape == (4,)
    assert (class_logits.shape == (4, 10)) if name == "acgan" else class_logits is None
    out = model.train_step((torch.rand(4, *shape), y), model.optimizers(TrainConfig()), 0)
    assert ("loss_class" in out) == (name == "acgan")
    with pytest.raises(DgmError, match="class labels"):
        create_model(name, {"data_shape": shape, "levels": 17})


def test_vector_arithmetic_decodes_the_combined_mean_code():
    model = create_model("gan", {"data_shape": (1, 4, 4), "levels": 17, "latent_dim": 6, "hidden_dims": (8,)})
    z_a, z_b, z_c = torch.randn(3, 6), torch.randn(3, 6), torch.randn(3, 6)
    out = vector_arithmetic(model, z_a, z_b, z_c)
    expected = model.generate((z_a.mean(0) - z_b.mean(0) + z_c.mean(0))[None])
    assert out.shape == (1, 1, 4, 4) and torch.equal(out, expected)
    assert torch.allclose(vector_arithmetic(model, z_a, z_b, z_b), model.generate(z_a.mean(0, keepdim=True)))


def test_optimizers_follow_each_paper_and_refuse_ignored_training_options():
    shape = {"data_shape": (2,), "levels": 0}
    wgan = create_model("wgan", shape).optimizers(TrainConfig())
    assert isinstance(wgan["discriminator"], torch.optim.RMSprop)
    assert wgan["discriminator"].param_groups[0]["lr"] == 5e-5 and wgan["generator"].param_groups[0]["lr"] == 5e-5
    gp = create_model("wgan-gp", shape)
    assert gp.cfg.n_critic == 5 and gp.cfg.gp_weight == 10
    group = gp.optimizers(TrainConfig())["discriminator"].param_groups[0]
    assert group["lr"] == 1e-4 and tuple(group["betas"]) == (0.0, 0.9)
    with pytest.raises(DgmError, match="g_lr, d_lr"):
        gp.optimizers(TrainConfig(lr=3e-4))
    with pytest.raises(DgmError, match="batch norm"):
        create_model("wgan-gp", {"data_shape": (1, 8, 8), "levels": 17, "architecture": "conv", "d_norm": "batch"})
    with pytest.raises(DgmError, match="architecture=mlp"):
        create_model("dcgan", shape)


def test_mode_coverage_on_constructed_samples():
    centres, sd = TOY_MIXTURES["ring8"]
    assert mode_coverage(centres.repeat(3, 1), centres, sd) == {"modes_covered": 8, "high_quality_fraction": 1.0}
    far = centres[:4] * 10  # far from every mode
    result = mode_coverage(torch.cat([centres[:4], far]), centres, sd)
    assert result == {"modes_covered": 4, "high_quality_fraction": 0.5}
    # within 3 sd counts, beyond does not
    edge = torch.stack([centres[0] + torch.tensor([0.0, 2.9 * sd]), centres[1] + torch.tensor([3.1 * sd, 0.0])])
    assert mode_coverage(edge, centres, sd) == {"modes_covered": 1, "high_quality_fraction": 0.5}


@pytest.mark.parametrize("name,k,sd", [("ring8", 8, 0.01), ("grid25", 25, 0.05)])
def test_toy_mixtures(name, k, sd):
    ds = load_dataset(name)
    assert ds.levels == 0 and ds.shape == (2,) and ds.num_classes == k
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [50_000, 5_000, 5_000]
    assert ds.train.x.dtype == torch.float32 and torch.equal(load_dataset(name).test.x, ds.test.x)  # seeded
    centres, sd_ = TOY_MIXTURES[name]
    assert sd_ == sd and centres.shape == (k, 2)
    offsets = ds.train.x - centres[ds.train.y]
    assert abs(offsets.std().item() - sd) < 0.02 * sd
    assert mode_coverage(ds.test.x, centres, sd)["modes_covered"] == k
    assert torch.equal(ds.to_float(ds.train.x[:5]), ds.train.x[:5])


def test_cli_trains_a_gan_on_ring8_and_draws_a_scatter(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "gan", "--data", "ring8", "--steps", "50", "--out", str(out), "--no-progress",
                 "hidden_dims=32,32"]) == 0
    png = out / "samples.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    records = [json.loads(line) for line in open(out / METRICS)]
    assert records[-1]["step"] == 50 and "train/loss_d" in records[-1]
    assert main(["train", "gan", "--data", "ring8", "--steps", "1", "--out", str(tmp_path / "x"), "--no-progress",
                 "lr=3e-4"]) == 1
    assert "g_lr, d_lr" in capsys.readouterr().err


@pytest.mark.parametrize("arch,shape", [("mlp", (2,)), ("conv", (1, 8, 8))])
def test_pacgan_critic_reads_packs_of_consecutive_examples(arch, shape):
    # D_pack(x_1, ..., x_m) is D applied to the m examples stacked along D's input channels
    model = create_model("gan", {"data_shape": shape, "levels": 0 if arch == "mlp" else 17, "architecture": arch,
                                 "pack": 3, "d_norm": "none"})
    x = torch.rand(6, *shape)
    with torch.no_grad():
        packed = model.critic(x)[0]
        by_hand = model.discriminator(x.reshape(2, 3 * shape[0], *shape[1:]) if arch == "conv" else
                                      x.reshape(2, 3 * shape[0]))[:, 0]
    assert packed.shape == (2,)
    torch.testing.assert_close(packed, by_hand)
    with pytest.raises(DgmError, match="multiple of 3"):
        model.critic(x[:5])
    # a short batch trains on its whole packs
    out = model.train_step((torch.rand(7, *shape), None), model.optimizers(TrainConfig()), 0)
    assert torch.isfinite(out["loss_d"])


def test_gradient_penalty_of_a_packed_critic_uses_the_whole_pack_gradient():
    # D(x_1, x_2) = w1.x_1 + w2.x_2 with ||(w1, w2)|| = 1: zero penalty though each part has norm < 1
    w = torch.tensor([0.6, 0.0, 0.0, 0.8])
    critic = lambda x: x.reshape(-1, 4) @ w  # noqa: E731  packs of two 2-D points
    gp = gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2))
    assert gp.shape == (4,)
    torch.testing.assert_close(gp, torch.zeros(4), atol=1e-6, rtol=0)


def test_mlp_generator_uses_batch_norm_for_images_and_not_for_points_by_default():
    def has_bn(shape, **options):
        model = create_model("gan", {"data_shape": shape, "levels": 0 if len(shape) == 1 else 256, **options})
        return any(isinstance(m, nn.BatchNorm1d) for m in model.generator.modules())

    assert has_bn((1, 28, 28)) and not has_bn((2,))
    assert has_bn((2,), g_norm="batch") and not has_bn((1, 28, 28), g_norm="none")
    with pytest.raises(DgmError, match="g_norm"):
        has_bn((2,), g_norm="layer")


def test_packed_gradient_penalty_shares_one_mixing_weight_per_pack():
    """x_hat of a pack lies on the line between the real and the fake pack: one eps for all m members."""
    seen = []

    def critic(x):
        seen.append(x.detach())
        return x.reshape(-1, 3 * 2).sum(1)  # packs of three 2-D points

    x_real, x_fake = torch.randn(12, 2), torch.randn(12, 2)
    torch.manual_seed(1)
    gradient_penalty(critic, x_real, x_fake, pack=3)
    eps = ((seen[0] - x_fake) / (x_real - x_fake)).reshape(4, 3 * 2)  # per coordinate, per member
    assert torch.allclose(eps, eps[:, :1].expand(-1, 6), atol=1e-5)  # one value per pack
    assert eps[:, 0].unique().numel() == 4  # and packs differ
    # the same through the model's discriminator loss (wgan-gp with PacGAN2)
    model = create_model("wgan-gp", {"data_shape": (2,), "levels": 0, "pack": 2})
    critic_inputs = []
    original = model.critic
    model.critic = lambda x, y=None: (critic_inputs.append(x.detach()), original(x, y))[1]
    x, fake = torch.randn(8, 2), torch.randn(8, 2)
    model.discriminator_loss(x, fake, None)
    x_hat = critic_inputs[-1]
    eps = ((x_hat - fake) / (x - fake)).reshape(4, 4)
    assert torch.allclose(eps, eps[:, :1].expand(-1, 4), atol=1e-5)


def test_generator_ema_is_the_closed_form_moving_average_and_what_samples_use():
    """After T generator steps, average_T = d^T g_0 + (1 - d) sum_t d^(T - t) g_t over G's weights g_t."""
    decay, steps = 0.8, 6
    model = create_model("gan", {"data_shape": (2,), "levels": 0, "latent_dim": 2, "hidden_dims": (8,),
                                 "g_ema": decay})
    optimizers = model.optimizers(TrainConfig())
    history = [[p.detach().clone() for p in model.generator.parameters()]]
    for step in range(steps):
        model.train_step((torch.randn(32, 2), None), optimizers, step)
        history.append([p.detach().clone() for p in model.generator.parameters()])
    for i, average in enumerate(model.generator_ema.parameters()):
        expected = decay ** steps * history[0][i] + sum(
            (1 - decay) * decay ** (steps - t) * history[t][i] for t in range(1, steps + 1))
        torch.testing.assert_close(average, expected, rtol=1e-5, atol=1e-6)
        assert not torch.equal(average, history[-1][i])  # the average lags the trained weights
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.generator_ema(z)
    torch.testing.assert_close(model.sample(5, generator=torch.Generator().manual_seed(0)), expected)
    assert any(k.startswith("generator_ema.") for k in model.state_dict())  # saved and resumed with the model


def test_gan_keeps_the_weights_of_its_best_validation_fid(tmp_path, monkeypatch):
    """A run whose FID worsens after an early best keeps the early weights in model.safetensors."""
    from dgm.evaluation import quality
    from dgm.io import load_tensors

    scripted = iter([50.0, 30.0, 90.0, 120.0])
    monkeypatch.setattr(quality.ValidationFID, "__call__", lambda self, model: next(scripted))
    dataset = load_dataset("digits")
    model = create_model("dcgan", {"data_shape": (1, 8, 8), "levels": 17, "base_channels": 8, "latent_dim": 4})
    seen = []
    trainer = Trainer(model, dataset, TrainConfig(epochs=4, batch_size=256, progress=False), out_dir=tmp_path)
    trainer.callbacks.append(lambda t: seen.append({k: v.clone() for k, v in t.model.state_dict().items()}))
    summary = trainer.fit()
    assert trainer.monitor == "fid" and summary["best_metric"] == 30.0
    assert [json.loads(line)["valid/fid"] for line in open(tmp_path / METRICS)] == [50.0, 30.0, 90.0, 120.0]
    saved = load_tensors(tmp_path / "model.safetensors")[0]
    assert all(torch.equal(saved[k], seen[1][k]) for k in saved)  # the second epoch's weights
    assert not all(torch.equal(saved[k], seen[-1][k]) for k in saved)


def test_validation_fid_is_lower_for_real_images_than_for_noise():
    from dgm.evaluation.quality import ValidationFID

    dataset = load_dataset("digits")
    monitor = ValidationFID(dataset, n=150)

    class Sampler(nn.Module):
        def __init__(self, images):
            super().__init__()
            self.images, self.w = images, nn.Parameter(torch.zeros(1))

        def sample(self, n, generator=None):
            return self.images[:n]

    real = Sampler(dataset.to_float(dataset.test.x))
    noise = Sampler(torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert 0 <= monitor(real) < 0.2 * monitor(noise)
