"""AGE: the batch divergence Delta against its closed form, codes and prior on the unit sphere, the encoder and
generator updates (each on its own network, g_updates of G per step), exact resume, the NaN guard and the CLI."""
import math

import pytest
import torch

from dgm.models import create_model
from dgm.models.age import batch_divergence
from dgm.training import TrainConfig

POINTS = {"data_shape": (2,), "levels": 0, "architecture": "mlp", "latent_dim": 3, "hidden_dims": (16, 16)}
IMAGES = {"data_shape": (1, 8, 8), "levels": 17, "base_channels": 4, "latent_dim": 4}


def test_delta_is_the_kl_of_the_fitted_diagonal_gaussian_to_the_unit_gaussian():
    # by hand: m = (2, 1), s^2 = (1, 1) (1/B variances), so Delta = (1 + 4)/2 - 1/2 + (1 + 1)/2 - 1/2 = 2.5
    assert batch_divergence(torch.tensor([[1.0, 0.0], [3.0, 2.0]])).item() == pytest.approx(2.5)
    # m = (0, 1/2), s^2 = (1/4, 1/4): sum_j (s^2 + m^2)/2 - log s - 1/2 = (1/8 + log 2 - 1/2) + (1/4 + log 2 - 1/2)
    assert batch_divergence(torch.tensor([[0.5, 1.0], [-0.5, 0.0]])).item() == pytest.approx(2 * math.log(2) - 5 / 8)
    codes = torch.randn(40, 5) * torch.tensor([0.3, 1.0, 2.0, 0.7, 1.5]) + torch.tensor([0.0, 1.0, -2.0, 0.5, 3.0])
    fitted = torch.distributions.Normal(codes.mean(0), codes.std(0, unbiased=False))
    kl = torch.distributions.kl_divergence(fitted, torch.distributions.Normal(0.0, 1.0)).sum()
    assert batch_divergence(codes).item() == pytest.approx(kl.item(), rel=1e-5)


def test_delta_vanishes_on_the_unit_gaussian_and_grows_when_the_batch_is_shifted_or_scaled():
    z = torch.randn(200_000, 8, generator=torch.Generator().manual_seed(0))
    delta = batch_divergence(z).item()
    assert 0 <= delta < 1e-3  # about sum_j (s_j^2 - 1)^2 / 4 + m_j^2 / 2 ~ 8 * 1.5 / 200,000 = 6e-5
    shift = torch.tensor([0.5, 0, 0, 0, 0, 0, 0, -1.0])
    expected = (((z.mean(0) + shift).pow(2) - z.mean(0).pow(2)) / 2).sum().item()  # only the m_j^2 / 2 terms move
    assert batch_divergence(z + shift).item() - delta == pytest.approx(expected, rel=1e-3) and expected > 0.6
    for scale in (0.5, 2.0):  # (s^2 - 1)/2 - log s > 0 for s != 1, per dimension
        assert batch_divergence(scale * z).item() == pytest.approx(8 * ((scale**2 - 1) / 2 - math.log(scale)), rel=1e-2)


def test_codes_and_prior_samples_lie_on_the_unit_sphere_and_the_prior_is_rotation_invariant():
    model = create_model("age", {**IMAGES, "latent_dim": 5})
    codes = model.encode(torch.rand(7, 1, 8, 8))
    assert codes.shape == (7, 5) and torch.allclose(codes.norm(dim=1), torch.ones(7))
    assert torch.allclose(model.code(torch.rand(3, 1, 8, 8)).norm(dim=1), torch.ones(3))  # training mode too
    torch.manual_seed(0)
    z = model.sample_latent(200_000)
    assert torch.allclose(z.norm(dim=1), torch.ones(len(z)))
    assert z.mean(0).abs().max() < 0.01  # E z = 0
    assert (torch.cov(z.T) - torch.eye(5) / 5).abs().max() < 0.01  # E zz^T = I / M
    # the projection on any unit direction has the same law as a coordinate's: compare quantiles
    u = torch.nn.functional.normalize(torch.randn(5), dim=0)
    q = torch.linspace(0.05, 0.95, 19)
    assert (torch.quantile(z @ u, q) - torch.quantile(z[:, 0], q)).abs().max() < 0.01


