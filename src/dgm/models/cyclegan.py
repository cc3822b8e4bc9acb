"""CycleGAN (seed 001; Zhu, Park, Isola and Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017): two generators G: A -> B and F: B -> A learnt from unpaired images of two domains.

    L(G, F, D_A, D_B) = L_LSGAN(G, D_B) + L_LSGAN(F, D_A)                                       (Zhu eq. 3, LSGAN)
                        + lambda_cycle (||F(G(a)) - a||_1 + ||G(F(b)) - b||_1)                  cycle consistency
                        + lambda_identity lambda_cycle (||G(b) - b||_1 + ||F(a) - a||_1)        identity (sec. 5.2)

    D_B minimises 1/2 [(D_B(b) - 1)^2 + D_B(G(a))^2]   (the paper halves D's objective; gan.py's least-squares loss)
    G   minimises (D_B(G(a)) - 1)^2                     (the paper's and its code's MSE, without the 1/2)

and the same with the roles of A and B (F, D_A) swapped. The paper's X, Y are A, B here. ||.||_1 is the mean
absolute error per pixel (the authors' nn.L1Loss), D's squared errors are averaged over its patches (PatchGAN
outputs one real/fake score per overlapping patch); lambda_cycle = 10 and lambda_identity = 0.5 are the
defaults of the authors' code.

One trainer step is the authors' `optimize_parameters`: one Adam step of both generators on L (the
discriminators frozen), then one Adam step of both discriminators on real images against fakes drawn from an
image history pool (Shrivastava et al. 2017, as the paper): each discriminator sees the current batch's fakes
while its pool of `pool_size` earlier fakes fills, then for each new fake, with probability 1/2, an older fake
taken out of a uniformly chosen slot of the pool (the new one stored there) and otherwise the new fake itself.
The pools are buffers, saved with the weights and checkpoints, and they draw from torch's global generator on
the CPU, which the trainer seeds per epoch and checkpoints, so a resumed run continues them exactly.

The domains are rendered from a procedural dataset's generating factors (sprites): every training image's
factors with one discrete factor, `domain_factor`, set to a value of `domain_a` gives image a_i, and the factors
of another row (a fixed permutation) set to a value of `domain_b` gives b_i, so the two domains share nothing
pairwise (unpaired data). `translation_targets` gives the B-version of each a_i, the exact answer to score
G(a_i) against when the domain change keeps the scene (circle -> square keeps position, size and colour).

Generators: Johnson et al.'s ResNet (as CycleGAN): c7s1-k, two stride-2 downsamplings, residual blocks, two
upsamplings, c7s1-C, instance norm, reflection padding; a sigmoid output for images in [0, 1] (the authors' tanh
on [-1, 1]). Discriminators: PatchGAN (`dgm.nn.translation.PatchDiscriminator`) with instance norm. Weights are
initialised N(0, 0.02), as the authors' code does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from dgm.config import number, numbers, text
from dgm.errors import DgmError
from dgm.models import ModelConfig, register_model
from dgm.models.gan import (dcgan_init, least_squares_discriminator_loss, least_squares_generator_loss,
                            adam_optimizers)
from dgm.nn.translation import PatchDiscriminator, norm_layer

NEEDS_DOMAINS = "train on sprites (or sprites64), whose scenes it renders with one factor changed"
VALUE_NAMES = r"[A-Za-z0-9_]+"
PERMUTATION_SEED = 0  # the fixed permutation that pairs a_i with the scene of another row for b_i


# --- losses: per example [B] -------------------------------------------------------------------------
def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||x - y||_1 as the mean absolute error over each example's pixels: [B]."""
    return (x - y).abs().flatten(1).mean(1)


def cycle_losses(g: Callable[[torch.Tensor], torch.Tensor], f: Callable[[torch.Tensor], torch.Tensor],
                 a: torch.Tensor, b: torch.Tensor, identity: bool = True) -> dict[str, torch.Tensor]:
    """The translations and the reconstruction terms of generators g: A -> B and f: B -> A on images a, b:
    {"fake_b": G(a), "fake_a": F(b), "cycle": ||F(G(a)) - a||_1 + ||G(F(b)) - b||_1 [B],
    "identity": ||G(b) - b||_1 + ||F(a) - a||_1 [B] (zeros, and two passes saved, with identity false)}."""
    fake_b, fake_a = g(a), f(b)
    cycle = l1(f(fake_b), a) + l1(g(fake_a), b)
    same = l1(g(b), b) + l1(f(a), a) if identity else torch.zeros_like(cycle)
    return {"fake_b": fake_b, "fake_a": fake_a, "cycle": cycle, "identity": same}


def patch_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """1/2 [(D(b) - 1)^2 + D(G(a))^2] averaged over D's patches [B, 1, h, w]: [B]."""
    return least_squares_discriminator_loss(d_real, d_fake).flatten(1).mean(1)


