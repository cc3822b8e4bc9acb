"""alpha-GAN (Rosca et al. 2017, "Variational Approaches for Auto-Encoding GANs"; seed 003).

The ELBO with an implicit posterior q(z|x) = delta(z - E(x)) and an implicit likelihood through G,
each intractable term replaced by a density ratio that a discriminator estimates:

    L(theta, eta) = E_q(z|x)[ -lambda ||x - G(z)||_1 + log D(G(z)) / (1 - D(G(z))) + log C(z) / (1 - C(z)) ]

D(x) is the probability that x is real data (the synthetic likelihood: log D/(1-D) estimates
log p*(x)/p_theta(x) up to its sign convention) and C(z) the probability that z was drawn from
the prior p(z) (log C/(1-C) estimates log p(z)/q(z), so its expectation is -KL(q(z|x) || p(z))).
The encoder and generator maximise L; D and C are trained as classifiers. Per example, with
z^ = E(x), x_rec = G(z^), x_gen = G(z) for z ~ p(z) (Algorithm 1; "ratio" writes the terms as
the ELBO does, "non_saturating", the default, uses -log D as seed 003's first trick says):

    L_E = lambda ||x - x_rec||_1 - log C(z^) / (1 - C(z^))                            (ratio)
        = lambda ||x - x_rec||_1 - log C(z^)                                         (non_saturating)
    L_G = lambda ||x - x_rec||_1 - log D(x_rec)/(1 - D(x_rec)) - log D(x_gen)/(1 - D(x_gen))   (ratio)
        = lambda ||x - x_rec||_1 - log D(x_rec) - log D(x_gen)                       (non_saturating)
    L_D = -log D(x) - log(1 - D(x_rec)) - log(1 - D(x_gen))
    L_C = -log C(z) - log(1 - C(z^))

Seed 003's second trick, D trained on the reconstructions as well as on prior samples, is the
x_rec term of L_D and L_G (`d_on_reconstructions`, on by default).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dgm.config import choice, number
from dgm.models import register_model
from dgm.models.autoencoding_gan import (AutoEncodingGAN, AutoEncodingGANConfig, adversary_loss, fooling_loss,
                                         l1_per_example)


@dataclass
class AlphaGANConfig(AutoEncodingGANConfig):
    rec_weight: float = number(0.1, min=0)  # lambda of the L1 term, on the sum over an image's values (0.1 makes it
    # comparable to the adversarial terms on 28x28 images)
    adversarial_loss: str = choice("non_saturating", "non_saturating", "ratio")  # how E and G fool C and D
    d_on_reconstructions: bool = True  # D also judges G(E(x)) (seed 003's second trick)


class AlphaGAN(AutoEncodingGAN):
    """Encoder E, generator G, data discriminator D and code discriminator C: four optimizers."""

    def __init__(self, cfg: AlphaGANConfig):
        super().__init__(cfg)
        self.discriminator = self.make_discriminator()
        self.code_discriminator = self.make_code_discriminator()
        self.networks = {"encoder": self.encoder, "generator": self.generator, "discriminator": self.discriminator,
                         "code_discriminator": self.code_discriminator}

    def losses(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every network's loss [B] (and the L1 term) for data x and prior draws z, each written as above."""
        cfg = self.cfg
        z_hat = self.encoder(x)
        x_rec, x_gen = self.generator(z_hat), self.generator(z)
        d_real, d_rec, d_gen = (self.discriminator(v)[:, 0] for v in (x, x_rec, x_gen))
        c_prior, c_hat = self.code_discriminator(z)[:, 0], self.code_discriminator(z_hat)[:, 0]
        l1 = l1_per_example(x, x_rec)
        fool = lambda logit: fooling_loss(logit, cfg.adversarial_loss)  # noqa: E731
        rec_term = (d_rec,) if cfg.d_on_reconstructions else ()
        return {
            "loss_e": cfg.rec_weight * l1 + fool(c_hat),
            "loss_g": cfg.rec_weight * l1 + fool(d_gen) + (fool(d_rec) if cfg.d_on_reconstructions else 0),
            "loss_d": adversary_loss(d_real, *rec_term, d_gen),
            "loss_c": adversary_loss(c_prior, c_hat),
            "l1": l1,
            "d_real": torch.sigmoid(d_real), "d_gen": torch.sigmoid(d_gen), "c_hat": torch.sigmoid(c_hat),
        }

    def train_step(self, batch, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, torch.Tensor]:
        x = batch[0]
        terms = self.losses(x, self.sample_latent(x.shape[0]))
        self.update(optimizers, {"encoder": terms["loss_e"], "generator": terms["loss_g"],
                                 "discriminator": terms["loss_d"], "code_discriminator": terms["loss_c"]})
        return self.report(terms)


register_model("alpha-gan", AlphaGANConfig, family="hybrid", seeds=("003",),
               description="alpha-GAN (Rosca et al.): encoder, generator, data and code discriminators, L1 "
                           "reconstruction; the ELBO's terms as density ratios")(AlphaGAN)
