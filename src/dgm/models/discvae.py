"""Attribute2Image's layered conditional VAE, disCVAE (seeds 000 and 002; Yan et al. 2016).

An image is a foreground laid over a background through a gating map (the lecture's p(x, x_F, g | y, z_F, z_B)):

    z_F, z_B ~ N(0, I)
    (x_F, g) = f(y, z_F)               foreground mean image x_F [C, H, W] and gate g = sigmoid(gating logits) [1, H, W]
    x_B      = b(z_B)                  background mean image [C, H, W] (x_F, x_B = sigmoid of the decoders' maps)
    x        = x_F * g + x_B * (1 - g) the composite, the location of p(x | z_F, z_B, y)

p(x | z, y) is a Gaussian (or Laplace, `likelihood`) with location x and the fixed scale `scale`, integrated over
each pixel value's bin (`dgm.distributions`), so on data with L levels it is a probability of the L values as
stored. Training also observes, beside x and its attribute vector y (`dgm.data.attribute_vectors`), the data's
foreground mask m (sprites' masks): the foreground x_F = x on the mask and the gate's target g = m. With the three
observations independent given z,

    p(x, x_F, g | y, z_F, z_B) = p(x | z_F, z_B, y) p(x_F | z_F, y) p(g | z_F, y)
    log p(x_F | z_F, y) = sum_{i: m_i = 1} sum_c log N_L(x_ic; x_F,ic(z_F, y), scale)     the mask's pixels
    log p(g = m | z_F, y) = sum_i m_i log g_i + (1 - m_i) log(1 - g_i)                   a Bernoulli per pixel

and the recognition model q(z_F, z_B | x, y) = q(z_F | x, y) q(z_B | z_F, x, y) (two encoders, as in the authors'
code: the background's reads x, y and z_F), the loss is the negative of one draw of the bound

    log p(x, x_F, g | y) >= E_q[log p(x|z,y) + log p(x_F|z_F,y) + log p(g|z_F,y)]
                            - KL(q(z_F|x,y) || p(z_F)) - E_q(z_F|x,y)[KL(q(z_B|z_F,x,y) || p(z_B))]

(`joint_bound`; `mask_weight` scales the gate's term, as the authors' alpha = 0.3 does, and `beta` the KL; both 1
give the bound). It is a bound on the joint of x, its foreground and its mask, not on log p(x | y): the logged
terms are `recon` = -log p(x|z,y), `fg_recon` = -log p(x_F|z_F,y), `mask_bce` = -log p(g=m|z_F,y) and `kl`. The
model's marginal of x alone has its own bounds with the same q, which `elbo` and `iwae` compute (they need no mask,
so `dgm eval` scores log p(x | y) as for the cvae):

    ELBO(x|y) = E_q[log p(x|z,y)] - KL(q(z_F|x,y) || p(z_F)) - E_q[KL(q(z_B|z_F,x,y) || p(z_B))]   <= log p(x|y)

The authors' foreground encoder reads the masked image x_F; here both encoders read x, so an image without a
mask (evaluation, reconstructions) is encoded as in training. With g = 1 everywhere the composite is x_F, p(x|z,y)
is the cvae's p(x|z_F,y) with the foreground decoder, and z_B drops out of the picture.

Codes are z = [z_F, z_B] (latent_dim + background_dim entries): `encode`, `decode` (the composite), `sample`
and `layers(z, y) -> (x_F, g, x_B, x)`. y is an attribute vector [n, A]; `sample(n)` draws it uniformly as the
cvae with condition=attributes does, and `dgm plot RUN progression` moves one factor at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

from dgm.config import choice, number, numbers
from dgm.distributions import make_likelihood, standard_normal_log_prob
from dgm.errors import DgmError
from dgm.models import ModelConfig, register_model
from dgm.models.cvae import attribute_ends, condition_vectors, draw_attributes, with_condition
from dgm.models.vae import codec_decoder, codec_encoder, codec_networks, diagonal_normal, gaussian_kl, iwae_bound
from dgm.nn import ACTIVATIONS


@dataclass
class DisCVAEConfig(ModelConfig):
    architecture: str = choice("conv", "mlp", "conv")
    conv_channels: tuple[int, ...] = numbers((32, 64), min=1, nonempty=True)  # stride-2 conv widths (mirrored)
    hidden_dims: tuple[int, ...] = numbers((400,), min=1)  # architecture=mlp: MLP widths (the decoders mirror them)
    activation: str = choice("relu", *ACTIVATIONS, "gated")  # gated: MLP only
    latent_dim: int = number(16, min=1)  # size of z_F, the foreground's code
    background_dim: int = number(8, min=1)  # size of z_B, the background's code
    likelihood: str = choice("gaussian", "gaussian", "laplace")  # p(x|z,y) and p(x_F|z_F,y), binned over the levels
    scale: float = number(0.1, above=0)  # their fixed scale
    beta: float = number(1.0, min=0)  # weight of the KL terms; 1 gives the bound
    mask_weight: float = number(1.0, min=0)  # weight of log p(g = m | z_F, y); 1 gives the bound
    chunk_size: int = number(1024, min=1)  # most (sample x example) pairs per network call in iwae(); the
    # background encoder reads each image with A + latent_dim constant maps, so a pair costs (C + A + latent_dim) H W
    factor_sizes: tuple[int, ...] = numbers((), min=1)  # set from the dataset: each factor's entries in y


def _background_decoder(cfg: DisCVAEConfig, out_channels: int) -> nn.Module:
    """b: z_B [*, background_dim] -> [*, out_channels, H, W], the codec decoder for a code of background_dim."""
    return codec_decoder(cfg, cfg.background_dim, out_channels)


@register_model("discvae", DisCVAEConfig, family="vae", seeds=("000", "002"),
                description="Attribute2Image's layered CVAE: x = x_F g + x_B (1 - g), foreground and gate from "
                            "(y, z_F), background from z_B; trained on masks (sprites)")
class DisCVAE(nn.Module):
    conditional = True  # every method that reads images or decodes codes takes their attribute vectors y

    def __init__(self, cfg: DisCVAEConfig):
        super().__init__()
        self.cfg = cfg
        if not cfg.factor_sizes:
            raise DgmError(f"{cfg.name or 'discvae'} conditions on the attribute vectors of a dataset's known factors "
                           "and learns its gate from the data's masks, and this dataset has neither; train it on "
                           "sprites (or sprites64)")
        channels = cfg.data_shape[0]
        a, d_f = self.condition_dim, cfg.latent_dim
        self.likelihood = make_likelihood(cfg.likelihood, channels, cfg.levels, scale=cfg.scale)
        # f: [z_F, y] -> C foreground maps and one gating map; q(z_F | x, y): the cvae's networks
        self.encoder_fg, self.decoder_fg = codec_networks(cfg, 2 * d_f, channels + 1, condition_dim=a)
        self.encoder_bg = codec_encoder(cfg, 2 * cfg.background_dim, condition_dim=a + d_f)  # q(z_B | z_F, x, y)
        self.decoder_bg = _background_decoder(cfg, channels)

    @property
    def condition_dim(self) -> int:
        """A, the size of an attribute vector."""
        return sum(self.cfg.factor_sizes)

    @property
    def code_dim(self) -> int:
        """The size of a code z = [z_F, z_B]."""
        return self.cfg.latent_dim + self.cfg.background_dim

    # --- the condition ---------------------------------------------------------------------
    def batch_fields(self, dataset, split) -> tuple[torch.Tensor, torch.Tensor]:
        """(attribute vectors [N, A], foreground masks bool [N, H, W]): what every batch carries after x."""
        if split.masks is None:
            raise DgmError(f"{self.cfg.name or 'discvae'} learns its gate from foreground masks and dataset "
                           f"'{dataset.name}' has none; train it on sprites (or sprites64)")
        return dataset.attributes(split), split.masks

    @property
    def attribute_ends(self):
        """y_rest [A] -> (y_min, y_max) [F, A], the ends of each factor's progression (cvae.attribute_ends)."""
        return partial(attribute_ends, tuple(self.cfg.factor_sizes))

    def random_attributes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n attribute vectors drawn uniformly (cvae.draw_attributes) on the model's device: [n, A]."""
        return draw_attributes(tuple(self.cfg.factor_sizes), n, generator, next(self.parameters()).device)

    def condition(self, y, n: int | None = None) -> torch.Tensor:
        """The attribute vectors y [n, A] (floats), checked; None draws n uniformly."""
        if y is None and n is not None:
            return self.random_attributes(n)
        if not (torch.is_tensor(y) and y.is_floating_point()):
            raise DgmError(f"{self.cfg.name or 'discvae'} conditions on attribute vectors (floats [n, "
                           f"{self.condition_dim}], see dgm.data.attribute_vectors), not class labels")
        return condition_vectors(y, n, self.condition_dim, next(self.parameters()).device)

    def conditions(self, y, n: int) -> torch.Tensor:
        """The attribute vectors [n, A] of n images (required: every distribution is conditioned on them)."""
        if y is None:
            raise DgmError(f"{self.cfg.name or 'discvae'} is conditional: give the images' attribute vectors y "
                           "(dgm.models.given(model, y))")
        return self.condition(y, n)

    # --- the model's parts -----------------------------------------------------------------
    def posterior_fg(self, x: torch.Tensor, c: torch.Tensor) -> D.Normal:
        """q(z_F | x, y) = N(mu, diag sigma^2), batch shape [B, latent_dim]."""
        return diagonal_normal(self.encoder_fg(with_condition(x, c, self.cfg.architecture)).to(x.dtype))

    def posterior_bg(self, x: torch.Tensor, c: torch.Tensor, z_fg: torch.Tensor) -> D.Normal:
        """q(z_B | z_F, x, y) for foreground codes z_F [..., B, latent_dim]: batch shape [..., B, background_dim]."""
        lead = z_fg.shape[:-1]
        given = torch.cat([c.to(z_fg.dtype).expand(*lead, -1), z_fg], dim=-1)
        out = self.encoder_bg(with_condition(x.expand(*lead, *x.shape[-3:]), given, self.cfg.architecture))
        return diagonal_normal(out.to(x.dtype))

    def layer_maps(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_F [..., B, C, H, W], gating logits [..., B, 1, H, W], x_B [..., B, C, H, W]) of codes z = [z_F, z_B]
        [..., B, latent_dim + background_dim] and attribute vectors c [B, A]."""
        if z.shape[-1] != self.code_dim:
            raise DgmError(f"{self.cfg.name or 'discvae'}'s codes are [z_F, z_B] with {self.code_dim} entries "
                           f"(latent_dim + background_dim), got {z.shape[-1]}")
        z_fg, z_bg = z.split([self.cfg.latent_dim, self.cfg.background_dim], dim=-1)
        out = self.decoder_fg(torch.cat([z_fg, c.to(z.dtype).expand(*z_fg.shape[:-1], -1)], dim=-1)).to(z.dtype)
        channels = self.cfg.data_shape[0]
        x_fg, gate_logits = out[..., :channels, :, :], out[..., channels:, :, :]
        return torch.sigmoid(x_fg), gate_logits, torch.sigmoid(self.decoder_bg(z_bg).to(z.dtype))

    @staticmethod
    def composite(x_fg: torch.Tensor, g: torch.Tensor, x_bg: torch.Tensor) -> torch.Tensor:
        """x = x_F * g + x_B * (1 - g), the gate [.., 1, H, W] shared by the channels."""
        return x_fg * g + x_bg * (1 - g)

    def layers(self, z: torch.Tensor, y) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_F, g, x_B, x) of codes z [B, latent_dim + background_dim] with attribute vectors y: the foreground,
        the gate [B, 1, H, W], the background and their composite, all in [0, 1]."""
        x_fg, gate_logits, x_bg = self.layer_maps(z, self.conditions(y, z.shape[-2]))
        g = torch.sigmoid(gate_logits)
        return x_fg, g, x_bg, self.composite(x_fg, g, x_bg)

    def log_p_terms(self, z: torch.Tensor, x: torch.Tensor, y, mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(log p(x | z, y), log p(x_F | z_F, y) on the mask, log p(g = mask | z_F, y)) for codes z [..., B, D],
        images x [B, C, H, W] and masks [B, H, W] (0/1): each [..., B]; the last two None without a mask."""
        x_fg, gate_logits, x_bg = self.layer_maps(z, self.conditions(y, x.shape[0]))
        log_px_z = self.likelihood.log_prob(self.composite(x_fg, torch.sigmoid(gate_logits), x_bg), x)
        if mask is None:
            return log_px_z, None, None
        m = mask.to(x.dtype)
        log_pxf = (self.likelihood.element_log_prob(x_fg, x) * m[:, None]).flatten(-3).sum(-1)
        logits = gate_logits[..., 0, :, :]
        log_pg = -F.binary_cross_entropy_with_logits(logits, m.expand_as(logits), reduction="none").flatten(-2).sum(-1)
        return log_px_z, log_pxf, log_pg

    def draw(self, x: torch.Tensor, c: torch.Tensor, n: int) -> tuple[torch.Tensor, D.Normal, D.Normal]:
        """n draws z = [z_F, z_B] ~ q(z_F | x, y) q(z_B | z_F, x, y) by the reparameterization trick: (z [n, B, D],
        q(z_F | x, y) with batch [B, latent_dim], q(z_B | z_F, x, y) with batch [n, B, background_dim])."""
        q_fg = self.posterior_fg(x, c)
        z_fg = q_fg.rsample((n,))
        q_bg = self.posterior_bg(x, c, z_fg)
        return torch.cat([z_fg, q_bg.rsample()], dim=-1), q_fg, q_bg

    # --- the bounds ------------------------------------------------------------------------
    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """-(E_q[log p(x|z,y) + log p(x_F|z_F,y) + mask_weight log p(g=m|z_F,y)] - beta KL), one draw of z per
        image, averaged over the batch (module docstring); terms in nats per image."""
        if len(batch) < 3 or batch[2] is None:
            raise DgmError(f"{self.cfg.name or 'discvae'} trains on batches (x, attribute vectors, masks); give it "
                           "a dataset with factors and masks (sprites)")
        x, y, mask = batch[0], batch[1], batch[2]
        c = self.conditions(y, x.shape[0])
        z, q_fg, q_bg = self.draw(x, c, 1)
        log_px_z, log_pxf, log_pg = (t.mean(0) for t in self.log_p_terms(z, x, c, mask))
        kl = gaussian_kl(q_fg) + gaussian_kl(q_bg).mean(0)
        loss = -(log_px_z + log_pxf + self.cfg.mask_weight * log_pg - self.cfg.beta * kl).mean()
        return {"loss": loss, "joint_bound": (log_px_z + log_pxf + log_pg - kl).mean().detach(),
                "recon": -log_px_z.mean().detach(), "fg_recon": -log_pxf.mean().detach(),
                "mask_bce": -log_pg.mean().detach(), "kl": kl.mean().detach()}

    def elbo(self, x: torch.Tensor, n_samples: int = 1, y=None) -> torch.Tensor:
        """ELBO(x|y) = E_q[log p(x|z,y)] - KL(q(z_F|x,y) || p(z_F)) - E_q[KL(q(z_B|z_F,x,y) || p(z_B))] <= log p(x|y),
        over n_samples draws, nats per image: [B]."""
        c = self.conditions(y, x.shape[0])
        z, q_fg, q_bg = self.draw(x, c, n_samples)
        log_px_z = self.log_p_terms(z, x, c)[0]
        return (log_px_z - gaussian_kl(q_bg)).mean(0) - gaussian_kl(q_fg)

    def log_weights(self, x: torch.Tensor, k: int, y=None) -> torch.Tensor:
        """log w = log p(x|z,y) + log p(z_F) + log p(z_B) - log q(z_F|x,y) - log q(z_B|z_F,x,y), z ~ q: [k, B]."""
        c = self.conditions(y, x.shape[0])
        z, q_fg, q_bg = self.draw(x, c, k)
        z_fg, z_bg = z.split([self.cfg.latent_dim, self.cfg.background_dim], dim=-1)
        log_q = q_fg.log_prob(z_fg).sum(-1) + q_bg.log_prob(z_bg).sum(-1)
        return self.log_p_terms(z, x, c)[0] + standard_normal_log_prob(z) - log_q

    def iwae(self, x: torch.Tensor, k: int, chunk_size: int | None = None, y=None) -> torch.Tensor:
        """IWAE_k(x|y) = log 1/k sum_s w_s <= log p(x|y), in chunks of at most chunk_size (sample x example) pairs: [B]."""
        return iwae_bound(lambda j: self.log_weights(x, j, y=y), k, x.shape[0], chunk_size or self.cfg.chunk_size)

    # --- capabilities ----------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """The code [z_F, z_B] of x: the mean of q(z_F|x,y), then the mean of q(z_B|z_F,x,y) at it: [B, D]."""
        c = self.conditions(y, x.shape[0])
        mu_fg = self.posterior_fg(x, c).mean
        return torch.cat([mu_fg, self.posterior_bg(x, c, mu_fg).mean], dim=-1)

    def decode(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """The composite x = x_F g + x_B (1 - g), the location of p(x|z,y), in [0, 1]: [B, C, H, W]."""
        return self.layers(z, y)[3]

    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return self.decode(self.encode(x, y), y)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z = [z_F, z_B] ~ N(0, I): [n, latent_dim + background_dim]."""
        weight = next(self.parameters())
        return torch.randn(n, self.code_dim, generator=generator, device=weight.device, dtype=weight.dtype)

    def sample(self, n: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Composites of z ~ p(z) with attribute vectors y [n, A], or drawn uniformly after z (y None)."""
        z = self.sample_latent(n, generator)
        return self.decode(z, self.random_attributes(n, generator) if y is None else y)

    @torch.no_grad()
    def figures(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[torch.Tensor, int]]:
        """Pictures of the layers: `layers`, a row per image x (attribute vectors y) of x, then x_F, g, x_B and
        the composite of its code; `sampled_layers`, the same four of z ~ p(z) (seed 0) with the same y."""
        x_fg, g, x_bg, x_hat = self.layers(self.encode(x, y), y)
        encoded = torch.stack([x, x_fg, g.expand_as(x_fg), x_bg, x_hat], dim=1).flatten(0, 1)
        z = self.sample_latent(x.shape[0], torch.Generator(device=x.device).manual_seed(0))
        s_fg, s_g, s_bg, s_x = self.layers(z, y)
        drawn = torch.stack([s_fg, s_g.expand_as(s_fg), s_bg, s_x], dim=1).flatten(0, 1)
        return {"layers": (encoded, 5), "sampled_layers": (drawn, 4)}