def patch_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """(D(G(a)) - 1)^2, twice LSGAN's 1/2 (D - 1)^2 (the paper's generator loss), averaged over patches: [B]."""
    return (2 * least_squares_generator_loss(d_fake)).flatten(1).mean(1)


# --- the image history pool ----------------------------------------------------------------------------
class ImagePool(nn.Module):
    """A history of up to `size` earlier generated images (Shrivastava et al.), in buffers, so checkpoints hold it."""

    def __init__(self, size: int, shape: tuple[int, ...]):
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # slots filled so far

    @torch.no_grad()
    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        """The images a discriminator sees for this batch of fakes [B, ...]: in order, each fake itself while the
        pool fills (and is stored), then with probability 1/2 a stored one out of a uniform slot (the fake taking
        its place), else the fake. Draws B uniforms and B slots from torch's global CPU generator per call."""
        if self.size == 0:
            return fakes
        u = torch.rand(fakes.shape[0]).tolist()
        slots = torch.randint(self.size, (fakes.shape[0],)).tolist()
        out = fakes.detach().clone()
        count = int(self.count)
        for i, (u_i, slot) in enumerate(zip(u, slots)):
            if count < self.size:
                self.images[count] = fakes[i]
                count += 1
            elif u_i > 0.5:
                out[i] = self.images[slot]
                self.images[slot] = fakes[i]
        self.count.fill_(count)
        return out


