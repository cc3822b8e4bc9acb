"""Variational autoencoder (seeds 000, 001, 002, 004) with the IWAE bound (seed 004).

    ELBO(x)   = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))               <= log p(x)
    IWAE_k(x) = E[log 1/k sum_s p(x, z_s) / q(z_s|x)],  z_s ~ q(z|x)    ELBO <= IWAE_k <= IWAE_k+1 <= log p(x)

q(z|x) = N(mu(x), diag sigma^2(x)) with z = mu + sigma * eps (reparameterization trick),
p(z) = N(0, I), and p(x|z) one of the likelihoods in `dgm.distributions`; on data with L levels each
is a probability of the L values, so ELBO and IWAE_k bound the log-probability of the data as stored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import distributions as D
from torch import nn

from dgm.config import choice, number, numbers
from dgm.distributions import LIKELIHOODS, Likelihood, make_likelihood, standard_normal_log_prob
from dgm.errors import DgmError
from dgm.models import ModelConfig, register_model
from dgm.nn import ACTIVATIONS, MLP, ConvDecoder, ConvEncoder


@dataclass
class MLPCodecConfig(ModelConfig):
    """An MLP encoder and decoder over images and the likelihood p(x|.) of the decoder's outputs: what the VAE
    and the autoencoders (autoencoder.py) share."""

    hidden_dims: tuple[int, ...] = numbers((400,), min=1)  # MLP widths (the decoder mirrors them)
    latent_dim: int = number(20, min=1)
    activation: str = choice("relu", *ACTIVATIONS, "gated")  # gated: MLP only
    likelihood: str = choice("auto", "auto", *LIKELIHOODS)  # auto: Bernoulli for binary data, categorical for
    # <= 32 levels, discretized logistic mixture for more (see distributions.py)
    learned_scale: bool = False  # Gaussian/Laplace: decoder predicts a per-pixel scale
    scale: float = number(0.1, above=0)  # Gaussian/Laplace fixed scale
    n_mix: int = number(5, min=1)  # dlogistic: logistic mixture components per pixel


@dataclass
class CodecConfig(MLPCodecConfig):
    """An MLP or convolutional encoder and decoder."""

    architecture: str = choice("mlp", "mlp", "conv")
    conv_channels: tuple[int, ...] = numbers((32, 64), min=1, nonempty=True)  # stride-2 conv widths (mirrored)


def codec_likelihood(cfg: MLPCodecConfig) -> Likelihood:
    """p(x|.) as the config names it, for the dataset's channels and levels."""
    return make_likelihood(cfg.likelihood, cfg.data_shape[0], cfg.levels, cfg.learned_scale, cfg.scale, cfg.n_mix)


def codec_networks(cfg: CodecConfig, code_dim: int, out_channels: int,
                   condition_dim: int = 0) -> tuple[nn.Module, nn.Module]:
    """(encoder [*, C, H, W] -> [*, code_dim], decoder [*, latent_dim] -> [*, out_channels, H, W]).

    With condition_dim d > 0 (the conditional VAE, cvae.py) both also read a condition vector c [*, d]: the
    encoder takes x with c appended (the MLP [*, C H W + d], flattened x then c; the conv encoder
    [*, C + d, H, W], c as d constant feature maps) and the decoder [*, latent_dim + d], z then c."""
    c, h, w = cfg.data_shape
    d = condition_dim
    if cfg.architecture == "mlp":
        encoder = nn.Sequential(nn.Identity() if d else nn.Flatten(-3),
                                MLP(c * h * w + d, list(cfg.hidden_dims), code_dim, cfg.activation))
        decoder = nn.Sequential(MLP(cfg.latent_dim + d, list(cfg.hidden_dims)[::-1], out_channels * h * w,
                                    cfg.activation), nn.Unflatten(-1, (out_channels, h, w)))
        return encoder, decoder
    return (ConvEncoder((c + d, h, w), list(cfg.conv_channels), code_dim, cfg.activation),
            ConvDecoder(cfg.latent_dim + d, cfg.data_shape, list(cfg.conv_channels), out_channels, cfg.activation))


# --- the bounds, shared with the conditional VAE (cvae.py), which conditions q and p(x|z) on y ------------
def diagonal_normal(out: torch.Tensor) -> D.Normal:
    """N(mu, diag sigma^2) from an encoder's output [..., 2 D] = [mu, log sigma^2]."""
    mu, log_var = out.chunk(2, dim=-1)
    return D.Normal(mu, torch.exp(0.5 * log_var))


def gaussian_kl(q: D.Normal) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2), summed over dimensions: [B]."""
    var = q.scale.pow(2)
    return 0.5 * (q.loc.pow(2) + var - 1 - var.log()).sum(-1)


def elbo_parts(q: D.Normal, log_px_z: Callable[[torch.Tensor], torch.Tensor],
               n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_q[log p(x|z)] by Monte Carlo over n_samples z ~ q, KL(q || p(z)) in closed form), each [B]."""
    return log_px_z(q.rsample((n_samples,))).mean(0), gaussian_kl(q)


def importance_log_weights(q: D.Normal, log_px_z: Callable[[torch.Tensor], torch.Tensor],
                           k: int) -> torch.Tensor:
    """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s) for k samples z_s ~ q: [k, B]."""
    z = q.rsample((k,))
    return log_px_z(z) + standard_normal_log_prob(z) - q.log_prob(z).sum(-1)


