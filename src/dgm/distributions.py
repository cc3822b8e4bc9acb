"""Observation models p(x|z) on top of torch.distributions.

A decoder emits `params_per_pixel` numbers per pixel, shaped [*, P * C, H, W]; a
likelihood turns them into a distribution over images whose `log_prob` is summed over
pixels (nats per image). Images are floats in [0, 1]; discrete likelihoods know how
many levels the data has.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

from dgm.errors import DgmError

D.Distribution.set_default_validate_args(False)  # validation costs ~20 % of a small VAE's step


class Likelihood(nn.Module):
    params_per_pixel: int = 1
    discrete: bool = True

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def _split(self, out: torch.Tensor) -> list[torch.Tensor]:
        """[*, P*C, H, W] -> P tensors of [*, C, H, W]."""
        c = self.channels
        return [out[..., i * c : (i + 1) * c, :, :] for i in range(self.params_per_pixel)]

    def distribution(self, out: torch.Tensor) -> D.Distribution:
        """Per-pixel distribution with batch shape [*, C, H, W]."""
        raise NotImplementedError

    def log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels: [*] nats."""
        return self.distribution(out).log_prob(x).flatten(-3).sum(-1)

    @property
    def out_channels(self) -> int:
        """How many numbers a network emits per pixel for this likelihood."""
        return self.params_per_pixel * self.channels

    def pixel_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_ij) of every pixel, all its channels together: [*, H, W] nats."""
        return self.distribution(out).log_prob(x).sum(-3)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.distribution(out).mean.clamp(0, 1)

    def sample(self, out: torch.Tensor) -> torch.Tensor:
        return self.distribution(out).sample().clamp(0, 1)


class BernoulliLikelihood(Likelihood):
    def distribution(self, out):
        return D.Bernoulli(logits=out)

    def log_prob(self, out, x):
        # = Bernoulli(logits).log_prob(x) written out once to skip the broadcast it does
        return -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").flatten(-3).sum(-1)

    def channel_probs(self, out_pixel: torch.Tensor, x_pixel: torch.Tensor, c: int) -> torch.Tensor:
        """P(x_c = 0), P(x_c = 1) of one pixel from its outputs [B, C]: [B, 2]."""
        p = torch.sigmoid(out_pixel[:, c])
        return torch.stack([1 - p, p], dim=-1)


class _LocationScale(Likelihood):
    """Gaussian or Laplace with a fixed scale or a learned per-pixel scale (bounded below)."""

    family: type[D.Distribution]
    discrete = False

    def __init__(self, channels: int, learned_scale: bool, scale: float, min_scale: float = 1e-3):
        super().__init__(channels)
        self.learned_scale = learned_scale
        self.params_per_pixel = 2 if learned_scale else 1
        self.fixed_scale = scale
        self.min_scale = min_scale

    def distribution(self, out):
        if self.learned_scale:
            loc, raw_scale = self._split(out)
            scale = F.softplus(raw_scale) + self.min_scale
        else:
            loc, scale = out, torch.full_like(out, self.fixed_scale)
        return self.family(loc, scale)


class GaussianLikelihood(_LocationScale):
    family = D.Normal


class LaplaceLikelihood(_LocationScale):
    family = D.Laplace


class CategoricalLikelihood(Likelihood):
    """A softmax over the `levels` grey values of each pixel (e.g. 17 for digits, 256 for 8-bit)."""

    def __init__(self, channels: int, levels: int):
        super().__init__(channels)
        self.levels = levels
        self.params_per_pixel = levels

    def distribution(self, out):
        # [*, L*C, H, W] -> [*, C, H, W, L]
        lead = out.shape[:-3]
        logits = out.reshape(*lead, self.levels, self.channels, *out.shape[-2:]).movedim(-4, -1)
        return D.Categorical(logits=logits)

    def _index(self, x):
        return torch.round(x * (self.levels - 1)).long()

    def log_prob(self, out, x):
        return self.distribution(out).log_prob(self._index(x)).flatten(-3).sum(-1)

    def pixel_log_prob(self, out, x):
        return self.distribution(out).log_prob(self._index(x)).sum(-3)

    def channel_probs(self, out_pixel: torch.Tensor, x_pixel: torch.Tensor, c: int) -> torch.Tensor:
        """The softmax over levels of channel c of one pixel from its outputs [B, L*C]: [B, L]."""
        return torch.softmax(out_pixel[:, c :: self.channels], dim=-1)

    def mean(self, out):
        probs = self.distribution(out).probs
        values = torch.linspace(0, 1, self.levels, device=out.device)
        return (probs * values).sum(-1)

    def sample(self, out):
        return self.distribution(out).sample().float() / (self.levels - 1)


class DiscretizedLogisticMixture(Likelihood):
    """PixelCNN++'s likelihood (Salimans et al. 2017) over `levels` values v in [-1, 1]:

        p(x) = sum_k pi_k prod_c P_k(x_c | x_<c),
        P_k(v) = sigmoid((v + 1/(L-1) - m) / s) - sigmoid((v - 1/(L-1) - m) / s)   (one bin of a logistic)

    with the edge bins open: P(v = -1) = sigmoid((-1 + 1/(L-1) - m) / s) and P(v = 1) = 1 - sigmoid(...),
    so the L bins sum to one. Colour channels are coupled through the means (RGB coupling):
    m_G = mu_G + a x_R, m_B = mu_B + b x_R + c x_G, with a, b, c = tanh(.) per component.
    Outputs per pixel: K mixture logits, K*C means, K*C log scales, K*C(C-1)/2 coupling coefficients.
    """

    discrete = True

    def __init__(self, channels: int, levels: int, n_mix: int):
        super().__init__(channels)
        self.levels, self.n_mix = levels, n_mix
        self.n_coeffs = channels * (channels - 1) // 2

    @property
    def out_channels(self) -> int:
        return self.n_mix * (1 + 2 * self.channels + self.n_coeffs)

    def _unpack(self, out: torch.Tensor):
        """[B, P, H, W] -> logit_pi [B, K, H, W], mu and log_s [B, K, C, H, W], coeffs [B, K, C(C-1)/2, H, W]."""
        k, c = self.n_mix, self.channels
        b, _, h, w = out.shape
        logit_pi = out[:, :k]
        mu = out[:, k : k + k * c].reshape(b, k, c, h, w)
        log_s = out[:, k + k * c : k + 2 * k * c].reshape(b, k, c, h, w).clamp(min=-7.0)
        coeffs = torch.tanh(out[:, k + 2 * k * c :].reshape(b, k, self.n_coeffs, h, w))
        return logit_pi, mu, log_s, coeffs

    def _coupled_mean(self, mu: torch.Tensor, coeffs: torch.Tensor, v: torch.Tensor, c: int) -> torch.Tensor:
        """m_c = mu_c + sum_{c' < c} coeff_{c, c'} v_c' for v [B, C, H, W] in [-1, 1]: [B, K, H, W]."""
        m = mu[:, :, c]
        first = c * (c - 1) // 2  # coefficients of channel c start here
        for prev in range(c):
            m = m + coeffs[:, :, first + prev] * v[:, None, prev]
        return m

    def _bin_log_prob(self, v: torch.Tensor, m: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
        """log P(v) of one logistic bin, with the edge bins open (stable in every regime)."""
        half = 1.0 / (self.levels - 1)
        inv_s = torch.exp(-log_s)
        centred = v - m
        plus_in, min_in = inv_s * (centred + half), inv_s * (centred - half)
        log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in), for the bin at -1
        log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)), for the bin at +1
        cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
        mid_in = inv_s * centred
        # where the bin's mass underflows, the density at its centre times its width 2/(L-1)
        log_pdf_mid = mid_in - log_s - 2.0 * F.softplus(mid_in) + math.log(2 * half)
        log_mid = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
        return torch.where(v < -1 + 0.5 * half, log_cdf_plus,
                           torch.where(v > 1 - 0.5 * half, log_one_minus_cdf_min, log_mid))

    def pixel_log_prob(self, out, x):
        """log sum_k pi_k prod_c P_k(x_c | x_<c): [B, H, W]."""
        logit_pi, mu, log_s, coeffs = self._unpack(out)
        v = 2 * x - 1
        log_p = torch.log_softmax(logit_pi, dim=1)
        for c in range(self.channels):
            log_p = log_p + self._bin_log_prob(v[:, None, c], self._coupled_mean(mu, coeffs, v, c), log_s[:, :, c])
        return torch.logsumexp(log_p, dim=1)

    def log_prob(self, out, x):
        return self.pixel_log_prob(out, x).flatten(-2).sum(-1)

    def channel_probs(self, out_pixel: torch.Tensor, x_pixel: torch.Tensor, c: int) -> torch.Tensor:
        """p(x_c = v | x_<c) over the L values v of channel c of one pixel: [B, L].

        The mixture weights are the posterior given the earlier channels,
        w_k ∝ pi_k prod_{c' < c} P_k(x_c'), so sampling channel by channel is exact."""
        logit_pi, mu, log_s, coeffs = self._unpack(out_pixel[:, :, None, None])
        v = 2 * x_pixel[:, :, None, None] - 1
        log_w = torch.log_softmax(logit_pi, dim=1)
        for prev in range(c):
            log_w = log_w + self._bin_log_prob(v[:, None, prev], self._coupled_mean(mu, coeffs, v, prev),
                                               log_s[:, :, prev])
        log_w = torch.log_softmax(log_w, dim=1)[..., 0, 0]  # [B, K]
        values = torch.linspace(-1, 1, self.levels, device=out_pixel.device, dtype=out_pixel.dtype)
        m = self._coupled_mean(mu, coeffs, v, c)[..., 0, 0]  # [B, K]
        log_p = self._bin_log_prob(values, m[..., None], log_s[:, :, c, 0, 0, None])  # [B, K, L]
        return torch.logsumexp(log_w[..., None] + log_p, dim=1).exp()


LIKELIHOODS = ("bernoulli", "gaussian", "laplace", "categorical")


def make_likelihood(name: str, channels: int, levels: int, learned_scale: bool = False,
                    scale: float = 0.1) -> Likelihood:
    """Build an observation model by name; `auto` picks Bernoulli for binary data,
    categorical for few grey levels (<= 32) and Bernoulli over intensities otherwise."""
    if name == "auto":
        name = "categorical" if 2 < levels <= 32 else "bernoulli"
    if name == "bernoulli":
        return BernoulliLikelihood(channels)
    if name == "gaussian":
        return GaussianLikelihood(channels, learned_scale, scale)
    if name == "laplace":
        return LaplaceLikelihood(channels, learned_scale, scale)
    if name == "categorical":
        return CategoricalLikelihood(channels, levels)
    raise DgmError(f"unknown likelihood '{name}'; choose auto, {', '.join(LIKELIHOODS)}")


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z | 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))
