"""Autoregressive pixel models (seed 001): PixelCNN, Gated PixelCNN, PixelCNN++, PixelRNN.

    p(x) = prod_i p(x_i | x_<i)             (chain rule over pixels in raster order, channels R -> G -> B)
    log p(x) = sum_i log p(x_i | x_<i)      exact, nats per image; training minimises -log p(x)

A network maps the image to the parameters of every conditional at once; its
convolutions are masked (or shifted) so that the output at pixel i sees only x_<i.
Sampling draws pixels one at a time. Every sampler draws one uniform per pixel and
channel, all up front, and inverts the conditional's CDF with it, so two samplers of the
same model give identical images from the same generator:
- `naive`: one full forward pass per pixel (per channel for colour), the reference;
- `cached` (PixelCNN, Gated PixelCNN): every layer keeps a cache of its input and computes
  only the new pixel's output (the vertical stack one row at a time), the idea of Fast
  PixelCNN++ (Ramachandran et al. 2017).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgm.config import choice, number
from dgm.distributions import BernoulliLikelihood, CategoricalLikelihood, DiscretizedLogisticMixture, Likelihood
from dgm.errors import DgmError
from dgm.models import ModelConfig, class_labels, register_model
from dgm.nn.masked import (MaskedConv2d, down_shift, gate, right_shift, start_all, step_sequential)

SAMPLERS = ("cached", "naive")


def pixel_likelihood(channels: int, levels: int) -> Likelihood:
    """Bernoulli for binary data, else a softmax over the `levels` values of each channel."""
    return BernoulliLikelihood(channels, levels) if levels == 2 else CategoricalLikelihood(channels, levels)


def output_head(channels: int, out_channels: int, data_channels: int) -> nn.Sequential:
    """ReLU -> 1x1 -> ReLU -> 1x1 to the likelihood's parameters, masked B so colours keep their order."""
    return nn.Sequential(nn.ReLU(), MaskedConv2d(channels, channels, (1, 1), "B", data_channels),
                         nn.ReLU(), MaskedConv2d(channels, out_channels, (1, 1), "B", data_channels))


def _check_widths(data_channels: int, **widths: int) -> None:
    for name, width in widths.items():
        if width < 1 or width % data_channels:
            raise DgmError(f"{name}={width} must be a positive multiple of the {data_channels} image channels "
                           "(each feature belongs to one colour)")


