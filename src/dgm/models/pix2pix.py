"""pix2pix: image-to-image translation with a conditional GAN (seed 001; Isola, Zhu, Zhou and Efros 2017).

Paired data: an input image a and its target b. The generator G(a, z) is a U-Net and the discriminator D(a, b)
a PatchGAN that sees the input concatenated with a real or generated target and gives one logit per patch
(`dgm.nn.translation`). The objective (Isola et al., eq. 4):

    G* = arg min_G max_D  L_cGAN(G, D) + lambda L_L1(G)
    L_cGAN(G, D) = E_{a,b}[log D(a, b)] + E_{a,z}[log(1 - D(a, G(a, z)))]      (mean over D's patches)
    L_L1(G)      = E_{a,b,z}[ |b - G(a, z)| ]                                  (mean over pixels and channels)

D's loss is halved, as the paper does to slow D down relative to G; G's adversarial term is the non-saturating
-log D(a, G(a, z)); one step is one D update then one G update on the same batch. gan_weight = 0 drops the
adversarial term: no D is built and G is the plain U-Net regressor trained on L1 (the baseline the paper compares
against, whose outputs are blurry where the target is uncertain).

Noise z is only dropout in G, as the paper's: kept on at test time (`translate`), so two translations of one
input differ a little. Unlike the paper, which also normalises by the test batch's own statistics, `translate`
runs batch norm on its running statistics, so a translation does not depend on the other images of its batch.

The task (`task`) makes the input a from the dataset's images b (colour sprites), see `task_input`:
mask -> the object's mask; grey -> the Rec. 601 luma; edges -> a binary edge map. Inputs are uint8 [N, 1, H, W];
G's output is sigmoid(U-Net(a)) in [0, 1], the data's range (the paper's tanh on images in [-1, 1], where an L1
error is twice ours: the default lambda = 200 here weighs L1 against the GAN term as the paper's 100 does).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgm.config import choice, number, numbers
from dgm.data.sprites import luminance
from dgm.errors import DgmError
from dgm.models import ModelConfig, register_model
from dgm.models.gan import (dcgan_init, gan_discriminator_loss, non_saturating_generator_loss,
                            adam_optimizers)
from dgm.nn.translation import PatchDiscriminator, UNet, patch_receptive_field

TASKS = ("mask", "grey", "edges")
EDGE_THRESHOLD = 128.0  # Sobel magnitude (luma units 0..255) above which a pixel is an edge: a step of 32 levels


# --- the inputs --------------------------------------------------------------------------------------
def sobel_edges(grey: torch.Tensor, threshold: float = EDGE_THRESHOLD) -> torch.Tensor:
    """uint8 [N, 1, H, W] of 0/255: 255 where the Sobel gradient magnitude sqrt(g_x^2 + g_y^2) of grey
    [N, 1, H, W] (luma 0..255) exceeds threshold; g_x is the kernel [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], g_y its
    transpose. Borders are replicated, so a constant image has no edges; a step of height s gives a magnitude of
    4 s beside it, so the default 128 marks steps of more than 32 levels."""
    out = torch.empty(grey.shape, dtype=torch.uint8, device=grey.device)
    for s in range(0, grey.shape[0], 8192):  # in chunks: float temporaries of a whole training set would be large
        g = F.pad(grey[s:s + 8192].float(), (1, 1, 1, 1), mode="replicate")
        dx = g[..., :, 2:] - g[..., :, :-2]  # the separable kernel: a central difference along x ...
        dy = g[..., 2:, :] - g[..., :-2, :]
        gx = dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]  # ... smoothed by (1, 2, 1) along y
        gy = dy[..., :, :-2] + 2 * dy[..., :, 1:-1] + dy[..., :, 2:]
        out[s:s + 8192] = (gx.pow(2) + gy.pow(2) > threshold ** 2).to(torch.uint8) * 255
    return out


def task_input(task: str, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
    """The input a, uint8 [N, 1, H, W], that `task` makes of images b [N, C, H, W] (uint8, or floats in [0, 1]):
    mask -> the object masks [N, H, W] (bool) as 0/255; grey -> Rec. 601 luma (`dgm.data.sprites.luminance`) of
    colour images; edges -> `sobel_edges` of that luma, 0/255. What the training data gives the model as its
    batch field, and what the bench and CLI use to make inputs for `translate`."""
    if task not in TASKS:
        raise DgmError(f"unknown task '{task}'; choose {', '.join(TASKS)}")
    if task == "mask":
        if masks is None:
            raise DgmError("task=mask needs the objects' masks, which this data does not have; train on sprites")
        return masks.reshape(masks.shape[0], 1, *masks.shape[-2:]).to(torch.uint8) * 255
    if images.dim() != 4 or images.shape[1] != 3:
        raise DgmError(f"task={task} makes its input from colour images [N, 3, H, W], got shape "
                       f"{tuple(images.shape)}; train on sprites")
    if images.is_floating_point():
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    grey = luminance(images.cpu()).to(images.device)
    return grey if task == "grey" else sobel_edges(grey)


@dataclass
class Pix2PixConfig(ModelConfig):
    """data_shape is the target b's [C, H, W]; the input a is [1, H, W]."""

    task: str = choice("mask", *TASKS)  # what the input is made of: the object mask, the luma, or an edge map
    l1_weight: float = number(200.0, min=0)  # lambda: the paper's 100 on images in [-1, 1], where L1 is twice ours
    gan_weight: float = number(1.0, min=0)  # weight of L_cGAN in G's loss; 0: the plain U-Net with L1, no D
    base_channels: int = number(64, min=1)  # U-Net's and PatchGAN's first width (the paper's 64), at most 8x deeper
    patch_layers: int = number(1, min=1)  # PatchGAN's stride-2 convs: 1 -> 16 x 16 patches (14 x 14 logits) on
    # 32 x 32 sprites, half the side, as near the paper's 70 on 256 as this size allows (2 -> 34, 3 -> 70)
    dropout: float = number(0.5, min=0, below=1)  # G's dropout (its only noise z), on in training and in translate
    d_norm: str = choice("batch", "batch", "instance", "none")  # PatchGAN's normalisation
    g_lr: float = number(2e-4, min=0)
    d_lr: float = number(2e-4, min=0)
    betas: tuple[float, float] = numbers((0.5, 0.999), min=0, below=1, length=2)  # Adam's, the paper's


