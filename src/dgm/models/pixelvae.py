"""PixelVAE (seed 004; Gulrajani et al. 2016): a VAE whose decoder p(x|z) is a small gated PixelCNN.

The lecture's "improving the decoder": a factorised p(x|z) = prod_d p(x_d|z) misses the correlations
between pixels; an autoregressive decoder keeps them,

    p(x|z) = p(x_1|z) prod_{d=2}^D p(x_d | x_1, ..., x_{d-1}, z)      (raster order, colours R -> G -> B)

and is still exact and normalised, so the VAE's bounds hold unchanged:

    ELBO(x)   = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))       <= IWAE_k(x) <= log p(x)

Everything but the decoder is the VAE's (vae.py): the encoder q(z|x) (mlp or conv), p(z), the ELBO and
IWAE_k, beta, KL warm-up, n_samples, objective, prior, flow, estimator. This class overrides only the
decoder (`networks`, and `__init__` to check the config and use the decoder's likelihood), `log_px_z`,
`decode` and `sample`; `pixel_log_px_z` gives the per-pixel terms.

How z conditions the decoder (van den Oord et al. 2016's conditional PixelCNN with a spatial condition,
which is how Gulrajani et al. feed the upsampled latent maps to the PixelCNN):

    s = m(z)                                          [B, latent_maps, H, W]: the VAE's own decoder network
                                                      (an MLP for architecture=mlp, linear + transposed
                                                      convolutions for conv), its outputs read as maps
    v_pre = W_v * v + V_v s,   h_pre = W_h * h + W_vh down_shift(v_pre) + V_h s     in every gated layer

with V_v, V_h 1x1 convolutions of each layer (`LatentGatedLayer`, a GatedLayer of autoregressive.py whose
conditioning bias is spatial). The gated stacks are causal in x; s depends on z only, so it may be
added at every pixel: the conditional of pixel i sees x_<i and all of z.

The likelihood of every conditional is the pixel models' (`pixel_likelihood`): a Bernoulli on binary data,
a softmax over the L levels otherwise, so log p(x|z) is an exact log-probability of the images as stored.

decode(z) is not a mean: an autoregressive p(x|z) has no per-pixel mean without the earlier pixels. It
is an image drawn from p(x|z) pixel by pixel with one fixed set of uniforms (from a generator seeded 0)
shared by every z, so decode is a deterministic function of z alone (the same z gives the same image
wherever it is in the batch, and a path of codes moves through images driven by the same noise).
`reconstruct(x)` = decode(posterior mean of x): a draw from p(x | E[z|x]), not an average image.

Sampling draws z ~ p(z) then x ~ p(x|z) pixel by pixel, inverting each conditional's CDF at a uniform
(as the pixel models do), with the cached sampler (every layer computes only the new pixel from caches;
the vertical stack one row at a time) or the naive one (a full pass per pixel); both give the same images.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from dgm.config import choice, number
from dgm.distributions import CategoricalLikelihood, Likelihood
from dgm.errors import DgmError
from dgm.models import register_model
from dgm.models.autoregressive import (SAMPLERS, AutoregressiveModel, GatedLayer, GatedPixelCNN, _check_widths,
                                       output_head, pixel_likelihood)
from dgm.models.vae import VAE, VAEConfig, codec_networks

# options of the VAE's factorised likelihoods that an autoregressive decoder has no use for
_UNUSED = ("learned_scale", "scale", "n_mix")


@dataclass
class PixelVAEConfig(VAEConfig):
    """The VAE's options (encoder, latent, bounds, beta, warm-up) and the decoder's PixelCNN."""

    likelihood: str = choice("auto", "auto", "categorical")  # each pixel's conditional: auto is a Bernoulli on
    # binary data and a softmax over the levels otherwise (the pixel models'); categorical a softmax always
    chunk_size: int = 1024  # most (sample x example) pairs per decoder call in iwae(): a PixelCNN's activations
    # are maps, not vectors
    latent_maps: int = number(8, min=1)  # feature maps s = m(z) [latent_maps, H, W] that condition every layer
    pixel_layers: int = number(3, min=1)  # gated layers of the decoder (Gulrajani et al.: a few suffice)
    pixel_channels: int = number(32, min=1)  # features per stack (the gates use twice as many)
    first_kernel: int = number(5, min=2)  # the first gated layer's k x k reach
    kernel: int = number(3, min=2)  # the other layers' k x k
    sampler: str = choice("cached", *SAMPLERS)


class LatentGatedLayer(GatedLayer):
    """A GatedLayer whose conditioning biases are maps, not per-class vectors: V_v s and V_h s, 1x1
    convolutions of the latent maps s [B, F, H, W], added to the gates at every pixel."""

    def __init__(self, in_channels: int, channels: int, kernel: int, data_channels: int, first: bool,
                 map_channels: int):
        super().__init__(in_channels, channels, kernel, data_channels, first, num_classes=None)
        self.map_bias = nn.Conv2d(map_channels, 4 * channels, 1)

    def biases(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V_v s, V_h s), each [B, 2c, H, W]."""
        bias_v, bias_h = self.map_bias(s).chunk(2, dim=1)
        return bias_v, bias_h


