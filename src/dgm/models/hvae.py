"""Hierarchical VAE with two stochastic layers (seed 004; the HVAE of Tomczak & Welling 2018, "VAE with a
VampPrior", after Sonderby et al.'s ladder of latents):

    generative model  p(x, z1, z2) = p(x | z1, z2) p(z1 | z2) p(z2)
    inference model   q(z1, z2 | x) = q(z1 | x, z2) q(z2 | x)

    ELBO(x)   = E_q[log p(x|z1,z2) + log p(z1|z2) + log p(z2) - log q(z1|x,z2) - log q(z2|x)]   <= log p(x)
    IWAE_k(x) = E[log 1/k sum_s p(x, z1_s, z2_s) / q(z1_s, z2_s | x)]

q(z2|x), q(z1|x,z2) and p(z1|z2) are diagonal Gaussians; p(z2) is any prior of `dgm.nn.priors` (`prior=`),
the VampPrior's components being q(z2|u_k) of the pseudo-inputs, as in the paper. Both layers have
`latent_dim` units. The KL terms are Monte Carlo estimates over the same samples (p(z1|z2) leaves no closed
form). The code of x is [E z1, E z2] ([B, 2 latent_dim]): mu2 = the mean of q(z2|x), then the mean of
q(z1|x, mu2); `decode` takes such codes, `sample_latent` draws z2 ~ p(z2), z1 ~ p(z1|z2).

Networks: q(z2|x) is the VAE's encoder; q(z1|x,z2) reads x with z2 appended and p(x|z1,z2) reads [z1, z2],
both built like the conditional VAE's networks with z2 as the condition; p(z1|z2) an MLP of hidden_dims.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dgm.errors import DgmError
from dgm.models import register_model
from dgm.models.cvae import with_condition
from dgm.models.vae import VAE, VAEConfig, codec_encoder, codec_networks, diagonal_normal
from dgm.nn import MLP


@dataclass
class HVAEConfig(VAEConfig):
    """The VAE's options; `latent_dim` is the size of each of the two layers."""


@register_model("hvae", HVAEConfig, family="vae", seeds=("004",),
                description="Hierarchical VAE, two stochastic layers q(z2|x) q(z1|x,z2), p(z1|z2) p(z2), any prior")
class HVAE(VAE):
    closed_form_kl = False  # p(z1|z2) depends on a sample of z2

    def __init__(self, cfg: HVAEConfig):
        if cfg.flow != "none":
            raise DgmError("posterior flows act on one layer of latents; the hvae takes flow=none")
        super().__init__(cfg)

    def networks(self, out_channels: int) -> tuple[nn.Module, nn.Module]:
        """(q(z2|x): x -> [mu2, log sigma2^2], p(x|z1,z2): [z1, z2] -> the likelihood's maps); also builds
        q(z1|x,z2) (`encoder1`) and p(z1|z2) (`prior1`)."""
        d = self.cfg.latent_dim
        encoder2 = codec_encoder(self.cfg, 2 * d)
        self.encoder1, decoder = codec_networks(self.cfg, 2 * d, out_channels, condition_dim=d)
        self.prior1 = MLP(d, list(self.cfg.hidden_dims), 2 * d, self.cfg.activation)
        return encoder2, decoder

    def posterior1(self, x: torch.Tensor, z2: torch.Tensor):
        """q(z1 | x, z2) for z2 [..., B, D]: batch shape [..., B, D]."""
        xs = x.expand(*z2.shape[:-1], *x.shape[-3:]).flatten(0, -4) if z2.dim() > 2 else x
        out = self.encoder1(with_condition(xs, z2.reshape(-1, z2.shape[-1]), self.cfg.architecture))
        return diagonal_normal(out.to(x.dtype).reshape(*z2.shape[:-1], -1))

    def draw(self, x: torch.Tensor, n: int, y=None,
             reparameterize: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n draws (z = [z1, z2] [n, B, 2D], log q(z1, z2 | x) [n, B], zeros: no flow)."""
        q2 = self.posterior(x)
        z2 = q2.rsample((n,)) if reparameterize else q2.sample((n,))
        q1 = self.posterior1(x, z2)
        z1 = q1.rsample() if reparameterize else q1.sample()
        log_q = q2.log_prob(z2).sum(-1) + q1.log_prob(z1).sum(-1)
        return torch.cat([z1, z2], dim=-1), log_q, torch.zeros_like(log_q)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z1 | z2) + log p(z2) for z = [z1, z2] [..., 2D] -> [...]."""
        z1, z2 = z.chunk(2, dim=-1)
        return diagonal_normal(self.prior1(z2)).log_prob(z1).sum(-1) + self.prior.log_prob(z2)

    def encode(self, x: torch.Tensor, y=None) -> torch.Tensor:
        mu2 = self.posterior(x).mean
        return torch.cat([self.posterior1(x, mu2).mean, mu2], dim=-1)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z2 ~ p(z2), z1 ~ p(z1|z2): [n, 2D]."""
        z2 = self.prior.sample(n, generator)
        p1 = diagonal_normal(self.prior1(z2))
        eps = torch.randn(p1.loc.shape, generator=generator, device=z2.device, dtype=z2.dtype)
        return torch.cat([p1.loc + p1.scale * eps, z2], dim=-1)
