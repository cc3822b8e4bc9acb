"""scikit-learn's bundled 8x8 handwritten digits: the embedded default dataset (no download)."""
from __future__ import annotations

import torch

from dgm.data import Dataset, DatasetSpec, register_dataset, split_by_permutation


def load_digits(data_dir=None) -> Dataset:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    # 1,797 images with integer grey levels 0..16.
    x = torch.from_numpy(bunch.images.astype("uint8")).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype("int64"))
    train, valid, test = split_by_permutation(x, y, fractions=(0.8, 0.1), seed=0)
    return Dataset("digits", train, valid, test, levels=17, num_classes=10)


register_dataset(
    DatasetSpec(
        name="digits",
        loader=load_digits,
        shape=(1, 8, 8),
        num_classes=10,
        levels=17,
        description="scikit-learn's 8x8 handwritten digits, 17 grey levels (embedded, no download)",
    )
)
