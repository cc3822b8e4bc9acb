"""VAE-GAN's mathematics: the closed-form KL, the learned similarity L_llike through the chosen layer of D,
the losses at D = 1/2, each optimizer stepping only its own networks, no L_GAN in the encoder's gradient;
exact resume, the divergence guard and the command line."""
import copy
import math

import pytest
import torch
from torch import nn

from dgm.errors import DgmError
from dgm.models import create_model
from dgm.models.vae_gan import discriminator_features
from dgm.training import TrainConfig

IMAGES = {"data_shape": (1, 8, 8), "levels": 17, "base_channels": 4, "latent_dim": 3}
POINTS = {"data_shape": (2,), "levels": 0, "architecture": "mlp", "hidden_dims": (16, 8), "latent_dim": 2}


class Fixed(nn.Module):
    """A stand-in generator: whatever z, G(cat[z, z_prior]) = cat[x_rec, x_gen]."""

    def __init__(self, x_rec, x_gen):
        super().__init__()
        self.x_rec, self.x_gen = x_rec, x_gen

    def forward(self, z):
        return torch.cat([self.x_rec, self.x_gen])


class Posterior(nn.Module):
    """A stand-in encoder whose output [mu, log sigma^2] is fixed."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out


def _leaky_indices(layers) -> list[int]:
    return [i for i, m in enumerate(layers) if isinstance(m, nn.LeakyReLU)]


def test_kl_is_the_closed_form_of_a_hand_built_posterior_and_encode_is_its_mean():
    model = create_model("vae-gan", IMAGES)
    mu = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    log_var = torch.tensor([[0.0, 0.0, 0.0], [math.log(4.0), math.log(0.25), 0.0]])
    model.encoder = Posterior(torch.cat([mu, log_var], 1))
    terms = model.losses(torch.rand(2, 1, 8, 8), torch.randn(2, 3), torch.randn(2, 3))
    # 1/2 sum (mu^2 + sigma^2 - 1 - log sigma^2): 0 for N(0, I); by hand for the second row
    expected = 0.5 * ((1 + 4 - 1 - math.log(4)) + (4 + 0.25 - 1 - math.log(0.25)) + (0.25 + 1 - 1 - 0))
    assert torch.allclose(terms["kl"], torch.tensor([0.0, expected]), atol=1e-6)
    assert torch.equal(model.encode(torch.rand(2, 1, 8, 8)), mu)


@pytest.mark.parametrize("options", [IMAGES, POINTS])
def test_the_similarity_features_are_what_the_discriminator_computes_at_that_layer(options):
    model = create_model("vae-gan", {**options, "d_norm": "layer"})
    disc = model.discriminator
    x = torch.rand(5, *options["data_shape"])
    # the DCGAN discriminator is one Sequential; the MLP form is Sequential(Flatten, MLP)
    layers = list(disc) if options is IMAGES else list(disc[1])
    prefix = lambda i: nn.Sequential(*([] if options is IMAGES else [disc[0]]), *layers[: i + 1])  # noqa: E731
    acts = _leaky_indices(layers)
    assert len(acts) == 2
    for layer, index in ((1, acts[0]), (2, acts[1]), (0, acts[-1])):
        features, logit = discriminator_features(disc, x, layer)
        assert torch.equal(features, prefix(index)(x).flatten(1))
        assert torch.equal(logit, disc(x)[:, 0])
    with pytest.raises(DgmError, match="similarity_layer=3"):
        create_model("vae-gan", {**options, "similarity_layer": 3})


@pytest.mark.parametrize("layer", [0, 1])
def test_llike_is_zero_for_a_perfect_reconstruction_and_half_the_squared_feature_distance_otherwise(layer):
    model = create_model("vae-gan", {**IMAGES, "d_norm": "layer", "similarity_layer": layer})
    x, x_other, x_gen = torch.rand(3, 4, 1, 8, 8)
    index = _leaky_indices(list(model.discriminator))[layer - 1]
    features = lambda v: nn.Sequential(*list(model.discriminator)[: index + 1])(v).flatten(1)  # noqa: E731
    eps, z = torch.randn(4, 3), torch.randn(4, 3)
    model.generator = Fixed(x, x_gen)
    assert torch.equal(model.losses(x, eps, z)["llike"], torch.zeros(4))
    model.generator = Fixed(x_other, x_gen)
    llike = model.losses(x, eps, z)["llike"]
    by_hand = 0.5 * (features(x) - features(x_other)).pow(2).sum(1)
    assert (llike > 0).all() and torch.allclose(llike, by_hand, rtol=1e-5)


@pytest.mark.parametrize("generator_loss,adversarial", [("non_saturating", 2 * math.log(2)),
                                                         ("minimax", -2 * math.log(2))])
def test_at_d_one_half_the_losses_equal_their_closed_forms(generator_loss, adversarial):
    model = create_model("vae-gan", {**IMAGES, "generator_loss": generator_loss, "gamma": 0.3})
    last = [m for m in model.discriminator.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()  # logit 0 everywhere: D = 1/2
    terms = model.losses(torch.rand(6, 1, 8, 8), torch.randn(6, 3), torch.randn(6, 3))
    for key in ("d_real", "d_rec", "d_gen"):
        assert torch.equal(terms[key], torch.full((6,), 0.5))
    assert torch.allclose(terms["loss_d"], torch.full((6,), 3 * math.log(2)))  # -3 log 1/2
    assert torch.allclose(terms["loss_g"] - 0.3 * terms["llike"], torch.full((6,), adversarial))
    assert torch.equal(terms["loss_e"], terms["kl"] + terms["llike"])


def test_each_optimizer_steps_only_its_own_networks():
    x = torch.rand(8, 1, 8, 8)
    for name, loss in (("encoder", "loss_e"), ("generator", "loss_g"), ("discriminator", "loss_d")):
        torch.manual_seed(0)
        model = create_model("vae-gan", IMAGES)
        optimizers = model.optimizers(TrainConfig())
        terms = model.losses(x, torch.randn(8, 3), torch.randn(8, 3))
        before = copy.deepcopy(model.networks)
        model.update(optimizers, {name: terms[loss]})
        for other, net in model.networks.items():
            same = all(torch.equal(a, b) for a, b in zip(before[other].parameters(), net.parameters()))
            assert same == (other != name), (name, other)


def test_the_encoder_gradient_has_no_gan_term():
    torch.manual_seed(0)
    model = create_model("vae-gan", IMAGES)
    optimizers = model.optimizers(TrainConfig())
    terms = model.losses(torch.rand(8, 1, 8, 8), torch.randn(8, 3), torch.randn(8, 3))
    params = list(model.encoder.parameters())
    vae_only = torch.autograd.grad((terms["kl"] + terms["llike"]).mean(), params, retain_graph=True)
    gan = torch.autograd.grad(-torch.log(terms["d_rec"]).mean(), params, retain_graph=True)
    assert any(g.abs().max() > 0 for g in gan)  # L_GAN could reach the encoder through x~, so the check is not vacuous
    seen = {}
    optimizers["encoder"].register_step_pre_hook(lambda opt, a, k: seen.update(g=[p.grad.clone() for p in params]))
    model.update(optimizers, {"encoder": terms["loss_e"], "generator": terms["loss_g"],
                              "discriminator": terms["loss_d"]})
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-9) for a, b in zip(seen["g"], vae_only))
