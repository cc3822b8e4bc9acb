"""Factor analysis (seed 004): the linear-Gaussian latent variable model, "convenient but limiting".

    p(z) = N(0, I_M),   p(x|z) = N(Wz + b, Psi),   Psi = diag(psi) (stored as log psi)
    p(x) = int p(x|z) p(z) dz = N(x; b, C),   C = W W^T + Psi        (exact: no bound, no sampling)
    p(z|x) = N(K^-1 W^T Psi^-1 (x - b), K^-1),   K = I_M + W^T Psi^-1 W

The marginal's D x D covariance is never formed. With K = L L^T (Cholesky of the M x M matrix) and
r = x - b, Woodbury's identity and the matrix determinant lemma give, in O(D M^2 + M^3) once and O(D M)
per point,

    r^T C^-1 r = r^T Psi^-1 r - |L^-1 W^T Psi^-1 r|^2,     log det C = sum_d log psi_d + 2 sum_m log L_mm
    log N(x; b, C) = -1/2 (D log 2 pi + log det C + r^T C^-1 r)

and E[z|x] = W^T C^-1 r = K^-1 W^T Psi^-1 r. The model is fitted by maximum likelihood: `loss` is minus
the batch's mean log-likelihood (below), minimised by gradient steps.

What it reports depends on the data, so every number means what its name says:

- Continuous data (levels 0): `log_prob(x)` is the exact log-density log N(x; b, C) (`dgm eval` reports
  it as log_density); `elbo` and `iwae` are None, since there is nothing to bound.
- Pixel data with L >= 2 levels (values v / (L-1)): a density is not a probability of the pixels, so
  `log_prob` is None (`missing_reason` says why) and the model is the discretization of p: each value x
  owns the cube B(x) = x + [-h, h]^D, h = 1 / (2 (L-1)), of volume vol = (L-1)^-D, and

      P(x) = int_B(x) p(y) dy = vol E_{u ~ U[-h, h]^D} p(x + u).

  The cubes of different values do not overlap, so the P(x) sum to at most 1 over all L^D images (the
  mass of p outside [-h, 1+h]^D is not given to any image: a sub-probability, whose log-probabilities
  are lower bounds on those of the distribution that would give it back). Importance sampling with the
  uniform dequantization proposal q(u) = 1 / vol gives the bounds `dgm eval` reports as elbo and
  log_likelihood (and bits per dimension):

      elbo(x)    = E_u[log p(x + u)] + log vol                  (one u per call; Jensen: <= log P(x))
      iwae(x, k) = log 1/k sum_s p(x + u_s) + log vol,  u_s ~ U[-h, h]^D i.i.d.
                   E[iwae_k] <= E[iwae_k+1] <= log P(x), and iwae_k -> log P(x) as k grows

  Training minimises -(log p(x + u) + log vol) with a fresh u per step (uniform dequantization,
  Theis et al. 2016): an unbiased estimate of -elbo, so it maximises that bound on log P(x).

`encode(x)` is the posterior mean E[z|x]; `decode(z)` is the mean Wz + b of p(x|z), clamped to [0, 1]
on pixel data as the VAE's mean images are. `sample(n)`, as the VAE's, is the mean of p(x|z) for
z ~ p(z) on pixel data (the noise Psi is pixel-independent static that only blurs a picture); on
continuous data (points, not pictures) it is an exact draw x = Wz + b + Psi^1/2 eps of p(x), since the
means alone have covariance W W^T, not C, and mode-coverage metrics score samples as draws of p(x).

Initialisation: b = 0.5 on pixels (0 on continuous data), psi = 0.1, W_dm = 0.1 sqrt(psi_d / M) eps_dm, so
W W^T starts near 1 % of Psi. `dgm.api.train` then calls `fit_before_training`, which sets b and psi to
the maximum-likelihood values of the independent model W = 0 (each dimension's mean and variance, the
variance of the dequantized values on pixel data) and rescales W's rows to match: gradient steps then
only have to learn the factors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import distributions as D
from torch import nn

from dgm.config import number
from dgm.distributions import log1mexp
from dgm.models import ModelConfig, register_model
from dgm.models.vae import iwae_bound

LOG_2PI = math.log(2 * math.pi)
MIN_VARIANCE = 1e-6  # floor of psi set by fit_before_training (a dimension that never varies)


@dataclass
class FactorAnalysisConfig(ModelConfig):
    latent_dim: int = number(20, min=1)  # M, the number of factors
    chunk_size: int = number(65536, min=1)  # most (sample x example) pairs per log-density call in iwae()


def woodbury_log_density(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         log_psi: torch.Tensor) -> torch.Tensor:
    """log N(y; b, W W^T + diag(exp(log_psi))) for y [..., D], W [D, M], b [D], log_psi [D]: [...].

    Through the Cholesky factor of K = I + W^T Psi^-1 W (M x M), never the D x D covariance (module
    docstring): O(D M^2) once plus O(D M) per point."""
    psi = log_psi.exp()
    scaled = weight / psi[:, None]  # Psi^-1 W  [D, M]
    chol = torch.linalg.cholesky(torch.eye(weight.shape[1], dtype=weight.dtype, device=weight.device)
                                 + weight.T @ scaled)
    log_det = log_psi.sum() + 2 * chol.diagonal().log().sum()
    r = y - bias
    v = r @ scaled  # W^T Psi^-1 r  [..., M]
    lead = v.shape[:-1]
    s = torch.linalg.solve_triangular(chol.T, v.reshape(-1, v.shape[-1]), upper=True, left=False)  # v L^-T
    quad = (r * r / psi).sum(-1) - s.pow(2).sum(-1).reshape(lead)  # r^T C^-1 r
    return -0.5 * (y.shape[-1] * LOG_2PI + log_det + quad)


@register_model("factor-analysis", FactorAnalysisConfig, family="vae", seeds=("004",),
                description="Factor analysis: linear-Gaussian latent model fitted by maximum likelihood; exact "
                            "log-density, dequantization bounds on pixels")
class FactorAnalysis(nn.Module):
    def __init__(self, cfg: FactorAnalysisConfig):
        super().__init__()
        self.cfg = cfg
        d, m = math.prod(cfg.data_shape), cfg.latent_dim
        psi = 0.1
        self.weight = nn.Parameter(0.1 * math.sqrt(psi / m) * torch.randn(d, m))  # W [D, M]
        self.bias = nn.Parameter(torch.full((d,), 0.5 if self.discrete else 0.0))  # b [D]
        self.log_psi = nn.Parameter(torch.full((d,), math.log(psi)))  # log diag(Psi) [D]

    # --- the data --------------------------------------------------------------------------
    @property
    def discrete(self) -> bool:
        """Whether the data are pixels with cfg.levels values (then the model is the discretized density)."""
        return self.cfg.levels >= 2

    @property
    def half_bin(self) -> float:
        """h = 1 / (2 (L-1)): each value x owns the cube x + [-h, h]^D."""
        return 0.5 / (self.cfg.levels - 1)

    @property
    def log_volume(self) -> float:
        """log vol = -D log(L-1), the log-volume of one value's cube."""
        return -math.prod(self.cfg.data_shape) * math.log(self.cfg.levels - 1)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """[..., *data_shape] -> [..., D] in float32 or float64 (the model's precision)."""
        nd = len(self.cfg.data_shape)
        return x.reshape(*x.shape[: x.dim() - nd], -1).to(self.weight.dtype)

    def unflat(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(*y.shape[:-1], *self.cfg.data_shape)

    def dequantize(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """x + u, u ~ U[-h, h]^D (global generator): [B, D] for k None, else k draws [k, B, D]."""
        y = self.flat(x)
        shape = y.shape if k is None else (k, *y.shape)
        return y + (2 * torch.rand(shape, dtype=y.dtype, device=y.device) - 1) * self.half_bin

    # --- the model's parts -----------------------------------------------------------------
    def covariance(self) -> torch.Tensor:
        """C = W W^T + Psi [D, D] (formed only for inspection and tests)."""
        return self.weight @ self.weight.T + torch.diag(self.log_psi.exp())

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log N(x; b, W W^T + Psi) of x [..., *data_shape]: [...].

        A log-density of continuous values; on pixel data see `elbo` and `iwae`."""
        return self.flat_log_density(self.flat(x))

    def flat_log_density(self, y: torch.Tensor) -> torch.Tensor:
        """log N(y; b, W W^T + Psi) of flattened points y [..., D]: [...]."""
        with torch.autocast(y.device.type, enabled=False):  # a Cholesky wants the weights' precision
            return woodbury_log_density(y.to(self.weight.dtype), self.weight, self.bias, self.log_psi)

    def posterior(self, x: torch.Tensor) -> D.MultivariateNormal:
        """p(z|x) = N(K^-1 W^T Psi^-1 (x - b), K^-1), K = I + W^T Psi^-1 W: batch shape [B], event [M]."""
        y = self.flat(x)
        with torch.autocast(y.device.type, enabled=False):
            scaled = self.weight / self.log_psi.exp()[:, None]
            precision = torch.eye(self.cfg.latent_dim, dtype=y.dtype, device=y.device) + self.weight.T @ scaled
            chol = torch.linalg.cholesky(precision)
            mean = torch.cholesky_solve(((y - self.bias) @ scaled).T, chol).T
            return D.MultivariateNormal(mean, precision_matrix=precision)

    # --- capabilities ----------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E[z|x] = W^T (W W^T + Psi)^-1 (x - b), computed as K^-1 W^T Psi^-1 (x - b): [B, M]."""
        return self.posterior(x).mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean Wz + b of p(x|z) [..., *data_shape], clamped to [0, 1] on pixel data."""
        mean = self.unflat(z.to(self.weight.dtype) @ self.weight.T + self.bias)
        return mean.clamp(0, 1) if self.discrete else mean

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- the model as a latent-variable model (what `dgm eval --ais` anneals along) ---------------
    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z) = N(0, I_M): [n, M]."""
        return torch.randn(n, self.cfg.latent_dim, generator=generator, device=self.weight.device,
                           dtype=self.weight.dtype)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I_M) for z [..., M] -> [...]."""
        return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))

    def log_px_z(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) for z [..., B, M], x [B, ...] -> [..., B]: the density log N(x; Wz + b, Psi) on continuous
        data; on pixel data the probability of x's cube x + [-h, h]^D under it (the P(x) that elbo and iwae bound),
        each dimension's bin mass from the normal CDF, a bin right of the mean taken as its mirror image so that
        no bin near 1 cancels."""
        mean, sd, y = z @ self.weight.T + self.bias, (0.5 * self.log_psi).exp(), self.flat(x)
        if not self.discrete:
            return D.Normal(mean, sd).log_prob(y).sum(-1)
        lo, hi = (y - self.half_bin - mean) / sd, (y + self.half_bin - mean) / sd
        flip = lo + hi > 0
        a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
        log_cdf_b = torch.special.log_ndtr(b)
        return (log_cdf_b + log1mexp(torch.special.log_ndtr(a) - log_cdf_b)).sum(-1)

    def sample(self, n: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixel data: mean images of p(x|z), z ~ p(z), as the VAE's. Continuous data: exact draws of p(x),
        Wz + b + Psi^1/2 eps (module docstring)."""
        device, dtype = self.weight.device, self.weight.dtype
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=device, dtype=dtype)
        if self.discrete:
            return self.decode(z)
        eps = torch.randn(n, self.bias.shape[0], generator=generator, device=device, dtype=dtype)
        return self.decode(z) + self.unflat(eps * (0.5 * self.log_psi).exp())

    @property
    def log_prob(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """`log_density`, the exact log N(x; b, C), on continuous data; None on pixel data, where a density
        is not a probability of the pixels (`elbo` and `iwae` bound log P(x) there)."""
        return None if self.discrete else self.log_density

    @property
    def elbo(self) -> Callable[..., torch.Tensor] | None:
        """`dequantized_elbo` on pixel data; None on continuous data (log_prob is exact there)."""
        return self.dequantized_elbo if self.discrete else None

    @property
    def iwae(self) -> Callable[..., torch.Tensor] | None:
        """`dequantized_iwae` on pixel data; None on continuous data (log_prob is exact there)."""
        return self.dequantized_iwae if self.discrete else None

    def missing_reason(self, capability: str) -> str | None:
        """Why this model lacks `capability` for its data, in one sentence; None when it has it."""
        if capability == "log_prob" and self.discrete:
            return (f"factor analysis is a density over continuous values, not a probability of these "
                    f"{self.cfg.levels}-level pixels; on pixel data it has the bounds elbo() and iwae() of log P(x) "
                    "(uniform dequantization), which `dgm eval` reports as elbo and log_likelihood")
        if capability in ("elbo", "iwae") and not self.discrete:
            return ("on continuous data factor analysis has its exact log-density, log_prob(), so it has no "
                    f"{capability}() bound")
        return None

    def dequantized_log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log w_s = log p(x + u_s) + log vol for k draws u_s ~ U[-h, h]^D: [k, B]."""
        return self.flat_log_density(self.dequantize(x, k)) + self.log_volume

    def dequantized_elbo(self, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """E_u[log p(x + u)] + log vol <= log P(x) by Monte Carlo over n_samples draws u (one by default): [B]."""
        return self.dequantized_log_weights(x, n_samples).mean(0)

    def dequantized_iwae(self, x: torch.Tensor, k: int, chunk_size: int | None = None) -> torch.Tensor:
        """log 1/k sum_s p(x + u_s) + log vol, u_s ~ U[-h, h]^D: a bound on log P(x) that tightens with k,
        in chunks of at most chunk_size (sample x example) pairs: [B]."""
        return iwae_bound(lambda j: self.dequantized_log_weights(x, j), k, x.shape[0],
                          chunk_size or self.cfg.chunk_size)

    # --- training --------------------------------------------------------------------------
    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """Minus the mean log-likelihood of the batch: the exact log-density on continuous data; on pixel data
        log p(x + u) + log vol with a fresh u, an unbiased estimate of the elbo (dequantization)."""
        x = batch[0]
        if not self.discrete:
            log_density = self.log_density(x)
            return {"loss": -log_density.mean(), "log_density": log_density.mean().detach()}
        elbo = self.flat_log_density(self.dequantize(x)) + self.log_volume
        return {"loss": -elbo.mean(), "elbo": elbo.mean().detach()}

    @torch.no_grad()
    def fit_before_training(self, train_x: torch.Tensor) -> None:
        """b and psi to the maximum-likelihood values of the model with W = 0: each dimension's mean and variance
        over the training images [N, *data_shape] (of x + u on pixel data: + h^2 / 3), psi at least MIN_VARIANCE;
        W's rows rescaled so that W W^T stays about 1 % of Psi."""
        y = self.flat(train_x)
        var = y.var(0, unbiased=False) + (self.half_bin**2 / 3 if self.discrete else 0.0)
        var = var.clamp(min=MIN_VARIANCE)
        self.weight.mul_(torch.sqrt(var / self.log_psi.exp())[:, None])
        self.bias.copy_(y.mean(0))
        self.log_psi.copy_(var.log())