@register_model("pix2pix", Pix2PixConfig, family="gan", seeds=("001",),
                description="pix2pix (Isola et al.): U-Net G and PatchGAN D, cGAN + lambda L1, translates "
                            "masks, grey or edges into images; `dgm sample RUN --input FILE`")
class Pix2Pix(nn.Module):
    def __init__(self, cfg: Pix2PixConfig):
        super().__init__()
        self.cfg = cfg
        if len(cfg.data_shape) != 3:
            raise DgmError(f"pix2pix translates images; this data has shape {tuple(cfg.data_shape)}: train on sprites")
        c, h, w = cfg.data_shape
        if cfg.task != "mask" and c != 3:
            raise DgmError(f"task={cfg.task} makes its input from colour images and this data has {c} channel(s); "
                           "train on sprites")
        side = 3 * 2 ** cfg.patch_layers
        if cfg.gan_weight > 0 and min(h, w) < side:
            raise DgmError(f"a PatchGAN with patch_layers={cfg.patch_layers} needs images of at least {side} x "
                           f"{side}, got {h} x {w}; lower patch_layers")
        base = cfg.base_channels
        self.generator = UNet(1, c, base=base, max_channels=8 * base, dropout=cfg.dropout, size=(h, w))
        self.discriminator = (PatchDiscriminator(1 + c, base=base, n_layers=cfg.patch_layers, norm=cfg.d_norm)
                              if cfg.gan_weight > 0 else None)
        self.apply(dcgan_init)  # the paper's N(0, 0.02) weights

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The input a's shape: (1, H, W)."""
        return (1, *self.cfg.data_shape[1:])

    @property
    def patch_size(self) -> int | None:
        """The side of the patch each of D's logits judges (`patch_receptive_field`); None without D."""
        return patch_receptive_field(self.cfg.patch_layers) if self.discriminator is not None else None

    # --- data ------------------------------------------------------------------------------------------
    def batch_fields(self, dataset, split) -> tuple[torch.Tensor]:
        """Batches carry the inputs a, uint8 [N, 1, H, W], after the target images b (`task_input`)."""
        if self.cfg.task == "mask" and split.masks is None:
            raise DgmError(f"task=mask needs the objects' masks and {dataset.name} has none; train on sprites")
        return (task_input(self.cfg.task, split.x, split.masks),)

    def _as_input(self, a: torch.Tensor) -> torch.Tensor:
        """a (uint8, or floats in [0, 1]) as floats in [0, 1] on G's device, checked against `input_shape`."""
        if a.dim() != 4 or tuple(a.shape[1:]) != self.input_shape:
            raise DgmError(f"pix2pix translates inputs of shape [N, {', '.join(map(str, self.input_shape))}], "
                           f"got {list(a.shape)}")
        weight = next(self.generator.parameters())
        a = a.to(weight.device)
        return a.to(weight.dtype) / 255 if not a.is_floating_point() else a.to(weight.dtype)

    # --- the objective ----------------------------------------------------------------------------------
    def critic(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """D(a, b): per-patch logits [B, 1, h', w'] of the input a and a target b (real or generated)."""
        return self.discriminator(torch.cat([a, b.to(a.dtype)], 1)).to(a.dtype)  # float also under bf16 autocast

    def discriminator_loss(self, a: torch.Tensor, b: torch.Tensor, b_fake: torch.Tensor
                           ) -> dict[str, torch.Tensor]:
        """L_D = 1/2 (-log D(a, b) - log(1 - D(a, G(a, z)))), each averaged over the patches: [B] per term."""
        d_real, d_fake = self.critic(a, b), self.critic(a, b_fake.detach())
        loss_d = 0.5 * gan_discriminator_loss(d_real, d_fake).flatten(1).mean(1)
        return {"loss_d": loss_d, "d_real": d_real, "d_fake": d_fake}

    def generator_loss(self, a: torch.Tensor, b: torch.Tensor, b_fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_G = gan_weight (-log D(a, G(a, z))) + lambda |b - G(a, z)|, the first averaged over the patches, the
        second over pixels and channels: [B] per term."""
        l1 = (b - b_fake).abs().flatten(1).mean(1)
        loss_g = self.cfg.l1_weight * l1
        terms = {"l1": l1}
        if self.discriminator is not None:
            adversarial = non_saturating_generator_loss(self.critic(a, b_fake)).flatten(1).mean(1)
            loss_g = loss_g + self.cfg.gan_weight * adversarial
            terms["adversarial"] = adversarial
        terms["loss_g"] = loss_g
        return terms

    # --- training protocol ------------------------------------------------------------------------------
    def optimizers(self, train_cfg) -> dict[str, torch.optim.Optimizer]:
        """{"generator"[, "discriminator"]}: Adam with g_lr / d_lr and betas (no D when gan_weight = 0)."""
        groups = {"generator": (self.generator.parameters(), self.cfg.g_lr)}
        if self.discriminator is not None:
            groups["discriminator"] = (self.discriminator.parameters(), self.cfg.d_lr)
        return adam_optimizers(train_cfg, self.cfg.betas, groups)

    def train_step(self, batch, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, torch.Tensor]:
        """One D update on (a, b) against G(a, z), then one G update scored by the updated D."""
        b, a = batch[0], batch[1] if len(batch) > 1 else None
        if a is None:
            raise DgmError("pix2pix trains on batches (targets, inputs) made by its batch_fields; use dgm.train")
        a = self._as_input(a)
        b_fake = torch.sigmoid(self.generator(a)).to(b.dtype)
        out = {}
        if self.discriminator is not None:
            terms = self.discriminator_loss(a, b, b_fake)
            optimizers["discriminator"].zero_grad(set_to_none=True)
            terms["loss_d"].mean().backward()
            optimizers["discriminator"].step()
            out = {"loss_d": terms["loss_d"].mean(), "d_real": torch.sigmoid(terms["d_real"]).mean(),
                   "d_fake": torch.sigmoid(terms["d_fake"]).mean()}
            self.discriminator.requires_grad_(False)  # the generator's update leaves no gradient in D
        try:
            g_terms = self.generator_loss(a, b, b_fake)
            loss_g = g_terms["loss_g"].mean()
            optimizers["generator"].zero_grad(set_to_none=True)
            loss_g.backward()
            optimizers["generator"].step()
        finally:
            if self.discriminator is not None:
                self.discriminator.requires_grad_(True)
        out.update({k: v.mean() for k, v in g_terms.items()})
        return {k: v.detach() for k, v in out.items()}

    # --- capabilities ------------------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, a: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """G(a, z): images b [N, C, H, W] in [0, 1] of inputs a [N, 1, H, W] (uint8, or floats in [0, 1]).

        Dropout stays on (the paper's noise z; its masks drawn from `generator` when given, so a seeded
        generator repeats a translation); batch norm uses its running statistics and is left unchanged."""
        a = self._as_input(a)
        net = self.generator
        was_training = net.training
        net.eval()
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                m.train()
        try:
            if generator is None:
                out = net(a)
            else:
                seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
                with torch.random.fork_rng(devices=[a.device] if a.device.type == "cuda" else []):
                    torch.manual_seed(seed)
                    out = net(a)
        finally:
            net.train(was_training)
        return torch.sigmoid(out.float())

    def figures(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, tuple[torch.Tensor, int]]:
        """"translations": per row the input a = y (grey, shown in the data's channels), G(a, z) and the truth x."""
        if y is None:
            return {}
        out = self.translate(y, generator=torch.Generator(device=x.device).manual_seed(0))
        a = self._as_input(y).float().expand(-1, out.shape[1], -1, -1)
        images = torch.stack([a, out, x.float().to(out.device)], 1)
        return {"translations": (images.reshape(-1, *images.shape[2:]), 3)}

    @property
    def sample(self) -> None:
        """None: pix2pix translates given inputs and has no images of its own to draw."""
        return None

    def missing_reason(self, capability: str) -> str | None:
        if capability == "sample":
            return ("pix2pix translates given input images and cannot sample from nothing; use "
                    "`dgm sample RUN --input FILE` (or model.translate(a))")
        return None
