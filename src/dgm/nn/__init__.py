"""Shared building blocks: MLPs and convolutional encoders/decoders sized from the data shape."""
from __future__ import annotations

import math

import torch
from torch import nn

from dgm.errors import DgmError

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise DgmError(f"unknown activation '{name}'; choose {', '.join(ACTIVATIONS)} (or gated for MLPs)")
    return ACTIVATIONS[name]()


class GatedLinear(nn.Module):
    """h = (W x + b) * sigmoid(V x + c): the gated dense layer of the VampPrior paper's MLPs."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.linear(x).chunk(2, dim=-1)
        return h * torch.sigmoid(gate)


class MLP(nn.Sequential):
    """in_dim -> hidden... -> out_dim with an activation between layers (none after the last);
    act="gated" makes every hidden layer a GatedLinear; batch_norm puts BatchNorm1d before each
    hidden activation."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int, act: str = "relu", batch_norm: bool = False):
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            if act == "gated":
                layers.append(GatedLinear(a, b))
            else:
                layers += [nn.Linear(a, b, bias=not batch_norm), *([nn.BatchNorm1d(b)] if batch_norm else []),
                           activation(act)]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


def _conv_plan(size: int, channels: list[int]) -> list[int]:
    """Spatial sizes after each stride-2 conv (kernel 4, padding 1 halves even sizes; odd sizes use k=3)."""
    sizes = [size]
    for _ in channels:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


class ConvEncoder(nn.Module):
    """[*, C, H, W] -> [*, out_dim]: stride-2 convolutions, then a linear layer."""

    def __init__(self, shape: tuple[int, int, int], channels: list[int], out_dim: int, act: str = "relu"):
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, kernel_size=3, stride=2, padding=1), activation(act)]
            c = c_out
        self.convs = nn.Sequential(*layers)
        hs, ws = _conv_plan(h, channels)[-1], _conv_plan(w, channels)[-1]
        self.fc = nn.Linear(c * hs * ws, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        h = self.convs(x.reshape(-1, *x.shape[-3:]))
        return self.fc(h.flatten(1)).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """[*, in_dim] -> [*, out_channels, H, W]: a linear layer, then stride-2 transposed convolutions."""

    def __init__(self, in_dim: int, shape: tuple[int, int, int], channels: list[int], out_channels: int,
                 act: str = "relu"):
        super().__init__()
        _, h, w = shape
        self.h_sizes, self.w_sizes = _conv_plan(h, channels)[::-1], _conv_plan(w, channels)[::-1]
        rev = channels[::-1]
        self.start = (rev[0], self.h_sizes[0], self.w_sizes[0])
        self.fc = nn.Sequential(nn.Linear(in_dim, rev[0] * self.h_sizes[0] * self.w_sizes[0]), activation(act))
        layers: list[nn.Module] = []
        for i, c_in in enumerate(rev):
            c_out = rev[i + 1] if i + 1 < len(rev) else rev[-1]
            # output_padding makes the size exactly double or double minus one, as the encoder had it
            oph = self.h_sizes[i + 1] - (2 * self.h_sizes[i] - 1)
            opw = self.w_sizes[i + 1] - (2 * self.w_sizes[i] - 1)
            layers += [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=(oph, opw)),
                       activation(act)]
        layers.append(nn.Conv2d(rev[-1], out_channels, kernel_size=3, padding=1))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        out = self.deconvs(h)
        return out.reshape(*lead, *out.shape[1:])


@torch.no_grad()
def ema_update(average: nn.Module, live: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * live for every parameter (an exponential moving average
    of the weights, as StudioGAN keeps of a generator); buffers such as batch-norm statistics are copied."""
    for a, p in zip(average.parameters(), live.parameters()):
        a.lerp_(p, 1 - decay)
    for a, b in zip(average.buffers(), live.buffers()):
        a.copy_(b)
