"""Adversarial autoencoder (Makhzani et al. 2015, "Adversarial Autoencoders"; seed 003).

An autoencoder whose aggregated posterior q(z) = E_x[q(z|x)] is matched to a prior p(z) by a GAN on
the codes: the encoder is the GAN's generator and a code discriminator D_z(z), the probability that
z was drawn from p(z), its adversary. With the deterministic encoder q(z|x) = delta(z - E(x)) (the
paper's simplest choice) and decoder G, every training step runs the paper's two phases on the same
batch, per example:

    reconstruction phase (E and G):  L_rec = -sum_i [x_i log G(E(x))_i + (1 - x_i) log(1 - G(E(x))_i)]   (bce)
                                           = ||x - G(E(x))||^2                                        (squared_error)
    regularisation phase, on z^ = E(x) from the encoder just updated, z ~ p(z):
        first D_z:                   L_D = -log D_z(z) - log(1 - D_z(z^))
        then E, against the new D_z: L_E = -log D_z(z^)                                  (non-saturating)

The optimal D_z is p(z) / (p(z) + q(z)), so its logit estimates log p(z)/q(z) and the encoder moves
q(z) towards p(z). `reconstruction=auto` is bce for images (the Bernoulli negative log-likelihood of
intensities in [0, 1]: its gradient on the decoder's last pre-activation is G(E(x)) - x, which does not
vanish where the sigmoid saturates, as the squared error's does) and the squared error for points.

Priors (`prior`): gaussian N(0, I) in any latent_dim; mog, `n_components` 2-D Gaussians whose means lie
evenly on a circle of radius 4, component k at angle 2 pi k / K with sd 0.5 along the radius and 0.1
across it (radially elongated petals, as common AAE implementations draw them); swiss_roll, the 2-D spiral
z = 3 t (cos 4 pi t, sin 4 pi t) + N(0, 0.05^2 I) with t = sqrt(u), u ~ U(0, 1) (two turns; t = sqrt(u)
spreads the points about evenly along the curve).

With `label_prior` (the paper's "incorporating label information in the adversarial regularization")
the labels pick the mixture component: D_z reads [z, c], c the one-hot label with one extra slot for
"no label". For an example labelled y its code and its prior draw both carry c = one_hot(y) and the
prior draw comes from component y; an example whose label is hidden (-1) carries the extra slot and
its prior draw comes from any component. `sample(n, y)` then draws from component y. The encoder and
decoder never read labels (the model is not conditional).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dgm.config import choice, number
from dgm.errors import DgmError
from dgm.models import class_labels, register_model
from dgm.models.autoencoding_gan import (AutoEncodingGAN, AutoEncodingGANConfig, adversary_loss, fooling_loss,
                                         squared_error_per_example)

MOG_RADIUS = 4.0  # where the mixture's means lie
MOG_SD_RADIAL, MOG_SD_TANGENTIAL = 0.5, 0.1  # its components' spread along and across the radius
SWISS_ROLL_RADIUS, SWISS_ROLL_TURNS, SWISS_ROLL_NOISE = 3.0, 2.0, 0.05


@dataclass
class AAEConfig(AutoEncodingGANConfig):
    latent_dim: int = 8  # a code small enough for D_z to match (the paper's MNIST codes are low-dimensional too); 2
    # for the 2-D priors
    prior: str = choice("gaussian", "gaussian", "mog", "swiss_roll")  # p(z); mog and swiss_roll are 2-D
    n_components: int = number(10, min=1)  # mog: the number of Gaussians on the circle
    label_prior: bool = False  # D_z also reads the label, whose mixture component the prior draw comes from
    reconstruction: str = choice("auto", "auto", "bce", "squared_error")  # auto: bce for images, squared_error
    # for points
    g_lr: float = 1e-4  # the reconstruction phase (encoder and decoder), with Adam, at the rates of the widely used
    # PyTorch AAE (1e-4 for the autoencoder, 5e-5 for both regularisation steps)
    d_lr: float = 5e-5  # the code discriminator, likewise
    reg_lr: float | None = number(None, min=0)  # the encoder's regularisation step; none: d_lr, as those
    # implementations do


class AAE(AutoEncodingGAN):
    """Encoder E, decoder G and code discriminator D_z: optimizers for the autoencoder, D_z and E's regularisation."""

    def __init__(self, cfg: AAEConfig):
        _check(cfg)
        super().__init__(cfg)
        self.label_dim = cfg.num_classes + 1 if cfg.label_prior else 0
        self.code_discriminator = self.make_code_discriminator(cfg.latent_dim + self.label_dim)
        self.networks = {"autoencoder": [self.encoder, self.generator], "code_discriminator": self.code_discriminator,
                         "encoder_regularization": self.encoder}

    @property
    def learning_rates(self) -> dict[str, float]:
        cfg = self.cfg
        return {"autoencoder": cfg.g_lr, "code_discriminator": cfg.d_lr,
                "encoder_regularization": cfg.d_lr if cfg.reg_lr is None else cfg.reg_lr}

    @property
    def samples_by_label(self) -> bool:
        """With the label prior, `sample(n, y)` draws class y (`dgm sample RUN --label 3`)."""
        return self.cfg.label_prior

    # --- the prior ---------------------------------------------------------------------------------
    def mixture_draws(self, k: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of each mixture component k [n] (mog): [n, 2]."""
        angle = 2 * math.pi * k.to(torch.float32) / self.cfg.n_components
        along, across = torch.randn(2, len(k), generator=generator, device=k.device)
        radial = MOG_RADIUS + MOG_SD_RADIAL * along
        tangential = MOG_SD_TANGENTIAL * across
        cos, sin = angle.cos(), angle.sin()
        return torch.stack([radial * cos - tangential * sin, radial * sin + tangential * cos], dim=1)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of the prior: [n, latent_dim]."""
        device = next(self.parameters()).device
        if self.cfg.prior == "mog":
            return self.mixture_draws(torch.randint(self.cfg.n_components, (n,), generator=generator, device=device),
                                      generator)
        if self.cfg.prior == "swiss_roll":
            t = torch.rand(n, generator=generator, device=device).sqrt()
            angle = 2 * math.pi * SWISS_ROLL_TURNS * t
            curve = SWISS_ROLL_RADIUS * t[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
            return curve + SWISS_ROLL_NOISE * torch.randn(n, 2, generator=generator, device=device)
        return super().sample_latent(n, generator)

    def sample(self, n: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """G(z) for z ~ p(z); with label_prior, z from component y (an int or [n]; None cycles 0, 1, ..., K-1)."""
        if not self.cfg.label_prior:
            return super().sample(n, generator=generator)
        device = next(self.parameters()).device
        return self.decode(self.mixture_draws(class_labels(y, n, self.cfg.n_components, device), generator))

    def prior_for(self, y: torch.Tensor | None, n: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prior draws [n, latent_dim], the label vectors c [n, K + 1] D_z reads beside z, or None without
        label_prior): labelled examples draw from their own component, hidden ones (-1) from any."""
        if not self.cfg.label_prior:
            return self.sample_latent(n), None
        k = self.cfg.n_components
        hidden = y < 0
        component = torch.where(hidden, torch.randint(k, (n,), device=device), y)
        c = F.one_hot(torch.where(hidden, k, y), k + 1).to(torch.float32)
        return self.mixture_draws(component), c

    def judge(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """D_z's logit [B] for codes z (beside their label vectors c with label_prior)."""
        return self.code_discriminator(z if c is None else torch.cat([z, c.to(z.dtype)], dim=1))[:, 0]

    # --- training ----------------------------------------------------------------------------------
    def reconstruction_error(self, x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
        """L_rec per example [B], as `reconstruction` says."""
        kind = self.cfg.reconstruction
        if kind == "squared_error" or (kind == "auto" and not self.is_image):
            return squared_error_per_example(x, x_rec)
        p = x_rec.float()  # the logs clipped at -100, as torch's binary_cross_entropy does
        log_p, log_not_p = p.log().clamp(min=-100), torch.log1p(-p).clamp(min=-100)
        return -(x * log_p + (1 - x) * log_not_p).flatten(1).sum(1)

    def train_step(self, batch, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, torch.Tensor]:
        """The reconstruction phase, then the regularisation phase (D_z, then E) on codes of the updated encoder."""
        x, y = batch[0], batch[1]
        if self.cfg.label_prior and y is None:
            raise DgmError("label_prior needs batches with class labels; this data has none")
        rec = self.reconstruction_error(x, self.generator(self.encoder(x)))
        self.update(optimizers, {"autoencoder": rec})
        z_hat = self.encoder(x)
        z_prior, c = self.prior_for(y, x.shape[0], x.device)
        d_prior, d_code = self.judge(z_prior, c), self.judge(z_hat.detach(), c)
        loss_d = adversary_loss(d_prior, d_code)
        self.update(optimizers, {"code_discriminator": loss_d})
        loss_e = fooling_loss(self.judge(z_hat, c))  # scored by the updated D_z
        self.update(optimizers, {"encoder_regularization": loss_e})
        return self.report({"rec": rec, "loss_d": loss_d, "loss_e": loss_e, "d_prior": torch.sigmoid(d_prior),
                            "d_code": torch.sigmoid(d_code)})


def _check(cfg: AAEConfig) -> None:
    """What no single field's rule can say: combinations of fields, and fields against the data."""
    if cfg.prior in ("mog", "swiss_roll") and cfg.latent_dim != 2:
        raise DgmError(f"prior={cfg.prior} is a 2-D distribution, so it needs latent_dim=2 (got {cfg.latent_dim})")
    if cfg.reconstruction == "bce" and len(cfg.data_shape) != 3:
        raise DgmError("reconstruction=bce needs images with values in [0, 1]; use squared_error (or auto) for points")
    if cfg.label_prior:
        if not cfg.num_classes:
            raise DgmError("label_prior needs a dataset with class labels (num_classes)")
        if cfg.prior != "mog" or cfg.n_components != cfg.num_classes:
            raise DgmError(f"label_prior draws each class from its own mixture component, so it needs prior=mog with "
                           f"n_components={cfg.num_classes}, the dataset's number of classes")


register_model("aae", AAEConfig, family="hybrid", seeds=("003",),
               description="Adversarial autoencoder (Makhzani et al.): a code discriminator matches the codes to "
                           "a Gaussian, 2-D mixture or swiss-roll prior, optionally label-conditioned")(AAE)
