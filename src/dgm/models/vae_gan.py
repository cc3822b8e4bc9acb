"""VAE-GAN (Larsen et al. 2016, "Autoencoding beyond pixels using a learned similarity metric"; seed 003).

A VAE whose decoder is also a GAN's generator, and whose reconstruction error is measured in the
feature space of the GAN's discriminator instead of pixel by pixel ("learned similarity"). With
q(z|x) = N(mu(x), diag sigma^2(x)) from the encoder E, z = mu + sigma * eps (eps ~ N(0, I)),
x~ = G(z) the reconstruction, x_p = G(z_p) with z_p ~ N(0, I) a sample, and Dis_l(x) the features
of the discriminator's hidden layer l (`similarity_layer`), per example:

    L_prior  = KL(q(z|x) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)
    L_llike  = 1/2 ||Dis_l(x) - Dis_l(x~)||^2      (-log N(Dis_l(x); Dis_l(x~), I), its constant dropped)
    L_GAN    = log D(x) + log(1 - D(x~)) + log(1 - D(x_p))

and each network minimises its own loss (the paper's Algorithm 1):

    L_E = L_prior + L_llike                                           (no L_GAN: the paper keeps it from E)
    L_G = gamma L_llike - log D(x~) - log D(x_p)                      (non_saturating, the default)
        = gamma L_llike + log(1 - D(x~)) + log(1 - D(x_p))            (minimax: gamma L_llike - L_GAN exactly)
    L_D = -L_GAN = -log D(x) - log(1 - D(x~)) - log(1 - D(x_p))      (D is not trained on L_llike)

gamma weighs content (the reconstruction) against style (fooling D) in the decoder's update.
The discriminator reads x, x~ and x_p as one batch (as the authors' code does), so its batch norm
normalises the three alike and L_llike compares features computed under the same statistics;
one forward pass gives both the features of layer l and the logit (`discriminator_features`).
`encode` gives the posterior mean mu.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dgm.config import choice, number
from dgm.errors import DgmError
from dgm.models import register_model
from dgm.models.autoencoding_gan import AutoEncodingGAN, AutoEncodingGANConfig, adversary_loss
from dgm.models.gan import GENERATOR_LOSSES, GENERATOR_LOSS_FUNCTIONS
from dgm.models.vae import diagonal_normal, gaussian_kl


@dataclass
class VAEGANConfig(AutoEncodingGANConfig):
    gamma: float = number(1e-5, min=0)  # weight of L_llike in the decoder's loss; the paper names it without a
    # value, the authors' CelebA run (recon_vs_gan_weight=1e-5 in their code) gives gamma = 1e-5 on the same sum
    similarity_layer: int = number(0, min=0)  # the discriminator's hidden layer (LeakyReLU output) L_llike reads,
    # counted from the input 1, 2, ...; 0: the last before the output (the paper reads a late one, the 3rd conv layer
    # of its discriminator)
    generator_loss: str = choice("non_saturating", *GENERATOR_LOSSES)  # the decoder's GAN term: -log D(G(.)) or
    # log(1 - D(G(.))) (the paper's -L_GAN)
    g_lr: float = 3e-4  # the paper's learning rate (for RMSProp; Adam with DCGAN's betas here, as the base builds)
    d_lr: float = 3e-4  # the discriminator's, likewise


def sequential_layers(net: nn.Module) -> list[nn.Module]:
    """The modules a nest of nn.Sequential runs, in order (the DCGAN discriminator, or Flatten + MLP)."""
    if isinstance(net, nn.Sequential):
        return [leaf for child in net for leaf in sequential_layers(child)]
    return [net]


def hidden_layer_count(net: nn.Module) -> int:
    """How many hidden layers (LeakyReLU outputs) a discriminator built by the base has."""
    return sum(isinstance(m, nn.LeakyReLU) for m in sequential_layers(net))


def discriminator_features(net: nn.Module, x: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the output of hidden layer `layer` of `net`, flattened [B, F]; the logit [B]) in one forward pass.

    `layer` counts the LeakyReLUs from the input 1, 2, ...; 0 is the last of them."""
    layers = sequential_layers(net)
    acts = [i for i, m in enumerate(layers) if isinstance(m, nn.LeakyReLU)]
    stop = acts[layer - 1]
    h = x
    for i, m in enumerate(layers):
        h = m(h)
        if i == stop:
            features = h.flatten(1)
    return features, h[:, 0]


class VAEGAN(AutoEncodingGAN):
    """Encoder E(x) -> (mu, log sigma^2), decoder/generator G, discriminator D: three optimizers."""

    def __init__(self, cfg: VAEGANConfig):
        super().__init__(cfg, encoder_out=2 * cfg.latent_dim)
        self.discriminator = self.make_discriminator()
        n = hidden_layer_count(self.discriminator)
        if n == 0:
            raise DgmError("the similarity L_llike reads a hidden layer of the discriminator and this one has none; "
                           "give hidden_dims at least one width")
        if cfg.similarity_layer > n:
            raise DgmError(f"similarity_layer={cfg.similarity_layer} picks a hidden layer of the discriminator, "
                           f"which has {n}; choose one of 1 .. {n} (counted from the input) or 0 for the last")
        self.networks = {"encoder": self.encoder, "generator": self.generator, "discriminator": self.discriminator}

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean mu(x): [B, latent_dim]."""
        return self.encoder_output(x).chunk(2, dim=-1)[0]

    def discriminate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Dis_l(x) [B, F], D's logit [B]) from one forward pass of the discriminator."""
        return discriminator_features(self.discriminator, x, self.cfg.similarity_layer)

    def losses(self, x: torch.Tensor, eps: torch.Tensor, z_prior: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every network's loss [B] and its parts for data x, the posterior's noise eps and prior draws z_prior
        ([B, latent_dim] each), written as in the module docstring."""
        cfg = self.cfg
        b = x.shape[0]
        q = diagonal_normal(self.encoder(x))
        z = q.loc + q.scale * eps
        x_rec, x_gen = self.generator(torch.cat([z, z_prior])).split(b)
        features, logits = self.discriminate(torch.cat([x, x_rec, x_gen]))
        f_real, f_rec, _ = features.split(b)
        d_real, d_rec, d_gen = logits.split(b)
        kl = gaussian_kl(q)
        llike = 0.5 * (f_real - f_rec).pow(2).sum(1)
        fool = GENERATOR_LOSS_FUNCTIONS[cfg.generator_loss]
        return {
            "loss_e": kl + llike,
            "loss_g": cfg.gamma * llike + fool(d_rec) + fool(d_gen),
            "loss_d": adversary_loss(d_real, d_rec, d_gen),
            "kl": kl, "llike": llike,
            "d_real": torch.sigmoid(d_real), "d_rec": torch.sigmoid(d_rec), "d_gen": torch.sigmoid(d_gen),
        }

    def train_step(self, batch, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, torch.Tensor]:
        x = batch[0]
        eps = torch.randn(x.shape[0], self.cfg.latent_dim, device=x.device)
        terms = self.losses(x, eps, self.sample_latent(x.shape[0]))
        self.update(optimizers, {"encoder": terms["loss_e"], "generator": terms["loss_g"],
                                 "discriminator": terms["loss_d"]})
        return self.report(terms)


register_model("vae-gan", VAEGANConfig, family="hybrid", seeds=("003",),
               description="VAE-GAN (Larsen et al.): a VAE whose reconstruction error is measured in the features "
                           "of a GAN discriminator, the decoder shared with the GAN's generator")(VAEGAN)
