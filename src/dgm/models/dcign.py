"""Deep Convolutional Inverse Graphics Network (seed 000, "Vision task I"; Kulkarni et al. 2015).

A VAE (vae.py, conv by default) whose first latent units are assigned to named generating factors of a
procedural dataset, the rest left to the "intrinsic" properties:

    Z = [z_1 ... z_F  z_[F+1, n]]      z_1 .. z_F: the named factors (sprites: scale, rotation, x, y),
                                       z_[F+1, n]: intrinsic (sprites: shape, colour, background)

and trained on batches in which only one generating variable changes. The batch type cycles with the step,
k = step mod (F + 1): for k < F one base scene is drawn, copied B times, and only factor k redrawn per
image; for k = F (the intrinsic batch) the named factors are kept and every other factor redrawn. The
objective is the VAE's ELBO (or IWAE_k), computed with the encoder's outputs clamped:

    forward   u_bj -> mean_b' u_b'j              for every clamped unit j (the same for each image)
    backward  dL/du_bj := u_bj - mean_b' u_b'j    ("the gradients for the clamped neurons are set to their
                                                   difference from the mean"), times `clamp_weight` (1: the paper)

where the clamped units are all but z_k in a batch of factor k and the named units z_1 .. z_F in the
intrinsic batch; the free units keep their ordinary gradients. So z_k alone has to explain what changes
within its batch, and every other unit is nudged towards being the same for all images of it. The rule is
applied to each of the encoder's outputs of a clamped unit, mu_j and log sigma^2_j alike (the paper clamps
the encoder's outputs, and q(z_j|x) is then the same distribution for every image of the batch); the
reparameterisation noise stays independent per image, as in any VAE. A batch without the batch-type entry
(validation, `dgm eval`) gives exactly the VAE's loss, and encode/decode/sample are the VAE's.

The assignment is read back with `unit_names` ({unit: factor}); `dgm plot RUN traverse` labels those rows.
A rotation batch of a circle (or of a square by a multiple of pi/2) renders B equal images: the data says
nothing then, and z_rotation has nothing to explain in it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import distributions as D

from dgm.config import choice, number, numbers, text
from dgm.data import Factor, factor_sizes
from dgm.distributions import LIKELIHOODS
from dgm.errors import DgmError
from dgm.models import register_model
from dgm.models.vae import VAE, VAEConfig, diagonal_normal

INTRINSIC = "intrinsic"


@dataclass
class DCIGNConfig(VAEConfig):
    # the continuous factors given one latent unit each, in this order (z_0, z_1, ...); the other units are intrinsic
    factors: tuple[str, ...] = text(("scale", "rotation", "x", "y"), r"[A-Za-z0-9_]+",
                                    "comma-separated names of the dataset's continuous factors")
    latent_dim: int = 16
    architecture: str = "conv"
    # a Gaussian around the decoder's mean, integrated over each level (Kulkarni et al. trained on squared error);
    # the vae's auto choice for 8-bit data, a logistic mixture per pixel, can model sprites' pixels without z
    likelihood: str = choice("gaussian", "auto", *LIKELIHOODS)
    clamp_weight: float = number(1.0, min=0)  # scale of a clamped unit's gradient (unit - batch mean); 1: the paper
    factor_sizes: tuple[int, ...] = numbers((), min=1)  # from the dataset: each factor's attribute entries


class ClampToBatchMean(torch.autograd.Function):
    """The DC-IGN clamp of outputs u [B, K]: forward, each clamped column (clamped [K] bool) replaced by its
    batch mean; backward, that column's gradient replaced by weight * (u - batch mean), the others' passed on."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, clamped: torch.Tensor, weight: float) -> torch.Tensor:
        mean = u.mean(0, keepdim=True)
        ctx.save_for_backward(u - mean, clamped)
        ctx.weight = weight
        return torch.where(clamped, mean.expand_as(u), u)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        deviation, clamped = ctx.saved_tensors
        return torch.where(clamped, ctx.weight * deviation, grad), None, None