def test_each_optimizer_steps_only_its_own_network_and_g_steps_g_updates_times():
    model = create_model("age", {**POINTS, "g_updates": 3})  # MLPs without batch norm: losses replayable
    optimizers = model.optimizers(TrainConfig())
    enc, gen = list(model.encoder.parameters()), list(model.generator.parameters())
    assert {id(p) for p in optimizers["encoder"].param_groups[0]["params"]} == {id(p) for p in enc}
    assert {id(p) for p in optimizers["generator"].param_groups[0]["params"]} == {id(p) for p in gen}
    x = torch.randn(32, 2)
    torch.manual_seed(1)
    zs = [model.sample_latent(32) for _ in range(4)]  # train_step's draws: the encoder's z, then one per G step
    calls = []

    def encoder_step(opt, args, kwargs):
        calls.append("encoder")
        expected = torch.autograd.grad(model.encoder_losses(x, zs[0])["loss_e"].mean(), enc)
        assert all(torch.allclose(p.grad, g, atol=1e-5) for p, g in zip(enc, expected))
        assert all(p.grad is None for p in gen)  # L_E leaves no gradient in G
        encoder_grads.extend(p.grad.clone() for p in enc)

    def generator_step(opt, args, kwargs):
        calls.append("generator")
        z = zs[calls.count("generator")]
        expected = torch.autograd.grad(model.generator_losses(z)["loss_g"].mean(), gen)  # against the updated E
        assert all(torch.allclose(p.grad, g, atol=1e-5) for p, g in zip(gen, expected))
        assert all(torch.equal(p.grad, g) for p, g in zip(enc, encoder_grads))  # L_G leaves nothing in E

    encoder_grads = []
    optimizers["encoder"].register_step_pre_hook(encoder_step)
    optimizers["generator"].register_step_pre_hook(generator_step)
    torch.manual_seed(1)
    out = model.train_step((x, None), optimizers, 0)
    assert calls == ["encoder", "generator", "generator", "generator"]
    assert {"loss_e", "loss_g", "delta_real", "delta_fake", "delta_gen", "l1", "latent_cos_dist"} == out.keys()


class Double(torch.nn.Module):
    def forward(self, z):
        return 2 * z


class Nudge(torch.nn.Module):
    """G(z) = z + (0.3, 0): with the identity encoder, E(G(z)) = (z + (0.3, 0)) / ||z + (0.3, 0)||."""

    def forward(self, z):
        return z + torch.tensor([0.3, 0.0])


def test_the_losses_are_the_game_of_the_docstring():
    # E(x) = x / ||x|| (an identity encoder, then the projection) and G(z) = 2 z, so E(G(z)) = z and G(E(x)) = 2 x/||x||
    model = create_model("age", {**POINTS, "latent_dim": 2, "x_weight": 0.5, "z_weight": 7.0})
    x, z = torch.randn(16, 2), model.sample_latent(16)
    model.encoder, model.generator = torch.nn.Identity(), Double()
    x_code = x / x.norm(dim=1, keepdim=True)
    e = model.encoder_losses(x, z)
    assert e["delta_real"] == pytest.approx(batch_divergence(x_code).item())
    assert e["delta_fake"] == pytest.approx(batch_divergence(z).item())
    assert torch.allclose(e["l1"], (x - 2 * x_code).abs().sum(1))
    assert torch.allclose(e["loss_e"], e["delta_real"] - e["delta_fake"] + 0.5 * e["l1"])  # E: min real, max fake
    g = model.generator_losses(z)
    assert torch.allclose(g["latent_cos_dist"], torch.zeros(16), atol=1e-6)  # z recovered exactly
    assert torch.allclose(g["loss_g"], batch_divergence(z) + 7.0 * g["latent_cos_dist"])
    model.generator = Nudge()
    z_rec = torch.nn.functional.normalize(z + torch.tensor([0.3, 0.0]), dim=1)
    g = model.generator_losses(z)
    assert torch.allclose(g["latent_cos_dist"], (z - z_rec).pow(2).sum(1) / 2, atol=1e-6)  # on the sphere
    assert g["latent_cos_dist"].mean() > 0.01


def test_default_weights_follow_the_authors_balance():
    model = create_model("age", {"data_shape": (3, 32, 32), "levels": 256, "latent_dim": 128, "base_channels": 4})
    assert model.cfg.g_updates == 2 and model.cfg.z_weight == 1000
    assert model.x_weight == pytest.approx(20 * 128 / 3072)  # 10 on per-pixel means of [-1, 1] images
    assert create_model("age", {**POINTS, "x_weight": 3.0}).x_weight == 3.0


def test_a_batch_of_one_gives_a_finite_step():
    model = create_model("age", POINTS)
    out = model.train_step((torch.randn(1, 2), None), model.optimizers(TrainConfig()), 0)
    assert all(math.isfinite(v) for v in out.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())
