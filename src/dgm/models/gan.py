"""Generative adversarial networks (seeds 000, 001, 003, 004): GAN, DCGAN, WGAN, WGAN-GP, LSGAN, CGAN, AC-GAN.

    min_G max_D  E_x~p_data[log D(x)] + E_z~p(z)[log(1 - D(G(z)))]                (Goodfellow et al. 2014)
    min_G max_{D 1-Lipschitz}  E_x[D(x)] - E_z[D(G(z))]                           (WGAN, seed 004)

One module, `GAN`, holds a generator G(z[, y]) and a discriminator (critic) D(x[, y]);
the variants registered below differ only in their config's defaults: the objective
(gan | wasserstein | least_squares), the generator loss, critic steps, weight clipping,
gradient penalty, label conditioning and the architecture (MLP or DCGAN convolutions).
Every variant can be combined with the others' options (`dgm train wgan-gp architecture=conv`).

For a fixed G the best discriminator is D*(x) = p_data(x) / (p_data(x) + p_g(x)) (seed 003's
density-ratio view), and G's minimax loss against D* is 2 JSD(p_data || p_g) - log 4.

Conventions a user must know:
- Data are floats in [0, 1] (images) or unbounded points [B, D]. Image generators end in a
  sigmoid: sigmoid(a) = (tanh(a / 2) + 1) / 2, so this is DCGAN's tanh output on data
  rescaled to [-1, 1], written for the [0, 1] range the datasets use. Point generators end linearly.
- Learning rates, betas and the optimizer are fields of the model (`g_lr`, `d_lr`, `betas`,
  `optimizer`) with each paper's defaults; the trainer's `lr`, `betas` and `optimizer` are not
  used, and giving them a non-default value is an error rather than silently ignored. The
  trainer's lr schedule, gradient clipping and weight decay do apply to both optimizers.
- One trainer step is `n_critic` discriminator updates on the same real batch, each with fresh
  noise, then one generator update on the last critic step's fakes (WGAN's Algorithm 1 draws a new real batch per critic step;
  reusing the batch keeps one step = one batch of the trainer's data order, as most
  implementations that run on a data loader do). `steps` therefore counts generator updates.
- Conditional models generate fakes for the labels of the real batch, i.e. y ~ p_data(y).
- `sample` and `generate` run the generator's batch norm in inference mode and never change
  its running statistics.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dgm.config import choice, number, numbers
from dgm.errors import DgmError
from dgm.models import ModelConfig, class_labels, register_model
from dgm.nn import MLP, ema_update

OBJECTIVES = ("gan", "wasserstein", "least_squares")
GENERATOR_LOSSES = ("non_saturating", "minimax")
CONDITIONINGS = ("none", "concat", "auxiliary")


# --- losses: per example [B], from the discriminator's raw outputs (logits for objective=gan) ----
def gan_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """L_D = -[log D(x) + log(1 - D(G(z)))] with D = sigmoid(logit): the negated minimax value (seed 001)."""
    log_d_real = F.logsigmoid(d_real)
    log_one_minus_d_fake = F.logsigmoid(-d_fake)  # log(1 - sigmoid(a)) = log sigmoid(-a)
    return -(log_d_real + log_one_minus_d_fake)


def minimax_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """L_G = log(1 - D(G(z))): the generator's side of the minimax game; flat where D(G(z)) -> 0."""
    log_one_minus_d_fake = F.logsigmoid(-d_fake)
    return log_one_minus_d_fake


def non_saturating_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """L_G = -log D(G(z)): the same fixed point, but a strong gradient where D rejects the samples (seed 001)."""
    log_d_fake = F.logsigmoid(d_fake)
    return -log_d_fake


def wasserstein_critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """L_D = -[D(x) - D(G(z))]: the critic maximises the estimate of the earth-mover distance W_1 (seed 004)."""
    return -(d_real - d_fake)