def clamp_to_batch_mean(u: torch.Tensor, clamped: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """`ClampToBatchMean` of u [B, K] on the columns where clamped [K] is true."""
    return ClampToBatchMean.apply(u, clamped, weight)


def clamped_units(varying: torch.Tensor, n_named: int, latent_dim: int) -> torch.Tensor:
    """Which units a batch of type `varying` (a long tensor k) clamps: bool [latent_dim], every unit but z_k for
    a named factor's batch (k < n_named), the named units for the intrinsic batch (k = n_named)."""
    k = varying.reshape(-1)[0]
    units = torch.arange(latent_dim, device=varying.device)
    return torch.where(k < n_named, units != k, units < n_named)


def factor_columns(names: Sequence[str], specs: tuple[Factor, ...]) -> list[int]:
    """The dataset's columns of the named factors, or DgmError for a name it lacks or a discrete factor."""
    known = [f.name for f in specs]
    columns = []
    for name in names:
        if name not in known:
            raise DgmError(f"the dataset has no factor '{name}'; choose factors among {', '.join(known)}")
        if specs[known.index(name)].discrete:
            continuous = ", ".join(f.name for f in specs if not f.discrete)
            raise DgmError(f"factor '{name}' is discrete, so it belongs to the intrinsic units; name only "
                           f"continuous factors ({continuous})")
        columns.append(known.index(name))
    if len(set(columns)) < len(columns):
        raise DgmError(f"factors {', '.join(names)} name a factor twice; give each once")
    return columns


def factor_batch(sample_factors: Callable[[int, torch.Generator | None], torch.Tensor], named: Sequence[int],
                 k: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The factors [n, F] of one training batch of type k: one base scene copied n times with only column
    named[k] redrawn per row (k < len(named)), or with every column outside `named` redrawn (k = len(named),
    the intrinsic batch). Redrawn values come from `sample_factors`, so each keeps its dataset distribution."""
    base = sample_factors(1, generator).expand(n, -1).clone()
    fresh = sample_factors(n, generator)
    vary = [named[k]] if k < len(named) else [c for c in range(base.shape[1]) if c not in named]
    base[:, vary] = fresh[:, vary]
    return base


@register_model("dcign", DCIGNConfig, family="vae", seeds=("000",),
                description="DC-IGN: a conv VAE whose first units are named factors, trained on batches with one "
                            "factor varying and the other units clamped to the batch mean (procedural data)")
class DCIGN(VAE):
    def __init__(self, cfg: DCIGNConfig):
        if not cfg.factors:
            raise DgmError("dcign assigns latent units to named factors; give at least one (factors=scale,x)")
        if cfg.latent_dim <= len(cfg.factors):
            raise DgmError(f"latent_dim={cfg.latent_dim} leaves no intrinsic units beside the {len(cfg.factors)} "
                           f"named factors; use latent_dim > {len(cfg.factors)}")
        if cfg.flow != "none":
            raise DgmError("a posterior flow mixes the latent units that dcign assigns to factors; use flow=none")
        if cfg.factor_sizes and len(cfg.factor_sizes) <= len(cfg.factors):
            raise DgmError(f"the dataset has {len(cfg.factor_sizes)} factors, so naming {len(cfg.factors)} leaves "
                           "none to the intrinsic units; name fewer factors")
        super().__init__(cfg)
        self._clamped: torch.Tensor | None = None  # [code_size] bool while loss() runs on a training batch

    @property
    def unit_names(self) -> dict[int, str]:
        """{latent unit: the factor it is assigned to}; the units not listed are intrinsic."""
        return dict(enumerate(self.cfg.factors))

    @property
    def batch_types(self) -> tuple[str, ...]:
        """What varies in a batch of type k = step mod (F + 1): the named factors, then "intrinsic"."""
        return (*self.cfg.factors, INTRINSIC)

    def batch_source(self, dataset) -> Callable[[int, int, torch.Generator], tuple]:
        """draw(step, batch_size, generator) -> (x [B, C, H, W] in [0, 1], None, k): a batch rendered with only
        the factor of type k = step mod (F + 1) varying (module docstring), everything drawn from `generator`."""
        if getattr(dataset, "renderer", None) is None or not dataset.factors:
            raise DgmError("dcign trains on batches rendered with one factor varying, so it needs a procedural "
                           "dataset such as sprites")
        named = factor_columns(self.cfg.factors, dataset.factors)
        if self.cfg.factor_sizes and tuple(self.cfg.factor_sizes) != factor_sizes(dataset.factors):
            raise DgmError(f"this dcign was built for factors of sizes {tuple(self.cfg.factor_sizes)} and dataset "
                           f"'{dataset.name}' has {factor_sizes(dataset.factors)}; train it on its own dataset")
        renderer, types = dataset.renderer, len(self.batch_types)

        def draw(step: int, batch_size: int, generator: torch.Generator) -> tuple:
            k = step % types
            factors = factor_batch(renderer.sample_factors, named, k, batch_size, generator)
            return dataset.to_float(renderer.render(factors), generator), None, torch.tensor(k)

        return draw

    def encoded(self, x: torch.Tensor, y=None) -> tuple[D.Normal, None]:
        """q(z|x) = N(mu(x), diag sigma^2(x)), with the clamped units' mu and log sigma^2 each replaced by its batch
        mean (`ClampToBatchMean`) while a training batch is being scored; no flow context (dcign has no flow)."""
        out = self.encoder(self.encoder_input(x, self.conditions(y, x.shape[0]))).to(x.dtype)
        if self._clamped is not None:
            out = clamp_to_batch_mean(out, self._clamped, self.cfg.clamp_weight)
        return diagonal_normal(out), None

    def loss(self, batch, step: int | None = None, y=None) -> dict[str, torch.Tensor]:
        """The VAE's loss; on a training batch (x, None, k) with the units that must not vary in it clamped."""
        if len(batch) < 3 or batch[2] is None:
            return super().loss(batch, step, y)
        units = clamped_units(batch[2], len(self.cfg.factors), self.cfg.latent_dim)
        self._clamped = torch.cat([units, units])  # mu and log sigma^2 alike
        try:
            return super().loss(batch[:2], step, y)
        finally:
            self._clamped = None