class AutoregressiveModel(nn.Module):
    """What every pixel model shares: the likelihood, log p(x), the loss, the samplers, completion.

    A subclass gives `net(x, y) -> [B, P, H, W]` (the parameters of every conditional) and,
    for cached sampling, `stepper(batch, y) -> f(x, i, j) -> [B, P]`."""

    # True when the output at pixel i sees earlier channels of pixel i (masked colour groups), so the
    # network runs again after each channel; False when the likelihood couples the channels itself.
    channel_masked: bool = True

    def __init__(self, cfg: ModelConfig, likelihood: Likelihood):
        super().__init__()
        if len(cfg.data_shape) != 3:
            raise DgmError(f"{cfg.name} models images [C, H, W], not data of shape {tuple(cfg.data_shape)}")
        if cfg.levels < 2:
            raise DgmError(f"{cfg.name} needs at least 2 pixel levels, got {cfg.levels}")
        self.cfg = cfg
        self.likelihood = likelihood

    def net(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def labels(self, y, n: int, device: torch.device) -> torch.Tensor | None:
        """Class labels [n] for a conditional model (an int or [n]; None cycles 0, 1, ..., K-1); else None."""
        return class_labels(y, n, self.cfg.num_classes, device) if getattr(self, "conditional", False) else None

    # --- the likelihood ----------------------------------------------------------------------
    def pixel_log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x_ij | x_<ij) of every pixel: [B, H, W] nats."""
        return self.likelihood.pixel_log_prob(self.net(x, y).to(x.dtype), x)  # the data's precision under bf16

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) = sum_i log p(x_i | x_<i): [B] nats. A conditional model given no labels returns the
        exact marginal log p(x) = log 1/K sum_y p(x | y) under uniform labels."""
        if getattr(self, "conditional", False) and y is None:
            k = self.cfg.num_classes
            per_label = torch.stack([self.log_prob(x, torch.full((x.shape[0],), c, device=x.device))
                                     for c in range(k)])
            return torch.logsumexp(per_label, dim=0) - math.log(k)
        return self.pixel_log_prob(x, y).flatten(1).sum(-1)

    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """-log p(x) averaged over the batch (nats per image), and the same in bits per dimension."""
        x, y = batch[0], batch[1] if len(batch) > 1 else None
        if getattr(self, "conditional", False):
            if y is None:
                raise DgmError(f"{self.cfg.name} is conditional and needs a dataset with class labels")
            log_px = self.log_prob(x, y)
        else:
            log_px = self.log_prob(x)
        nll = -log_px.mean()
        return {"loss": nll, "bits_per_dim": nll.detach() / (x[0].numel() * math.log(2))}

    # --- sampling ----------------------------------------------------------------------------
    def sample(self, n: int, y=None, generator: torch.Generator | None = None,
               method: str | None = None) -> torch.Tensor:
        """n images [n, C, H, W] in [0, 1] drawn pixel by pixel."""
        weight = next(self.parameters())
        x = torch.zeros(n, *self.cfg.data_shape, device=weight.device, dtype=weight.dtype)
        return self.generate(x, 0, y, generator, method)

    def complete(self, x: torch.Tensor, rows: int, y=None, generator: torch.Generator | None = None,
                 method: str | None = None) -> torch.Tensor:
        """Keep the first `rows` rows of the images x [n, C, H, W] and sample the rest from p(x_rest | x_kept)."""
        height = self.cfg.data_shape[1]
        if tuple(x.shape[1:]) != tuple(self.cfg.data_shape):
            raise DgmError(f"the model completes images of shape {tuple(self.cfg.data_shape)}, "
                           f"got {tuple(x.shape[1:])}")
        if not 0 <= rows <= height:
            raise DgmError(f"rows must lie in 0 .. {height}, got {rows}")
        kept = x.clone()
        kept[:, :, rows:] = 0
        return self.generate(kept, rows, y, generator, method)

    @torch.no_grad()
    def generate(self, x: torch.Tensor, first_row: int, y, generator: torch.Generator | None,
                 method: str | None, u: torch.Tensor | None = None) -> torch.Tensor:
        """Fill rows first_row.. of x in raster order; pixel (i, j) channel c is the inverse CDF of its
        conditional at the uniform u[:, c, i, j] (drawn from `generator` unless given, [n, C, H, W])."""
        method = method or getattr(self.cfg, "sampler", "naive")
        if method not in SAMPLERS:
            raise DgmError(f"unknown sampler '{method}'; choose {' or '.join(SAMPLERS)}")
        if method == "cached" and not callable(getattr(self, "stepper", None)):
            raise DgmError(f"{self.cfg.name} has no cached sampler; use method='naive'")
        was_training = self.training
        self.eval()
        n, channels, height, width = x.shape
        x = x.clone()
        y = self.labels(y, n, x.device)
        if u is None:
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if method == "cached":
            step = self.stepper(n, y)
        else:
            def step(x, i, j):
                return self.net(x, y)[:, :, i, j]
        for i in range(height):
            for j in range(width):
                out = None
                for c in range(channels):
                    if out is None or self.channel_masked:
                        if i < first_row and method == "naive":
                            break  # kept rows: the naive sampler has nothing to compute
                        out = step(x, i, j)  # the cached sampler reads kept pixels into its caches
                    if i >= first_row:
                        x[:, c, i, j] = self._draw(out, x[:, :, i, j], c, u[:, c, i, j])
        self.train(was_training)
        return x

    def _draw(self, out_pixel: torch.Tensor, x_pixel: torch.Tensor, c: int, u: torch.Tensor) -> torch.Tensor:
        """Inverse CDF: the first level whose cumulative probability exceeds u, as a value in [0, 1]."""
        cdf = self.likelihood.channel_probs(out_pixel, x_pixel, c).cumsum(-1)
        index = (cdf[:, :-1] < u[:, None] * cdf[:, -1:]).sum(-1)
        return index.to(x_pixel.dtype) / (self.cfg.levels - 1)


# --- PixelCNN ----------------------------------------------------------------------------------


