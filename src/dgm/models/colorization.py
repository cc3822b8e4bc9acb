"""Diverse image colorization (seed 002; Deshpande, Lu, Yeh, Chong and Forsyth, "Learning Diverse Image
Colorization", CVPR 2017), with the two baselines the lecture sets it against.

Colorization is ambiguous: one grey image G has many colour fields C. On `sprites-grey` all eight object colours
have the same luma, so given G the object's colour is uniform over eight hues. The goal is P(C|G) and samples
{C} ~ P(C|G) that are diverse. `method` chooses how:

mdn (Deshpande et al.): two steps, trained here at once (see below).
  Step 1, a low-dimensional z for colour: a VAE on colour fields, q(z|C) = N(mu(C), diag sigma^2(C)), decoder
  z -> Ĉ, trained on L_dec + kl_weight KL(q(z|C) || N(0, I)) with the decoder loss

      L_dec  = L_hist + lambda_mah L_mah + lambda_grad L_grad
      L_hist = sum_p w(b(C_p)) ||Ĉ_p - C_p||^2                 weighted L2: w(b) ∝ 1 / (frequency of colour bin b)
      L_mah  = sum_{j<=k} (v_j . (Ĉ - C))^2 / lambda_j           the top-k principal components v_j (variances
               + ||(I - V_k V_k^T)(Ĉ - C)||^2 / lambda_k          lambda_j) of the training colour fields
      L_grad = sum_p ||d_h Ĉ_p - d_h C_p||^2 + ||d_v Ĉ_p - d_v C_p||^2        matching gradients

  L_mah is a Mahalanobis distance whose eigenvalues past the k-th are all taken as lambda_k, as the authors'
  code computes it (aditya12agd5/divcolor, vae/arch/vae_wo_skipconn.py: the top-k term plus the residual
  weighted by 1/lambda_k). Weights w and components V_k are fitted once on the training targets
  (`fit_before_training`) and kept in buffers.
  Step 2, grey level to embedding: a mixture density network

      L_mdn = -log P(z|G) = -log sum_{i=1}^M pi_i(G) N(z | mu_i(G), sigma^2 I),    z = mu(C) of step 1, detached

  At test time the means mu_i(G) of the k most probable components are decoded: one colorization per mode.

  One loss sums both steps. The MDN's term reaches only the MDN (z is detached) and the VAE's terms only the
  VAE, and Adam's update is per parameter, so this is the two steps run side by side; the MDN chases a moving
  embedding instead of the final one (its target settles as the VAE does). The paper trains step 2 after step 1.
cvae: the conditional VAE baseline: q(z|C, G), p(C|z, G) with G as input maps, z ~ N(0, I) at test time and the
  plain L2 loss ||Ĉ - C||^2 + kl_weight KL (the negative ELBO of a Gaussian p(C|z,G) with variance
  kl_weight / 2, up to a constant, times kl_weight).
l2: a deterministic regressor G -> Ĉ with the L2 loss. Its optimum is the conditional mean, E[C|G]: the
  average of the eight hues, a greyish brown (the lecture's "L_2 Loss" picture).

The colour field C is the two chroma channels of YCbCr (Rec. 601, full range as in JPEG), each scaled to [-1, 1],
at the image's size; Y is the grey image itself (the dataset's grey is Rec. 601 luma), so every colorization
keeps its input's luma exactly: `chroma_to_rgb` moves out-of-gamut colours toward grey at constant Y. The paper
uses the a, b channels of Lab at 64 x 64; with this data's Rec. 601 grey, YCbCr makes Y = G an identity.

Whether the decoder sees G: the lecture's step 1 is a VAE on colour fields alone, but the authors' released code
feeds the grey image to the decoder in both its variants (vae_skipconn.py, the default in vae/train.py: features
of G at every scale; vae_wo_skipconn.py: the gradients of G at 16 x 16 and 32 x 32), so z needs to hold only the
colours and not where the object is. `decoder_sees_grey=true` (default) follows the code: G joins the decoder's
last full-resolution layers. With false the decoder reads z alone, as the lecture draws it.
The authors' constants (divcolor, pytorch_divcolor): M = 8 components, a fixed sigma = 0.1, k = 20 principal
components, lambda_mah = 0.1, lambda_grad = 1e-3, the KL weighted 1e-2; their L_hist weights are the inverse prior
probabilities of Zhang et al.'s 313 ab bins, and their MDN reads features of Zhang et al.'s colorization network
and keeps only the closest component's term (min_i instead of the log-sum); z has 64 dimensions at 64 x 64.
Here: the exact mixture log-density, a small conv net on G, a histogram of the training targets' own chroma, and
by default latent_dim = 8 with the KL weighted 1: on sprites-grey (800 steps of 64, about one epoch, with
conv_channels=16,32 head_channels=16 mdn_channels=16,32)
that gave 5.9 distinct hues among 8 colorizations and the true hue among them for 76% of test images, against
4.3 and 56% with the authors' 1e-2, whose wider, less regular embedding the MDN (sigma 0.1) fits less well.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import distributions as D
from torch import nn

from dgm.config import choice, number, numbers
from dgm.errors import DgmError
from dgm.models import ModelConfig, register_model
from dgm.models.vae import diagonal_normal, gaussian_kl
from dgm.nn import ACTIVATIONS, ConvDecoder, ConvEncoder, activation

NEEDS_PAIRS = "colorization trains on paired grey and colour images; use sprites-grey"
FIGURE_K = 8  # colorizations per grey image in the end-of-training figure
FIT_EXAMPLES = 10_000  # training targets (evenly strided) the colour histogram and principal components are fitted on
VARIANCE_FLOOR = 1e-3  # principal variances below this fraction of the largest are raised to it (rank-poor data)


# --- colour spaces -----------------------------------------------------------------------------
# Rec. 601 (as dgm.data.sprites.luminance): Y = 0.299 R + 0.587 G + 0.114 B, Cb = (B - Y) / 1.772,
# Cr = (R - Y) / 1.402, both in [-1/2, 1/2] and stored times 2, in [-1, 1].
LUMA = (0.299, 0.587, 0.114)
CB_SCALE, CR_SCALE = 1.772, 1.402


def rgb_to_ycbcr(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB [..., 3, H, W] in [0, 1] -> (Y [..., 1, H, W] in [0, 1], chroma (Cb, Cr) [..., 2, H, W] in [-1, 1])."""
    r, g, b = rgb.unbind(-3)
    y = LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
    chroma = torch.stack([2 * (b - y) / CB_SCALE, 2 * (r - y) / CR_SCALE], -3)
    return y.unsqueeze(-3), chroma


