"""What seed 003's auto-encoding GANs share: an encoder E(x), a generator G(z), adversaries, one optimizer each.

The models (alpha-gan, vae-gan, aae, bigan, age) live in their own files and subclass
`AutoEncodingGAN`, which builds the networks from the data shape as the GANs do (DCGAN
convolutions for images by default, MLPs for points or on request), gives every model the
capabilities it really has (`sample`, `encode`, `decode`, `reconstruct`, `generate`), and
trains with one optimizer per network group through `optimizers()` + `train_step()`.

One training step follows the papers' algorithms: draw the batch's samples once (E(x),
G(E(x)), G(z) for z ~ p(z)), compute every network's loss from them, differentiate each loss
with respect to its own networks only (`loss.backward(inputs=...)`, so no loss leaves a
gradient in another network), then step every optimizer. Each network therefore sees the
others as they were when the samples were drawn, as in Algorithm 1 of Rosca et al. 2017,
where the encoder and generator updates use the adversaries before their own update.

Conventions: images are floats in [0, 1] and the generator ends in a sigmoid (see gan.py);
a discriminator outputs a logit, D(x) = sigmoid(logit) the probability that x is real data
(and C(z) that z was drawn from the prior). Batch norm runs in inference mode in every
capability and is never changed by it.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgm.config import choice, number, numbers
from dgm.errors import DgmError
from dgm.models import ModelConfig
from dgm.models.gan import DCGANDiscriminator, DCGANGenerator, dcgan_init, refuse_ignored_training_options
from dgm.nn import MLP


@dataclass
class AutoEncodingGANConfig(ModelConfig):
    architecture: str = choice("auto", "auto", "mlp", "conv")  # auto: DCGAN convolutions for images, MLPs for points
    latent_dim: int = number(64, min=1)
    hidden_dims: tuple[int, ...] = numbers((256, 256), min=1)  # MLP widths of G and E; D uses them reversed
    base_channels: int = number(64, min=1)  # DCGAN widths next to the image (E and D mirror G)
    code_hidden: tuple[int, ...] = numbers((256, 256), min=1)  # widths of a discriminator on codes z
    d_norm: str = choice("batch", "batch", "layer", "none")  # normalisation of conv discriminators and encoders
    g_lr: float = number(2e-4, min=0)  # generator (and encoder, unless a model says otherwise)
    d_lr: float = number(2e-4, min=0)  # every adversary
    betas: tuple[float, float] = numbers((0.5, 0.999), min=0, below=1, length=2)  # Adam's (DCGAN's)


def leaky_mlp(in_dim: int, hidden: list[int], out_dim: int) -> MLP:
    """An MLP with LeakyReLU(0.2) between layers, DCGAN's slope (the shared MLP builds PyTorch's 0.01)."""
    net = MLP(in_dim, hidden, out_dim, "leaky_relu")
    for m in net.modules():
        if isinstance(m, nn.LeakyReLU):
            m.negative_slope = 0.2
    return net


@contextlib.contextmanager
def inference_mode(*nets: nn.Module):
    """Run nets in eval mode (batch norm from its running statistics, untouched) and restore their modes."""
    modes = [net.training for net in nets]
    for net in nets:
        net.eval()
    try:
        yield
    finally:
        for net, mode in zip(nets, modes):
            net.train(mode)


def adversary_loss(real_logit: torch.Tensor, *fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(real) - sum_f log(1 - D(fake_f)) per example, from logits: the cross-entropy every
    discriminator here minimises (log(1 - sigmoid(a)) = log sigmoid(-a))."""
    loss = -F.logsigmoid(real_logit)
    for logit in fake_logits:
        loss = loss - F.logsigmoid(-logit)
    return loss


