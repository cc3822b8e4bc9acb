"""Observation models p(x|z) on top of torch.distributions.

A decoder emits `out_channels` maps, shaped [*, P, H, W]; a likelihood turns them into a
distribution over images whose `log_prob` is summed over pixels (nats per image). Images
are floats in [0, 1] holding one of L levels k / (L - 1) per pixel, and every likelihood
but the Bernoulli on grey levels is a probability of those L values (continuous
densities are integrated over each value's bin); on continuous data (L = 0) a log-density.
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
    """p(x|.) over images [*, C, H, W] whose pixels take `levels` values k / (L - 1) in [0, 1]
    (`levels` 0: continuous data, where log_prob is a log-density).

    `normalised` says whether log_prob is the log of a distribution over the data as stored: a
    probability of the L pixel values, summing to 1 over them (a density on continuous data).
    Only such a log_prob may be reported as a log-likelihood; `improper` says why one is not."""

    params_per_pixel: int = 1
    loss_name: str = "nll"  # what -log_prob is called when it is not a log-likelihood

    def __init__(self, channels: int, levels: int):
        super().__init__()
        self.channels = channels
        self.levels = levels

    @property
    def improper(self) -> str | None:
        """None when log_prob is a normalised log-probability (or log-density); else the reason it is not."""
        return None

    @property
    def normalised(self) -> bool:
        return self.improper is None

    def _split(self, out: torch.Tensor) -> list[torch.Tensor]:
        """[*, P*C, H, W] -> P tensors of [*, C, H, W]."""
        c = self.channels
        return [out[..., i * c : (i + 1) * c, :, :] for i in range(self.params_per_pixel)]

    def distribution(self, out: torch.Tensor) -> D.Distribution:
        """Per-pixel distribution with batch shape [*, C, H, W]."""
        raise NotImplementedError

    def element_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_ijc) of every pixel and channel: [*, C, H, W] nats."""
        return self.distribution(out).log_prob(x)

    def log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels: [*] nats."""
        return self.element_log_prob(out, x).flatten(-3).sum(-1)

    def pixel_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_ij) of every pixel, all its channels together: [*, H, W] nats."""
        return self.element_log_prob(out, x).sum(-3)

    @property
    def out_channels(self) -> int:
        """How many numbers a network emits per pixel for this likelihood."""
        return self.params_per_pixel * self.channels

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.distribution(out).mean.clamp(0, 1)

    def sample(self, out: torch.Tensor) -> torch.Tensor:
        return self.distribution(out).sample().clamp(0, 1)


