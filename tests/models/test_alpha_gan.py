"""alpha-GAN's mathematics (seed 003): the discriminators estimate the density ratios the ELBO's terms rest on,
each loss line at D = C = 1/2, the L1 term, and that every optimizer moves only its own networks."""
import math

import pytest
import torch
from torch import nn

from dgm.models import create_model
from dgm.models.autoencoding_gan import adversary_loss
from dgm.training import TrainConfig

POINTS = {"data_shape": (1,), "levels": 0, "latent_dim": 1, "hidden_dims": (16,), "code_hidden": (32, 32)}


def _fit_classifier(net: nn.Module, real, fake, steps: int = 1500) -> None:
    """Train `net` alone on its cross-entropy -log D(real) - log(1 - D(fake)), fresh draws every step."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        adversary_loss(net(real(1024))[:, 0], net(fake(1024))[:, 0]).mean().backward()
        opt.step()


@pytest.mark.parametrize("which", ["code_discriminator", "discriminator"])
def test_the_discriminators_logits_estimate_the_log_density_ratio(which):
    """The identity the seed's estimates rest on: a classifier of prior (or data) samples against codes (or
    generated data) at its optimum has logit log p(v)/q(v). C on codes: p(z) = N(0, 1) against
    q(z) = N(1, 0.5^2); D on 1-D data likewise, p* = N(0, 1) against p_theta = N(1, 0.5^2)."""
    model = create_model("alpha-gan", POINTS)
    net = getattr(model, which)
    _fit_classifier(net, lambda n: torch.randn(n, 1), lambda n: 1 + 0.5 * torch.randn(n, 1))
    grid = torch.linspace(-0.25, 2.0, 46)[:, None]  # where both densities have mass (q's 2.5 sd)
    with torch.no_grad():
        logit = net(grid)[:, 0]
    log_p = -0.5 * grid[:, 0] ** 2
    log_q = -0.5 * ((grid[:, 0] - 1) / 0.5) ** 2 - math.log(0.5)
    # within 0.25 nats (the ratio spans about 4 nats over this grid)
    assert (logit - (log_p - log_q)).abs().max() < 0.25


def _at_one_half(model):
    """Zero the last layer of D and C: their logits are 0, D = C = 1/2 everywhere."""
    for net in (model.discriminator, model.code_discriminator):
        last = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)


@pytest.mark.parametrize("kind", ["non_saturating", "ratio"])
@pytest.mark.parametrize("on_rec", [True, False])
def test_every_loss_at_d_and_c_one_half_equals_its_closed_form(kind, on_rec):
    model = create_model("alpha-gan", {"data_shape": (1, 8, 8), "latent_dim": 4, "base_channels": 4,
                                       "rec_weight": 0.3, "adversarial_loss": kind, "d_on_reconstructions": on_rec})
    _at_one_half(model)
    x = torch.rand(6, 1, 8, 8)
    terms = model.losses(x, torch.randn(6, 4))
    l1 = (x - model.generator(model.encoder(x))).abs().sum((1, 2, 3))
    log2 = math.log(2)
    torch.testing.assert_close(terms["l1"], l1)
    torch.testing.assert_close(terms["loss_d"], torch.full((6,), (3 if on_rec else 2) * log2))  # -log 1/2 per term
    torch.testing.assert_close(terms["loss_c"], torch.full((6,), 2 * log2))
    fool = log2 if kind == "non_saturating" else 0.0  # -log D = log 2; -log D/(1 - D) = 0
    torch.testing.assert_close(terms["loss_e"], 0.3 * l1 + fool)
    torch.testing.assert_close(terms["loss_g"], 0.3 * l1 + (2 if on_rec else 1) * fool)


def test_the_l1_term_is_zero_for_a_perfect_autoencoder():
    model = create_model("alpha-gan", {**POINTS, "data_shape": (3,), "latent_dim": 3})
    model.encoder, model.generator = nn.Identity(), nn.Identity()  # G(E(x)) = x
    terms = model.losses(torch.randn(5, 3), torch.randn(5, 3))
    assert torch.equal(terms["l1"], torch.zeros(5))


def _parameters(model, name):
    return [p.detach().clone() for p in model.parameters_of(name)]


def test_each_optimizer_moves_only_its_own_networks_and_sees_only_its_own_loss():
    torch.manual_seed(0)
    model = create_model("alpha-gan", {"data_shape": (1, 8, 8), "latent_dim": 4, "base_channels": 4})
    optimizers = model.optimizers(TrainConfig())
    names = list(model.networks)
    x, z = torch.rand(8, 1, 8, 8), torch.randn(8, 4)
    for only in names:  # one loss at a time: every other network is bitwise unchanged
        before = {n: _parameters(model, n) for n in names}
        terms = model.losses(x, z)
        model.update(optimizers, {only: terms[{"encoder": "loss_e", "generator": "loss_g", "discriminator": "loss_d",
                                                "code_discriminator": "loss_c"}[only]]})
        for n in names:
            same = all(torch.equal(a, b) for a, b in zip(before[n], model.parameters_of(n)))
            assert same == (n != only), (only, n)
    # all four at once: each network's gradient is that of its own loss alone (none leaks into another)
    model.eval()  # batch norm from running statistics: the two forwards below compute the same losses
    losses = {"encoder": "loss_e", "generator": "loss_g", "discriminator": "loss_d", "code_discriminator": "loss_c"}
    expected = {}
    for name, key in losses.items():
        params = model.parameters_of(name)
        expected[name] = torch.autograd.grad(model.losses(x, z)[key].mean(), params)
    for opt in optimizers.values():
        for group in opt.param_groups:
            group["lr"] = 0.0  # step, but keep the weights: only the gradients are compared
    terms = model.losses(x, z)
    model.update(optimizers, {name: terms[key] for name, key in losses.items()})
    for name in losses:
        for g, p in zip(expected[name], model.parameters_of(name)):
            torch.testing.assert_close(p.grad, g)