def wasserstein_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """L_G = -D(G(z))."""
    return -d_fake


def least_squares_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor, a: float = 0.0,
                                     b: float = 1.0) -> torch.Tensor:
    """L_D = 1/2 (D(x) - b)^2 + 1/2 (D(G(z)) - a)^2, with a = 0 for fake and b = 1 for real (Mao et al. 2017)."""
    return 0.5 * (d_real - b).pow(2) + 0.5 * (d_fake - a).pow(2)


def least_squares_generator_loss(d_fake: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """L_G = 1/2 (D(G(z)) - c)^2, with c = 1: the value G wants D to believe for fake data."""
    return 0.5 * (d_fake - c).pow(2)


DISCRIMINATOR_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gan": gan_discriminator_loss,
    "wasserstein": wasserstein_critic_loss,
    "least_squares": least_squares_discriminator_loss,
}
GENERATOR_LOSS_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {  # by generator_loss for
    "non_saturating": non_saturating_generator_loss,                                # objective=gan, else
    "minimax": minimax_generator_loss,                                              # by objective
    "wasserstein": wasserstein_generator_loss,
    "least_squares": least_squares_generator_loss,
}


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], x_real: torch.Tensor, x_fake: torch.Tensor,
                     eps: torch.Tensor | None = None, pack: int = 1) -> torch.Tensor:
    """gp = (||grad D(x_hat)||_2 - 1)^2 with x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] (Gulrajani et al. 2017).

    `critic` maps [B, ...] to one output per critic input: [B], or [B / m] for a PacGAN critic that
    reads packs of m consecutive examples (`pack` = m), where the norm is that of the gradient with
    respect to the whole pack. One eps per critic input ([B / m]), shared by the members of a pack,
    so the interpolate lies on the line between the real pack and the fake pack. Returns one penalty
    per critic output. The graph is kept (create_graph) so the penalty trains the critic."""
    if eps is None:
        eps = torch.rand(x_real.shape[0] // pack, device=x_real.device, dtype=x_real.dtype)
    eps = eps.repeat_interleave(pack).reshape(-1, *[1] * (x_real.dim() - 1))
    x_hat = (eps * x_real + (1 - eps) * x_fake.detach()).requires_grad_(True)
    d_hat = critic(x_hat)
    (grad,) = torch.autograd.grad(d_hat.sum(), x_hat, create_graph=True)
    return (grad.reshape(d_hat.shape[0], -1).norm(dim=1) - 1).pow(2)


# --- configs: one per registered variant, differing only in defaults --------------------------------
@dataclass
class GANConfig(ModelConfig):
    architecture: str = choice("mlp", "mlp", "conv")  # conv: DCGAN
    objective: str = choice("gan", *OBJECTIVES)
    generator_loss: str = choice("non_saturating", *GENERATOR_LOSSES)  # minimax: objective=gan only
    conditioning: str = choice("none", *CONDITIONINGS)  # concat (CGAN: G and D see y) | auxiliary (AC-GAN: D
    # predicts y)
    latent_dim: int = number(64, min=1)
    hidden_dims: tuple[int, ...] = numbers((256, 256), min=1)  # MLP widths of G; D uses them reversed
    base_channels: int = number(64, min=1)  # DCGAN widths: this next to the image, doubling towards the latent
    # end (at most 8x)
    g_norm: str = choice("auto", "auto", "batch", "none")  # MLP generator's normalisation (auto: batch for images,
    # none for points; without it the MLP generator collapses to one digit on MNIST); DCGAN's always uses batch norm
    d_norm: str = choice("batch", "batch", "layer", "none")  # conv discriminator's normalisation
    n_critic: int = number(1, min=1)  # discriminator updates per generator update
    pack: int = number(1, min=1)  # PacGAN (Lin et al. 2018): D judges packs of this many examples, all real or all
    # fake
    clip: float = number(0.0, min=0)  # WGAN weight clipping: every critic parameter kept in [-clip, clip]; 0: off
    gp_weight: float = number(0.0, min=0)  # WGAN-GP gradient-penalty weight lambda; 0 disables
    optimizer: str = choice("adam", "adam", "rmsprop")  # replaces the trainer's optimizer
    g_lr: float = number(2e-4, min=0)  # 0 freezes G (as the density-ratio experiment of the tests does)
    d_lr: float = number(2e-4, min=0)
    betas: tuple[float, float] = numbers((0.5, 0.999), min=0, below=1, length=2)  # Adam's; unused by RMSprop
    g_ema: float = number(0.0, min=0, below=1)  # decay of an exponential moving average of G's weights, updated
    # after every generator step (0.999 is StudioGAN's practice); when set, samples and evaluation use the average


@dataclass
class DCGANConfig(GANConfig):
    architecture: str = "conv"
    latent_dim: int = 100


@dataclass
class WGANConfig(GANConfig):
    objective: str = "wasserstein"
    n_critic: int = 5
    clip: float = 0.01
    optimizer: str = "rmsprop"
    g_lr: float = 5e-5
    d_lr: float = 5e-5


@dataclass
class WGANGPConfig(GANConfig):
    objective: str = "wasserstein"
    n_critic: int = 5
    gp_weight: float = 10.0
    d_norm: str = "layer"  # the penalty is per example; batch norm would mix examples
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)


