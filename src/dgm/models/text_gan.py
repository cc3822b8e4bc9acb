"""Text-to-image GANs (seed 001): GAN-INT-CLS (Reed et al. 2016) and "Learning What and Where to Draw" (GAWWN).

    min_G max_D  E_{x,t ~ p_data}[log D(x, t)] + E_{z ~ p(z), t ~ p_data(t)}[log(1 - D(G(z, t), t))]

G(z, phi(t)) draws an image of the caption t and D(x, phi(t)) judges (image, text) pairs, so a
real image with the wrong caption is as false as a fake one. `text-gan` conditions on the caption
alone; `www-gan` also on a bounding box (x0, y0, x1, y1) that says where the object goes.

- Text encoder: phi(t) = LeakyReLU_0.2(W b(t) + c), b(t) the caption's bag of words (word
  frequencies over the training vocabulary), compressed to `text_dim` (Reed's 128). A bag of words
  suffices here: the sprites' captions come from a closed vocabulary in which each word names one
  value of one attribute (size, colour, shape, row, column, background), so word order carries
  nothing a bag loses. G and D each own their phi, each trained by its own loss.
- Conditioning map: phi(t) replicated over the pixels whose centres ((j + 0.5) / w, (i + 0.5) / h)
  lie in the box [x0, x1) x [y0, y1), 0 elsewhere: [B, d, h, w] (`box_map`). D joins it to the image
  and again to its smallest feature map (4x4 at 32x32, followed by a 1x1 conv: Reed's D joins the text
  there only; with the text at 4x4 alone G collapsed to one image per background within an epoch on
  sprites, with or without GAN-INT and the matching-aware term, while a cgan with its labels at D's input
  did not. With it at the input, GAN-INT alone (matching_aware=false) trains, and the matching-aware term
  still makes D win within an epoch there: docs/benchmarks.md). text-gan's G reads [z, phi(t)] at its input (Reed's G; the box is the
  whole canvas); www-gan's G also joins the map to its features at every resolution, so it can place the
  object.
- Matching-aware D (GAN-CLS), with t_wrong the batch's captions rolled by one (each image keeps its box):
      L_D = -[log D(x, t) + 1/2 (log(1 - D(x, t_wrong)) + log(1 - D(G(z, t), t)))]
- GAN-INT: G is also trained on interpolated captions t_int = beta t + (1 - beta) t_rolled (beta = 1/2),
  which lie off the data but near it, with nothing for D to compare them with:
      L_G = -log D(G(z, t), t) - lambda log D(G(z', t_int), t_int)
  phi is affine in b(t) before its activation, W (beta b + (1 - beta) b') + c = beta (W b + c) +
  (1 - beta) (W b' + c), so interpolating the bag vectors is interpolating the pre-activation
  embeddings, and G and D see the same mix.

A condition y (what batches carry, float32) is [B, V] for text-gan and [B, V + 4] for www-gan: the bag
vector, then the box as fractions of the canvas (the dataset's half-open pixel edges divided by W and H).
`condition_of(captions, boxes)` makes them. Generated images take y ~ p_data(y) from a bank of training
conditions (`fit_before_training`), as gan.py's conditional models generate for the labels of the real batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgm.config import number, numbers, text
from dgm.data import bag_of_words
from dgm.errors import DgmError
from dgm.models import ModelConfig, register_model
from dgm.models.gan import (DCGANDiscriminator, dcgan_init, dcgan_widths, dcgan_plan, gan_discriminator_loss,
                            non_saturating_generator_loss, adam_optimizers)

BANK_SIZE = 1024  # training conditions kept for sampling y ~ p_data(y)


def matching_aware_discriminator_loss(s_real_right: torch.Tensor, s_real_wrong: torch.Tensor,
                                      s_fake_right: torch.Tensor) -> torch.Tensor:
    """L_D = -[log D(x, t) + 1/2 (log(1 - D(x, t_wrong)) + log(1 - D(G(z, t), t)))] from logits (GAN-CLS).

    The mean of two GAN losses of the real pair: one against the mismatched pair, one against the fake."""
    return 0.5 * (gan_discriminator_loss(s_real_right, s_real_wrong) + gan_discriminator_loss(s_real_right,
                                                                                              s_fake_right))


def box_map(embedding: torch.Tensor, boxes01: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """embedding [B, d] at the pixels of an h x w grid whose centres lie in the box [x0, x1) x [y0, y1), 0
    elsewhere: [B, d, h, w]. boxes01 [B, 4] is (x0, y0, x1, y1) as fractions of the width and height."""
    cx = (torch.arange(w, device=boxes01.device, dtype=boxes01.dtype) + 0.5) / w
    cy = (torch.arange(h, device=boxes01.device, dtype=boxes01.dtype) + 0.5) / h
    x0, y0, x1, y1 = boxes01[:, :, None].unbind(1)
    inside = ((cy >= y0) & (cy < y1))[:, :, None] & ((cx >= x0) & (cx < x1))[:, None, :]  # [B, h, w]
    return torch.where(inside[:, None], embedding[:, :, None, None], embedding.new_zeros(()))


@dataclass
class TextGANConfig(ModelConfig):
    vocabulary: tuple[str, ...] = text((), r"[a-z0-9]+", "words of the training captions")
    box: bool = False  # www-gan: the caption's embedding fills the object's bounding box in G and D
    latent_dim: int = number(100, min=1)
    text_dim: int = number(32, min=1)  # phi(t): the caption's embedding (Reed's 128 compressed a 1,024-dim
    # char-CNN-RNN code; a 31-word vocabulary needs fewer, and D's input carries text_dim planes)
    base_channels: int = number(64, min=1)  # DCGAN widths: this next to the image, doubling towards 4x4 (at most 8x)
    matching_aware: bool = True  # GAN-CLS: D also learns that real images with wrong captions are false
    interpolation_weight: float = number(1.0, min=0)  # lambda of GAN-INT's term; 0 turns it off
    interpolation_beta: float = number(0.5, min=0, max=1)  # t_int = beta t + (1 - beta) t_rolled
    g_lr: float = number(2e-4, min=0)
    d_lr: float = number(2e-4, min=0)
    betas: tuple[float, float] = numbers((0.5, 0.999), min=0, below=1, length=2)


@dataclass
class WWWGANConfig(TextGANConfig):
    box: bool = True


# --- networks --------------------------------------------------------------------------------------
class TextGenerator(nn.Module):
    """(z, bag, boxes01) -> [B, C, H, W] in [0, 1]: DCGAN upsampling from [z, phi_G(t)]; with `spatial` (www-gan)
    the conditioning map of phi_G(t) is joined to the features at every resolution too (text-gan: Reed's G, the
    text at the input only)."""

    def __init__(self, latent_dim: int, vocab_size: int, text_dim: int, shape: tuple[int, int, int], base: int,
                 spatial: bool):
        super().__init__()
        c, h, w = shape
        h0, w0, n_up = dcgan_plan(h, w)
        widths = dcgan_widths(base, n_up)
        self.spatial = spatial
        map_dim = text_dim if spatial else 0
        self.text = nn.Linear(vocab_size, text_dim)
        self.start = nn.Sequential(nn.ConvTranspose2d(latent_dim + text_dim, widths[0], (h0, w0), bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.ups = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(c_in + map_dim, c_out, 4, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(c_out), nn.ReLU())
            for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.out = (nn.ConvTranspose2d(widths[-1] + map_dim, c, 4, stride=2, padding=1) if n_up else
                    nn.Conv2d(widths[-1] + map_dim, c, 3, padding=1))

    def embed(self, bag: torch.Tensor) -> torch.Tensor:
        """phi_G(t) = LeakyReLU_0.2(W b(t) + c): [B, text_dim]."""
        return F.leaky_relu(self.text(bag), 0.2)

    def forward(self, z: torch.Tensor, bag: torch.Tensor, boxes01: torch.Tensor) -> torch.Tensor:
        e = self.embed(bag)
        h = self.start(torch.cat([z, e], 1)[:, :, None, None])
        for layer in (*self.ups, self.out):
            h = layer(torch.cat([h, box_map(e, boxes01, *h.shape[2:])], 1) if self.spatial else h)
        return torch.sigmoid(h)


class TextDiscriminator(nn.Module):
    """(x, bag, boxes01) -> logits [B]: DCGAN's D on the image with the conditioning map of phi_D(t) joined to it,
    the map joined again to the smallest feature map (Reed's D: the text replicated at 4x4), a 1x1 conv + batch
    norm + LeakyReLU, then DCGAN's last conv."""

    def __init__(self, vocab_size: int, text_dim: int, shape: tuple[int, int, int], base: int):
        super().__init__()
        c, h, w = shape
        *features, final, _ = DCGANDiscriminator((c + text_dim, h, w), base, 1, "batch")  # _: its Flatten
        width = final.in_channels
        self.text = nn.Linear(vocab_size, text_dim)
        self.features = nn.Sequential(*features)
        self.joint = nn.Sequential(nn.Conv2d(width + text_dim, width, 1, bias=False), nn.BatchNorm2d(width),
                                   nn.LeakyReLU(0.2))
        self.out = final

    def embed(self, bag: torch.Tensor) -> torch.Tensor:
        """phi_D(t) = LeakyReLU_0.2(W b(t) + c): [B, text_dim]."""
        return F.leaky_relu(self.text(bag), 0.2)

    def forward(self, x: torch.Tensor, bag: torch.Tensor, boxes01: torch.Tensor) -> torch.Tensor:
        e = self.embed(bag)
        h = self.features(torch.cat([x, box_map(e, boxes01, *x.shape[2:])], 1))
        h = self.joint(torch.cat([h, box_map(e, boxes01, *h.shape[2:])], 1))
        return self.out(h).flatten()


# --- the model -------------------------------------------------------------------------------------
class TextGAN(nn.Module):
    """G(z, t[, box]) and D(x, t[, box]) on captions (and boxes); trained by `train_step` with two optimizers."""

    def __init__(self, cfg: TextGANConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        vocab_size = len(cfg.vocabulary)
        self.condition_dim = vocab_size + (4 if cfg.box else 0)
        self.generator = TextGenerator(cfg.latent_dim, vocab_size, cfg.text_dim, cfg.data_shape, cfg.base_channels,
                                       cfg.box)
        self.discriminator = TextDiscriminator(vocab_size, cfg.text_dim, cfg.data_shape, cfg.base_channels)
        self.apply(dcgan_init)
        # y ~ p_data(y) for sampling: evenly strided training conditions, the first bank_size rows used
        self.register_buffer("condition_bank", torch.zeros(BANK_SIZE, self.condition_dim))
        self.register_buffer("bank_size", torch.tensor(0))

    # --- conditions --------------------------------------------------------------------------------
    def batch_fields(self, dataset, split) -> tuple[torch.Tensor]:
        """(y,): the split's captions as bag vectors (then its boxes as fractions of the canvas for www-gan)."""
        if split.captions is None or (self.cfg.box and split.boxes is None):
            raise DgmError(f"{self.cfg.name} learns from captions{' and boxes' if self.cfg.box else ''}, which "
                           f"dataset '{dataset.name}' does not have; train on sprites")
        bags = bag_of_words(split.captions, self.cfg.vocabulary)
        if not self.cfg.box:
            return (bags,)
        return (torch.cat([bags, split.boxes.float() / self._canvas(split.boxes.device)], 1),)

    def _canvas(self, device) -> torch.Tensor:
        _, h, w = self.cfg.data_shape
        return torch.tensor([w, h, w, h], dtype=torch.float32, device=device)

    def condition_of(self, captions: list[str] | str, boxes=None) -> torch.Tensor:
        """Conditions y [n, V(+4)] of n captions and, for www-gan, their boxes: whole pixel edges (x0, y0, x1, y1),
        [n, 4] or one box for all."""
        captions = [captions] if isinstance(captions, str) else list(captions)
        device = self.condition_bank.device
        bags = bag_of_words(captions, self.cfg.vocabulary).to(self.condition_bank)  # the model's device and dtype
        if not self.cfg.box:
            if boxes is not None:
                raise DgmError("text-gan reads captions only; use www-gan to place the object in a box")
            return bags
        if boxes is None:
            raise DgmError("www-gan places the object in a box: give one (x0, y0, x1, y1) in pixels per caption")
        b = torch.as_tensor(boxes, device=device)
        if b.is_floating_point() or b.dtype == torch.bool:
            raise DgmError(f"a box is four whole pixel edges (x0, y0, x1, y1); got {b.tolist()}")
        b = b.expand(len(captions), 4) if b.shape == (4,) else b
        if b.shape != (len(captions), 4):
            raise DgmError(f"expected one box (x0, y0, x1, y1) or {len(captions)} of them, got shape {tuple(b.shape)}")
        _, h, w = self.cfg.data_shape
        x0, y0, x1, y1 = b.unbind(1)
        empty = (x0 >= x1) | (y0 >= y1)
        if empty.any():
            raise DgmError(f"a box needs x0 < x1 and y0 < y1; got {b[empty][0].tolist()}")
        outside = (x0 < 0) | (y0 < 0) | (x1 > w) | (y1 > h)
        if outside.any():
            raise DgmError(f"a box must lie on the {w}x{h} canvas (0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h}); "
                           f"got {b[outside][0].tolist()}")
        return torch.cat([bags, (b / self._canvas(device)).to(bags)], 1)

    def split_conditions(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bag vectors [B, V], boxes [B, 4] as fractions); text-gan's box is the whole canvas (0, 0, 1, 1)."""
        v = len(self.cfg.vocabulary)
        if self.cfg.box:
            return y[:, :v], y[:, v:]
        return y, y.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(y.shape[0], 4)

    def wrong_conditions(self, y: torch.Tensor) -> torch.Tensor:
        """t_wrong: the batch's captions rolled by one, each image keeping its own box."""
        v = len(self.cfg.vocabulary)
        return torch.cat([y[:, :v].roll(1, 0), y[:, v:]], 1)

    def interpolated_conditions(self, y: torch.Tensor) -> torch.Tensor:
        """t_int = beta t + (1 - beta) t_rolled on the bag vectors, each image keeping its own box (GAN-INT)."""
        v, beta = len(self.cfg.vocabulary), self.cfg.interpolation_beta
        bags = y[:, :v]
        return torch.cat([beta * bags + (1 - beta) * bags.roll(1, 0), y[:, v:]], 1)

    def fit_before_training(self, train_x: torch.Tensor, y: torch.Tensor) -> None:
        """Keep up to BANK_SIZE evenly strided training conditions, from which `sample` draws y ~ p_data(y)."""
        n = min(len(y), BANK_SIZE)
        rows = y[torch.arange(n) * len(y) // n].to(self.condition_bank)
        self.condition_bank.zero_()
        self.condition_bank[:n] = rows
        self.bank_size.fill_(n)

    def sample_conditions(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n conditions drawn uniformly from the bank of training conditions: y ~ p_data(y), [n, V(+4)]."""
        k = self._bank_size()
        idx = torch.randint(k, (n,), generator=generator, device=self.condition_bank.device)
        return self.condition_bank[idx]

    def _bank_size(self) -> int:
        k = int(self.bank_size)
        if k == 0:
            raise DgmError(f"{self.cfg.name} holds no training captions to draw from (it was never trained); "
                           "give y = model.condition_of(captions[, boxes])")
        return k

    def _conditions(self, y, n: int) -> torch.Tensor:
        """y as [n, V(+4)] float on the model's device: one row for all, or n rows."""
        y = torch.as_tensor(y, dtype=self.condition_bank.dtype, device=self.condition_bank.device)
        y = y[None] if y.dim() == 1 else y
        y = y.expand(n, -1) if y.dim() == 2 and y.shape[0] == 1 else y
        if y.shape != (n, self.condition_dim):
            raise DgmError(f"expected conditions of shape ({n}, {self.condition_dim}), got {tuple(y.shape)}; "
                           "make them with model.condition_of(captions[, boxes])")
        return y

    # --- the model's parts -------------------------------------------------------------------------
    def _generator(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.generator(z, *self.split_conditions(y))

    def critic(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """D's logit [B] for the pairs (x, y)."""
        weight = next(self.discriminator.parameters())
        return self.discriminator(x, *self.split_conditions(y)).to(weight.dtype)  # the weights' precision under bf16

    # --- training protocol -------------------------------------------------------------------------
    def optimizers(self, train_cfg) -> dict[str, torch.optim.Optimizer]:
        """{"generator", "discriminator"}: Adam with g_lr / d_lr and betas (Reed: 2e-4, (0.5, 0.999))."""
        return adam_optimizers(train_cfg, self.cfg.betas, {
            "generator": (self.generator.parameters(), self.cfg.g_lr),
            "discriminator": (self.discriminator.parameters(), self.cfg.d_lr)})

    def train_step(self, batch, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, torch.Tensor]:
        """One update of D (matching-aware), then one of G (+ GAN-INT) on the same fakes, scored by the updated D."""
        x, y = batch
        if y is None:
            raise DgmError(f"{self.cfg.name} learns from captions, and this data has none; train on sprites")
        cfg = self.cfg
        z = torch.randn(x.shape[0], cfg.latent_dim, device=x.device)
        x_fake = self._generator(z, y)
        s_real_right = self.critic(x, y)
        s_fake_right = self.critic(x_fake.detach(), y)
        out = {}
        if cfg.matching_aware:
            s_real_wrong = self.critic(x, self.wrong_conditions(y))
            loss_d = matching_aware_discriminator_loss(s_real_right, s_real_wrong, s_fake_right)
            out["d_real_wrong"] = torch.sigmoid(s_real_wrong).mean()
        else:
            loss_d = gan_discriminator_loss(s_real_right, s_fake_right)
        optimizers["discriminator"].zero_grad(set_to_none=True)
        loss_d.mean().backward()
        optimizers["discriminator"].step()
        self.discriminator.requires_grad_(False)  # the generator's update leaves no gradient in D
        try:
            loss_g = non_saturating_generator_loss(self.critic(x_fake, y))
            if cfg.interpolation_weight > 0:
                y_int = self.interpolated_conditions(y)
                z_int = torch.randn(x.shape[0], cfg.latent_dim, device=x.device)
                loss_int = non_saturating_generator_loss(self.critic(self._generator(z_int, y_int), y_int))
                loss_g = loss_g + cfg.interpolation_weight * loss_int
                out["loss_int"] = loss_int.mean()
            optimizers["generator"].zero_grad(set_to_none=True)
            loss_g.mean().backward()
            optimizers["generator"].step()
        finally:
            self.discriminator.requires_grad_(True)
        out.update(loss_d=loss_d.mean(), loss_g=loss_g.mean(), d_real_right=torch.sigmoid(s_real_right).mean(),
                   d_fake=torch.sigmoid(s_fake_right).mean())
        return {k: v.detach() for k, v in out.items()}

    # --- capabilities ------------------------------------------------------------------------------
    def generate(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """G(z, y) with batch norm in inference mode (running statistics untouched). y: conditions [n, V(+4)] or
        one for all (`condition_of`); None gives every z the bank's first training condition."""
        y = self._conditions(self.condition_bank[:self._bank_size()][:1] if y is None else y, z.shape[0])
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self._generator(z, y)
        finally:
            self.generator.train(was_training)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z) = N(0, I): [n, latent_dim]."""
        return torch.randn(n, self.cfg.latent_dim, generator=generator, device=self.condition_bank.device)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) for z [..., latent_dim] -> [...]."""
        return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))

    def sample(self, n: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """G(z, y) for z ~ N(0, I) and the given conditions, or y ~ p_data(y) from the bank: [n, C, H, W]."""
        z = self.sample_latent(n, generator)
        return self.generate(z, self.sample_conditions(n, generator) if y is None else y)

    @torch.no_grad()
    def figures(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[torch.Tensor, int]]:
        """text-gan "captions": per row a test image, then 7 samples of its caption (different z).
        www-gan "boxes": per row a test image, then its caption with one z, a box of the image's box's size
        moved from the left edge of the canvas to the right in 7 steps (the paper's picture)."""
        n, steps = x.shape[0], 7
        g = torch.Generator(device=self.condition_bank.device).manual_seed(0)
        y = self._conditions(y, n)
        if not self.cfg.box:
            images = self.generate(self.sample_latent(n * steps, g), y.repeat_interleave(steps, 0))
            name = "captions"
        else:
            bags, boxes = self.split_conditions(y)
            width = boxes[:, 2] - boxes[:, 0]
            x0 = torch.linspace(0, 1, steps, device=y.device) * (1 - width[:, None])  # [n, steps]
            moved = torch.stack([x0, boxes[:, 1:2].expand(-1, steps), x0 + width[:, None],
                                 boxes[:, 3:4].expand(-1, steps)], -1)
            conditions = torch.cat([bags[:, None].expand(-1, steps, -1), moved], -1).flatten(0, 1)
            images = self.generate(self.sample_latent(n, g).repeat_interleave(steps, 0), conditions)
            name = "boxes"
        grid = torch.cat([x[:, None], images.reshape(n, steps, *x.shape[1:]).to(x)], 1).flatten(0, 1)
        return {name: (grid, steps + 1)}


register_model("text-gan", TextGANConfig, family="gan", seeds=("001",),
               description="GAN-INT-CLS (Reed et al. 2016): DCGAN G(z, t) and matching-aware D(x, t) on "
                           "bag-of-words captions, with caption interpolation")(TextGAN)
register_model("www-gan", WWWGANConfig, family="gan", seeds=("001",),
               description="Learning What and Where to Draw (Reed et al. 2016): text-gan with the caption's "
                           "embedding filling a bounding box in G and D")(TextGAN)


def _check(cfg: TextGANConfig) -> None:
    """What no single field's rule can say: the fields against the data."""
    if not cfg.vocabulary:
        raise DgmError(f"{cfg.name or 'text-gan'} learns from captions, and this data has none (no vocabulary); "
                       "train on sprites")
    if len(cfg.data_shape) != 3:
        raise DgmError(f"{cfg.name or 'text-gan'} draws images [C, H, W]; this data has shape "
                       f"{tuple(cfg.data_shape)}: train on sprites")