def ycbcr_to_rgb(y: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """The exact inverse of `rgb_to_ycbcr` (no clipping): Y [..., 1, H, W], chroma [..., 2, H, W] -> RGB."""
    offset = _rgb_offset(chroma)
    return y + offset


def _rgb_offset(chroma: torch.Tensor) -> torch.Tensor:
    """RGB - Y of a chroma [..., 2, H, W]: (R, G, B) - Y, whose luma 0.299 dR + 0.587 dG + 0.114 dB is 0."""
    cb, cr = (chroma / 2).unbind(-3)
    dr, db = CR_SCALE * cr, CB_SCALE * cb
    dg = -(LUMA[0] * dr + LUMA[2] * db) / LUMA[1]
    return torch.stack([dr, dg, db], -3)


def chroma_to_rgb(y: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] of luma y [..., 1, H, W] in [0, 1] and chroma [..., 2, H, W]: Y + t (RGB - Y) with the largest
    t <= 1 that keeps every channel in [0, 1], so an out-of-gamut colour keeps its hue and loses saturation and the
    luma of the result is y exactly (the offset has zero luma)."""
    d = _rgb_offset(chroma)
    safe = torch.where(d == 0, torch.ones_like(d), d)
    room = torch.where(d > 0, (1 - y) / safe, torch.where(d < 0, -y / safe, torch.full_like(d, float("inf"))))
    t = room.amin(-3, keepdim=True).clamp(0, 1)
    return (y + t * d).clamp(0, 1)


# --- the decoder loss (step 1) ------------------------------------------------------------------------
def colour_bins(chroma: torch.Tensor, bins: int) -> torch.Tensor:
    """The quantised colour of every pixel of chroma [N, 2, H, W]: a bins x bins grid over [-1, 1]^2 of
    (Cb, Cr), index Cb_bin * bins + Cr_bin: [N, H, W] int64."""
    idx = ((chroma + 1) / 2 * bins).floor().long().clamp(0, bins - 1)
    return idx[:, 0] * bins + idx[:, 1]


def histogram_weights(counts: torch.Tensor) -> torch.Tensor:
    """Pixel weights w(b) ∝ 1 / p(b) of colour-bin counts [Q], scaled so the mean weight over the counted
    pixels is 1: w(b) = N / (Q_seen n_b) with Q_seen the bins that occur. A bin never seen gets the largest
    weight of a seen one (it is at least as rare). [Q] float."""
    counts = counts.double()
    seen = counts > 0
    if not seen.any():
        raise DgmError("no colour pixels to fit the colour histogram on")
    w = torch.zeros_like(counts)
    w[seen] = counts.sum() / (seen.sum() * counts[seen])
    w[~seen] = w[seen].max()
    return w.float()


def hist_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, bins: int) -> torch.Tensor:
    """L_hist = sum_p w(b(C_p)) ||Ĉ_p - C_p||^2 for chroma pred Ĉ and target C [B, 2, H, W]: [B]."""
    w = weights[colour_bins(target, bins)]  # [B, H, W]
    return (w * (pred - target).pow(2).sum(1)).flatten(1).sum(1)


def mahalanobis_loss(pred: torch.Tensor, target: torch.Tensor, components: torch.Tensor,
                     variances: torch.Tensor) -> torch.Tensor:
    """L_mah = sum_{j<=k} (v_j . d)^2 / lambda_j + ||d - V_k^T V_k d||^2 / lambda_k, d = Ĉ - C flattened, for
    orthonormal components V_k [k, D] (rows) with variances lambda [k] (decreasing): [B]."""
    d = (pred - target).flatten(1)
    proj = d @ components.T  # [B, k]
    residual = d - proj @ components
    return (proj.pow(2) / variances).sum(1) + residual.pow(2).sum(1) / variances[-1]


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_grad = sum ||d_h Ĉ - d_h C||^2 + ||d_v Ĉ - d_v C||^2 over pixels and channels, with d_h, d_v the
    differences of horizontal and vertical neighbours: [B]. Zero when Ĉ = C + a constant."""
    e = pred - target
    dh = e[..., :, 1:] - e[..., :, :-1]
    dv = e[..., 1:, :] - e[..., :-1, :]
    return dh.pow(2).flatten(1).sum(1) + dv.pow(2).flatten(1).sum(1)


# --- the mixture density network (step 2) ------------------------------------------------------------------
def mixture(logits: torch.Tensor, means: torch.Tensor, sigma: float) -> D.MixtureSameFamily:
    """P(z|G) = sum_i pi_i N(z | mu_i, sigma^2 I) with pi = softmax(logits) [B, M] and means [B, M, D]."""
    return D.MixtureSameFamily(D.Categorical(logits=logits),
                               D.Independent(D.Normal(means, torch.full_like(means, sigma)), 1))


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """t in float32 when a bf16 autocast made it half precision, else as it is (float64 stays float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


# --- networks ---------------------------------------------------------------------------------------
def grey_head(in_channels: int, hidden: int, out_channels: int, act: str) -> nn.Sequential:
    """Three 3 x 3 convolutions at full resolution: [B, in, H, W] -> [B, out, H, W]."""
    return nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), activation(act),
                         nn.Conv2d(hidden, hidden, 3, padding=1), activation(act),
                         nn.Conv2d(hidden, out_channels, 3, padding=1))


class ChromaDecoder(nn.Module):
    """z [N, D] (and the grey image [N, 1, H, W] when it sees it) -> chroma [N, 2, H, W] in (-1, 1): transposed
    convolutions from z, then, with the grey image, full-resolution convolutions over [features, G]."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], channels: tuple[int, ...], head: int,
                 act: str, sees_grey: bool):
        super().__init__()
        self.body = ConvDecoder(latent_dim, (2, *shape[1:]), list(channels), head if sees_grey else 2, act)
        self.act = activation(act)
        self.head = grey_head(head + 1, head, 2, act) if sees_grey else None

    def forward(self, z: torch.Tensor, grey: torch.Tensor) -> torch.Tensor:
        h = self.body(z)
        if self.head is not None:
            h = self.head(torch.cat([self.act(h), grey.to(h.dtype)], 1))
        return torch.tanh(h)