@dataclass
class LSGANConfig(GANConfig):
    objective: str = "least_squares"


@dataclass
class CGANConfig(GANConfig):
    conditioning: str = "concat"


@dataclass
class ACGANConfig(GANConfig):
    conditioning: str = "auxiliary"


# --- networks --------------------------------------------------------------------------------------
def dcgan_plan(h: int, w: int) -> tuple[int, int, int]:
    """(h0, w0, n_up): DCGAN's start size and number of stride-2 doublings up to (h, w).

    Halve while both sides are even and above the smallest start, 4x4 (2x2 for images under 16
    pixels, so they still get two layers): 32x32 -> 4x4 and 3, 28x28 -> 7x7 and 2, 8x8 -> 2x2 and 2."""
    smallest = 4 if min(h, w) >= 16 else 2
    n_up = 0
    while h % 2 == 0 and w % 2 == 0 and h > smallest and w > smallest:
        h, w, n_up = h // 2, w // 2, n_up + 1
    return h, w, n_up


def dcgan_widths(base: int, n_up: int) -> list[int]:
    """Channels of the generator's hidden layers from the latent end: base * 2^(n_up-1), ..., base."""
    return [base * min(8, 2 ** i) for i in reversed(range(max(1, n_up)))]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # one group: normalise over (C, H, W) of each example
    return nn.Identity()  # none, the last of d_norm's choices


