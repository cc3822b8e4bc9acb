"""Conditional variational autoencoder (seed 002; Sohn et al. 2015, Kingma et al. 2014's M2 generative model).

The VAE of vae.py with every distribution conditioned on y (the lecture: "none of the derivation changes"):

    ELBO(x|y)   = E_q(z|x,y)[log p(x|z,y)] - KL(q(z|x,y) || p(z))                    <= log p(x|y)
    IWAE_k(x|y) = E[log 1/k sum_s p(x|z_s,y) p(z_s) / q(z_s|x,y)],  z_s ~ q(z|x,y)   ELBO <= IWAE_k <= log p(x|y)

q(z|x,y) = N(mu(x,y), diag sigma^2(x,y)), p(z) = N(0, I) and p(x|z,y) a likelihood of `dgm.distributions`,
chosen as the VAE chooses it. The prior does not depend on y: this is the generative model of Kingma et al.
2014 (M2) and of the lecture, with y the input and x the output. Sohn et al.'s CVAE for structured output
prediction also learns a conditional prior p(z|x) network; none here, so samples are z ~ N(0, I) decoded
with the wanted y. The decoder is given y for free and every nat z carries costs KL, so training leaves the
label to y and the style of x to z (`dgm plot RUN embedding` and eval's linear probe on the codes show how
far).

The condition is a vector c = condition(y) [B, d] concatenated to the encoder's input (d constant feature
maps for the conv encoder) and to z at the decoder's input. Class labels give one-hot vectors (d =
num_classes); every method that takes y also takes condition vectors [B, d] directly (floats), so a mix
of labels y_alpha = (1 - alpha) y_min + alpha y_max (the attribute progression, `dgm plot RUN
progression`) or a dataset's attribute vectors need nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgm.errors import DgmError
from dgm.models import class_labels, register_model
from dgm.models.vae import VAE, VAEConfig, codec_networks


@dataclass
class CVAEConfig(VAEConfig):
    """The VAE's options; the condition's size comes from the dataset (num_classes)."""


def with_condition(x: torch.Tensor, c: torch.Tensor, architecture: str) -> torch.Tensor:
    """The encoder's input: images x [B, C, H, W] with conditions c [B, d] appended, as flattened x then c
    [B, C H W + d] (mlp) or as d constant feature maps [B, C + d, H, W] (conv)."""
    c = c.to(x.dtype)
    if architecture == "mlp":
        return torch.cat([x.flatten(-3), c], dim=-1)
    return torch.cat([x, c[..., None, None].expand(*c.shape, *x.shape[-2:])], dim=-3)


@register_model("cvae", CVAEConfig, family="vae", seeds=("002",),
                description="Conditional VAE: q(z|x,y), p(x|z,y), p(z) = N(0, I); samples by label, progressions")
class CVAE(VAE):
    conditional = True  # its methods take the labels y (or condition vectors) of the images they are given

    def __init__(self, cfg: CVAEConfig):
        if not cfg.num_classes:
            raise DgmError(f"{cfg.name or 'cvae'} conditions on class labels and this dataset has none; train it on "
                           "a dataset with labels (digits, mnist, or an npz with y_train)")
        if cfg.prior == "vampprior":
            raise DgmError("the VampPrior's pseudo-inputs have no labels, so the cvae cannot use it; choose "
                           "prior=standard, mog or flow")
        super().__init__(cfg)

    @property
    def condition_dim(self) -> int:
        """d, the size of the condition vector: one entry per class."""
        return self.cfg.num_classes

    def networks(self, out_channels: int) -> tuple[nn.Module, nn.Module]:
        return codec_networks(self.cfg, self.code_size, out_channels, self.condition_dim)

    def condition(self, y, n: int | None = None) -> torch.Tensor:
        """The condition vectors [n, d] of y: one-hot vectors of class labels (an int, or [n] integers; None
        cycles 0, 1, ..., K-1, 0, ...), or y itself when it holds vectors [n, d] (floats)."""
        weight = next(self.parameters())
        if torch.is_tensor(y) and y.is_floating_point():
            if y.dim() != 2 or y.shape[1] != self.condition_dim or (n is not None and y.shape[0] != n):
                raise DgmError(f"expected condition vectors of shape [{n if n is not None else 'n'}, "
                               f"{self.condition_dim}], got {tuple(y.shape)}")
            return y.to(weight.device)
        if n is None:
            if not torch.is_tensor(y) or y.dim() != 1:
                raise DgmError("labels without a batch size must be a tensor [n] of class labels")
            n = y.shape[0]
        labels = class_labels(y, n, self.condition_dim, weight.device)
        return F.one_hot(labels, self.condition_dim).to(weight.dtype)

    def conditions(self, y, n: int) -> torch.Tensor:
        """The condition vectors [n, d] of the images' labels y (required: the bounds are of log p(x|y))."""
        if y is None:
            raise DgmError(f"{self.cfg.name or 'cvae'} is conditional: give the images' labels y "
                           "(dgm.models.given(model, y))")
        return self.condition(y, n)

    def encoder_input(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return with_condition(x, c, self.cfg.architecture)

    def decoder_input(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """[z, c] for z [..., B, D] and conditions c [B, d]: [..., B, D + d]."""
        return torch.cat([z, c.to(z.dtype).expand(*z.shape[:-1], c.shape[-1])], dim=-1)

    def sample(self, n: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images of p(x|z,y) for z ~ p(z); y a label, [n] labels or [n, d] condition vectors, None
        cycling through the classes."""
        return self.decode(self.sample_latent(n, generator), self.condition(y, n))

    def loss(self, batch, step: int | None = None, y=None) -> dict[str, torch.Tensor]:
        """The VAE's loss on the batch's images given their labels: -ELBO(x|y) (with beta and warm-up) or
        -IWAE_k(x|y), averaged over the batch; terms in nats."""
        y = batch[1] if len(batch) > 1 else None
        if y is None:
            raise DgmError(f"{self.cfg.name} is conditional and needs a dataset with class labels")
        return super().loss(batch, step, y=self.condition(y, batch[0].shape[0]))
