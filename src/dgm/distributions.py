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

    def mean(self, out):
        probs = self.distribution(out).probs
        values = torch.linspace(0, 1, self.levels, device=out.device)
        return (probs * values).sum(-1)

    def sample(self, out):
        return self.distribution(out).sample().float() / (self.levels - 1)


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