@dataclass
class PixelCNNConfig(ModelConfig):
    channels: int = number(96, min=1)  # features of every layer (residual blocks narrow to half inside); 96 suits
    # RGB too
    n_blocks: int = number(7, min=0)  # residual blocks after the first layer
    first_kernel: int = number(7, min=1)  # the mask-A layer's k x k
    kernel: int = number(3, min=1)  # each residual block's masked k x k
    sampler: str = choice("cached", *SAMPLERS)


class ResidualBlock(nn.Module):
    """h + (ReLU, 1x1 c -> c/2, ReLU, k x k mask B, ReLU, 1x1 c/2 -> c)(h): PixelCNN's residual block."""

    def __init__(self, channels: int, kernel: int, data_channels: int):
        super().__init__()
        half = channels // 2
        self.layers = nn.Sequential(
            nn.ReLU(), MaskedConv2d(channels, half, (1, 1), "B", data_channels),
            nn.ReLU(), MaskedConv2d(half, half, (kernel // 2 + 1, kernel), "B", data_channels),
            nn.ReLU(), MaskedConv2d(half, channels, (1, 1), "B", data_channels))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.layers(h)

    def step(self, states, h: torch.Tensor, i: int, j: int) -> torch.Tensor:
        return h + step_sequential(self.layers, states, h, i, j)


@register_model("pixelcnn", PixelCNNConfig, family="autoregressive", seeds=("001", "004"),
                description="PixelCNN: mask A then mask-B residual blocks; Bernoulli or softmax per pixel; "
                            "cached sampling")
class PixelCNN(AutoregressiveModel):
    def __init__(self, cfg: PixelCNNConfig):
        c = cfg.data_shape[0]
        super().__init__(cfg, pixel_likelihood(c, cfg.levels))
        _check_widths(c, channels=cfg.channels, **{"channels/2": cfg.channels // 2})
        self.first = MaskedConv2d(c, cfg.channels, (cfg.first_kernel // 2 + 1, cfg.first_kernel), "A", c)
        self.blocks = nn.ModuleList(ResidualBlock(cfg.channels, cfg.kernel, c) for _ in range(cfg.n_blocks))
        self.head = output_head(cfg.channels, self.likelihood.out_channels, c)

    def net(self, x, y=None):
        h = self.first(2 * x - 1)
        for block in self.blocks:
            h = block(h)
        return self.head(h)

    def stepper(self, batch: int, y=None):
        """f(x, i, j) -> the outputs at (i, j), computing one pixel of every layer from their caches."""
        states = start_all(self, batch, *self.cfg.data_shape[1:])

        def step(x, i, j):
            h = self.first.at(states[self.first], 2 * x - 1, i, j)
            for block in self.blocks:
                h = block.step(states, h, i, j)
            return step_sequential(self.head, states, h, i, j)

        return step


# --- Gated PixelCNN ----------------------------------------------------------------------------


@dataclass
class GatedPixelCNNConfig(ModelConfig):
    channels: int = number(48, min=1)  # features per stack (the gates use twice as many); a multiple of 3 suits RGB
    n_layers: int = number(8, min=1)  # gated layers, the first with a first_kernel-wide receptive field
    first_kernel: int = number(7, min=1)
    kernel: int = number(3, min=1)
    conditional: bool = False  # class-conditional: p(x | y) with a per-class bias in every gate
    sampler: str = choice("cached", *SAMPLERS)


class GatedLayer(nn.Module):
    """One layer of the vertical and horizontal stacks (van den Oord et al. 2016, Conditional PixelCNN):

        v_pre = W_v * v + V_v y                         (rows <= i, all columns within reach)
        v'    = tanh(v_pre_a) * sigmoid(v_pre_b)
        h_pre = W_h * h + W_vh down_shift(v_pre) + V_h y   (row i, columns <= j; rows < i through v)
        h'    = h + W_o (tanh(h_pre_a) * sigmoid(h_pre_b))   (no residual in the first layer)

    The vertical stack never sees row i until it is shifted down, so together the stacks cover every
    pixel before (i, j): no blind spot."""

    def __init__(self, in_channels: int, channels: int, kernel: int, data_channels: int, first: bool,
                 num_classes: int | None):
        super().__init__()
        r = kernel // 2
        self.vertical = MaskedConv2d(in_channels, 2 * channels, (r + 1, kernel), None, data_channels, centre=(r, r))
        self.horizontal = MaskedConv2d(in_channels, 2 * channels, (1, r + 1), "A" if first else "B", data_channels,
                                       centre=(0, r))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = MaskedConv2d(channels, channels, (1, 1), "B", data_channels)
        self.residual = not first
        self.label_bias = nn.Embedding(num_classes, 4 * channels) if num_classes else None

    def biases(self, y: torch.Tensor | None) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(V_v y, V_h y), each [B, 2c, 1, 1], or zeros."""
        if self.label_bias is None:
            return 0.0, 0.0
        bias_v, bias_h = self.label_bias(y)[:, :, None, None].chunk(2, dim=1)
        return bias_v, bias_h

    def forward(self, v, h, y):
        bias_v, bias_h = self.biases(y)
        v_pre = self.vertical(v) + bias_v
        h_pre = self.horizontal(h) + self.v_to_h(down_shift(v_pre)) + bias_h
        h_new = self.h_out(gate(h_pre))
        return gate(v_pre), (h + h_new if self.residual else h_new)


@register_model("gated-pixelcnn", GatedPixelCNNConfig, family="autoregressive", seeds=("001", "004"),
                description="Gated PixelCNN: vertical + horizontal stacks (no blind spot), gated tanh*sigmoid "
                            "units, optional class conditioning; cached sampling")
class GatedPixelCNN(AutoregressiveModel):
    def __init__(self, cfg: GatedPixelCNNConfig):
        c = cfg.data_shape[0]
        super().__init__(cfg, pixel_likelihood(c, cfg.levels))
        _check_widths(c, channels=cfg.channels)
        if cfg.conditional and not cfg.num_classes:
            raise DgmError("conditional=true needs a dataset with class labels")
        classes = cfg.num_classes if cfg.conditional else None
        self.layers = nn.ModuleList(
            GatedLayer(c if n == 0 else cfg.channels, cfg.channels, cfg.first_kernel if n == 0 else cfg.kernel, c,
                       first=n == 0, num_classes=classes) for n in range(cfg.n_layers))
        self.head = output_head(cfg.channels, self.likelihood.out_channels, c)

    @property
    def conditional(self) -> bool:
        return self.cfg.conditional

    def net(self, x, y=None):
        v = h = 2 * x - 1
        for layer in self.layers:
            v, h = layer(v, h, y)
        return self.head(h)

    def stepper(self, batch: int, y=None):
        """f(x, i, j) -> the outputs at (i, j). At the start of row i the vertical stack computes row i - 1
        of every layer; each pixel then runs the horizontal stack at that pixel only."""
        height, width = self.cfg.data_shape[1:]
        states = start_all(self, batch, height, width)
        # conditioning biases as maps [B, 2c, H, W] (a class bias is the same at every pixel; PixelVAE's vary)
        biases = [tuple(b if isinstance(b, float) else b.expand(-1, -1, height, width) for b in layer.biases(y))
                  for layer in self.layers]
        above = [None] * len(self.layers)  # v_pre of the previous row per layer, [B, 2c, W]
        done = [-1]  # the last row the vertical stack has computed

        def vertical_row(x, i):
            v = 2 * x[:, :, i] - 1
            for n, layer in enumerate(self.layers):
                v_pre = layer.vertical.row(states[layer.vertical], v, i)
                if not isinstance(biases[n][0], float):
                    v_pre = v_pre + biases[n][0][:, :, i]
                above[n], v = v_pre, gate(v_pre)
            done[0] = i

        def step(x, i, j):
            if i > 0 and done[0] < i - 1:
                vertical_row(x, i - 1)
            h = image = 2 * x - 1
            for n, layer in enumerate(self.layers):
                v_above = above[n][:, :, j] if i > 0 else x.new_zeros(batch, layer.v_to_h.in_channels)
                h_conv = (layer.horizontal.at(states[layer.horizontal], image, i, j) if n == 0
                          else layer.horizontal.step(states[layer.horizontal], h, i, j))
                bias_h = biases[n][1] if isinstance(biases[n][1], float) else biases[n][1][:, :, i, j]
                h_pre = h_conv + F.linear(v_above, layer.v_to_h.weight[:, :, 0, 0], layer.v_to_h.bias) + bias_h
                h_new = layer.h_out.step(states[layer.h_out], gate(h_pre), i, j)
                h = h + h_new if layer.residual else h_new
            return step_sequential(self.head, states, h, i, j)

        return step


# --- PixelCNN++ --------------------------------------------------------------------------------


@dataclass
class PixelCNNPPConfig(ModelConfig):
    filters: int = number(64, min=1)  # features of every stream
    n_resnet: int = number(1, min=1)  # gated resnet blocks per resolution (5 in the paper)
    n_mix: int = number(5, min=1)  # logistic mixture components (10 in the paper)
    n_scales: int = number(3, min=1)  # resolutions: full, 1/2, 1/4 (each halving needs an even size)


class ShiftedConv(nn.Module):
    """PixelCNN++'s causal convolutions: `down` (kernel kh x kw, output row i sees input rows <= i,
    centred columns) or `down_right` (output (i, j) sees rows <= i and columns <= j); stride 2 halves,
    `transpose` doubles the size."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int], direction: str,
                 stride: int = 1, transpose: bool = False):
        super().__init__()
        kh, kw = kernel
        self.transpose = transpose
        if transpose:  # output 2q + k comes from input q: keep the first rows, and for `down` centre the columns
            self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel, stride=2, output_padding=1)
            self.crop_left = (kw - 1) // 2 if direction == "down" else 0
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride)
            left = (kw - 1) // 2 if direction == "down" else kw - 1
            self.pad = (left, kw - 1 - left, kh - 1, 0)

    def forward(self, x):
        if not self.transpose:
            return self.conv(F.pad(x, self.pad))
        out = self.conv(x)  # [2H + kh - 1, 2W + kw - 1]: crop back to [2H, 2W] keeping the causal part
        h, w = 2 * x.shape[-2], 2 * x.shape[-1]
        return out[:, :, :h, self.crop_left : self.crop_left + w]


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(torch.cat([x, -x], dim=1))


class GatedResnet(nn.Module):
    """x + a * sigmoid(b), [a, b] = conv(concat_elu(conv(concat_elu(x)) + nin(concat_elu(skip))))."""

    def __init__(self, filters: int, direction: str, skip_channels: int = 0):
        super().__init__()
        kernel = (2, 3) if direction == "down" else (2, 2)
        self.conv_in = ShiftedConv(2 * filters, filters, kernel, direction)
        self.skip = nn.Conv2d(2 * skip_channels, filters, 1) if skip_channels else None
        self.conv_out = ShiftedConv(2 * filters, 2 * filters, kernel, direction)

    def forward(self, x, skip=None):
        c = self.conv_in(concat_elu(x))
        if skip is not None:
            c = c + self.skip(concat_elu(skip))
        a, b = self.conv_out(concat_elu(c)).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


@register_model("pixelcnn++", PixelCNNPPConfig, family="autoregressive", seeds=("001",),
                description="PixelCNN++: discretized logistic mixture with RGB coupling, down/right-shifted "
                            "streams, down/up-sampling with shortcut connections")
class PixelCNNPP(AutoregressiveModel):
    """Salimans et al. 2017, compact: the up pass keeps every stream's output, the down pass consumes them
    as shortcut connections (u from u, ul from [u, ul])."""

    channel_masked = False  # the likelihood couples the colours of a pixel; the network never sees pixel i

    def __init__(self, cfg: PixelCNNPPConfig):
        c, height, width = cfg.data_shape
        super().__init__(cfg, DiscretizedLogisticMixture(c, cfg.levels, cfg.n_mix))
        if height % 2 ** (cfg.n_scales - 1) or width % 2 ** (cfg.n_scales - 1):
            raise DgmError(f"n_scales={cfg.n_scales} halves the image {cfg.n_scales - 1} times, so its size "
                           f"{height}x{width} must divide by {2 ** (cfg.n_scales - 1)}; lower n_scales")
        f, r, s = cfg.filters, cfg.n_resnet, cfg.n_scales
        self.u_first = ShiftedConv(c + 1, f, (2, 3), "down")
        self.ul_first_down = ShiftedConv(c + 1, f, (1, 3), "down")
        self.ul_first_right = ShiftedConv(c + 1, f, (2, 1), "down_right")
        self.up_u = nn.ModuleList(GatedResnet(f, "down") for _ in range(r * s))
        self.up_ul = nn.ModuleList(GatedResnet(f, "down_right", f) for _ in range(r * s))
        self.down_u_stride = nn.ModuleList(ShiftedConv(f, f, (2, 3), "down", stride=2) for _ in range(s - 1))
        self.down_ul_stride = nn.ModuleList(ShiftedConv(f, f, (2, 2), "down_right", stride=2) for _ in range(s - 1))
        # the down pass: n_resnet blocks at the coarsest scale, n_resnet + 1 at the others (one per stored output)
        counts = [r] + [r + 1] * (s - 1)
        self.dn_u = nn.ModuleList(GatedResnet(f, "down", f) for _ in range(sum(counts)))
        self.dn_ul = nn.ModuleList(GatedResnet(f, "down_right", 2 * f) for _ in range(sum(counts)))
        self.up_u_deconv = nn.ModuleList(ShiftedConv(f, f, (2, 3), "down", transpose=True) for _ in range(s - 1))
        self.up_ul_deconv = nn.ModuleList(ShiftedConv(f, f, (2, 2), "down_right", transpose=True)
                                          for _ in range(s - 1))
        self.counts = counts
        self.out = nn.Conv2d(f, self.likelihood.out_channels, 1)

    def net(self, x, y=None):
        cfg = self.cfg
        x = 2 * x - 1
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # a channel of ones tells the padding apart
        u = down_shift(self.u_first(x))
        ul = down_shift(self.ul_first_down(x)) + right_shift(self.ul_first_right(x))
        us, uls = [u], [ul]
        for scale in range(cfg.n_scales):
            for n in range(cfg.n_resnet):
                k = scale * cfg.n_resnet + n
                us.append(self.up_u[k](us[-1]))
                uls.append(self.up_ul[k](uls[-1], us[-1]))
            if scale < cfg.n_scales - 1:
                us.append(self.down_u_stride[scale](us[-1]))
                uls.append(self.down_ul_stride[scale](uls[-1]))
        u, ul = us.pop(), uls.pop()
        k = 0
        for scale, count in enumerate(self.counts):
            if scale > 0:
                u, ul = self.up_u_deconv[scale - 1](u), self.up_ul_deconv[scale - 1](ul)
            for _ in range(count):
                u = self.dn_u[k](u, us.pop())
                ul = self.dn_ul[k](ul, torch.cat([u, uls.pop()], dim=1))
                k += 1
        return self.out(F.elu(ul))


# --- PixelRNN ----------------------------------------------------------------------------------


@dataclass
class PixelRNNConfig(ModelConfig):
    variant: str = choice("row", "row", "diagonal")  # Row LSTM | Diagonal BiLSTM
    channels: int = number(24, min=1)  # LSTM state size (the gates use four times as many)
    n_layers: int = number(2, min=1)  # LSTM layers, each with a residual connection (7 in the paper)
    first_kernel: int = number(7, min=1)  # the mask-A convolution before the LSTMs


def lstm_update(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[o, f, i, g] = gates; c' = sigmoid(f) c + sigmoid(i) tanh(g); h' = sigmoid(o) tanh(c')."""
    o, f, i, g = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class RowLSTM(nn.Module):
    """Row by row: gates of row i = K_is * x (1 x 3, mask B) + K_ss * h_{i-1} (1-D conv over the row above);
    a triangular receptive field above the pixel. One Python step per row, the whole row at once."""

    def __init__(self, channels: int, data_channels: int):
        super().__init__()
        self.input_to_state = MaskedConv2d(channels, 4 * channels, (1, 3), "B", data_channels, centre=(0, 1))
        self.state_to_state = nn.Conv1d(channels, 4 * channels, 3, padding=1)

    def forward(self, x):
        h = c = x.new_zeros(x.shape[0], x.shape[1], x.shape[3])
        rows = []
        gates_in = self.input_to_state(x).permute(2, 0, 1, 3).contiguous()  # [H, B, 4c, W]: contiguous rows
        for gates_row in gates_in.unbind(0):  # unbind's backward is one stack, not a zero-filled map per row
            h, c = lstm_update(gates_row + self.state_to_state(h), c)
            rows.append(h)
        return torch.stack(rows, dim=2)


def skew(x: torch.Tensor) -> torch.Tensor:
    """[..., H, W] -> [..., H, W + H - 1], row i moved i columns right: diagonals become columns.

    Without a loop: rows padded to W + H and read back as rows of W + H - 1, so that (i, j), at
    i (W + H) + j in the flat map, lands at row i, column i + j."""
    *lead, h, w = x.shape
    flat = F.pad(x, (0, h)).reshape(*lead, h * (w + h))
    return flat[..., : h * (w + h - 1)].reshape(*lead, h, w + h - 1)


def unskew(x: torch.Tensor, width: int) -> torch.Tensor:
    """The inverse of `skew`: [..., H, W + H - 1] -> [..., H, W], row i read from column i on."""
    *lead, h, skewed = x.shape
    flat = F.pad(x.reshape(*lead, h * skewed), (0, h))
    return flat.reshape(*lead, h, skewed + 1)[..., :width]


class DiagonalLSTM(nn.Module):
    """One direction of the Diagonal BiLSTM: on the skewed map, column by column; state (i, j) from
    (i, j - 1) and (i - 1, j) through a 2 x 1 convolution, input through a 1 x 1 mask-B convolution.
    One Python step per column of the skewed map (a diagonal of the image), the whole column at once."""

    def __init__(self, channels: int, data_channels: int):
        super().__init__()
        self.input_to_state = MaskedConv2d(channels, 4 * channels, (1, 1), "B", data_channels)
        self.state_to_state = nn.Conv1d(channels, 4 * channels, 2)

    def forward(self, x):
        h = c = x.new_zeros(x.shape[0], x.shape[1], x.shape[2])
        columns = []
        gates_in = skew(self.input_to_state(x)).permute(3, 0, 1, 2).contiguous()  # [W + H - 1, B, 4c, H]
        for gates_column in gates_in.unbind(0):  # unbind's backward is one stack, not a zero-filled map per column
            h, c = lstm_update(gates_column + self.state_to_state(F.pad(h, (1, 0))), c)
            columns.append(h)
        return unskew(torch.stack(columns, dim=-1), x.shape[-1])


class DiagonalBiLSTM(nn.Module):
    """Left-to-right plus right-to-left (on the mirrored image), the latter shifted down one row so
    that no pixel sees its own row's future."""

    def __init__(self, channels: int, data_channels: int):
        super().__init__()
        self.forward_lstm = DiagonalLSTM(channels, data_channels)
        self.backward_lstm = DiagonalLSTM(channels, data_channels)

    def forward(self, x):
        return self.forward_lstm(x) + down_shift(self.backward_lstm(x.flip(-1)).flip(-1))


@register_model("pixelrnn", PixelRNNConfig, family="autoregressive", seeds=("001",),
                description="PixelRNN: Row LSTM or Diagonal BiLSTM (skewed) layers with residual connections")
class PixelRNN(AutoregressiveModel):
    def __init__(self, cfg: PixelRNNConfig):
        c = cfg.data_shape[0]
        super().__init__(cfg, pixel_likelihood(c, cfg.levels))
        lstms = {"row": RowLSTM, "diagonal": DiagonalBiLSTM}
        _check_widths(c, channels=cfg.channels)
        self.first = MaskedConv2d(c, cfg.channels, (cfg.first_kernel // 2 + 1, cfg.first_kernel), "A", c)
        self.lstms = nn.ModuleList(lstms[cfg.variant](cfg.channels, c) for _ in range(cfg.n_layers))
        self.residuals = nn.ModuleList(MaskedConv2d(cfg.channels, cfg.channels, (1, 1), "B", c)
                                       for _ in range(cfg.n_layers))
        self.head = output_head(cfg.channels, self.likelihood.out_channels, c)

    def net(self, x, y=None):
        h = self.first(2 * x - 1)
        for lstm, residual in zip(self.lstms, self.residuals):
            h = h + residual(lstm(h))
        return self.head(h)
