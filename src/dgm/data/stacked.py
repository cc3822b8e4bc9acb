"""`stacked-mnist`: three independently drawn MNIST digits as the R, G, B channels, 1,000 modes.

The "Color MNIST" of Rosca et al., the mode-coverage benchmark of Metz et al. 2017 (unrolled
GANs), VEEGAN and PacGAN. Image i of a split is uint8 [3, 28, 28]: channel c is MNIST image
idx[i, c] of the MNIST split of the same name, drawn uniformly with replacement
(`source_indices`): train 60,000 images from MNIST's 50,000 training images, valid 10,000 from
its 10,000 validation images, test 10,000 from its 10,000 test images. Label
y = 100 d_R + 10 d_G + d_B, the three digits' labels (1,000 classes). The draws come from the
fixed SEED (SEED + 0, 1, 2 for train, valid, test), so every machine builds the same images;
building takes about a second once MNIST is read.

`Dataset.channel_modes = "mnist"`: a model's samples are sorted into the 1,000 modes by the
shipped MNIST network read on each channel (`dgm.evaluation.features.channel_modes`), the
mode metrics of `dgm.evaluation.modes`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dgm.data import Dataset, DatasetSpec, Split, register_dataset
from dgm.data.sources import MNIST_RESOURCES, files_present, load_mnist

SEED = 2017
SIZES = {"train": 60_000, "valid": 10_000, "test": 10_000}
CHANNELS = 3


def source_indices(split: str, n_source: int) -> torch.Tensor:
    """int64 [SIZES[split], 3]: the indices into MNIST's split of the digits in each image's R, G, B channel."""
    generator = torch.Generator().manual_seed(SEED + list(SIZES).index(split))
    return torch.randint(n_source, (SIZES[split], CHANNELS), generator=generator)


def stack_digits(source: Split, idx: torch.Tensor) -> Split:
    """Images [N, 3, H, W] with channel c = source image idx[:, c]; y = 100 y_R + 10 y_G + y_B."""
    place = 10 ** torch.arange(CHANNELS - 1, -1, -1)  # 100, 10, 1
    return Split(source.x[:, 0][idx], (source.y[idx] * place).sum(1))


def load_stacked_mnist(data_dir: str | Path | None = None) -> Dataset:
    """Stacked MNIST (see the module docstring), built from `load_mnist(data_dir)`."""
    mnist = load_mnist(data_dir)
    splits = [stack_digits(mnist.split(s), source_indices(s, len(mnist.split(s)))) for s in SIZES]
    return Dataset("stacked-mnist", *splits, levels=256, num_classes=10 ** CHANNELS, class_names=None,
                   channel_modes="mnist")


register_dataset(
    DatasetSpec(
        name="stacked-mnist",
        loader=load_stacked_mnist,
        shape=(CHANNELS, 28, 28),
        num_classes=10 ** CHANNELS,
        levels=256,
        description="Stacked MNIST: 3 independent MNIST digits as RGB channels, 1,000 modes; "
                    "60k/10k/10k drawn (seeded) from MNIST's train/valid/test",
        available=lambda data_dir: files_present(MNIST_RESOURCES, data_dir),
    )
)
