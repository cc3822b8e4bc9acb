"""Variational autoencoder (seeds 000, 001, 002, 004) with the IWAE bound (seed 004), a choice of prior,
posterior flows and gradient estimators (seeds 003, 004).

    ELBO(x)   = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))               <= log p(x)
    IWAE_k(x) = E[log 1/k sum_s p(x, z_s) / q(z_s|x)],  z_s ~ q(z|x)    ELBO <= IWAE_k <= IWAE_k+1 <= log p(x)

q(z_0|x) = N(mu(x), diag sigma^2(x)) with z_0 = mu + sigma * eps (the reparameterization trick); with
`flow=planar|householder|iaf` (dgm.nn.flows) z = z_K = f_K o ... o f_1(z_0), the steps' parameters computed
from a context h(x) the encoder outputs beside mu and log sigma^2, and

    log q(z_K|x) = log q(z_0|x) - sum_t log |det df_t / dz_{t-1}|          (seed 004, "Normalizing flows")

p(z) is `prior=standard|mog|vampprior|flow` (dgm.nn.priors). With the standard prior and no flow the KL
term is in closed form; otherwise KL = E_q[log q(z|x) - log p(z)] by Monte Carlo over the same samples as
E_q[log p(x|z)]. The IWAE bound needs only log p(z) and log q(z|x), so it holds for every combination.
p(x|z) is one of the likelihoods in `dgm.distributions`; on data with L levels each is a probability of
the L values, so ELBO and IWAE_k bound the log-probability of the data as stored.

`estimator` says how the encoder's gradient is estimated (seed 003: why the reparameterization trick
matters). For the ELBO's integrand f(z_0) = log p(x|z) + log p(z) - log q(z|x), z = flow(z_0):

    reparameterization        grad E_q[f] = E_eps[grad f(mu + sigma eps)]
    score_function            grad E_q[f] = E_q[f(z_0) grad log q(z_0|x)] + E_q[grad f(z_0) at fixed z_0]
    score_function_baseline   the same with f(z_0) - b in the first term, b the mean of f over the other
                              n_samples - 1 samples of the same x (leave-one-out: unbiased, needs n_samples >= 2)

The decoder's gradient is E_q[grad log p(x|z)] in every case.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import distributions as D
from torch import nn

from dgm.config import choice, number, numbers
from dgm.distributions import LIKELIHOODS, Likelihood, make_likelihood
from dgm.errors import DgmError
from dgm.models import ModelConfig, register_model
from dgm.nn import ACTIVATIONS, MLP, ConvDecoder, ConvEncoder
from dgm.nn.flows import FLOWS, PosteriorFlow
from dgm.nn.priors import PRIORS, make_prior


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


def codec_encoder(cfg: CodecConfig, code_dim: int, condition_dim: int = 0) -> nn.Module:
    """The encoder [*, C, H, W] -> [*, code_dim]; with condition_dim d > 0 it also reads a condition vector
    c [*, d] appended to x (the MLP [*, C H W + d], flattened x then c; the conv encoder [*, C + d, H, W], c as
    d constant feature maps)."""
    c, h, w = cfg.data_shape
    d = condition_dim
    if cfg.architecture == "mlp":
        return nn.Sequential(nn.Identity() if d else nn.Flatten(-3),
                             MLP(c * h * w + d, list(cfg.hidden_dims), code_dim, cfg.activation))
    return ConvEncoder((c + d, h, w), list(cfg.conv_channels), code_dim, cfg.activation)


def codec_networks(cfg: CodecConfig, code_dim: int, out_channels: int,
                   condition_dim: int = 0) -> tuple[nn.Module, nn.Module]:
    """(encoder [*, C, H, W] -> [*, code_dim], decoder [*, latent_dim] -> [*, out_channels, H, W]).

    With condition_dim d > 0 (the conditional VAE, cvae.py) both also read a condition vector c [*, d]: the
    encoder as `codec_encoder` says and the decoder [*, latent_dim + d], z then c."""
    encoder = codec_encoder(cfg, code_dim, condition_dim)
    return encoder, codec_decoder(cfg, cfg.latent_dim + condition_dim, out_channels)


def codec_decoder(cfg: CodecConfig, in_dim: int, out_channels: int) -> nn.Module:
    """The decoder [*, in_dim] -> [*, out_channels, H, W]: the MLP's mirrored widths, or the conv decoder."""
    c, h, w = cfg.data_shape
    if cfg.architecture == "mlp":
        return nn.Sequential(MLP(in_dim, list(cfg.hidden_dims)[::-1], out_channels * h * w, cfg.activation),
                             nn.Unflatten(-1, (out_channels, h, w)))
    return ConvDecoder(in_dim, cfg.data_shape, list(cfg.conv_channels), out_channels, cfg.activation)


