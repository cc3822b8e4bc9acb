"""The density network (MacKay 1995; seed 004): a decoder alone, trained by a Monte Carlo estimate of log p(x).

    p(z) = N(0, I),   p(x|z) = the VAE's decoder and likelihood (`codec_networks`, `codec_likelihood`)
    log p(x) = log int p(x|z) p(z) dz  ~=  log 1/S sum_s p(x|z_s),   z_s ~ p(z)   (log-sum-exp)

The estimate is importance sampling with the prior as the proposal, so it is the IWAE bound with
q(z|x) = p(z): the weights are p(x, z_s) / p(z_s) = p(x|z_s), and

    elbo(x)    = E_p(z)[log p(x|z)]                        (one z per call; Jensen: <= log p(x))
    iwae(x, k) = log 1/k sum_s p(x|z_s),  z_s ~ p(z)      E[iwae_k] <= E[iwae_k+1] <= log p(x)

Training maximises iwae(x, n_samples) (the seed's estimate with S = n_samples), reported as `iwae` when
the likelihood is a probability of the data. On data with L levels every likelihood but the Bernoulli
on grey levels is a probability of the L values, so these bound the log-probability of the pixels as
stored (`dgm eval` reports elbo, log_likelihood = iwae_k and bits_per_dim).

The seed's lesson: almost every z drawn from the prior explains a given x badly, so the estimate needs
a number of samples that grows exponentially with the latent dimension; the VAE replaces p(z) by an
encoder's q(z|x) (`bench/density_network.py` shows the gap against S).

There is no encoder, so no `encode` or `reconstruct`. `decode(z)` and `sample(n)` give mean images of
p(x|z), as the VAE's. The decoder is the VAE's (`codec_networks`, whose encoder is dropped), so a VAE
with the same hidden_dims, latent_dim, likelihood and architecture has the very same p(x|z) family.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dgm.config import number
from dgm.models import register_model
from dgm.models.vae import CodecConfig, codec_likelihood, codec_networks, iwae_bound


@dataclass
class DensityNetworkConfig(CodecConfig):
    """The VAE's decoder options (hidden_dims, latent_dim, likelihood, architecture, ...), no encoder."""

    n_samples: int = number(100, min=1)  # S, prior samples per example in the training estimate
    chunk_size: int = number(8192, min=1)  # most (sample x example) pairs per decoder call in iwae()


@register_model("density-network", DensityNetworkConfig, family="vae", seeds=("004",),
                description="Density network: a decoder trained by the Monte Carlo estimate log 1/S sum p(x|z_s), "
                            "z_s ~ p(z)")
class DensityNetwork(nn.Module):
    def __init__(self, cfg: DensityNetworkConfig):
        super().__init__()
        self.cfg = cfg
        self.likelihood = codec_likelihood(cfg)
        _, self.decoder = codec_networks(cfg, 2 * cfg.latent_dim, self.likelihood.out_channels)  # the VAE's decoder

    # --- the model's parts -------------------------------------------------------------
    def log_px_z(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) for z [..., B, M] and x [B, C, H, W] -> [..., B]."""
        return self.likelihood.log_prob(self.decoder(z).to(x.dtype), x)  # the data's precision under bf16

    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log w_s = log p(x|z_s) for k draws z_s ~ p(z) (the prior is the proposal, so p(z_s) cancels): [k, B]."""
        z = torch.randn(k, x.shape[0], self.cfg.latent_dim, dtype=x.dtype, device=x.device)
        return self.log_px_z(z, x)

    # --- capabilities ------------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean image of p(x|z), in [0, 1]."""
        return self.likelihood.mean(self.decoder(z))

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z): [n, latent_dim]."""
        device = next(self.parameters()).device
        return torch.randn(n, self.cfg.latent_dim, generator=generator, device=device)

    def sample(self, n: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images of p(x|z) for z ~ p(z)."""
        return self.decode(self.sample_latent(n, generator))

    def elbo(self, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """E_p(z)[log p(x|z)] by Monte Carlo over n_samples z ~ p(z), nats per example: [B]."""
        return self.log_weights(x, n_samples).mean(0)

    def iwae(self, x: torch.Tensor, k: int, chunk_size: int | None = None) -> torch.Tensor:
        """log 1/k sum_s p(x|z_s), z_s ~ p(z): [B]; in chunks of at most chunk_size (sample x example) pairs
        with a running log-sum-exp, so memory does not grow with k."""
        return iwae_bound(lambda j: self.log_weights(x, j), k, x.shape[0], chunk_size or self.cfg.chunk_size)

    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """-iwae(x, n_samples) averaged over the batch: the seed's estimate of -log p(x) with S = n_samples.
        With a likelihood that is not a probability of the data (a Bernoulli on grey levels) only the loss."""
        bound = self.iwae(batch[0], self.cfg.n_samples)
        out = {"loss": -bound.mean()}
        if self.likelihood.normalised:
            out["iwae"] = bound.mean().detach()
        return out
