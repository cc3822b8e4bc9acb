"""Image-to-image networks of pix2pix (Isola, Zhu, Zhou and Efros 2017), shared by the translation models.

U-Net generator: an encoder of stride-2 4 x 4 convolutions and a mirror decoder of stride-2 4 x 4 transposed
convolutions, joined by skip connections that concatenate each encoder level to the decoder level of the same
resolution:

    e_0 = x,  e_i = norm(conv(lrelu(e_{i-1})))                   i = 1 .. d (lrelu: slope 0.2, none before e_1;
                                                                  no norm on e_1 nor on the bottleneck e_d)
    u_d = dropout(norm(convT(relu(e_d)))),  u_i = dropout(norm(convT(relu([u_{i+1}, e_i]))))   i = d-1 .. 2
    output = convT(relu([u_2, e_1]))                              raw: no norm, dropout nor final activation

Widths are base * 2^(i-1), at most max_channels (the paper's C64-C128-C256-C512-C512-...); dropout on the three
decoder layers nearest the bottleneck, as the paper's decoder CD512-CD1024-CD1024-C1024-... (never on the
output layer). A model maps the raw output to its data range (a sigmoid for images in [0, 1]).

PatchGAN discriminator: C64-C128-C256 at stride 2, C512 at stride 1, then a stride-1 convolution to one logit
per patch; every convolution 4 x 4 with padding 1 and LeakyReLU 0.2, no norm on the first. Each logit judges
one patch of the input, of side `patch_receptive_field(n_layers)`: 70 for the paper's n_layers = 3.
"""
from __future__ import annotations

import torch
from torch import nn

from dgm.errors import DgmError

NORMS = ("batch", "instance", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm2d, InstanceNorm2d (no affine parameters, as pix2pix's code) or nothing."""
    if kind not in NORMS:
        raise DgmError(f"unknown norm '{kind}'; choose {', '.join(NORMS)}")
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    return nn.Identity()


def unet_depth(h: int, w: int) -> int:
    """Stride-2 levels of a U-Net on h x w images: halve while both sides are even and above 1
    (32 x 32 -> 5 levels down to 1 x 1, 28 x 28 -> 2 down to 7 x 7, 64 x 64 -> 6; odd sides -> 0)."""
    depth = 0
    while h % 2 == 0 and w % 2 == 0 and h > 1 and w > 1:
        h, w, depth = h // 2, w // 2, depth + 1
    return depth


class UNet(nn.Module):
    """[B, in_channels, H, W] -> [B, out_channels, H, W] raw outputs; the depth is `unet_depth(H, W)`, so the
    net is built for one image size (`size` = (H, W), a keyword) and keeps it exactly. With depth 0 (an odd
    side) there is nothing to halve and the net is one 3 x 3 convolution (padding 1): a local map without
    encoder or skips."""

    def __init__(self, in_channels: int, out_channels: int, base: int = 64, max_channels: int = 512,
                 dropout: float = 0.5, norm: str = "batch", *, size: tuple[int, int]):
        super().__init__()
        self.depth = unet_depth(*size)
        if self.depth == 0:
            self.encoder = nn.ModuleList()
            self.decoder = nn.ModuleList([nn.Conv2d(in_channels, out_channels, 3, padding=1)])
            return
        d = self.depth
        widths = [min(base * 2 ** i, max_channels) for i in range(d)]  # channels of e_1 .. e_d
        self.encoder = nn.ModuleList()
        for i, c_out in enumerate(widths):  # e_{i+1}
            c_in = in_channels if i == 0 else widths[i - 1]
            normed = 0 < i < d - 1
            self.encoder.append(nn.Sequential(
                *([nn.LeakyReLU(0.2)] if i > 0 else []),
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=not normed or norm != "batch"),
                *([norm_layer(norm, c_out)] if normed else [])))
        self.decoder = nn.ModuleList()  # u_d, u_{d-1}, ..., u_1: innermost first
        for i in reversed(range(d)):  # u_{i+1}
            c_in = widths[i] * (1 if i == d - 1 else 2)
            outermost = i == 0
            c_out = out_channels if outermost else widths[i - 1]
            layers: list[nn.Module] = [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1,
                                                                     bias=outermost or norm != "batch")]
            if not outermost:
                layers.append(norm_layer(norm, c_out))
                if i >= d - 3 and dropout > 0:  # the three decoder layers nearest the bottleneck
                    layers.append(nn.Dropout(dropout))
            self.decoder.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for layer in self.encoder:
            h = layer(h)
            skips.append(h)
        for j, layer in enumerate(self.decoder):
            if j > 0:
                h = torch.cat([h, skips[-1 - j]], 1)
            h = layer(h)
        return h


class PatchDiscriminator(nn.Sequential):
    """[B, in_channels, H, W] -> [B, 1, h', w'] logits, one per patch of side `patch_receptive_field(n_layers)`:
    n_layers stride-2 convs (widths base, 2 base, ... at most 8 base; no norm on the first), a stride-1 conv,
    a stride-1 conv to 1 channel; all 4 x 4, padding 1, LeakyReLU 0.2. Each stride-1 conv takes one pixel off
    a side, so the input needs sides of at least 2^n_layers * 3 for a 1 x 1 output."""

    def __init__(self, in_channels: int, base: int = 64, n_layers: int = 3, norm: str = "batch"):
        if n_layers < 1:
            raise DgmError(f"a PatchGAN needs n_layers >= 1 stride-2 convolutions, got {n_layers}")
        norm_layer(norm, 1)  # the norm's name is checked before anything is built
        widths = [base * min(2 ** i, 8) for i in range(n_layers + 1)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(widths[i - 1], widths[i], 4, stride=stride, padding=1, bias=norm != "batch"),
                       norm_layer(norm, widths[i]), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        super().__init__(*layers)


def patch_receptive_field(n_layers: int) -> int:
    """The side in pixels of the input patch one PatchGAN logit sees: r = 4 for the last conv, r + 3 for the
    stride-1 conv before it, then 2 r + 2 for each stride-2 conv (kernel 4): r = 9 * 2^n_layers - 2
    (1 -> 16, 2 -> 34, 3 -> 70, the paper's 70 x 70 PatchGAN)."""
    if n_layers < 1:
        raise DgmError(f"a PatchGAN needs n_layers >= 1 stride-2 convolutions, got {n_layers}")
    return 9 * 2 ** n_layers - 2
