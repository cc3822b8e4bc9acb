"""Conditional variational autoencoder (seed 002; Sohn et al. 2015, Kingma et al. 2014's M2 generative model), on
class labels or on attribute vectors (seeds 000 and 002: Yan et al. 2016's Attribute2Image CVAE).

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
maps for the conv encoder) and to z at the decoder's input. With `condition=label` class labels give one-hot
vectors (d = num_classes). With `condition=attributes` (Attribute2Image's p(x|y,z)) y is the attribute vector
of a dataset's known factors (`dgm.data.attribute_vectors`: each discrete factor one-hot, each continuous one
scaled to [0, 1]; d = sum of `factor_sizes`): batches, evaluation and pictures carry it in place of the label
(the `batch_fields` hook), and `sample(n)` without y draws it uniformly (each discrete factor's value uniform,
each continuous entry U(0, 1); a factor of size 1 is taken as continuous). Every method that takes y also takes
condition vectors [B, d] directly (floats), so the attribute progression of Yan et al.,

    y = [y_alpha, y_rest],  y_alpha = (1 - alpha) y_min + alpha y_max,

decodes with nothing else (`dgm plot RUN progression`: for labels a mix of two one-hot vectors, for
attributes one row per factor, `attribute_ends`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dgm.config import choice, numbers
from dgm.errors import DgmError
from dgm.models import class_labels, register_model
from dgm.models.vae import VAE, VAEConfig, codec_networks


@dataclass
class CVAEConfig(VAEConfig):
    """The VAE's options and what it conditions on; the condition's size comes from the dataset (num_classes for
    labels, factor_sizes for attribute vectors)."""

    condition: str = choice("label", "label", "attributes")  # class labels, or the attribute vectors of the factors
    factor_sizes: tuple[int, ...] = numbers((), min=1)  # set from the dataset: each factor's entries in y


def with_condition(x: torch.Tensor, c: torch.Tensor, architecture: str) -> torch.Tensor:
    """The encoder's input: images x [B, C, H, W] with conditions c [B, d] appended, as flattened x then c
    [B, C H W + d] (mlp) or as d constant feature maps [B, C + d, H, W] (conv)."""
    c = c.to(x.dtype)
    if architecture == "mlp":
        return torch.cat([x.flatten(-3), c], dim=-1)
    return torch.cat([x, c[..., None, None].expand(*c.shape, *x.shape[-2:])], dim=-3)


def condition_vectors(y: torch.Tensor, n: int | None, d: int, device) -> torch.Tensor:
    """y itself, checked to be condition vectors [n, d] (floats), on `device`."""
    if y.dim() != 2 or y.shape[1] != d or (n is not None and y.shape[0] != n):
        raise DgmError(f"expected condition vectors of shape [{n if n is not None else 'n'}, {d}], "
                       f"got {tuple(y.shape)}")
    return y.to(device)


def draw_attributes(sizes: tuple[int, ...], n: int, generator: torch.Generator | None = None,
                    device=None) -> torch.Tensor:
    """n attribute vectors drawn uniformly, factor by factor in order: a discrete factor (size K > 1) a uniformly
    chosen one-hot vector of K entries, a continuous one (size 1) U(0, 1): float32 [n, sum(sizes)]."""
    parts = [torch.rand(n, 1, generator=generator, device=device) if k == 1 else
             F.one_hot(torch.randint(k, (n,), generator=generator, device=device), k).float() for k in sizes]
    return torch.cat(parts, dim=1) if parts else torch.zeros(n, 0, device=device)


def attribute_ends(sizes: tuple[int, ...], y_rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_min, y_max), each [F, A]: row f is y_rest [A] with factor f's entries set to its first value's one-hot and
    its last value's (a discrete factor) or to 0 and 1 (a continuous one), every other entry y_rest's. The
    progression on factor f is y_alpha = (1 - alpha) y_min[f] + alpha y_max[f]."""
    y_min = y_rest.expand(len(sizes), -1).clone()
    y_max = y_min.clone()
    start = 0
    for f, k in enumerate(sizes):
        y_min[f, start : start + k] = 0
        y_max[f, start : start + k] = 0
        if k > 1:
            y_min[f, start] = 1
        y_max[f, start + k - 1] = 1
        start += k
    return y_min, y_max


@register_model("cvae", CVAEConfig, family="vae", seeds=("000", "002"),
                description="Conditional VAE: q(z|x,y), p(x|z,y), p(z) = N(0, I); y a class label or "
                            "(condition=attributes) an attribute vector; samples by label, progressions")
