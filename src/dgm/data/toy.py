"""Toy 2-D Gaussian mixtures for mode coverage (the VEEGAN / PacGAN protocol, see dgm.evaluation.modes).

`ring8`: 8 Gaussians evenly spaced on the unit circle, sd 0.01.
`grid25`: 25 Gaussians at {-4, -2, 0, 2, 4}^2, sd 0.05.

Continuous data (`levels=0`): float32 points [N, 2], with the index of the mixture
component as the label (so conditional models can train on them too). Components are
equally likely. The splits (50,000 / 5,000 / 5,000) are drawn once from a fixed seed, so
every machine sees the same points. `TOY_MIXTURES[name] = (centres [K, 2], sd)`.
"""
from __future__ import annotations

import math

import torch

from dgm.data import Dataset, DatasetSpec, Split, register_dataset

SIZES = (50_000, 5_000, 5_000)


def _ring(k: int = 8, radius: float = 1.0) -> torch.Tensor:
    angle = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    return (radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)).float()


def _grid(values=(-4.0, -2.0, 0.0, 2.0, 4.0)) -> torch.Tensor:
    v = torch.tensor(values)
    return torch.cartesian_prod(v, v)


TOY_MIXTURES: dict[str, tuple[torch.Tensor, float]] = {
    "ring8": (_ring(), 0.01),
    "grid25": (_grid(), 0.05),
}


def sample_mixture(centres: torch.Tensor, sd: float, n: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n points from the equal-weight mixture of N(centre_k, sd^2 I): (x [n, 2] float32, component [n] int64)."""
    y = torch.randint(0, centres.shape[0], (n,), generator=generator)
    x = centres[y] + sd * torch.randn(n, centres.shape[1], generator=generator)
    return x.float(), y


def load_toy(name: str, seed: int = 0) -> Dataset:
    centres, sd = TOY_MIXTURES[name]
    x, y = sample_mixture(centres, sd, sum(SIZES), torch.Generator().manual_seed(seed))
    a, b = SIZES[0], SIZES[0] + SIZES[1]
    return Dataset(name, Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:]), levels=0,
                   num_classes=centres.shape[0], mixture=(centres, sd))


for _name, _description in (("ring8", "8 Gaussians on the unit circle, sd 0.01 (2-D points for mode coverage)"),
                            ("grid25", "25 Gaussians at {-4,-2,0,2,4}^2, sd 0.05 (2-D points for mode coverage)")):
    register_dataset(DatasetSpec(name=_name, loader=lambda data_dir, _n=_name: load_toy(_n), shape=(2,),
                                 num_classes=TOY_MIXTURES[_name][0].shape[0], levels=0, description=_description))
