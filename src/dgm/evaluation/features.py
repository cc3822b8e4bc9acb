"""Fixed feature networks for sample-quality scores.

Inception-v3 features do not suit 8x8 or 28x28 digits and need a download, so dgm ships a
small CNN classifier per digit dataset family, trained once by
`bench/train_feature_nets.py` (seeded) and stored in `weights/` as safetensors:

    digits.safetensors  8x8 scikit-learn digits (17 grey levels)
    mnist.safetensors   28x28 MNIST; binarized MNIST reuses it (it was trained on
                        grey and Bernoulli-binarized images alike)
    sprites.safetensors 32x32 RGB sprites (`FactorNet`: a head per generating factor);
                        sprites64 reuses it on 2x2 means of its pixels

Its penultimate layer gives the features for FID, KID and precision/recall; its softmax
p(y|x) gives the Inception-style score (on sprites p(shape | x), 5 classes, so IS <= 5; the
other factor heads are read by `dgm.evaluation.factors`). Stacked MNIST (a digit per channel) is read by the
MNIST network on each channel (`PerChannel`): the features concatenated, p(y|x) over the
1,000 joint modes. Other datasets fall back to Inception-v3
(torchvision) when its weights are already in the torch hub cache; nothing is downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from dgm.errors import DgmError

WEIGHTS_DIR = Path(__file__).with_name("weights")
# dataset name -> shipped network (binarized MNIST is scored by MNIST's network)
SHIPPED = {"digits": "digits", "mnist": "mnist", "binarized-mnist": "mnist", "sprites": "sprites",
           "sprites64": "sprites"}
# dataset name -> (shipped network, channels): a digit in every channel, read by that network on each
PER_CHANNEL = {"stacked-mnist": ("mnist", 3)}
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"  # torchvision's IMAGENET1K_V1 weights


class DigitNet(nn.Module):
    """Blocks of conv3x3 -> ReLU -> maxpool2, then a ReLU feature layer and linear logits.

    Input: images [N, 1, H, W] in [0, 1]. `features(x)` is the penultimate layer [N, feature_dim];
    `forward(x)` gives class logits [N, num_classes].
    """

    def __init__(self, image_size: int, channels: tuple[int, ...], feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        self.config = {"image_size": image_size, "channels": list(channels), "feature_dim": feature_dim,
                       "num_classes": num_classes}
        layers: list[nn.Module] = []
        c_in, size = 1, image_size
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, size = c_out, size // 2
        self.conv = nn.Sequential(*layers)
        self.feature = nn.Sequential(nn.Flatten(), nn.Linear(c_in * size * size, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)
        self.num_features = feature_dim  # what torchmetrics reads from a custom feature extractor

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(self.conv((x - 0.5) / 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FactorNet(nn.Module):
    """A reader of a scene's generating factors (`dgm.data.sprites`): a conv trunk, a feature layer, a head per factor.

    Input: RGB images [N, 3, H, W] in [0, 1]; images larger than `image_size` (a square multiple of it) are
    average-pooled down first, so the net trained on 32x32 sprites reads 64x64 ones as 2x2 pixel means.
    The trunk reads six planes (`inputs`): R, G, B; a soft object mask min(1, 2 chroma), chroma =
    max(R,G,B) - min(R,G,B), which is 0 on sprites' grey backgrounds and 1 on every object colour (all have
    chroma >= 0.56), so the silhouette is one plane rather than a different contrast per colour and
    background; and the pixel-centre coordinates u, v in [-1, 1] (CoordConv, Liu et al. 2018), so that
    positions read out to a fraction of a pixel. Then DigitNet's blocks conv3x3 -> ReLU -> maxpool2 and
    Linear -> BatchNorm -> ReLU: `features(x)` [N, feature_dim], the features of FID, KID and precision/recall.
    (Without the BatchNorm the easy heads, background, colour and position, silenced about half the feature
    units for good within an epoch and the shape head stalled near 30 %, though it learns alone.)

    `head` gives the logits of the first classified factor (shape on sprites: the Inception-style score is
    over it) and `forward(x)` = head(features(x)); `outputs(x)` = `read(features(x))`: {factor: logits [N, K]}
    for every classified factor (`classes`: name -> K) and {factor: value [N]} for every regressed one
    (`regression`: name -> (low, high)), in the factor's own units, value = low + (high - low) u.
    """

    def __init__(self, image_size: int, channels: tuple[int, ...], classes: dict[str, int],
                 regression: dict[str, tuple[float, float]], feature_dim: int = 128):
        super().__init__()
        self.config = {"image_size": image_size, "channels": list(channels), "classes": dict(classes),
                       "regression": {k: list(v) for k, v in regression.items()}, "feature_dim": feature_dim}
        layers: list[nn.Module] = []
        c_in, size = 6, image_size
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, size = c_out, size // 2
        self.conv = nn.Sequential(*layers)
        self.feature = nn.Sequential(nn.Flatten(), nn.Linear(c_in * size * size, feature_dim),
                                     nn.BatchNorm1d(feature_dim), nn.ReLU())
        names = list(classes)
        self.head = nn.Linear(feature_dim, classes[names[0]])
        self.heads = nn.ModuleDict({k: nn.Linear(feature_dim, classes[k]) for k in names[1:]})
        self.regress = nn.Linear(feature_dim, len(regression))
        c = (torch.arange(image_size) + 0.5) / image_size * 2 - 1
        self.register_buffer("grid", torch.stack(torch.meshgrid(c, c, indexing="xy")), persistent=False)
        self.register_buffer("low", torch.tensor([lo for lo, _ in regression.values()]), persistent=False)
        self.register_buffer("span", torch.tensor([hi - lo for lo, hi in regression.values()]), persistent=False)
        self.num_features = feature_dim

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The planes the trunk reads, each in [-1, 1]: R, G, B, the soft object mask, u, v. [N, 6, S, S]"""
        size = self.config["image_size"]
        if x.shape[-2:] != (size, size):
            k = x.shape[-1] // size
            if x.shape[-2:] != (k * size, k * size):
                raise DgmError(f"this feature network reads {size}x{size} images or square multiples of that "
                               f"size, got {x.shape[-2]}x{x.shape[-1]}")
            x = nn.functional.avg_pool2d(x, k)
        mask = (2 * (x.amax(1, keepdim=True) - x.amin(1, keepdim=True))).clamp(max=1)
        return torch.cat([(x - 0.5) / 0.5, (mask - 0.5) / 0.5, self.grid.expand(x.shape[0], -1, -1, -1)], 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(self.conv(self.inputs(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def read(self, features: torch.Tensor, units: bool = True) -> dict[str, torch.Tensor]:
        """Every head on features [N, feature_dim]: logits per classified factor, values per regressed one
        (in the factor's units, or the read-out u over the factor's range, [0, 1] inside it, with units=False)."""
        out = {next(iter(self.config["classes"])): self.head(features)}
        out.update({k: head(features) for k, head in self.heads.items()})
        u = self.regress(features)
        u = self.low + self.span * u if units else u
        out.update({k: u[:, i] for i, k in enumerate(self.config["regression"])})
        return out

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.read(self.features(x))


ARCHITECTURES = {"DigitNet": DigitNet, "FactorNet": FactorNet}


def save_feature_net(net: DigitNet | FactorNet, path: Path, **info) -> None:
    """Weights as safetensors; the architecture and provenance (`info`) in its JSON metadata."""
    from dgm.io import save_tensors

    save_tensors(path, net.state_dict(), {"config": json.dumps(net.config),
                                          "architecture": json.dumps(type(net).__name__),
                                          **{k: json.dumps(v) for k, v in info.items()}})


def load_feature_net(name: str) -> tuple[nn.Module, dict]:
    """A shipped network by family name ("digits", "mnist", "sprites") and its metadata (test accuracy...)."""
    from dgm.io import load_tensors

    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise DgmError(f"no shipped feature network '{name}' at {path}; "
                       "train it with `python bench/train_feature_nets.py`")
    tensors, meta = load_tensors(path)
    info = {k: json.loads(v) for k, v in meta.items()}
    net = ARCHITECTURES[info.pop("architecture", "DigitNet")](**info.pop("config"))
    net.load_state_dict(tensors)
    return net.eval(), info


class PerChannel(nn.Module):
    """A one-channel DigitNet read on each of the C channels of images [N, C, H, W], each a digit.

    `features(x)` = [f(x_1), ..., f(x_C)] [N, C * feature_dim]; `head(features)` the joint log-probabilities
    log p(k | x) = sum_c log softmax(logits(x_c))_{k_c} [N, K**C] of the modes k = sum_c k_c K**(C-1-c)
    (100 d_R + 10 d_G + d_B for three digits); `forward(x)` = head(features(x)).
    """

    def __init__(self, net: DigitNet, channels: int):
        super().__init__()
        self.net, self.channels = net, channels
        self.num_features = channels * net.num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net.features(x[:, c : c + 1]) for c in range(self.channels)], 1)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        log_p = self.net.head(features.unflatten(1, (self.channels, -1))).log_softmax(-1)  # [N, C, K]
        joint = log_p[:, 0]
        for c in range(1, self.channels):  # outer sum, the later channel varying fastest
            joint = (joint[:, :, None] + log_p[:, c, None, :]).flatten(1)
        return joint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def channel_modes(net: DigitNet, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The mode of each image x [N, C, H, W] in [0, 1], k = sum_c K**(C-1-c) argmax net(x_c) (100 d_R + 10 d_G + d_B
    for three digits), int64 [N] on the CPU; `net` is a one-channel DigitNet with K classes."""
    device = next(net.parameters()).device
    place = net.head.out_features ** torch.arange(x.shape[1] - 1, -1, -1)
    modes = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device).float()
        digits = torch.stack([net(xb[:, c : c + 1]).argmax(1) for c in range(x.shape[1])], 1)
        modes.append((digits.cpu() * place).sum(1))
    return torch.cat(modes)


class InceptionFeatures(nn.Module):
    """Inception-v3 pool features (2048) and ImageNet logits for images of any size and channel count."""

    def __init__(self, weights: Path):
        super().__init__()
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))  # tensors only, no code
        self.head = net.fc
        net.fc = nn.Identity()
        self.net = net.eval()
        self.num_features = 2048
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def feature_net_for(dataset_name: str) -> tuple[nn.Module, str]:
    """The feature network that scores a dataset's images, and its name for reports.

    The shipped DigitNet for digits / MNIST / binarized MNIST, the FactorNet for sprites / sprites64,
    MNIST's on each channel for stacked MNIST;
    otherwise Inception-v3 if its weights are already on disk (torch hub cache), else a DgmError saying where
    to put them."""
    if dataset_name in PER_CHANNEL:
        name, channels = PER_CHANNEL[dataset_name]
        return PerChannel(load_feature_net(name)[0], channels).eval(), f"dgm-{name}-per-channel"
    if dataset_name in SHIPPED:
        net, _ = load_feature_net(SHIPPED[dataset_name])
        return net, f"dgm-{SHIPPED[dataset_name]}"
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not path.is_file():
        raise DgmError(f"dataset '{dataset_name}' has no shipped feature network and Inception-v3 weights are "
                       f"not on disk; put {INCEPTION_FILE} (from https://download.pytorch.org/models/) at {path}, "
                       "or choose metrics that need no features (--metrics diversity,memorisation,critic)")
    return InceptionFeatures(path).eval(), "inception-v3"
