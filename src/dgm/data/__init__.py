"""Dataset registry: every dataset lives in memory as uint8 tensors with fixed splits.

Batches are indexed straight from the tensors and converted to float per batch
(`Dataset.to_float`), so there is no per-sample Python work in a training loop.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from dgm.errors import DgmError


@dataclass
class Split:
    x: torch.Tensor  # uint8 [N, C, H, W] with values 0 .. levels-1; float32 [N, D] for continuous data
    y: torch.Tensor | None = None  # int64 [N] class labels, if the dataset has them
    # Extras of datasets with known generating factors (`sprites`, see dgm.data.sprites); None elsewhere.
    factors: torch.Tensor | None = None  # float32 [N, F], columns as in Dataset.factors
    masks: torch.Tensor | None = None  # bool [N, H, W] foreground masks
    boxes: torch.Tensor | None = None  # int64 [N, 4] (x0, y0, x1, y1): pixel edges, half-open, tight on the mask
    captions: list[str] | None = None  # one short sentence per image, generated from the factors
    targets: torch.Tensor | None = None  # uint8 [N, C, H, W] paired target images (e.g. colour for a grey x)

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class Factor:
    """One generating factor: discrete (`values` names the integer codes 0..K-1) or continuous in [low, high]."""

    name: str
    values: tuple[str, ...] | None = None
    low: float = 0.0
    high: float = 1.0

    @property
    def discrete(self) -> bool:
        return self.values is not None


@dataclass(frozen=True)
class Renderer:
    """A procedural dataset's generator (`sprites`): fresh scenes on demand, for a model that trains on batches
    the stored splits do not hold (DC-IGN's batches with one factor varying)."""

    sample_factors: Callable[[int, torch.Generator | None], torch.Tensor]  # (n, generator) -> float32 [n, F]
    render: Callable[[torch.Tensor], torch.Tensor]  # factors [n, F] -> uint8 images [n, C, H, W], as the split's x


def attribute_vectors(factors: torch.Tensor, specs: tuple[Factor, ...]) -> torch.Tensor:
    """Attribute vectors of factor values [N, F] (Attribute2Image's y): each discrete factor one-hot, each
    continuous one scaled to [0, 1] by its range; float32 [N, sum of `factor_sizes(specs)`]."""
    parts = []
    for i, spec in enumerate(specs):
        v = factors[:, i]
        if spec.discrete:
            parts.append(torch.nn.functional.one_hot(v.long(), len(spec.values)).float())
        else:
            parts.append(((v - spec.low) / (spec.high - spec.low)).float()[:, None])
    return torch.cat(parts, 1)


def factor_sizes(specs: tuple[Factor, ...] | None) -> tuple[int, ...]:
    """Each factor's entries in an attribute vector: its number of values when discrete, 1 when continuous."""
    return tuple(len(f.values) if f.discrete else 1 for f in specs or ())


def caption_words(caption: str) -> list[str]:
    """The words of a caption: lower case, split on whitespace, punctuation dropped."""
    return [w for w in (t.strip(".,;:!?\"'()").lower() for t in caption.split()) if w]


def caption_vocabulary(captions: list[str]) -> tuple[str, ...]:
    """The sorted set of words of some captions (`caption_words`)."""
    return tuple(sorted({w for c in captions for w in caption_words(c)}))


def bag_of_words(captions: list[str], vocabulary: tuple[str, ...]) -> torch.Tensor:
    """Each caption as the frequencies of its words over `vocabulary`: float32 [N, V], rows summing to 1.

    A caption with no words, or a word outside the vocabulary, is refused in one sentence."""
    index = {w: i for i, w in enumerate(vocabulary)}
    unique = list(dict.fromkeys(captions))  # each sentence once (sprites' 50,000 captions hold about 5,000)
    out = torch.zeros(len(unique), len(vocabulary))
    for row, caption in enumerate(unique):
        words = caption_words(caption)
        if not words:
            raise DgmError("the caption is empty; write one such as 'a big green square at the top on black'")
        unknown = [w for w in words if w not in index]
        if unknown:
            raise DgmError(f"the word '{unknown[0]}' is not in this model's vocabulary; use the words of the "
                           f"training captions: {', '.join(vocabulary)}")
        for w in words:
            out[row, index[w]] += 1.0 / len(words)
    if len(unique) == len(captions):
        return out
    row_of = {caption: i for i, caption in enumerate(unique)}
    return out[torch.tensor([row_of[c] for c in captions], dtype=torch.long)]


@dataclass
class Dataset:
    """A dataset with fixed train / valid / test splits held as uint8 tensors.

    Pixel values are integers 0 .. levels-1: `levels` is 2 for binary data, 17 for
    scikit-learn's digits, 256 for 8-bit images. `to_float` maps them to [0, 1]; with
    `binarize="dynamic"` every call draws a fresh Bernoulli binarization. `levels=0` marks
    continuous data (float32 points such as the toy 2-D mixtures), passed through unchanged.
    """

    name: str
    train: Split
    valid: Split
    test: Split
    levels: int
    num_classes: int | None = None
    binarize: str = "none"  # "none" | "dynamic"
    class_names: list[str] | None = None
    mixture: tuple[torch.Tensor, float] | None = None  # toy 2-D data: (mode centres [K, D], sd)
    factors: tuple[Factor, ...] | None = None  # what the columns of Split.factors are, if the data has them
    channel_modes: str | None = None  # each channel is a digit that this shipped feature network reads
    # (stacked-mnist: "mnist"); None elsewhere
    renderer: Renderer | None = None  # procedural data: draws fresh factors and their images (sprites)

    @property
    def factor_names(self) -> list[str]:
        return [f.name for f in self.factors or ()]

    def attributes(self, split: Split) -> torch.Tensor:
        """The attribute vectors of a split's factors (`attribute_vectors`): float32 [N, A]."""
        if self.factors is None or split.factors is None:
            raise DgmError(f"dataset '{self.name}' has no known factors, so it has no attribute vectors; use "
                           "sprites (or sprites64)")
        return attribute_vectors(split.factors, self.factors)

    @property
    def vocabulary(self) -> tuple[str, ...] | None:
        """The words of the training captions (sorted), None for data without captions."""
        return caption_vocabulary(self.train.captions) if self.train.captions else None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def model_levels(self) -> int:
        """The number of pixel values a model sees (2 after binarization)."""
        return 2 if self.binarize == "dynamic" else self.levels

    def split(self, name: str) -> Split:
        if name not in ("train", "valid", "test"):
            raise DgmError(f"unknown split '{name}'; choose train, valid or test")
        return getattr(self, name)

    def to_float(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 pixels -> float32 in [0, 1]; dynamic binarization samples x ~ Bernoulli(pixel)."""
        if self.levels == 0:
            return x.to(torch.float32)
        xf = x.to(torch.float32) / (self.levels - 1)
        if self.binarize == "dynamic":
            xf = torch.bernoulli(xf, generator=generator)
        return xf

    def info(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "levels": self.model_levels,
            "num_classes": self.num_classes,
            "binarize": self.binarize,
            "sizes": [len(self.train), len(self.valid), len(self.test)],
        }


@dataclass
class DatasetSpec:
    """A registered dataset: how to load it and what it looks like before loading."""

    name: str
    loader: Callable[[Path | None], Dataset]  # data_dir (None = default search) -> Dataset
    shape: tuple[int, int, int]
    num_classes: int | None
    levels: int
    description: str
    available: Callable[[Path | None], bool] = field(default=lambda data_dir: True)


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    _REGISTRY[spec.name] = spec
    return spec


def dataset_specs() -> list[DatasetSpec]:
    _ensure_loaded()
    return list(_REGISTRY.values())


def data_root(data_dir: str | Path | None = None) -> Path | None:
    """The local data folder the user pointed at: --data-dir, else $DGM_DATA_DIR, else None."""
    if data_dir is None:
        data_dir = os.environ.get("DGM_DATA_DIR")
    return Path(data_dir).expanduser() if data_dir else None


def cache_dir() -> Path:
    """Where downloads are cached: $DGM_CACHE_DIR, else $XDG_CACHE_HOME/dgm, else ~/.cache/dgm."""
    if os.environ.get("DGM_CACHE_DIR"):
        return Path(os.environ["DGM_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "dgm"


def load_dataset(name: str, data_dir: str | Path | None = None, binarize: str = "none") -> Dataset:
    """Load a dataset by registry name, or `folder:PATH` / `npz:PATH` for the user's own data."""
    _ensure_loaded()
    if binarize not in ("none", "dynamic"):
        raise DgmError(f"unknown binarize option '{binarize}'; choose none or dynamic")
    root = data_root(data_dir)
    prefix, _, path = name.partition(":")
    if path and prefix in _PATH_LOADERS:
        ds = _PATH_LOADERS[prefix](Path(path).expanduser())
    elif name in _REGISTRY:
        ds = _REGISTRY[name].loader(root)
    else:
        known = ", ".join(sorted(_REGISTRY)) + ", folder:PATH, npz:PATH"
        raise DgmError(f"unknown dataset '{name}'; choose one of {known} (see `dgm data list`)")
    if binarize == "dynamic":
        if ds.levels == 2:
            raise DgmError(f"dataset '{name}' is already binary; drop binarize=dynamic")
        ds.binarize = "dynamic"
    return ds


_PATH_LOADERS: dict[str, Callable[[Path], Dataset]] = {}


def register_path_loader(prefix: str, loader: Callable[[Path], Dataset]) -> None:
    _PATH_LOADERS[prefix] = loader


def split_by_permutation(x: torch.Tensor, y: torch.Tensor | None, fractions=(0.8, 0.1), seed: int = 0):
    """Fixed, seeded train / valid / test split for datasets that ship without one."""
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = int(round(fractions[0] * n))
    n_valid = int(round(fractions[1] * n))
    parts = perm[:n_train], perm[n_train : n_train + n_valid], perm[n_train + n_valid :]
    return [Split(x[p], None if y is None else y[p]) for p in parts]


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from dgm.data import digits, sources  # noqa: F401  (registers the datasets)
        from dgm.data import toy  # noqa: F401  (registers ring8, grid25)
        from dgm.data import sprites  # noqa: F401  (registers sprites, sprites64, sprites-grey, sprites64-grey)
        from dgm.data import stacked  # noqa: F401  (registers stacked-mnist)


__all__ = [
    "Dataset",
    "DatasetSpec",
    "Factor",
    "Renderer",
    "Split",
    "attribute_vectors",
    "cache_dir",
    "data_root",
    "dataset_specs",
    "factor_sizes",
    "load_dataset",
    "register_dataset",
    "register_path_loader",
    "split_by_permutation",
]