class PixelDecoder(AutoregressiveModel):
    """p(x|z): the maps network m (z [N, D] -> s [N, F, H, W]) and a gated PixelCNN conditioned on s.

    As a pixel model its "labels" are the maps s: `net(x, s)`, `stepper(n, s)`, `generate(x, row, s, ...)`
    and `pixel_log_prob(x, s)` are those of a pixel model given s."""

    def __init__(self, cfg: PixelVAEConfig, likelihood: Likelihood, maps: nn.Module):
        super().__init__(cfg, likelihood)
        c = cfg.data_shape[0]
        self.maps = maps
        self.layers = nn.ModuleList(
            LatentGatedLayer(c if n == 0 else cfg.pixel_channels, cfg.pixel_channels,
                             cfg.first_kernel if n == 0 else cfg.kernel, c, first=n == 0,
                             map_channels=cfg.latent_maps)
            for n in range(cfg.pixel_layers))
        self.head = output_head(cfg.pixel_channels, likelihood.out_channels, c)

    def labels(self, y, n: int, device: torch.device):
        """The condition is the latent maps s themselves."""
        return y

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The parameters of every conditional p(x_i | x_<i, z), [N, P, H, W], for z [N, D] and x [N, C, H, W]."""
        return self.net(x, self.maps(z))

    net = GatedPixelCNN.net  # the gated stack and its cached sampler, with the maps s as the condition
    stepper = GatedPixelCNN.stepper

    @torch.no_grad()
    def draw(self, s: torch.Tensor, u: torch.Tensor, method: str | None = None) -> torch.Tensor:
        """Images [n, C, H, W] drawn from p(x|z) given the maps s [n, F, H, W], pixel by pixel in raster order,
        channel c of pixel (i, j) the inverse CDF of its conditional at u[:, c, i, j] (u [n, C, H, W] in [0, 1)):
        `generate` of the pixel models with the uniforms given, so that decode can share them across z."""
        return self.generate(u.new_zeros(s.shape[0], *self.cfg.data_shape), 0, s, None, method, u=u)

@register_model("pixelvae", PixelVAEConfig, family="vae", seeds=("004",),
                description="PixelVAE: the VAE's encoder, a gated PixelCNN decoder conditioned on maps of z; "
                            "exact log p(x|z), ELBO or IWAE")
class PixelVAE(VAE):
    def __init__(self, cfg: PixelVAEConfig):
        if len(cfg.data_shape) != 3:
            raise DgmError(f"{cfg.name or 'pixelvae'} models images [C, H, W], not data of shape "
                           f"{tuple(cfg.data_shape)}")
        if cfg.levels < 2:
            raise DgmError(f"{cfg.name or 'pixelvae'} has a discrete pixel decoder and needs data with at least 2 "
                           f"pixel levels, got {cfg.levels}")
        _check_widths(cfg.data_shape[0], pixel_channels=cfg.pixel_channels)
        defaults = {f.name: f.default for f in dataclasses.fields(PixelVAEConfig)}
        changed = [name for name in _UNUSED if getattr(cfg, name) != defaults[name]]
        if changed:
            raise DgmError(f"{changed[0]} belongs to the VAE's continuous likelihoods; pixelvae's decoder gives "
                           "each pixel a Bernoulli or a softmax over its levels, so leave it out")
        super().__init__(cfg)
        self.likelihood = self.decoder.likelihood  # the VAE's bounds and loss read it (normalised, etc.)

    def networks(self, out_channels: int) -> tuple[nn.Module, nn.Module]:
        """(the VAE's encoder x -> [mu, log sigma^2, h] [*, code_size], the PixelDecoder); the VAE's decoder
        network, with latent_maps outputs, becomes the maps network m(z). out_channels (the VAE's likelihood's)
        is unused."""
        c, levels = self.cfg.data_shape[0], self.cfg.levels
        likelihood = CategoricalLikelihood(c, levels) if self.cfg.likelihood == "categorical" else pixel_likelihood(
            c, levels)
        encoder, maps = codec_networks(self.cfg, self.code_size, self.cfg.latent_maps)
        return encoder, PixelDecoder(self.cfg, likelihood, maps)

    # --- the model's parts -------------------------------------------------------------
    def log_px_z(self, z: torch.Tensor, x: torch.Tensor, y=None) -> torch.Tensor:
        """log p(x|z) = sum_i log p(x_i | x_<i, z), exact, for z [..., B, D] and x [B, C, H, W] -> [..., B]
        (samples S in front are flattened into the batch)."""
        lead = z.shape[:-2]
        z = self.decoder_input(z, self.conditions(y, x.shape[0]))
        zf = z.reshape(-1, z.shape[-1])
        xf = x.expand(*lead, *x.shape).reshape(-1, *x.shape[1:])
        out = self.decoder(zf, xf).to(x.dtype)  # the data's precision also under bf16 autocast
        return self.likelihood.log_prob(out, xf).reshape(*lead, x.shape[0])

    def pixel_log_px_z(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_ij | x_<ij, z) of every pixel for z [B, D] and x [B, C, H, W]: [B, H, W]."""
        return self.decoder.pixel_log_prob(x, self.decoder.maps(z))

    # --- capabilities ------------------------------------------------------------------
    def _weight(self) -> torch.Tensor:
        return next(self.parameters())

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y=None, seed: int = 0) -> torch.Tensor:
        """A picture of p(x|z) for codes z [n, D], in [0, 1] on the data's levels: the image drawn pixel by pixel
        from p(x|z) with one set of uniforms (a generator seeded `seed`) shared by every z, so a deterministic
        function of z (see the module docstring; an autoregressive p(x|z) has no per-pixel mean)."""
        w = self._weight()
        g = torch.Generator(device=w.device).manual_seed(seed)
        u = torch.rand(1, *self.cfg.data_shape, generator=g, device=w.device, dtype=w.dtype)
        z = self.decoder_input(z.to(w.dtype), self.conditions(y, z.shape[0]))
        return self.decoder.draw(self.decoder.maps(z), u.expand(len(z), *u.shape[1:]))

    @torch.no_grad()
    def sample(self, n: int, y=None, generator: torch.Generator | None = None,
               method: str | None = None) -> torch.Tensor:
        """n images [n, C, H, W]: z ~ p(z), then x ~ p(x|z) pixel by pixel (the sampler of the config, or
        `method`: cached | naive). The uniforms are drawn as the pixel models' `generate` draws them."""
        w = self._weight()
        z = self.decoder_input(self.sample_latent(n, generator).to(w.dtype), self.conditions(y, n))
        u = torch.rand(n, *self.cfg.data_shape, generator=generator, device=w.device, dtype=w.dtype)
        return self.decoder.draw(self.decoder.maps(z), u, method)