def iwae_bound(log_weights_of: Callable[[int], torch.Tensor], k: int, batch: int, chunk_size: int) -> torch.Tensor:
    """IWAE_k = log 1/k sum_s w_s of a batch, from `log_weights_of(j)` ([j, batch]: j fresh samples each call),
    in chunks of at most chunk_size (sample x example) pairs combined with a running log-sum-exp, so memory
    does not grow with k: [batch]."""
    per_chunk = max(1, chunk_size // batch)
    total = None
    for start in range(0, k, per_chunk):
        lse = torch.logsumexp(log_weights_of(min(per_chunk, k - start)), dim=0)
        total = lse if total is None else torch.logaddexp(total, lse)
    return total - math.log(k)


@dataclass
class VAEConfig(CodecConfig):
    beta: float = number(1.0, min=0)  # weight of the KL term (beta-VAE); 1 gives the ELBO
    kl_warmup_steps: int = number(0, min=0)  # KL weight rises linearly from 0 to beta over these steps
    objective: str = choice("elbo", "elbo", "iwae")
    n_samples: int = number(1, min=1)  # z samples per example in the training objective (k for iwae)
    chunk_size: int = number(8192, min=1)  # most (sample x example) pairs per decoder call in iwae(); larger is
    # slower on CPU: the decoder's outputs then overflow the caches and every elementwise op streams from memory


@register_model("vae", VAEConfig, family="vae", seeds=("000", "001", "002", "004"),
                description="Variational autoencoder, MLP or conv, ELBO or IWAE objective")
class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.likelihood = codec_likelihood(cfg)
        self.encoder, self.decoder = self.networks(self.likelihood.out_channels)

    def networks(self, out_channels: int) -> tuple[nn.Module, nn.Module]:
        """(encoder x -> [mu, log sigma^2] [*, 2 latent_dim], decoder z -> the likelihood's maps)."""
        return codec_networks(self.cfg, 2 * self.cfg.latent_dim, out_channels)

    # --- the model's parts -------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> D.Normal:
        """q(z|x) = N(mu(x), diag sigma^2(x)), batch shape [B, latent_dim]."""
        return diagonal_normal(self.encoder(x).to(x.dtype))  # the data's precision also under bf16 autocast

    def log_px_z(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) for z [..., B, D] and x [B, C, H, W] -> [..., B]."""
        return self.likelihood.log_prob(self.decoder(z).to(x.dtype), x)

    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x) for k samples z_s ~ q(z|x): [k, B]."""
        return importance_log_weights(self.posterior(x), lambda z: self.log_px_z(z, x), k)

    # --- capabilities ------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean, used as the code of x."""
        return self.posterior(x).mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean image of p(x|z), in [0, 1]."""
        return self.likelihood.mean(self.decoder(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def sample(self, n: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images of p(x|z) for z ~ p(z) = N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=device)
        return self.decode(z)

    def elbo_terms(self, x: torch.Tensor, n_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q[log p(x|z)] by Monte Carlo over n_samples, KL(q(z|x) || p(z)) in closed form), each [B]."""
        return elbo_parts(self.posterior(x), lambda z: self.log_px_z(z, x), n_samples)

    def elbo(self, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), nats per example: [B]."""
        log_px_z, kl = self.elbo_terms(x, n_samples)
        return log_px_z - kl

    def iwae(self, x: torch.Tensor, k: int, chunk_size: int | None = None) -> torch.Tensor:
        """IWAE_k(x) = log 1/k sum_s w_s, batched over examples and samples: [B].

        Samples are drawn in chunks of at most `chunk_size` (sample x example) pairs and
        combined with a running log-sum-exp, so memory does not grow with k.
        """
        return iwae_bound(lambda j: self.log_weights(x, j), k, x.shape[0], chunk_size or self.cfg.chunk_size)

    def kl_weight(self, step: int | None) -> float:
        """beta, ramped up linearly over kl_warmup_steps (full weight when step is None)."""
        if step is None or self.cfg.kl_warmup_steps <= 0:
            return self.cfg.beta
        return self.cfg.beta * min(1.0, (step + 1) / self.cfg.kl_warmup_steps)

    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """-ELBO (with beta and warm-up) or -IWAE_k, averaged over the batch; terms in nats.

        With a likelihood that is not a probability of the data (a Bernoulli over grey levels) the
        terms are named for what they are: the reconstruction loss (`bce`) and `kl`, not an ELBO."""
        x = batch[0]
        return self.objective(lambda k: self.iwae(x, k), lambda n: self.elbo_terms(x, n), step)

    def objective(self, iwae: Callable[[int], torch.Tensor], terms: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                  step: int | None) -> dict[str, torch.Tensor]:
        """`loss`'s terms from the batch's bounds: iwae(k) [B] and terms(n_samples) = (E_q log p(x|z), KL) [B]."""
        proper = self.likelihood.normalised
        if self.cfg.objective == "iwae":
            bound = iwae(self.cfg.n_samples)
            return {"loss": -bound.mean(), **({"iwae": bound.mean().detach()} if proper else {})}
        log_px_z, kl = terms(self.cfg.n_samples)
        loss = -(log_px_z - self.kl_weight(step) * kl).mean()
        if not proper:
            return {"loss": loss, self.likelihood.loss_name: -log_px_z.mean().detach(), "kl": kl.mean().detach()}
        return {"loss": loss, "elbo": (log_px_z - kl).mean().detach(), "log_px_z": log_px_z.mean().detach(),
                "kl": kl.mean().detach()}