class BernoulliLikelihood(Likelihood):
    """p(x) = mu^x (1 - mu)^(1 - x): a distribution over binary pixels only. On grey levels it is the
    "binary cross-entropy" training loss of the PyTorch VAE example, not a likelihood."""

    loss_name = "bce"

    @property
    def improper(self):
        if self.levels == 2:
            return None
        values = f"the {self.levels} grey levels" if self.levels else "continuous values"
        return (f"a Bernoulli over intensities is not a distribution over {values} (its values summed over "
                "them exceed 1)")

    def distribution(self, out):
        return D.Bernoulli(logits=out)

    def element_log_prob(self, out, x):
        # = Bernoulli(logits).log_prob(x) written out once to skip the broadcast it does
        return -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none")

    def channel_probs(self, out_pixel: torch.Tensor, x_pixel: torch.Tensor, c: int) -> torch.Tensor:
        """P(x_c = 0), P(x_c = 1) of one pixel from its outputs [B, C]: [B, 2]."""
        p = torch.sigmoid(out_pixel[:, c])
        return torch.stack([1 - p, p], dim=-1)


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a < 0, accurate for a near 0 and for a very negative (Maechler 2012)."""
    a = a.clamp(max=-1e-20)  # a = 0 (a bin narrower than float precision) would give -inf
    return torch.where(a > -math.log(2), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


class _LocationScale(Likelihood):
    """Gaussian or Laplace with a fixed scale or a learned per-pixel scale (bounded below).

    On data with L levels the density is integrated over each value's bin, so log_prob is a
    log-probability of the pixels as stored (as PixelCNN++ does for the logistic):

        P(x = k / (L-1)) = F((x + h - mu) / s) - F((x - h - mu) / s),   h = 1 / (2 (L-1)),

    with the edge bins open (P(x = 0) = F((h - mu) / s), P(x = 1) = 1 - F((1 - h - mu) / s)), so
    the L probabilities sum to one. Both CDFs are evaluated in log space on the side of the
    distribution where the bin lies, so far tails neither cancel nor underflow. On continuous
    data (levels 0) log_prob is the log-density."""

    family: type[D.Distribution]

    def __init__(self, channels: int, levels: int, learned_scale: bool, scale: float, min_scale: float = 1e-3):
        super().__init__(channels, levels)
        self.learned_scale = learned_scale
        self.params_per_pixel = 2 if learned_scale else 1
        self.fixed_scale = scale
        self.min_scale = min_scale

    @staticmethod
    def log_cdf(t: torch.Tensor) -> torch.Tensor:
        """log F(t) of the standard distribution (symmetric: log(1 - F(t)) = log F(-t))."""
        raise NotImplementedError

    def _loc_scale(self, out):
        if self.learned_scale:
            loc, raw_scale = self._split(out)
            return loc, F.softplus(raw_scale) + self.min_scale
        return out, torch.full_like(out, self.fixed_scale)

    def distribution(self, out):
        """The continuous distribution before discretization."""
        return self.family(*self._loc_scale(out))

    def element_log_prob(self, out, x):
        loc, scale = self._loc_scale(out)
        if self.levels == 0:
            return self.family(loc, scale).log_prob(x)
        half = 0.5 / (self.levels - 1)
        lo, hi = (x - half - loc) / scale, (x + half - loc) / scale
        log_below_hi = self.log_cdf(hi)  # log P(X <= hi): the open bin at 0
        log_above_lo = self.log_cdf(-lo)  # log P(X > lo): the open bin at 1
        # an interior bin as P(a < X <= b) = F(b) - F(a) on the left of the centre, reflected there by
        # symmetry (P(lo < X <= hi) = P(-hi <= X < -lo)) when it lies on the right: no cancellation of
        # two CDFs near 1, and both branches' inputs stay finite for autograd
        flip = lo + hi > 0
        log_f_b = torch.where(flip, log_above_lo, log_below_hi)  # log F(b), b = -lo when flipped, else hi
        interior = log_f_b + log1mexp(self.log_cdf(torch.where(flip, -hi, lo)) - log_f_b)
        return torch.where(x < half, log_below_hi, torch.where(x > 1 - half, log_above_lo, interior))

    def mean(self, out):
        """The location, clamped to [0, 1]: the picture of p(x|z)."""
        return self._loc_scale(out)[0].clamp(0, 1)

    def sample(self, out):
        """A draw of the discretized distribution: clamping gives the open edge bins, rounding the others."""
        x = self.distribution(out).sample().clamp(0, 1)
        return x if self.levels == 0 else torch.round(x * (self.levels - 1)) / (self.levels - 1)


class GaussianLikelihood(_LocationScale):
    family = D.Normal

    @staticmethod
    def log_cdf(t):
        """log Phi(t); below t = -20 the asymptotic series
        log Phi(t) = -t^2/2 - log(-t) - log(2 pi)/2 + log(1 - 1/t^2 + 3/t^4 - 15/t^6)   (error < 1e-8),
        whose gradient stays right where log_ndtr's backward loses precision (t < -100 in float32)."""
        tail = t.clamp(max=-20.0)
        r = tail.pow(-2)
        asymptotic = -0.5 * tail.pow(2) - torch.log(-tail) - 0.5 * math.log(2 * math.pi) + torch.log1p(
            r * (-1 + r * (3 - 15 * r)))
        return torch.where(t < -20.0, asymptotic, torch.special.log_ndtr(t.clamp(min=-20.0)))


class LaplaceLikelihood(_LocationScale):
    family = D.Laplace

    @staticmethod
    def log_cdf(t):
        # F(t) = exp(t) / 2 for t <= 0, 1 - exp(-t) / 2 above; |t| keeps the unused branch finite
        return torch.where(t <= 0, t - math.log(2), torch.log1p(-0.5 * torch.exp(-t.abs())))