@dataclass
class ColorizationConfig(ModelConfig):
    """The grey image's shape comes from the dataset (data_shape [1, H, W]); targets are [3, H, W]."""

    method: str = choice("mdn", "mdn", "cvae", "l2")  # Deshpande et al.'s VAE + MDN, the CVAE, the L2 regressor
    latent_dim: int = number(8, min=1)  # z, the colour embedding (mdn, cvae)
    conv_channels: tuple[int, ...] = numbers((32, 64), min=1, nonempty=True)  # stride-2 widths of encoder/decoder
    head_channels: int = number(32, min=1)  # width of the full-resolution layers that read G
    activation: str = choice("relu", *ACTIVATIONS)
    decoder_sees_grey: bool = True  # mdn: G joins the decoder (the authors' code); false: z alone (the paper)
    kl_weight: float = number(1.0, min=0)  # weight of KL(q(z|.) || N(0, I)) (mdn, cvae); the authors used 1e-2
    mah_weight: float = number(0.1, min=0)  # lambda_mah
    grad_weight: float = number(1e-3, min=0)  # lambda_grad
    n_principal: int = number(20, min=1)  # k, principal components of the colour fields in L_mah
    hist_bins: int = number(17, min=2)  # colour bins per chroma axis for L_hist's weights (odd: grey mid-bin)
    n_components: int = number(8, min=1)  # M, mixture components of the MDN: the most colorizations it gives
    mdn_sigma: float = number(0.1, above=0)  # the components' fixed standard deviation
    mdn_channels: tuple[int, ...] = numbers((32, 64), min=1, nonempty=True)  # stride-2 widths of the MDN's conv net