class CVAE(VAE):
    conditional = True  # its methods take the labels y (or condition vectors) of the images they are given

    def __init__(self, cfg: CVAEConfig):
        name = cfg.name or "cvae"
        if cfg.condition == "attributes":
            if not cfg.factor_sizes:
                raise DgmError(f"{name} with condition=attributes conditions on the attribute vectors of a dataset's "
                               "known factors and this dataset has none; train it on sprites (or sprites64), or use "
                               "condition=label")
        elif not cfg.num_classes:
            raise DgmError(f"{name} conditions on class labels and this dataset has none; train it on "
                           "a dataset with labels (digits, mnist, or an npz with y_train)")
        if cfg.prior == "vampprior":
            raise DgmError("the VampPrior's pseudo-inputs have no labels, so the cvae cannot use it; choose "
                           "prior=standard, mog or flow")
        super().__init__(cfg)

    @property
    def attributes(self) -> bool:
        """Whether y is an attribute vector (condition=attributes) rather than a class label."""
        return self.cfg.condition == "attributes"

    @property
    def condition_dim(self) -> int:
        """d, the size of the condition vector: one entry per class, or the attribute vector's size."""
        return sum(self.cfg.factor_sizes) if self.attributes else self.cfg.num_classes

    def networks(self, out_channels: int) -> tuple[nn.Module, nn.Module]:
        return codec_networks(self.cfg, self.code_size, out_channels, self.condition_dim)

    # --- the condition -------------------------------------------------------------------
    @property
    def batch_fields(self) -> Callable | None:
        """condition=attributes: the hook (dataset, split) -> (attribute vectors [N, A],) that makes training,
        validation, evaluation and pictures condition on `dataset.attributes(split)`; None with labels (batches
        carry the split's labels)."""
        return self._attribute_fields if self.attributes else None

    @staticmethod
    def _attribute_fields(dataset, split) -> tuple[torch.Tensor]:
        return (dataset.attributes(split),)

    @property
    def attribute_ends(self) -> Callable | None:
        """condition=attributes: y_rest [A] -> (y_min, y_max) [F, A], the ends of each factor's progression
        (`attribute_ends`); None with labels."""
        return partial(attribute_ends, tuple(self.cfg.factor_sizes)) if self.attributes else None

    def random_attributes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n attribute vectors drawn uniformly (`draw_attributes`) on the model's device: [n, A]."""
        if not self.attributes:
            raise DgmError(f"{self.cfg.name or 'cvae'} conditions on class labels, not attribute vectors")
        return draw_attributes(tuple(self.cfg.factor_sizes), n, generator, next(self.parameters()).device)

    def condition(self, y, n: int | None = None) -> torch.Tensor:
        """The condition vectors [n, d] of y: y itself when it holds vectors [n, d] (floats); else with labels the
        one-hot vectors of class labels (an int, or [n] integers; None cycles 0, 1, ..., K-1, 0, ...), with
        attributes uniformly drawn attribute vectors for None."""
        weight = next(self.parameters())
        if torch.is_tensor(y) and y.is_floating_point():
            return condition_vectors(y, n, self.condition_dim, weight.device)
        if self.attributes:
            if y is None and n is not None:
                return self.random_attributes(n)
            raise DgmError(f"{self.cfg.name or 'cvae'} conditions on attribute vectors (floats [n, "
                           f"{self.condition_dim}], see dgm.data.attribute_vectors), not class labels")
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
        """Mean images of p(x|z,y) for z ~ p(z); y a label, [n] labels or [n, d] condition vectors, None cycling
        through the classes (labels) or drawn uniformly after z from the same generator (attributes)."""
        z = self.sample_latent(n, generator)
        if y is None and self.attributes:
            y = self.random_attributes(n, generator)
        return self.decode(z, self.condition(y, n))

    def loss(self, batch, step: int | None = None, y=None) -> dict[str, torch.Tensor]:
        """The VAE's loss on the batch's images given their labels (or attribute vectors): -ELBO(x|y) (with beta
        and warm-up) or -IWAE_k(x|y), averaged over the batch; terms in nats."""
        y = batch[1] if len(batch) > 1 else None
        if y is None:
            raise DgmError(f"{self.cfg.name} is conditional and needs a dataset with class labels")
        return super().loss(batch, step, y=self.condition(y, batch[0].shape[0]))
