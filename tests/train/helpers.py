"""Small datasets and models for trainer tests (also imported by the torchrun worker)."""
import torch
from torch import nn

from dgm.data import Dataset, Split


def tiny_dataset(n=96, shape=(1, 4, 4), levels=17, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    make = lambda m: Split(torch.randint(0, levels, (m, *shape), generator=g, dtype=torch.uint8),  # noqa: E731
                           torch.randint(0, 10, (m,), generator=g))
    return Dataset("tiny", make(n), make(32), make(32), levels=levels, num_classes=10)


class LinearAutoencoder(nn.Module):
    """A deterministic model (no sampling in its loss), so data-parallel steps can be compared exactly."""

    def __init__(self, dim=16, code=3):
        super().__init__()
        self.enc, self.dec = nn.Linear(dim, code), nn.Linear(code, dim)

    def loss(self, batch, step=None):
        x = batch[0].flatten(1)
        return {"loss": (self.dec(self.enc(x)) - x).pow(2).sum(1).mean()}