@register_model("colorization", ColorizationConfig, family="vae", seeds=("002",),
                description="Diverse colorization of grey images: VAE on colour fields + MDN (Deshpande et al.), "
                            "method=cvae|l2 baselines; `dgm sample RUN --grey FILE`")
class Colorization(nn.Module):
    def __init__(self, cfg: ColorizationConfig):
        super().__init__()
        self.cfg = cfg
        if len(cfg.data_shape) != 3 or cfg.data_shape[0] != 1:
            raise DgmError(NEEDS_PAIRS)
        _, h, w = cfg.data_shape
        chans, act = tuple(cfg.conv_channels), cfg.activation
        if cfg.method == "l2":
            self.regressor = nn.Sequential(grey_head(1, cfg.head_channels, cfg.head_channels, act), activation(act),
                                           grey_head(cfg.head_channels, cfg.head_channels, 2, act), nn.Tanh())
            return
        field = 2 if cfg.method == "mdn" else 3  # q(z|C) or q(z|C, G)
        self.encoder = ConvEncoder((field, h, w), list(chans), 2 * cfg.latent_dim, act)
        sees_grey = cfg.decoder_sees_grey or cfg.method == "cvae"
        self.decoder = ChromaDecoder(cfg.latent_dim, tuple(cfg.data_shape), chans, cfg.head_channels, act, sees_grey)
        if cfg.method == "mdn":
            m, d = cfg.n_components, cfg.latent_dim
            self.mdn = ConvEncoder((1, h, w), list(cfg.mdn_channels), m * d + m, act)
            self.register_buffer("hist_weights", torch.ones(cfg.hist_bins ** 2))
            k = min(cfg.n_principal, 2 * h * w)
            self.register_buffer("components", torch.zeros(k, 2 * h * w))
            self.register_buffer("variances", torch.ones(k))
            self.register_buffer("fitted", torch.tensor(False))

    # --- data ----------------------------------------------------------------------------------
    def batch_fields(self, dataset, split) -> tuple[torch.Tensor]:
        """Batches carry the colour targets [N, 3, H, W] (uint8) after the grey images."""
        if split.targets is None or tuple(split.targets.shape[1:]) != (3, *self.cfg.data_shape[1:]):
            raise DgmError(NEEDS_PAIRS)
        return (split.targets,)

    @staticmethod
    def colour_field(targets: torch.Tensor) -> torch.Tensor:
        """C, the chroma [B, 2, H, W] in [-1, 1] of colour targets [B, 3, H, W] (uint8, or floats in [0, 1])."""
        rgb = targets.float() / 255 if not targets.is_floating_point() else targets.float()
        return rgb_to_ycbcr(rgb)[1]

    @property
    def fit_before_training(self) -> Callable[..., None] | None:
        """`fit_colour_statistics` for method=mdn (L_hist's weights, L_mah's components), else None."""
        return self.fit_colour_statistics if self.cfg.method == "mdn" else None

    @torch.no_grad()
    def fit_colour_statistics(self, train_x: torch.Tensor, targets: torch.Tensor) -> None:
        """Fit L_hist's weights to the colour histogram of the training pixels and L_mah's top-k principal
        components and variances to the training colour fields, both from up to FIT_EXAMPLES evenly strided
        training targets [N, 3, H, W] (train_x, the grey images, is not needed)."""
        if targets is None:
            raise DgmError(NEEDS_PAIRS)
        bins = self.cfg.hist_bins
        idx = torch.linspace(0, len(targets) - 1, min(len(targets), FIT_EXAMPLES)).round().long()
        fields = self.colour_field(targets[idx])
        counts = torch.bincount(colour_bins(fields, bins).flatten(), minlength=bins * bins)
        self.hist_weights.copy_(histogram_weights(counts))
        components, variances = principal_components(fields.flatten(1), self.components.shape[0])
        self.components.copy_(components)
        self.variances.copy_(variances)
        self.fitted.fill_(True)

    # --- the parts -------------------------------------------------------------------------------
    def colour_posterior(self, chroma: torch.Tensor, grey: torch.Tensor) -> D.Normal:
        """q(z|C) (mdn) or q(z|C, G) (cvae): N(mu, diag sigma^2), batch shape [B, latent_dim]."""
        inputs = chroma if self.cfg.method == "mdn" else torch.cat([chroma, grey.to(chroma.dtype)], 1)
        return diagonal_normal(full_precision(self.encoder(inputs)))

    def decode_chroma(self, z: torch.Tensor, grey: torch.Tensor) -> torch.Tensor:
        """Ĉ, chroma [B, 2, H, W] in (-1, 1), of codes z [B, D] for grey images [B, 1, H, W]."""
        return full_precision(self.decoder(z, grey))

    def mdn_distribution(self, grey: torch.Tensor) -> D.MixtureSameFamily:
        """P(z|G) of grey images [B, 1, H, W]: M components N(mu_i(G), sigma^2 I), weights pi(G)."""
        m, d = self.cfg.n_components, self.cfg.latent_dim
        out = full_precision(self.mdn(grey))
        return mixture(out[:, m * d:], out[:, :m * d].reshape(-1, m, d), self.cfg.mdn_sigma)

    # --- training -----------------------------------------------------------------------------------
    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """The method's loss on (grey [B, 1, H, W] floats, targets [B, 3, H, W] uint8), averaged over the batch."""
        grey, targets = batch[0], batch[1] if len(batch) > 1 else None
        if targets is None:
            raise DgmError(NEEDS_PAIRS)
        chroma = self.colour_field(targets)
        if self.cfg.method == "l2":
            l2 = (full_precision(self.regressor(grey)) - chroma).pow(2).flatten(1).sum(1).mean()
            return {"loss": l2, "l2": l2.detach()}
        q = self.colour_posterior(chroma, grey)
        pred = self.decode_chroma(q.rsample(), grey)
        kl = gaussian_kl(q)
        l2 = (pred - chroma).pow(2).flatten(1).sum(1)
        if self.cfg.method == "cvae":
            loss = (l2 + self.cfg.kl_weight * kl).mean()
            return {"loss": loss, "l2": l2.mean().detach(), "kl": kl.mean().detach()}
        if not bool(self.fitted):
            raise DgmError("this colorization model's colour statistics are not fitted; call "
                           "fit_before_training(train_x, targets) first (dgm.api.train does)")
        l_hist = hist_loss(pred, chroma, self.hist_weights, self.cfg.hist_bins)
        l_mah = mahalanobis_loss(pred, chroma, self.components, self.variances)
        l_grad = gradient_loss(pred, chroma)
        l_dec = l_hist + self.cfg.mah_weight * l_mah + self.cfg.grad_weight * l_grad
        mdn_nll = -self.mdn_distribution(grey).log_prob(q.mean.detach())  # step 2 on step 1's embedding
        loss = (l_dec + self.cfg.kl_weight * kl + mdn_nll).mean()
        return {"loss": loss, "l_hist": l_hist.mean().detach(), "l_mah": l_mah.mean().detach(),
                "l_grad": l_grad.mean().detach(), "kl": kl.mean().detach(), "mdn_nll": mdn_nll.mean().detach(),
                "l2": l2.mean().detach()}

    # --- capabilities -------------------------------------------------------------------------------
    @property
    def max_colorizations(self) -> int | None:
        """The most colorizations `colorize` gives per image: M for the MDN (one per mode), else no limit."""
        return self.cfg.n_components if self.cfg.method == "mdn" else None

    @torch.no_grad()
    def colorize(self, grey: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """k colorizations [B, k, 3, H, W] (RGB in [0, 1], each with the luma of grey) of grey images
        [B, 1, H, W] in [0, 1]: the decoded means of the k most probable MDN components, in order of pi (mdn);
        k draws z ~ N(0, I) from `generator` (cvae); the one regression k times (l2)."""
        if k < 1:
            raise DgmError(f"k must be at least 1, got {k}")
        limit = self.max_colorizations
        if limit is not None and k > limit:
            raise DgmError(f"this colorization model has {limit} mixture components, so it gives at most {limit} "
                           f"colorizations per image, not {k}; retrain it with n_components={k} or ask for fewer")
        b = grey.shape[0]
        if self.cfg.method == "l2":
            chroma = full_precision(self.regressor(grey))[:, None].expand(-1, k, -1, -1, -1)
        else:
            if self.cfg.method == "mdn":
                p = self.mdn_distribution(grey)
                order = p.mixture_distribution.probs.argsort(1, descending=True)[:, :k]  # [B, k]
                means = p.component_distribution.base_dist.loc  # [B, M, D]
                z = means.gather(1, order[..., None].expand(-1, -1, means.shape[-1]))
            else:
                z = torch.randn(b, k, self.cfg.latent_dim, generator=generator, device=grey.device)
            repeated = grey[:, None].expand(b, k, *grey.shape[1:]).reshape(b * k, *grey.shape[1:])
            chroma = self.decode_chroma(z.reshape(b * k, -1), repeated).reshape(b, k, 2, *grey.shape[-2:])
        return chroma_to_rgb(grey[:, None].to(chroma.dtype), chroma)

    def figures(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, tuple[torch.Tensor, int]]:
        """"colorizations": per row the grey input, its colorizations and the truth y (when given)."""
        k = min(FIGURE_K, self.max_colorizations or FIGURE_K)
        generator = torch.Generator(device=x.device).manual_seed(0)
        return {"colorizations": colorization_grid(self, x, k, truth=y, generator=generator)}

    @property
    def sample(self) -> None:
        """None: a colorization model colours a given grey image and has no images of its own to draw."""
        return None

    def missing_reason(self, capability: str) -> str | None:
        if capability == "sample":
            return ("a colorization model colours given grey images and cannot sample from nothing; use "
                    "`dgm sample RUN --grey FILE` (or model.colorize(grey, k))")
        return None


def principal_components(fields: torch.Tensor, k: int, randomized: bool | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k principal directions [k, D] (orthonormal rows) and variances [k] (decreasing, floored at
    VARIANCE_FLOOR times the largest) of fields [N, D]: exact (an SVD of the centred data in float64) when that is
    small, else (or with randomized=true) torch.svd_lowrank in float32 with 20 spare directions and 6 power
    iterations from a fixed seed, accurate when the spectrum decays, as colour fields' does (about 1 s for
    sprites-grey's 10,000 x 2,048; a float32 eigendecomposition of the covariance can fail to converge on their
    many zero-variance pixels, a float64 one takes several seconds). With fewer than k directions in the data
    the rest are zero rows with the last variance."""
    n, d = fields.shape
    randomized = n * d * min(n, d) > 2e9 if randomized is None else randomized
    if randomized:
        x = fields.float() - fields.float().mean(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _, s, v = torch.svd_lowrank(x, q=min(k + 20, n, d), niter=6)
        variances, vh = s.double().pow(2) / max(n - 1, 1), v.T
    else:
        x = fields.double() - fields.double().mean(0)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        variances = s.pow(2) / max(n - 1, 1)
    kept = min(k, len(variances))
    variances = variances[:kept].clamp(min=max(VARIANCE_FLOOR * variances[0].item(), 1e-8))
    components = torch.cat([vh[:kept], vh.new_zeros(k - kept, d)])
    variances = torch.cat([variances, variances[-1:].expand(k - kept)])
    return components.float(), variances.float()


def colorization_grid(model: nn.Module, grey: torch.Tensor, k: int, truth: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """(images [N (k + 1 (+ 1)), 3, H, W] in [0, 1], nrow) for any model with `colorize`: per row the grey input,
    k colorizations and, when truth [N, 3, H, W] (uint8 or floats in [0, 1]) is given, the true colours."""
    out = model.colorize(grey, k, generator=generator).float()
    rows = [grey.float().expand(-1, 3, -1, -1)[:, None], out]
    if truth is not None:
        rows.append((truth.float() / 255 if not truth.is_floating_point() else truth.float())[:, None])
    images = torch.cat([r.to(out.device) for r in rows], 1)
    return images.reshape(-1, *images.shape[2:]), images.shape[1]