class DCGANGenerator(nn.Sequential):
    """[B, in_dim] -> [B, C, H, W] in [0, 1]: a transposed conv to (h0, w0), stride-2 doublings, BatchNorm + ReLU."""

    def __init__(self, in_dim: int, shape: tuple[int, int, int], base: int):
        c, h, w = shape
        h0, w0, n_up = dcgan_plan(h, w)
        widths = dcgan_widths(base, n_up)
        layers: list[nn.Module] = [nn.Unflatten(1, (in_dim, 1, 1)),
                                   nn.ConvTranspose2d(in_dim, widths[0], (h0, w0), bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU()]
        layers.append(nn.ConvTranspose2d(widths[-1], c, 4, stride=2, padding=1) if n_up else
                      nn.Conv2d(widths[-1], c, 3, padding=1))
        layers.append(nn.Sigmoid())
        super().__init__(*layers)


class DCGANDiscriminator(nn.Sequential):
    """[B, C, H, W] -> [B, out_dim]: stride-2 convs with LeakyReLU(0.2), no norm on the first, a conv over (h0, w0)."""

    def __init__(self, shape: tuple[int, int, int], base: int, out_dim: int, norm: str):
        c, h, w = shape
        h0, w0, n_up = dcgan_plan(h, w)
        widths = dcgan_widths(base, n_up)[::-1]
        first = nn.Conv2d(c, widths[0], 4, stride=2, padding=1) if n_up else nn.Conv2d(c, widths[0], 3, padding=1)
        layers: list[nn.Module] = [first, nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=norm == "none"), _norm(norm, c_out),
                       nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(widths[-1], out_dim, (h0, w0)), nn.Flatten(1)]
        super().__init__(*layers)


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.: conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# --- the model -------------------------------------------------------------------------------------
class GAN(nn.Module):
    """Generator G(z[, y]) and discriminator D(x[, y]); trained by `train_step` with two optimizers."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        k = cfg.num_classes or 0
        g_in = cfg.latent_dim + (k if cfg.conditioning != "none" else 0)
        d_out = 1 + (k if cfg.conditioning == "auxiliary" else 0)
        d_extra = k if cfg.conditioning == "concat" else 0  # label inputs of D: planes (conv) or a vector (MLP)
        if cfg.architecture == "conv":
            c, h, w = cfg.data_shape
            self.generator = DCGANGenerator(g_in, cfg.data_shape, cfg.base_channels)
            self.discriminator = DCGANDiscriminator((cfg.pack * (c + d_extra), h, w), cfg.base_channels, d_out,
                                                    cfg.d_norm)
            self.apply(dcgan_init)
        else:
            dim = math.prod(cfg.data_shape)
            is_image = len(cfg.data_shape) == 3
            g_batch_norm = cfg.g_norm == "batch" or (cfg.g_norm == "auto" and is_image)
            self.generator = nn.Sequential(MLP(g_in, list(cfg.hidden_dims), dim, "relu", g_batch_norm),
                                           *([nn.Sigmoid()] if is_image else []),
                                           nn.Unflatten(1, tuple(cfg.data_shape)))
            self.discriminator = MLP(cfg.pack * (dim + d_extra), list(cfg.hidden_dims)[::-1], d_out, "leaky_relu")
            for m in self.discriminator.modules():
                if isinstance(m, nn.LeakyReLU):
                    m.negative_slope = 0.2  # DCGAN's slope; the shared MLP builds PyTorch's default 0.01
        # the moving average of G's weights (saved with the model, so resume and dgm.load keep it)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if cfg.g_ema > 0 else None

    # --- the model's parts -------------------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        return self.cfg.conditioning != "none"

    def labels(self, y, n: int, device: torch.device) -> torch.Tensor | None:
        """Class labels [n] for a conditional model: y as given (an int or [n]), or 0, 1, ..., K-1, 0, ... when None."""
        return class_labels(y, n, self.cfg.num_classes, device) if self.conditional else None

    def _generator(self, z: torch.Tensor, y: torch.Tensor | None, net: nn.Module | None = None) -> torch.Tensor:
        """G(z[, y]) in data space (with `net`, default the trained G), in whatever mode it is in."""
        if self.conditional:
            z = torch.cat([z, F.one_hot(y, self.cfg.num_classes).to(z.dtype)], dim=1)
        return (net or self.generator)(z)

    def critic(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(D's raw real/fake output [B / pack], a logit for objective=gan; AC-GAN's class logits [B, K], else None).

        With pack = m, examples m i .. m i + m - 1 (each with its label planes) are stacked along the
        channels into D's i-th input, so D sees the joint of m samples and can tell a collapsed
        generator by their lack of variety (PacGAN)."""
        if self.cfg.architecture == "mlp":
            x = x.flatten(1)
        if self.cfg.conditioning == "concat":
            onehot = F.one_hot(y, self.cfg.num_classes).to(x.dtype)
            if x.dim() == 4:
                onehot = onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, onehot], dim=1)
        if self.cfg.pack > 1:
            if x.shape[0] % self.cfg.pack:
                raise DgmError(f"pack={self.cfg.pack} needs batches of a multiple of {self.cfg.pack} examples, "
                               f"got {x.shape[0]}")
            x = x.reshape(x.shape[0] // self.cfg.pack, self.cfg.pack * x.shape[1], *x.shape[2:])
        weight = next(self.discriminator.parameters())
        out = self.discriminator(x).to(weight.dtype)  # losses in the weights' precision also under bf16 autocast
        return out[:, 0], (out[:, 1:] if self.cfg.conditioning == "auxiliary" else None)

    def discriminator_loss(self, x: torch.Tensor, x_fake: torch.Tensor, y: torch.Tensor | None
                           ) -> dict[str, torch.Tensor]:
        """Per-example L_D (+ lambda gp, + the AC-GAN class terms) and its parts, before reduction."""
        d_real, class_real = self.critic(x, y)
        d_fake, class_fake = self.critic(x_fake, y)
        terms = {"d_real": d_real, "d_fake": d_fake}
        loss_d = DISCRIMINATOR_LOSSES[self.cfg.objective](d_real, d_fake)
        if self.cfg.gp_weight > 0:
            gp = gradient_penalty(lambda x_hat: self.critic(x_hat, y)[0], x, x_fake, pack=self.cfg.pack)
            loss_d = loss_d + self.cfg.gp_weight * gp
            terms["gp"] = gp
        if class_real is not None:
            # Odena et al.: D maximises log P(C = c | x) on real and on fake examples
            loss_class = F.cross_entropy(class_real, y, reduction="none") + F.cross_entropy(class_fake, y,
                                                                                            reduction="none")
            loss_d = loss_d + loss_class
            terms["loss_class"] = loss_class
        terms["loss_d"] = loss_d
        return terms

    def generator_loss(self, x_fake: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Per-example L_G (+ the AC-GAN class term on the fakes)."""
        d_fake, class_fake = self.critic(x_fake, y)
        kind = self.cfg.generator_loss if self.cfg.objective == "gan" else self.cfg.objective
        loss_g = GENERATOR_LOSS_FUNCTIONS[kind](d_fake)
        if class_fake is not None:
            loss_g = loss_g + F.cross_entropy(class_fake, y, reduction="none")
        return loss_g

    def clip_critic(self) -> None:
        """WGAN: clip(weights, -c, c) for every critic parameter (seed 004)."""
        with torch.no_grad():
            for p in self.discriminator.parameters():
                p.clamp_(-self.cfg.clip, self.cfg.clip)

    # --- training protocol -------------------------------------------------------------------------
    def optimizers(self, train_cfg) -> dict[str, torch.optim.Optimizer]:
        """{"generator", "discriminator"} with the model's optimizer, g_lr / d_lr and betas."""
        refuse_ignored_training_options(train_cfg)
        cfg = self.cfg

        def make(params, lr):
            if cfg.optimizer == "rmsprop":
                return torch.optim.RMSprop(params, lr=lr, weight_decay=train_cfg.weight_decay)
            return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), weight_decay=train_cfg.weight_decay,
                                    fused=True)  # one kernel for all parameters, as the trainer's own Adam

        return {"generator": make(self.generator.parameters(), cfg.g_lr),
                "discriminator": make(self.discriminator.parameters(), cfg.d_lr)}

    def train_step(self, batch, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, torch.Tensor]:
        """n_critic discriminator updates on this real batch (fresh noise each), then one generator update
    on the last critic step's fakes (as the PyTorch DCGAN example does), scored by the updated D."""
        x, y = batch
        if self.conditional and y is None:
            raise DgmError(f"{self.cfg.name} is conditional and needs a dataset with class labels")
        y = y if self.conditional else None
        n = x.shape[0] - x.shape[0] % self.cfg.pack  # whole packs only (the epoch's last batch may be short)
        x, y = x[:n], (None if y is None else y[:n])
        opt_d, opt_g = optimizers["discriminator"], optimizers["generator"]
        for i in range(self.cfg.n_critic):
            z = torch.randn(n, self.cfg.latent_dim, device=x.device)
            if i < self.cfg.n_critic - 1:
                with torch.no_grad():
                    x_fake = self._generator(z, y)
            else:  # the last critic step's fakes also serve the generator step: one G forward saved
                x_fake_g = self._generator(z, y)
                x_fake = x_fake_g.detach()
            terms = self.discriminator_loss(x, x_fake, y)
            opt_d.zero_grad(set_to_none=True)
            terms["loss_d"].mean().backward()
            opt_d.step()  # the trainer's pre-step hook averages gradients across ranks and clips them
            if self.cfg.clip > 0:
                self.clip_critic()
        self.discriminator.requires_grad_(False)  # the generator's update leaves no gradient in D
        try:
            loss_g = self.generator_loss(x_fake_g, y).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        finally:
            self.discriminator.requires_grad_(True)
        if self.generator_ema is not None:
            ema_update(self.generator_ema, self.generator, self.cfg.g_ema)
        return self._report(terms, loss_g)

    def _report(self, terms: dict[str, torch.Tensor], loss_g: torch.Tensor) -> dict[str, torch.Tensor]:
        """Detached means of the last critic step's terms; D's outputs as probabilities for objective=gan."""
        d_real, d_fake = terms["d_real"], terms["d_fake"]
        out = {"loss_d": terms["loss_d"].mean(), "loss_g": loss_g}
        if self.cfg.objective == "gan":
            out.update(d_real=torch.sigmoid(d_real).mean(), d_fake=torch.sigmoid(d_fake).mean())
        else:
            out.update(d_real=d_real.mean(), d_fake=d_fake.mean())
        if self.cfg.objective == "wasserstein":
            out["wasserstein"] = (d_real - d_fake).mean()
        for key in ("gp", "loss_class"):
            if key in terms:
                out[key] = terms[key].mean()
        return {k: v.detach() for k, v in out.items()}

    # --- capabilities ------------------------------------------------------------------------------
    def generate(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """G(z[, y]) in data space, with batch norm in inference mode (running statistics untouched);
        the moving average of G's weights when g_ema is set.

        y: labels for conditional models (an int, or [n]); None cycles through the classes."""
        net = self.generator_ema if self.generator_ema is not None else self.generator
        was_training = net.training
        net.eval()
        try:
            return self._generator(z, self.labels(y, z.shape[0], z.device), net)
        finally:
            net.train(was_training)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z) = N(0, I): [n, latent_dim]."""
        return torch.randn(n, self.cfg.latent_dim, generator=generator, device=next(self.parameters()).device)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) for z [..., latent_dim] -> [...] (what AIS anneals from, dgm.evaluation.ais)."""
        return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))

    def sample(self, n: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """G(z) for z ~ N(0, I): images in [0, 1] [n, C, H, W] or points [n, D]."""
        return self.generate(self.sample_latent(n, generator), y)


# the variants: one model, each paper's defaults
register_model("gan", GANConfig, family="gan", seeds=("000", "001", "003", "004"),
               description="GAN (Goodfellow et al.), MLP G and D, non-saturating or minimax generator loss")(GAN)
register_model("dcgan", DCGANConfig, family="gan", seeds=("001", "004"),
               description="DCGAN (Radford et al.): conv G and D with batch norm, sized from the image shape")(GAN)
register_model("wgan", WGANConfig, family="gan", seeds=("004",),
               description="Wasserstein GAN: critic with weight clipping 0.01, RMSprop 5e-5, 5 critic steps")(GAN)
register_model("wgan-gp", WGANGPConfig, family="gan", seeds=("004",),
               description="WGAN with gradient penalty (lambda 10), Adam 1e-4 betas (0, 0.9), 5 critic steps")(GAN)
register_model("lsgan", LSGANConfig, family="gan", seeds=("001",),
               description="Least-squares GAN (Mao et al.): a=0, b=1, c=1")(GAN)
register_model("cgan", CGANConfig, family="gan", seeds=("000", "001"),
               description="Conditional GAN: G(z, y) and D(x, y) with the one-hot label concatenated")(GAN)
register_model("acgan", ACGANConfig, family="gan", seeds=("004",),
               description="Auxiliary-classifier GAN (Odena et al.): D also predicts the class of real and fake")(GAN)


def vector_arithmetic(model: GAN, z_a: torch.Tensor, z_b: torch.Tensor, z_c: torch.Tensor, y=None) -> torch.Tensor:
    """G(mean z_a - mean z_b + mean z_c): Radford et al.'s "smiling woman - woman + man" on averaged codes: [1, ...].

    z_a, z_b, z_c: [N, latent_dim] codes of samples showing each concept (averaging a few is what
    makes the arithmetic stable, as in the DCGAN paper)."""
    z = z_a.mean(0) - z_b.mean(0) + z_c.mean(0)
    return model.generate(z[None], y)


def adam_optimizers(train_cfg, betas, groups: dict[str, tuple[list[nn.Parameter], float]]
                    ) -> dict[str, torch.optim.Optimizer]:
    """{name: Adam(params, lr, betas)} for an adversarial model's parameter groups {name: (params, lr)}, with the
    trainer's weight decay; the trainer's lr, betas and optimizer are refused first (the model's fields set them).
    Fused: one kernel for all parameters, as the trainer's own Adam."""
    refuse_ignored_training_options(train_cfg)
    return {name: torch.optim.Adam(list(params), lr=lr, betas=tuple(betas), weight_decay=train_cfg.weight_decay,
                                   fused=True) for name, (params, lr) in groups.items()}


def refuse_ignored_training_options(train_cfg) -> None:
    """DgmError if the trainer's lr, betas or optimizer differ from their defaults: adversarial models take them
    from their own fields (g_lr, d_lr, betas, optimizer), so a training value would be silently ignored."""
    defaults = {f.name: f.default for f in dataclasses.fields(train_cfg)}
    ignored = [k for k in ("lr", "betas", "optimizer") if k in defaults
               and tuple(_as_tuple(getattr(train_cfg, k))) != tuple(_as_tuple(defaults[k]))]
    if ignored:
        raise DgmError(f"adversarial models take their optimizer settings from the model's g_lr, d_lr and betas; "
                       f"the training option(s) {', '.join(ignored)} would be ignored: set those instead")


def _as_tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def _check(cfg: GANConfig) -> None:
    """What no single field's rule can say: combinations of fields, and fields against the data."""
    if cfg.generator_loss == "minimax" and cfg.objective != "gan":
        raise DgmError("generator_loss=minimax belongs to objective=gan; the other objectives have one generator loss")
    if cfg.pack > 1 and cfg.conditioning == "auxiliary":
        raise DgmError("AC-GAN's classifier labels single examples, so it cannot read packs; use pack=1")
    if cfg.conditioning != "none" and not cfg.num_classes:
        raise DgmError(f"conditioning={cfg.conditioning} needs a dataset with class labels (num_classes)")
    if cfg.architecture == "conv":
        if len(cfg.data_shape) != 3:
            raise DgmError(f"architecture=conv needs images [C, H, W]; this data has shape {tuple(cfg.data_shape)}: "
                           "use architecture=mlp")
        if cfg.gp_weight > 0 and cfg.d_norm == "batch":
            raise DgmError("the gradient penalty is per example and batch norm mixes the examples of a batch; "
                           "use d_norm=layer or d_norm=none with gp_weight > 0")