# --- the generator --------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """x + [reflect-pad 1, conv 3x3, instance norm, ReLU, reflect-pad 1, conv 3x3, instance norm](x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
                                  norm_layer("instance", channels), nn.ReLU(),
                                  nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
                                  norm_layer("instance", channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetGenerator(nn.Sequential):
    """[B, C, H, W] -> [B, C, H, W] in [0, 1]: c7s1-k, d2k, d4k, `n_blocks` R4k, u2k, uk, c7s1-C (Johnson et al.)."""

    def __init__(self, channels: int, base: int, n_blocks: int):
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, base, 7),
                                   norm_layer("instance", base), nn.ReLU()]
        for k in (base, 2 * base):  # two stride-2 downsamplings
            layers += [nn.Conv2d(k, 2 * k, 3, stride=2, padding=1), norm_layer("instance", 2 * k), nn.ReLU()]
        layers += [ResidualBlock(4 * base) for _ in range(n_blocks)]
        for k in (4 * base, 2 * base):  # two fractionally strided upsamplings
            layers += [nn.ConvTranspose2d(k, k // 2, 3, stride=2, padding=1, output_padding=1),
                       norm_layer("instance", k // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(base, channels, 7), nn.Sigmoid()]
        super().__init__(*layers)


# --- the model -----------------------------------------------------------------------------------------
@dataclass
class CycleGANConfig(ModelConfig):
    data_shape: tuple[int, ...] = numbers((3, 32, 32), min=1, nonempty=True)
    domain_factor: str = text("shape", VALUE_NAMES, "the name of one of the dataset's discrete factors")
    domain_a: tuple[str, ...] = text(("circle",), VALUE_NAMES, "comma-separated value names of domain_factor")
    domain_b: tuple[str, ...] = text(("square",), VALUE_NAMES, "comma-separated value names of domain_factor")
    base_channels: int = number(64, min=1)  # k of the generators' c7s1-k and the discriminators' first layer
    n_blocks: int = number(6, min=0)  # residual blocks of each generator (6 at 128 x 128 and below in the paper)
    patch_layers: int = number(3, min=1)  # stride-2 layers of the PatchGAN discriminators (3: 70 x 70 patches)
    cycle_weight: float = number(10.0, min=0)  # lambda_cycle
    identity_weight: float = number(0.5, min=0)  # lambda_identity, relative to lambda_cycle; 0 drops the term
    pool_size: int = number(50, min=0)  # fakes kept per discriminator's history pool; 0: D sees only new fakes
    g_lr: float = number(2e-4, min=0)
    d_lr: float = number(2e-4, min=0)
    betas: tuple[float, float] = numbers((0.5, 0.999), min=0, below=1, length=2)


@register_model("cyclegan", CycleGANConfig, family="gan", seeds=("001",),
                description="CycleGAN (Zhu et al.): unpaired translation between two domains of a procedural "
                            "dataset's factor, LSGAN + cycle and identity L1; `dgm sample RUN --input FILE`")
class CycleGAN(nn.Module):
    """G: A -> B, F: B -> A (ResNet generators) and D_A, D_B (PatchGANs); trained by `train_step`."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        c = cfg.data_shape[0]
        self.g = ResNetGenerator(c, cfg.base_channels, cfg.n_blocks)
        self.f = ResNetGenerator(c, cfg.base_channels, cfg.n_blocks)
        self.d_a = PatchDiscriminator(c, cfg.base_channels, n_layers=cfg.patch_layers, norm="instance")
        self.d_b = PatchDiscriminator(c, cfg.base_channels, n_layers=cfg.patch_layers, norm="instance")
        self.apply(dcgan_init)
        self.pool_a = ImagePool(cfg.pool_size, tuple(cfg.data_shape))  # fakes F(b), shown to D_A
        self.pool_b = ImagePool(cfg.pool_size, tuple(cfg.data_shape))  # fakes G(a), shown to D_B

    # --- data -------------------------------------------------------------------------------------------
    def batch_fields(self, dataset, split) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b): uint8 images [N, C, H, W] row-aligned with split.x. a_i is row i's scene with the domain factor
        set to domain_a[i mod |domain_a|]; b_i is the scene of row pi(i), pi a fixed permutation (seed 0), with it
        set to domain_b[i mod |domain_b|]: the two domains are unpaired."""
        column, codes_a, codes_b = self._domain_codes(dataset, split)
        factors_b = split.factors[torch.randperm(len(split), generator=torch.Generator().manual_seed(
            PERMUTATION_SEED))]
        return (self._render(dataset, split.factors, column, codes_a),
                self._render(dataset, factors_b, column, codes_b))

    def translation_targets(self, dataset, split) -> torch.Tensor:
        """The B-version of every a_i of `batch_fields`: row i's scene with the domain factor set to
        domain_b[i mod |domain_b|], uint8 [N, C, H, W]; what G(a_i) should be when the domain change keeps the
        rest of the scene."""
        column, _, codes_b = self._domain_codes(dataset, split)
        return self._render(dataset, split.factors, column, codes_b)

    @staticmethod
    def _render(dataset, factors: torch.Tensor, column: int, codes: list[int]) -> torch.Tensor:
        edited = factors.clone()
        edited[:, column] = torch.tensor(codes, dtype=factors.dtype)[torch.arange(len(factors)) % len(codes)]
        return dataset.renderer.render(edited)

    def _domain_codes(self, dataset, split) -> tuple[int, list[int], list[int]]:
        """(the domain factor's column, the codes of domain_a's values, those of domain_b's), or a DgmError."""
        if not dataset.factors or getattr(dataset, "renderer", None) is None or split.factors is None:
            raise DgmError(f"cyclegan renders its two domains from a dataset's generating factors, which dataset "
                           f"'{dataset.name}' does not have; {NEEDS_DOMAINS}")
        discrete = [f.name for f in dataset.factors if f.discrete]
        names = dataset.factor_names
        factor = self.cfg.domain_factor
        if factor not in discrete:
            why = "is continuous" if factor in names else "is not one of this dataset's factors"
            raise DgmError(f"domain_factor '{factor}' {why}; choose a discrete factor: {', '.join(discrete)}")
        column = names.index(factor)
        values = dataset.factors[column].values
        codes = []
        for field in ("domain_a", "domain_b"):
            unknown = [v for v in getattr(self.cfg, field) if v not in values]
            if unknown:
                raise DgmError(f"factor '{factor}' has no value '{unknown[0]}'; choose {field} among "
                               f"{', '.join(values)}")
            codes.append([values.index(v) for v in getattr(self.cfg, field)])
        return column, codes[0], codes[1]

    def _to_float(self, images: torch.Tensor) -> torch.Tensor:
        """Images as floats in [0, 1]: uint8 pixels divided by levels - 1, floats as they are."""
        return images if images.is_floating_point() else images.float() / (self.cfg.levels - 1)

    # --- training ---------------------------------------------------------------------------------------
    def optimizers(self, train_cfg) -> dict[str, torch.optim.Optimizer]:
        """{"generator": Adam over G and F, "discriminator": Adam over D_A and D_B}, with g_lr, d_lr and betas."""
        return adam_optimizers(train_cfg, self.cfg.betas, {
            "generator": ([*self.g.parameters(), *self.f.parameters()], self.cfg.g_lr),
            "discriminator": ([*self.d_a.parameters(), *self.d_b.parameters()], self.cfg.d_lr)})

    @staticmethod
    def _critic(d: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """D's patch scores [B, 1, h, w] in the weights' precision (also under a bf16 autocast)."""
        return d(x).to(next(d.parameters()).dtype)

    def generator_losses(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        """L for the generators, per example, with its parts and the fakes G(a), F(b)."""
        cfg = self.cfg
        terms = cycle_losses(self.g, self.f, a, b, identity=cfg.identity_weight > 0)
        adv_g = (patch_generator_loss(self._critic(self.d_b, terms["fake_b"]))
                 + patch_generator_loss(self._critic(self.d_a, terms["fake_a"])))
        loss_g = adv_g + cfg.cycle_weight * (terms["cycle"] + cfg.identity_weight * terms["identity"])
        return {**terms, "adv_g": adv_g, "loss_g": loss_g}

    def discriminator_loss(self, a: torch.Tensor, b: torch.Tensor, fake_a: torch.Tensor,
                           fake_b: torch.Tensor) -> torch.Tensor:
        """L_D_A + L_D_B per example: each D's real images against the (pooled, detached) fakes."""
        return (patch_discriminator_loss(self._critic(self.d_a, a), self._critic(self.d_a, fake_a))
                + patch_discriminator_loss(self._critic(self.d_b, b), self._critic(self.d_b, fake_b)))

    def train_step(self, batch, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, torch.Tensor]:
        """One generator step on L, then one discriminator step on pooled fakes (the authors' order).

        batch = (x, a, b): the training images x are not used; a and b are the domains' uint8 images."""
        _, a, b = batch
        a, b = self._to_float(a), self._to_float(b)
        opt_g, opt_d = optimizers["generator"], optimizers["discriminator"]
        for d in (self.d_a, self.d_b):
            d.requires_grad_(False)  # the generators' update leaves no gradient in D
        try:
            terms = self.generator_losses(a, b)
            opt_g.zero_grad(set_to_none=True)
            terms["loss_g"].mean().backward()
            opt_g.step()
        finally:
            for d in (self.d_a, self.d_b):
                d.requires_grad_(True)
        fake_a = self.pool_a.query(terms["fake_a"].detach())
        fake_b = self.pool_b.query(terms["fake_b"].detach())
        loss_d = self.discriminator_loss(a, b, fake_a, fake_b).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        out = {"loss_g": terms["loss_g"], "loss_d": loss_d, "cycle": terms["cycle"], "identity": terms["identity"],
               "adv_g": terms["adv_g"]}
        return {k: v.mean().detach() for k, v in out.items()}

    # --- capabilities -----------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        """The [C, H, W] of the images `translate` takes."""
        return tuple(self.cfg.data_shape)

    @torch.no_grad()
    def translate(self, x: torch.Tensor, reverse: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """G(x) (A -> B), or F(x) (B -> A) with reverse, of images [N, C, H, W] (uint8, or floats in [0, 1]):
        floats in [0, 1]. The translation is deterministic; `generator` is taken, and not used, so that it is
        called as the samplers are."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise DgmError(f"the model translates images [N, {', '.join(map(str, self.input_shape))}]; got shape "
                           f"{list(x.shape)}")
        net = self.f if reverse else self.g
        return net(self._to_float(x).to(next(net.parameters()).device))

    def figures(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, tuple[torch.Tensor, int]]:
        """"translations": per row a, G(a), F(G(a)) for the given domain-A images y (the first batch field; the
        hook gets no b, so the B -> A direction is not drawn; x, the dataset's images, is not used)."""
        if y is None:
            raise DgmError(f"cyclegan draws its translations of domain-A images, which it was not given; "
                           f"{NEEDS_DOMAINS}")
        a = self._to_float(y)
        fake_b = self.translate(a)
        cycled = self.translate(fake_b, reverse=True)
        return {"translations": (torch.stack([a, fake_b, cycled], 1).flatten(0, 1), 3)}

    @property
    def sample(self) -> None:
        """None: a CycleGAN translates given images and has no images of its own to draw."""
        return None

    def missing_reason(self, capability: str) -> str | None:
        if capability == "sample":
            return ("a CycleGAN translates given images between its two domains and cannot sample from nothing; "
                    "use `dgm sample RUN --input FILE` or model.translate(x)")
        return None


def _check(cfg: CycleGANConfig) -> None:
    """What no single field's rule can say: the domains, and the image size the generators need."""
    for field in ("domain_a", "domain_b"):
        if not getattr(cfg, field):
            raise DgmError(f"{field} is empty; give it one or more comma-separated values of {cfg.domain_factor}")
    shared = [v for v in cfg.domain_a if v in cfg.domain_b]
    if shared:
        raise DgmError(f"domain_a and domain_b both hold '{shared[0]}'; each value of {cfg.domain_factor} belongs "
                       "to one domain only")
    if len(cfg.data_shape) != 3 or any(s % 4 or s < 8 for s in cfg.data_shape[1:]):
        raise DgmError(f"cyclegan translates images [C, H, W] with H and W multiples of 4 and at least 8 (two "
                       f"stride-2 downsamplings); this data has shape {tuple(cfg.data_shape)}")
    side = min(cfg.data_shape[1:])
    if side < 3 * 2 ** cfg.patch_layers:  # n stride-2 convs then two stride-1 convs that take a pixel off each
        most = (side // 3).bit_length() - 1
        raise DgmError(f"patch_layers={cfg.patch_layers} leaves the discriminators no patch of a {side}-pixel side "
                       f"(they need sides of at least 3 * 2^patch_layers); use patch_layers <= {most}")
