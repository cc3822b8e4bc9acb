"""BiGAN (Donahue et al. 2016, "Adversarial Feature Learning") = ALI (Dumoulin et al. 2016; seed 003).

An encoder E(x) -> z, a generator G(z) -> x and one discriminator D(x, z) on the joint space,
which tells encoder pairs (x, E(x)), x ~ p_data, from generator pairs (G(z), z), z ~ p(z):

    min_{G,E} max_D  E_x[log D(x, E(x))] + E_z[log(1 - D(G(z), z))]

At the optimum the two joint distributions p_E(x, z) = p_data(x) q(z|x) and p_G(x, z) = p(z) p(x|z)
are equal, so E inverts G (Donahue et al., Theorem 2), and for fixed E and G the best D is
D*(x, z) = p_E(x, z) / (p_E(x, z) + p_G(x, z)): its logit estimates log p_E(x, z) / p_G(x, z).
Per example, with z^ = E(x) and z ~ p(z) = N(0, I) (ALI's prior; BiGAN's code draws U[-1, 1]^d):

    L_D  = -log D(x, z^) - log(1 - D(G(z), z))
    L_GE = -log D(G(z), z) - log(1 - D(x, z^))          (non_saturating: both labels flipped, the
                                                          usual practice, BiGAN's included)
         = -L_D                                           (minimax)

E and G are trained together on L_GE by one optimizer, "generator_encoder" (Adam treats every
parameter alone, so one optimizer over both equals two with the same loss); D has its own.

The encoder is BiGAN's deterministic z^ = E(x), or ALI's Gaussian one (`encoder=gaussian`):
E(x) gives mu(x) and log sigma(x), and z^ = mu + sigma * eps with eps ~ N(0, I) is drawn with the
reparameterization, so L_GE's gradient reaches E through the draw. `encode` returns mu (BiGAN's
E(x)), and `reconstruct` is G(E(x)).

The joint discriminator reads images as ALI's does: D(x) is the DCGAN discriminator without its
last layer (a feature vector), D(z) a leaky MLP to code_hidden[-1] features, and D(x, z) a leaky MLP
of widths code_hidden on their concatenation; with architecture=mlp it is one leaky MLP on
[flatten(x), z].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dgm.config import choice, number
from dgm.models import register_model
from dgm.models.autoencoding_gan import AutoEncodingGAN, AutoEncodingGANConfig, adversary_loss, leaky_mlp


@dataclass
class BiGANConfig(AutoEncodingGANConfig):
    latent_dim: int = number(50, min=1)  # BiGAN's MNIST latent size (train_mnist.sh: 50-D noise)
    encoder: str = choice("deterministic", "deterministic", "gaussian")  # BiGAN's z = E(x) | ALI's
    # z = mu(x) + sigma(x) eps
    generator_loss: str = choice("non_saturating", "non_saturating", "minimax")  # how G and E fool D


class JointDiscriminator(nn.Module):
    """D(x, z) -> [B, 1] logit: `joint` on the concatenated features [x_branch(x) flattened, z_branch(z)]."""

    def __init__(self, x_branch: nn.Module, z_branch: nn.Module, joint: nn.Module):
        super().__init__()
        self.x_branch, self.z_branch, self.joint = x_branch, z_branch, joint

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.joint(torch.cat([self.x_branch(x).flatten(1), self.z_branch(z)], 1))


class BiGAN(AutoEncodingGAN):
    """Encoder E, generator G and joint discriminator D(x, z): two optimizers, generator_encoder and discriminator."""

    def __init__(self, cfg: BiGANConfig):
        self.gaussian = cfg.encoder == "gaussian"
        super().__init__(cfg, encoder_out=2 * cfg.latent_dim if self.gaussian else cfg.latent_dim)
        self.discriminator = self.make_joint_discriminator()
        self.networks = {"generator_encoder": [self.generator, self.encoder], "discriminator": self.discriminator}

    def make_joint_discriminator(self) -> JointDiscriminator:
        """ALI's D(x), D(z), D(x, z) for conv; one leaky MLP on [flatten(x), z] otherwise."""
        cfg = self.cfg
        if not self.conv:
            return JointDiscriminator(nn.Identity(), nn.Identity(), self.make_discriminator(1, extra_in=cfg.latent_dim))
        net = self.make_discriminator(1)
        *body, last, _ = net  # DCGAN's discriminator without its last conv (over (h0, w0)) and Flatten
        x_features = last.in_channels * math.prod(last.kernel_size)
        z_features = cfg.code_hidden[-1]
        z_branch = nn.Sequential(leaky_mlp(cfg.latent_dim, list(cfg.code_hidden[:-1]), z_features), nn.LeakyReLU(0.2))
        joint = leaky_mlp(x_features + z_features, list(cfg.code_hidden), 1)
        return JointDiscriminator(nn.Sequential(*body), z_branch, joint)

    @property
    def learning_rates(self) -> dict[str, float]:
        """g_lr for the encoder and generator together, d_lr for the discriminator."""
        return {"generator_encoder": self.cfg.g_lr, "discriminator": self.cfg.d_lr}

    # --- the encoder -------------------------------------------------------------------------------
    def code(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) [B, latent_dim]: the deterministic code, or the Gaussian encoder's mean mu(x)."""
        return self.encoder_output(x)[:, : self.cfg.latent_dim]

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """z^ ~ q(z|x) for training: E(x), or mu(x) + sigma(x) * eps with eps ~ N(0, I) (reparameterized)."""
        out = self.encoder_output(x)
        if not self.gaussian:
            return out
        mu, log_sigma = out.chunk(2, dim=1)
        return mu + log_sigma.exp() * torch.randn_like(mu)

    # --- training ----------------------------------------------------------------------------------
    def losses(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_D and L_GE [B] for data x and prior draws z, as in the module docstring, and D's outputs."""
        z_hat = self.infer(x)
        x_gen = self.generator(z)
        d_enc, d_gen = self.discriminator(x, z_hat)[:, 0], self.discriminator(x_gen, z)[:, 0]
        loss_d = adversary_loss(d_enc, d_gen)
        loss_ge = adversary_loss(d_gen, d_enc) if self.cfg.generator_loss == "non_saturating" else -loss_d
        return {"loss_d": loss_d, "loss_ge": loss_ge, "d_enc": torch.sigmoid(d_enc), "d_gen": torch.sigmoid(d_gen)}

    def train_step(self, batch, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, torch.Tensor]:
        x = batch[0]
        terms = self.losses(x, self.sample_latent(x.shape[0]))
        self.update(optimizers, {"generator_encoder": terms["loss_ge"], "discriminator": terms["loss_d"]})
        return self.report(terms)


register_model("bigan", BiGANConfig, family="hybrid", seeds=("003",),
               description="BiGAN / ALI (Donahue et al., Dumoulin et al.): encoder, generator and a joint "
                           "discriminator D(x, z) on (x, E(x)) against (G(z), z)")(BiGAN)