# --- the bounds ---------------------------------------------------------------------
def diagonal_normal(out: torch.Tensor) -> D.Normal:
    """N(mu, diag sigma^2) from an encoder's output [..., 2 D] = [mu, log sigma^2]."""
    mu, log_var = out.chunk(2, dim=-1)
    return D.Normal(mu, torch.exp(0.5 * log_var))


def gaussian_kl(q: D.Normal) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2), summed over dimensions: [B]."""
    var = q.scale.pow(2)
    return 0.5 * (q.loc.pow(2) + var - 1 - var.log()).sum(-1)


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


ESTIMATORS = ("reparameterization", "score_function", "score_function_baseline")


@dataclass
class VAEConfig(CodecConfig):
    beta: float = number(1.0, min=0)  # weight of the KL term (beta-VAE); 1 gives the ELBO
    kl_warmup_steps: int = number(0, min=0)  # KL weight rises linearly from 0 to beta over these steps
    objective: str = choice("elbo", "elbo", "iwae")
    n_samples: int = number(1, min=1)  # z samples per example in the training objective (k for iwae)
    chunk_size: int = number(8192, min=1)  # most (sample x example) pairs per decoder call in iwae(); larger is
    # slower on CPU: the decoder's outputs then overflow the caches and every elementwise op streams from memory
    prior: str = choice("standard", *PRIORS)  # p(z): N(0, I), a learned Gaussian mixture, the VampPrior, a MAF
    n_components: int = number(10, min=1)  # prior=mog: mixture components
    n_pseudo: int = number(500, min=1)  # prior=vampprior: pseudo-inputs (initialised from training images)
    prior_flow_length: int = number(2, min=1)  # prior=flow: autoregressive layers
    flow: str = choice("none", "none", *FLOWS)  # posterior flow q(z_K|x)
    flow_length: int = number(4, min=1)  # K, the flow's steps
    flow_context: int = number(128, min=1)  # size of the encoder's context h that sets the flow's parameters
    flow_hidden: int = number(320, min=1)  # width of the MADE networks (flow=iaf, prior=flow)
    estimator: str = choice("reparameterization", *ESTIMATORS)  # the encoder's gradient estimator


@register_model("vae", VAEConfig, family="vae", seeds=("000", "001", "002", "003", "004"),
                description="Variational autoencoder, MLP or conv, ELBO or IWAE; prior=mog|vampprior|flow, "
                            "flow=planar|householder|iaf, score-function estimators")
class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.estimator != "reparameterization" and cfg.objective != "elbo":
            raise DgmError(f"estimator={cfg.estimator} estimates the gradient of the ELBO; use objective=elbo")
        if cfg.estimator == "score_function_baseline" and cfg.n_samples < 2:
            raise DgmError("estimator=score_function_baseline takes each sample's baseline from the other samples "
                           "of the same image, so it needs n_samples=2 or more")
        self.likelihood = codec_likelihood(cfg)
        self.flow = (None if cfg.flow == "none" else
                     PosteriorFlow(cfg.flow, cfg.latent_dim, cfg.flow_length, cfg.flow_context, cfg.flow_hidden))
        self.encoder, self.decoder = self.networks(self.likelihood.out_channels)
        self.prior = make_prior(cfg.prior, cfg.latent_dim, n_components=cfg.n_components, n_pseudo=cfg.n_pseudo,
                                data_shape=tuple(cfg.data_shape), posterior=self.pseudo_posterior,
                                flow_length=cfg.prior_flow_length, hidden_dim=cfg.flow_hidden)

    @property
    def code_size(self) -> int:
        """The encoder's outputs: [mu, log sigma^2] and, with a flow, its context h."""
        return 2 * self.cfg.latent_dim + (self.cfg.flow_context if self.flow is not None else 0)

    def networks(self, out_channels: int) -> tuple[nn.Module, nn.Module]:
        """(encoder x -> [mu, log sigma^2, h] [*, code_size], decoder z -> the likelihood's maps)."""
        return codec_networks(self.cfg, self.code_size, out_channels)

    # --- the condition (none here; the conditional VAE of cvae.py has labels) ---------------
    def conditions(self, y, n: int) -> torch.Tensor | None:
        """What the networks read besides x or z for n examples with labels y: nothing for the VAE."""
        return None

    def encoder_input(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return x

    def decoder_input(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return z

    # --- the model's parts -------------------------------------------------------------
    def encoded(self, x: torch.Tensor, y=None) -> tuple[D.Normal, torch.Tensor | None]:
        """(q(z_0|x) = N(mu(x), diag sigma^2(x)) with batch shape [B, latent_dim], the flow's context h [B, c]
        or None without a flow)."""
        out = self.encoder(self.encoder_input(x, self.conditions(y, x.shape[0]))).to(x.dtype)  # the data's
        d = 2 * self.cfg.latent_dim                                                            # precision under bf16
        return diagonal_normal(out[..., :d]), (out[..., d:] if self.flow is not None else None)

    def posterior(self, x: torch.Tensor, y=None) -> D.Normal:
        """q(z|x) = N(mu(x), diag sigma^2(x)), batch shape [B, latent_dim]; with a flow, the base q(z_0|x)."""
        return self.encoded(x, y)[0]

    def pseudo_posterior(self, u: torch.Tensor) -> D.Normal:
        """q(z_0|u) of the VampPrior's pseudo-inputs u (an unconditional encoder's; the flow is left out, so the
        prior stays a mixture of Gaussians with a density in closed form)."""
        return self.posterior(u)

    def draw(self, x: torch.Tensor, n: int, y=None,
             reparameterize: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n draws from q(z|x): (z = z_K [n, B, D], log q(z_0|x) [n, B], sum_t log|det df_t/dz_{t-1}| [n, B]), so
        log q(z|x) = log q(z_0|x) - log_det. reparameterize=False draws z_0 without a path to mu and sigma
        (the score-function estimators)."""
        q, h = self.encoded(x, y)
        z0 = q.rsample((n,)) if reparameterize else q.sample((n,))
        log_q0 = q.log_prob(z0).sum(-1)
        if self.flow is None:
            return z0, log_q0, torch.zeros_like(log_q0)
        z, log_det = self.flow(z0, h)
        return z, log_q0, log_det

    def log_px_z(self, z: torch.Tensor, x: torch.Tensor, y=None) -> torch.Tensor:
        """log p(x|z) for z [..., B, D] and x [B, C, H, W] -> [..., B]."""
        c = self.conditions(y, x.shape[0])
        return self.likelihood.log_prob(self.decoder(self.decoder_input(z, c)).to(x.dtype), x)

    def log_weights(self, x: torch.Tensor, k: int, y=None) -> torch.Tensor:
        """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x) for k samples z_s ~ q(z|x): [k, B]."""
        z, log_q0, log_det = self.draw(x, k, y)
        return self.log_px_z(z, x, y) + self.log_prior(z) - (log_q0 - log_det)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for z [..., D] -> [...]."""
        return self.prior.log_prob(z)

    @property
    def closed_form_kl(self) -> bool:
        """KL(q(z|x) || p(z)) in closed form: a Gaussian posterior against N(0, I)."""
        return self.flow is None and self.cfg.prior == "standard"

    # --- capabilities ------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """The code of x: the posterior mean, or with a flow the flow's image of the mean of q(z_0|x)."""
        q, h = self.encoded(x, y)
        return q.mean if self.flow is None else self.flow(q.mean, h)[0]

    def decode(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """The mean image of p(x|z), in [0, 1]."""
        return self.likelihood.mean(self.decoder(self.decoder_input(z, self.conditions(y, z.shape[0]))))

    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return self.decode(self.encode(x, y), y)

    @property
    def fit_before_training(self):
        """prior=vampprior: start the pseudo-inputs as training images (the hook dgm.api calls on a new run)."""
        return getattr(self.prior, "initialise", None)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z): [n, latent_dim]."""
        return self.prior.sample(n, generator)

    def sample(self, n: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images of p(x|z) for z ~ p(z)."""
        return self.decode(self.sample_latent(n, generator))

    def elbo_terms(self, x: torch.Tensor, n_samples: int = 1, y=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q[log p(x|z)] by Monte Carlo over n_samples z ~ q(z|x), KL(q(z|x) || p(z))), each [B]; the KL in
        closed form where it has one, else E_q[log q(z|x) - log p(z)] over the same samples."""
        if self.closed_form_kl:
            q = self.posterior(x, y)
            return self.log_px_z(q.rsample((n_samples,)), x, y).mean(0), gaussian_kl(q)
        z, log_q0, log_det = self.draw(x, n_samples, y)
        return self.log_px_z(z, x, y).mean(0), (log_q0 - log_det - self.log_prior(z)).mean(0)

    def elbo(self, x: torch.Tensor, n_samples: int = 1, y=None) -> torch.Tensor:
        """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), nats per example: [B]."""
        log_px_z, kl = self.elbo_terms(x, n_samples, y=y)
        return log_px_z - kl

    def iwae(self, x: torch.Tensor, k: int, chunk_size: int | None = None, y=None) -> torch.Tensor:
        """IWAE_k(x) = log 1/k sum_s w_s, batched over examples and samples: [B].

        Samples are drawn in chunks of at most `chunk_size` (sample x example) pairs and
        combined with a running log-sum-exp, so memory does not grow with k.
        """
        return iwae_bound(lambda j: self.log_weights(x, j, y=y), k, x.shape[0], chunk_size or self.cfg.chunk_size)

    def kl_weight(self, step: int | None) -> float:
        """beta, ramped up linearly over kl_warmup_steps (full weight when step is None)."""
        if step is None or self.cfg.kl_warmup_steps <= 0:
            return self.cfg.beta
        return self.cfg.beta * min(1.0, (step + 1) / self.cfg.kl_warmup_steps)

    def loss(self, batch, step: int | None = None, y=None) -> dict[str, torch.Tensor]:
        """-ELBO (with beta and warm-up) or -IWAE_k, averaged over the batch; terms in nats.

        With a likelihood that is not a probability of the data (a Bernoulli over grey levels) the
        terms are named for what they are: the reconstruction loss (`bce`) and `kl`, not an ELBO."""
        x = batch[0]
        if self.cfg.estimator != "reparameterization":
            return self.score_function_loss(x, step, y)
        return self.objective(lambda k: self.iwae(x, k, y=y), lambda n: self.elbo_terms(x, n, y=y), step)

    def score_function_loss(self, x: torch.Tensor, step: int | None, y=None) -> dict[str, torch.Tensor]:
        """A surrogate whose gradient is the score-function estimate of grad ELBO (module docstring): z_0 ~ q
        without a path to mu and sigma, f = log p(x|z) - beta_t (log q(z|x) - log p(z)) per sample,
        loss = -mean[f + (f - b) log q(z_0|x)], with f - b held constant and the second term's value taken
        away (so the loss reads -ELBO, as with the reparameterization trick)."""
        z, log_q0, log_det = self.draw(x, self.cfg.n_samples, y, reparameterize=False)
        log_px_z = self.log_px_z(z, x, y)
        kl = log_q0 - log_det - self.log_prior(z)  # [S, B], one-sample estimates
        f = log_px_z - self.kl_weight(step) * kl
        signal = f.detach()
        if self.cfg.estimator == "score_function_baseline":  # b_s = mean of f over the other samples
            s = signal.shape[0]
            signal = signal - (signal.sum(0, keepdim=True) - signal) / (s - 1)
        surrogate = signal * log_q0
        loss = -(f + surrogate - surrogate.detach()).mean()  # the value of -ELBO, the gradient of the estimator
        return self.terms(loss, log_px_z.mean(0), kl.mean(0))

    def objective(self, iwae: Callable[[int], torch.Tensor], terms: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                  step: int | None) -> dict[str, torch.Tensor]:
        """`loss`'s terms from the batch's bounds: iwae(k) [B] and terms(n_samples) = (E_q log p(x|z), KL) [B]."""
        if self.cfg.objective == "iwae":
            bound = iwae(self.cfg.n_samples)
            return {"loss": -bound.mean(), **({"iwae": bound.mean().detach()} if self.likelihood.normalised else {})}
        log_px_z, kl = terms(self.cfg.n_samples)
        return self.terms(-(log_px_z - self.kl_weight(step) * kl).mean(), log_px_z, kl)

    def terms(self, loss: torch.Tensor, log_px_z: torch.Tensor, kl: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss and the logged terms (means over the batch of [B] values), named for what they are."""
        if not self.likelihood.normalised:
            return {"loss": loss, self.likelihood.loss_name: -log_px_z.mean().detach(), "kl": kl.mean().detach()}
        return {"loss": loss, "elbo": (log_px_z - kl).mean().detach(), "log_px_z": log_px_z.mean().detach(),
                "kl": kl.mean().detach()}