def fooling_loss(fake_logit: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """What a generator (or encoder) minimises to fool an adversary, per example, from its logit a = log D/(1-D):

    non_saturating: -log D = -log sigmoid(a)  (Goodfellow's trick, seed 003's "different loss to avoid
                    vanishing gradients");
    ratio:          -log D/(1 - D) = -a        (the density-ratio estimate itself, as the ELBO writes it)."""
    if kind == "ratio":
        return -fake_logit
    return -F.logsigmoid(fake_logit)


class AutoEncodingGAN(nn.Module):
    """Encoder E(x) -> [B, encoder_out], generator G(z) -> data, from the config; adversaries are the subclass's.

    Subclasses set `self.networks = {optimizer name: module or list of modules}` (each with its learning
    rate in `learning_rates`), implement `train_step`, and may override `sample_latent` (the prior)."""

    def __init__(self, cfg: AutoEncodingGANConfig, encoder_out: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.conv = cfg.architecture == "conv" or (cfg.architecture == "auto" and len(cfg.data_shape) == 3)
        if self.conv and len(cfg.data_shape) != 3:
            raise DgmError(f"architecture=conv needs images [C, H, W]; this data has shape {tuple(cfg.data_shape)}: "
                           "use architecture=mlp")
        self.is_image = len(cfg.data_shape) == 3
        self.dim = math.prod(cfg.data_shape)
        self.generator = self.make_generator(cfg.latent_dim)
        self.encoder = self.make_encoder(encoder_out or cfg.latent_dim)

    # --- network builders, sized from the data shape ------------------------------------------------
    def make_generator(self, in_dim: int) -> nn.Module:
        """DCGAN's generator for images (conv), else an MLP with batch norm for images and none for points."""
        cfg = self.cfg
        if self.conv:
            net = DCGANGenerator(in_dim, cfg.data_shape, cfg.base_channels)
            net.apply(dcgan_init)
            return net
        return nn.Sequential(MLP(in_dim, list(cfg.hidden_dims), self.dim, "relu", self.is_image),
                             *([nn.Sigmoid()] if self.is_image else []), nn.Unflatten(1, tuple(cfg.data_shape)))

    def make_encoder(self, out_dim: int) -> nn.Module:
        """x -> [B, out_dim]: DCGAN's discriminator body with out_dim outputs (conv), else a leaky MLP."""
        return self.make_discriminator(out_dim)

    def make_discriminator(self, out_dim: int = 1, extra_in: int = 0) -> nn.Module:
        """x [B, ...] -> [B, out_dim] (a logit for out_dim=1): DCGAN's discriminator (conv) or a leaky MLP
        reading the flattened data and `extra_in` more values (the MLP form of a joint discriminator)."""
        cfg = self.cfg
        if self.conv:
            net = DCGANDiscriminator(tuple(cfg.data_shape), cfg.base_channels, out_dim, cfg.d_norm)
            net.apply(dcgan_init)
            return net
        return nn.Sequential(nn.Flatten(1), leaky_mlp(self.dim + extra_in, list(cfg.hidden_dims)[::-1], out_dim))

    def make_code_discriminator(self, in_dim: int | None = None) -> nn.Module:
        """z [B, in_dim] -> [B, 1] logit: a leaky MLP of widths code_hidden."""
        return leaky_mlp(in_dim or self.cfg.latent_dim, list(self.cfg.code_hidden), 1)

    # --- capabilities ------------------------------------------------------------------------------
    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of the prior, z ~ N(0, I): [n, latent_dim]."""
        device = next(self.parameters()).device
        return torch.randn(n, self.cfg.latent_dim, generator=generator, device=device)

    def encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) as the network gives it, in whatever mode it is in: [B, encoder_out]."""
        return self.encoder(x)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The code the model infers for x in training mode: E(x) [B, latent_dim] (a VAE-GAN overrides it
        with its posterior mean)."""
        return self.encoder_output(x)

    def encode(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """The code of x: E(x) [B, latent_dim], batch norm in inference mode."""
        with inference_mode(self.encoder):
            return self.code(x)

    def decode(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """G(z): data [B, ...], batch norm in inference mode."""
        with inference_mode(self.generator):
            return self.generator(z)

    generate = decode

    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """G(E(x))."""
        return self.decode(self.encode(x))

    def sample(self, n: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """G(z) for z ~ p(z): images in [0, 1] [n, C, H, W] or points [n, D]."""
        return self.decode(self.sample_latent(n, generator))

    # --- training protocol -------------------------------------------------------------------------
    @property
    def learning_rates(self) -> dict[str, float]:
        """Each optimizer's learning rate: g_lr for the encoder and generator, d_lr for the adversaries."""
        return {name: self.cfg.g_lr if name in ("encoder", "generator") else self.cfg.d_lr for name in self.networks}

    def parameters_of(self, name: str) -> list[nn.Parameter]:
        nets = self.networks[name]
        return [p for net in (nets if isinstance(nets, (list, tuple)) else [nets]) for p in net.parameters()]

    def optimizers(self, train_cfg) -> dict[str, torch.optim.Optimizer]:
        """One Adam per entry of `networks`, with the model's learning rates and betas."""
        refuse_ignored_training_options(train_cfg)
        rates = self.learning_rates
        return {name: torch.optim.Adam(self.parameters_of(name), lr=rates[name], betas=tuple(self.cfg.betas),
                                       weight_decay=train_cfg.weight_decay, fused=True)
                for name in self.networks}

    def update(self, optimizers: dict[str, torch.optim.Optimizer], losses: dict[str, torch.Tensor]) -> None:
        """For every optimizer named in `losses`: the gradient of the mean of its loss [B] with respect to its own
        networks only, all computed before any step (so every loss sees the networks as the batch's samples
        were drawn with), then each optimizer's step."""
        names = list(losses)
        for name in names:
            optimizers[name].zero_grad(set_to_none=True)
        for i, name in enumerate(names):
            losses[name].mean().backward(inputs=self.parameters_of(name), retain_graph=i < len(names) - 1)
        for name in names:
            optimizers[name].step()  # the trainer's pre-step hook averages gradients across ranks and clips them

    @staticmethod
    def report(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Detached batch means of per-example terms."""
        return {k: v.detach().mean() for k, v in terms.items()}


def l1_per_example(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """||x - x_rec||_1 summed over each example's values: [B]."""
    return (x - x_rec).abs().flatten(1).sum(1)


def squared_error_per_example(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """||x - x_rec||_2^2 summed over each example's values: [B]."""
    return (x - x_rec).pow(2).flatten(1).sum(1)


__all__ = ["AutoEncodingGAN", "AutoEncodingGANConfig", "adversary_loss", "fooling_loss", "inference_mode",
           "l1_per_example", "leaky_mlp", "squared_error_per_example"]