class CategoricalLikelihood(Likelihood):
    """A softmax over the `levels` grey values of each pixel (e.g. 17 for digits, 256 for 8-bit)."""

    def __init__(self, channels: int, levels: int):
        if levels < 2:
            raise DgmError("a categorical likelihood needs discrete data with at least 2 levels")
        super().__init__(channels, levels)
        self.params_per_pixel = levels

    def distribution(self, out):
        # [*, L*C, H, W] -> [*, C, H, W, L]
        lead = out.shape[:-3]
        logits = out.reshape(*lead, self.levels, self.channels, *out.shape[-2:]).movedim(-4, -1)
        return D.Categorical(logits=logits)

    def _index(self, x):
        return torch.round(x * (self.levels - 1)).long()

    def element_log_prob(self, out, x):
        return self.distribution(out).log_prob(self._index(x))

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
    Outputs per pixel: K mixture logits, K*C means, K*C log scales, K*C(C-1)/2 coupling coefficients,
    as maps [*, P, H, W] with any leading dimensions.
    """

    def __init__(self, channels: int, levels: int, n_mix: int):
        if levels < 2:
            raise DgmError("a discretized logistic needs discrete data with at least 2 levels")
        if n_mix < 1:
            raise DgmError(f"n_mix must be at least 1, got {n_mix}")
        super().__init__(channels, levels)
        self.n_mix = n_mix
        self.n_coeffs = channels * (channels - 1) // 2

    @property
    def out_channels(self) -> int:
        return self.n_mix * (1 + 2 * self.channels + self.n_coeffs)

    def _unpack(self, out: torch.Tensor):
        """[*, P, H, W] -> logit_pi [*, K, H, W], mu and log_s [*, K, C, H, W], coeffs [*, K, C(C-1)/2, H, W]."""
        k, c = self.n_mix, self.channels
        lead, (h, w) = out.shape[:-3], out.shape[-2:]
        logit_pi = out[..., :k, :, :]
        mu = out[..., k : k + k * c, :, :].reshape(*lead, k, c, h, w)
        log_s = out[..., k + k * c : k + 2 * k * c, :, :].reshape(*lead, k, c, h, w).clamp(min=-7.0)
        coeffs = torch.tanh(out[..., k + 2 * k * c :, :, :].reshape(*lead, k, self.n_coeffs, h, w))
        return logit_pi, mu, log_s, coeffs

    @staticmethod
    def _coupled_mean(mu: torch.Tensor, coeffs: torch.Tensor, v: torch.Tensor, c: int) -> torch.Tensor:
        """m_c = mu_c + sum_{c' < c} coeff_{c, c'} v_c' for v [*, C, H, W] in [-1, 1]: [*, K, H, W]."""
        m = mu[..., c, :, :]
        first = c * (c - 1) // 2  # coefficients of channel c start here
        for prev in range(c):
            m = m + coeffs[..., first + prev, :, :] * v[..., None, prev, :, :]
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
        """log sum_k pi_k prod_c P_k(x_c | x_<c): [*, H, W]."""
        logit_pi, mu, log_s, coeffs = self._unpack(out)
        v = 2 * x - 1
        log_p = torch.log_softmax(logit_pi, dim=-3)
        for c in range(self.channels):
            log_p = log_p + self._bin_log_prob(v[..., None, c, :, :], self._coupled_mean(mu, coeffs, v, c),
                                               log_s[..., c, :, :])
        return torch.logsumexp(log_p, dim=-3)

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

    def mean(self, out):
        """A picture of p(x|.): channel by channel, sum_k pi_k clamp(m_k), the earlier channels set to
        their pictures (the mixture's mean, ignoring the clamping of the open edge bins)."""
        logit_pi, mu, _, coeffs = self._unpack(out)
        pi = torch.softmax(logit_pi, dim=-3)
        return (self._channel_by_channel(
            mu, lambda v, c: (pi * self._coupled_mean(mu, coeffs, v, c).clamp(-1, 1)).sum(-3)) + 1) / 2

    def _channel_by_channel(self, mu: torch.Tensor, draw) -> torch.Tensor:
        """v [*, C, H, W] with v_c = draw(v so far, c), the later channels still zero (no in-place writes)."""
        zero = torch.zeros_like(mu[..., 0, 0, :, :])
        done: list[torch.Tensor] = []
        for c in range(self.channels):
            done.append(draw(torch.stack(done + [zero] * (self.channels - c), dim=-3), c))
        return torch.stack(done, dim=-3)

    def sample(self, out):
        """An exact draw: a component k ~ pi per pixel, then each channel from its discretized logistic
        (clamped to the open edge bins, rounded to the grid) given the drawn earlier channels."""
        logit_pi, mu, log_s, coeffs = self._unpack(out)
        gumbel = -torch.log(-torch.log(torch.rand_like(logit_pi).clamp(1e-12, 1 - 1e-7)))
        k = (logit_pi + gumbel).argmax(-3, keepdim=True)  # [*, 1, H, W]

        def draw(v, c):
            m = self._coupled_mean(mu, coeffs, v, c).gather(-3, k)[..., 0, :, :]
            s = log_s[..., c, :, :].gather(-3, k)[..., 0, :, :].exp()
            u = torch.rand_like(m).clamp(1e-7, 1 - 1e-7)
            x = ((m + s * (torch.log(u) - torch.log1p(-u))).clamp(-1, 1) + 1) / 2
            return torch.round(x * (self.levels - 1)) / (self.levels - 1) * 2 - 1

        return (self._channel_by_channel(mu, draw) + 1) / 2


LIKELIHOODS = ("bernoulli", "gaussian", "laplace", "categorical", "dlogistic")


def auto_likelihood(levels: int) -> str:
    """What `likelihood=auto` picks: a Bernoulli for binary data, the categorical over the levels for
    few grey levels (<= 32: exact and shape-free, L numbers per pixel), the discretized logistic
    mixture for more (256 levels would cost a categorical 256 numbers per pixel), a Gaussian density
    on continuous data."""
    if levels == 0:
        return "gaussian"
    if levels == 2:
        return "bernoulli"
    return "categorical" if levels <= 32 else "dlogistic"


def make_likelihood(name: str, channels: int, levels: int, learned_scale: bool = False,
                    scale: float = 0.1, n_mix: int = 5) -> Likelihood:
    """Build an observation model by name for data with `levels` values per pixel (0: continuous)."""
    if name == "auto":
        name = auto_likelihood(levels)
    if name == "bernoulli":
        return BernoulliLikelihood(channels, levels)
    if name == "gaussian":
        return GaussianLikelihood(channels, levels, learned_scale, scale)
    if name == "laplace":
        return LaplaceLikelihood(channels, levels, learned_scale, scale)
    if name == "categorical":
        return CategoricalLikelihood(channels, levels)
    if name == "dlogistic":
        return DiscretizedLogisticMixture(channels, levels, n_mix)
    raise DgmError(f"unknown likelihood '{name}'; choose auto, {', '.join(LIKELIHOODS)}")


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z | 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))
