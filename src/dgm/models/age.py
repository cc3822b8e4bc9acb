"""AGE (Ulyanov, Vedaldi, Lempitsky 2017/2018, "It Takes (Only) Two: Adversarial Generator-Encoder Networks"; seed 003).

Two networks and no discriminator: the encoder E is the generator's adversary, in latent space.
Codes live on the unit sphere S^{M-1} of R^M (E's output is normalised to norm 1) and the prior
p(z) is uniform on it, z = n / ||n|| with n ~ N(0, I) (the paper's choice and its code's default).
How far a set of codes is from the prior is measured by Delta, the KL divergence from a diagonal
Gaussian fitted to the batch's codes (per-dimension mean m_j and variance s_j^2, the fit's maximum
likelihood, 1/B) to the unit Gaussian N(0, I), as in the paper (against N(0, I), not against the
sphere-uniform's moments, which give Delta > 0 themselves):

    Delta(Z) = KL(N(m, diag s^2) || N(0, I)) = sum_j [ (s_j^2 + m_j^2) / 2 - log s_j - 1/2 ]

(s_j^2 is floored at 1e-12 so that a batch of one example, or collapsed codes, give a large finite
value rather than infinity. The authors' code puts the variance where this formula has s_j; the
formula, the true KL, is followed here.) The game, with the paper's reconstruction terms:

    L_E = Delta(E(X)) - Delta(E(G(Z))) + lambda_x ||x - G(E(x))||_1       (E pulls the data's codes
                                                                              to the prior, pushes G's away)
    L_G = Delta(E(G(Z))) + lambda_z L_z,   L_z = 1 - <z, E(G(z))> = ||z - E(G(z))||^2 / 2

L_z is the cosine distance of the paper's latent reconstruction (on the sphere it is half the squared
distance); ||.||_1 is summed over an example's values, images in [0, 1]. Delta is a statistic of the
whole batch, a scalar: it enters each network's loss [B] as the same value for every example, so
the batch mean that `update` differentiates is Delta plus the mean of the per-example terms.
Under torchrun each rank computes Delta on its own share of the batch (a per-rank statistic, not
the global batch's; the gradients are then averaged across ranks as usual).

One trainer step is the paper's alternation (its code's update plan): one encoder update on the
batch x and fresh z (G's samples held fixed), then `g_updates` generator updates, each with fresh
z against the updated encoder. Defaults follow the authors' code and commands (README of
DmitryUlyanov/AGE): 2 generator updates per encoder update (their default, CIFAR-10's and Tiny
ImageNet's; CelebA's is 3), lambda_z = 1000 on the cosine distance,
lambda_x = 10 on the mean absolute error of [-1, 1] images, Adam 2e-4 with beta1 = 0.5. Their code
averages Delta over the M dimensions and L_x over the D values of an image, so with the sums written
here the same balance is lambda_z = 1000 (the 1/M cancels) and lambda_x = 10 * 2 * M / D
(`x_weight=none`, the default).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dgm.config import number
from dgm.models import register_model
from dgm.models.autoencoding_gan import AutoEncodingGAN, AutoEncodingGANConfig, l1_per_example


@dataclass
class AGEConfig(AutoEncodingGANConfig):
    latent_dim: int = number(64, min=2)  # M: codes on the sphere S^{M-1} (the authors' CelebA command: 64)
    g_updates: int = number(2, min=1)  # generator updates per encoder update (the authors' default and CIFAR-10's)
    z_weight: float = number(1000.0, min=0)  # lambda_z on the cosine distance 1 - <z, E(G(z))> (the authors' 1000)
    x_weight: float | None = number(None, min=0)  # lambda_x on ||x - G(E(x))||_1 summed over values; none:
    # 20 M / D, the authors' 10 on per-value means of [-1, 1] images against a per-dimension Delta


def batch_divergence(codes: torch.Tensor) -> torch.Tensor:
    """Delta, a scalar: KL(N(m, diag s^2) || N(0, I)) of the Gaussian fitted to codes [B, M] (1/B variances)."""
    m = codes.mean(0)
    var = (codes - m).pow(2).mean(0).clamp_min(1e-12)
    return ((var + m.pow(2)) / 2 - var.log() / 2 - 0.5).sum()


class AGE(AutoEncodingGAN):
    """Encoder E onto the unit sphere and generator G: two optimizers, the encoder being G's adversary."""

    def __init__(self, cfg: AGEConfig):
        super().__init__(cfg)
        self.networks = {"encoder": self.encoder, "generator": self.generator}

    @property
    def x_weight(self) -> float:
        """lambda_x: the config's, or 20 M / D (see the module docstring)."""
        cfg = self.cfg
        return cfg.x_weight if cfg.x_weight is not None else 20 * cfg.latent_dim / self.dim

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of the prior, uniform on the unit sphere: normalised N(0, I) draws [n, latent_dim]."""
        return F.normalize(super().sample_latent(n, generator), dim=1)

    def encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) projected onto the unit sphere: [B, latent_dim] of norm 1."""
        return F.normalize(self.encoder(x), dim=1)

    # --- the two losses ----------------------------------------------------------------------------
    def encoder_losses(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_E [B] for data x and prior draws z (G(z) held fixed), with Delta of both batches and the L1 term."""
        z_hat = self.encoder_output(x)
        with torch.no_grad():
            x_gen = self.generator(z)
        delta_real, delta_fake = batch_divergence(z_hat), batch_divergence(self.encoder_output(x_gen))
        l1 = l1_per_example(x, self.generator(z_hat))
        return {"loss_e": delta_real - delta_fake + self.x_weight * l1, "delta_real": delta_real,
                "delta_fake": delta_fake, "l1": l1}

    def generator_losses(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_G [B] for prior draws z, with Delta(E(G(Z))) and the cosine distance L_z."""
        z_rec = self.encoder_output(self.generator(z))
        delta_gen = batch_divergence(z_rec)
        latent = 1 - (z * z_rec).sum(1)
        return {"loss_g": delta_gen + self.cfg.z_weight * latent, "delta_gen": delta_gen, "latent_cos_dist": latent}

    def train_step(self, batch, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, torch.Tensor]:
        x = batch[0]
        terms = self.encoder_losses(x, self.sample_latent(x.shape[0]))
        self.update(optimizers, {"encoder": terms["loss_e"]})
        for _ in range(self.cfg.g_updates):
            terms_g = self.generator_losses(self.sample_latent(x.shape[0]))
            self.update(optimizers, {"generator": terms_g["loss_g"]})
        return self.report({**terms, **terms_g})


register_model("age", AGEConfig, family="hybrid", seeds=("003",),
               description="AGE (Ulyanov et al.): encoder and generator only, the encoder the adversary in latent "
                           "space (batch KL to N(0, I) of codes on the sphere), L1 and latent reconstruction")(AGE)
