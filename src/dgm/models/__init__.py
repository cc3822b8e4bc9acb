"""Model registry and the config base class.

Every model is an nn.Module built from a JSON-serialisable config dataclass. What a
model can do is told by the methods it has (see ARCHITECTURE in README): `loss` or
`optimizers` + `train_step` for training, `sample`, and optionally `encode`/`decode`,
`elbo`/`iwae`, `log_prob`. Nothing in dgm compares model names.

A method that a model has only in some configurations (an autoencoder samples only with a
code density) is a property that is None where it is off, so `callable(getattr(model, m,
None))` stays true to the instance; `missing_reason(m)` may then say in one sentence why it
is off and what to do instead (`require` uses it). Optional hooks:

- `fit_after_training(train_x)`: called by `dgm.api` once training has ended, on the best
  weights, with the training split's images [N, C, H, W] as floats in [0, 1]; what it sets
  in buffers is saved with the weights (the autoencoders' density of their codes).
- `plan_training(steps_per_epoch, total_steps)`: called by the Trainer before the first
  step, for a model whose phases are counted in epochs (the stacked autoencoder).
- `fit_before_training(train_x)`: called by `dgm.api.train` once, on a fresh run (never on
  resume: what it sets is in the checkpoint), with the training images [N, C, H, W] as floats
  in [0, 1] (the VampPrior's pseudo-inputs start as training images).
- `training_labels(train_y) -> train_y`: called by the Trainer with the training split's labels;
  the labels it returns are the ones batches carry, -1 for an example whose label the model must
  not see (the semi-supervised M2 keeps `labels=N` of them). A fixed function of the config, so
  resume sees the same labels. With an attribute `labelled_batch_size` n > 0 (and some labels hidden) every
  training batch (x, y) also carries n labelled examples drawn from the kept ones: (x, y, x_l, y_l).
- `batch_fields(dataset, split) -> tuple`: what every training and validation batch carries after the
  images, as tensors row-aligned with `split.x` (indexed with it); without the hook a batch is (x, y),
  y = `split.y`. The conditional VAE on attributes returns the attribute vectors, the layered disCVAE
  adds the foreground masks, colorization the colour targets. `dgm.models.batch_fields` asks for them;
  evaluation and pictures pass the first one as `y` to a conditional model. On a fresh run `dgm.api`
  then calls `fit_before_training(train_x, *fields)` with the training split's fields.
- `batch_source(dataset) -> draw`: a model that trains on batches the stored splits do not hold (DC-IGN's,
  rendered with one factor varying) returns `draw(step, batch_size, generator) -> batch`, which the Trainer
  calls instead of indexing the training split (validation still reads the validation split).
- `figures(x, y) -> {name: (images [N, C, H, W] in [0, 1], nrow)}`: pictures of its own that a model draws of
  eight test images x (with their first batch field y) at the end of training, saved as NAME.png (the disCVAE's
  layers, colorization's k colorizations per grey image).
- `code_statistics(codes)`: extra scores of the test codes for `dgm eval`'s representation
  metric (the sparse autoencoder's activations).

A class-conditional model has `conditional` true. `sample(n, y=...)` takes a label (an int or
[n], see `class_labels`). When such a model also has an encoder or bounds (the conditional VAE),
its `encode`, `decode`, `reconstruct`, `posterior`, `log_px_z`, `elbo` and `iwae` take the images'
labels as the keyword `y`, which callers pass with `given(model, y)`; `condition(y, n) -> [n, d]`
turns labels into the condition vectors it reads, and a model that has it also takes such vectors
as y (mixed labels: `dgm plot RUN progression`). The bounds are then of log p(x | y). A model that is not
conditional but whose prior is split by class (the adversarial autoencoder's label prior) has `samples_by_label`
true: its `sample(n, y=...)` takes a label and its encoder and decoder do not.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dgm.config import Checked, number, numbers
from dgm.errors import DgmError


@dataclass
class ModelConfig(Checked):
    """Fields every model has; `data_shape`, `levels` and `num_classes` come from the dataset.

    Every field declares what it allows (`dgm.config`), checked whenever a config is made."""

    name: str = ""
    data_shape: tuple[int, ...] = numbers((1, 28, 28), min=1, nonempty=True)  # [C, H, W] images, [D] points
    levels: int = number(256, min=0)  # pixel values per channel; 0 for continuous data
    num_classes: int | None = number(None, min=1)


# Set from the dataset, like data_shape, for a config that declares it: each known generating factor's entries
# in an attribute vector (`dgm.data.factor_sizes`: values of a discrete factor, 1 for a continuous one), and the
# words of the training captions (`Dataset.vocabulary`; () for data without captions).
DATASET_FIELDS = ("data_shape", "levels", "num_classes", "factor_sizes", "vocabulary")


@dataclass
class ModelEntry:
    name: str
    config_cls: type
    model_cls: type
    family: str
    seeds: tuple[str, ...]
    description: str


_REGISTRY: dict[str, ModelEntry] = {}

# Methods that make up the protocol; `dgm zoo` lists which a model has.
CAPABILITIES = ("loss", "train_step", "sample", "encode", "decode", "elbo", "iwae", "log_prob")


def register_model(name: str, config_cls: type, family: str, seeds: tuple[str, ...], description: str):
    def wrap(model_cls: type) -> type:
        _REGISTRY[name] = ModelEntry(name, config_cls, model_cls, family, seeds, description)
        return model_cls

    return wrap


def _ensure_loaded() -> None:
    """Import every module of this package: each registers its models, so a new model is one new file."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def class_labels(y, n: int, num_classes: int, device) -> torch.Tensor:
    """Class labels [n] for a conditional model: y as given (an int or [n]), or 0, 1, ..., K-1, 0, ... when None."""
    if y is None:
        return torch.arange(n, device=device) % num_classes
    y = torch.as_tensor(y, device=device, dtype=torch.long)
    y = y.expand(n) if y.dim() == 0 else y
    if y.shape != (n,):
        raise DgmError(f"expected {n} labels, got shape {tuple(y.shape)}")
    outside = (y < 0) | (y >= num_classes)
    if outside.any():
        raise DgmError(f"labels must lie in 0 .. {num_classes - 1}, this model's {num_classes} classes; "
                       f"got {y[outside][0].item()}")
    return y


def batch_fields(model: Any, dataset, split) -> tuple:
    """What a batch of `split` carries after its images for `model`: its `batch_fields` hook's tensors, else
    (split.y,) (None for data without labels)."""
    hook = getattr(model, "batch_fields", None)
    return tuple(hook(dataset, split)) if callable(hook) else (split.y,)


def given(model: Any, y) -> dict[str, Any]:
    """The keyword arguments that pass the labels y of a batch to a conditional model's encoder, decoder and
    bounds: {"y": y}, or {} for a model that is not conditional (it ignores the labels)."""
    if not getattr(model, "conditional", False):
        return {}
    if y is None:
        raise DgmError(f"{model.cfg.name} is conditional, so it needs the class labels of the images; "
                       "this data has none")
    return {"y": y}


def model_entries() -> list[ModelEntry]:
    _ensure_loaded()
    return list(_REGISTRY.values())


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise DgmError(f"unknown model '{name}'; choose one of {', '.join(sorted(_REGISTRY))} (see `dgm zoo`)")
    return _REGISTRY[name]


def capabilities(model_or_cls: Any) -> list[str]:
    return [c for c in CAPABILITIES if callable(getattr(model_or_cls, c, None))]


def require(model: Any, *methods: str, purpose: str) -> None:
    """DgmError unless `model` has every method: the model's own sentence (`missing_reason`) when it gives
    one, else that it lacks them, so it cannot do `purpose`."""
    missing = [m for m in methods if not callable(getattr(model, m, None))]
    if not missing:
        return
    explain = getattr(model, "missing_reason", None)
    reason = explain(missing[0]) if callable(explain) else None
    raise DgmError(reason or f"{type(model).__name__} has no {' or '.join(m + '()' for m in missing)}, "
                             f"so it cannot {purpose}")


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_cls)}


def build_config(config_cls: type, values: dict[str, Any]) -> Any:
    """Make a config from Python or JSON values, each checked against its field's rule."""
    unknown = set(values) - set(config_fields(config_cls))
    if unknown:
        raise DgmError(f"unknown option(s) {', '.join(sorted(unknown))} for {config_cls.__name__}")
    return config_cls(**values)


def create_model(name: str, values: dict[str, Any] | None = None) -> nn.Module:
    entry = get_entry(name)
    cfg = build_config(entry.config_cls, {**(values or {}), "name": name})
    return entry.model_cls(cfg)


__all__ = [
    "CAPABILITIES",
    "ModelConfig",
    "DATASET_FIELDS",
    "ModelEntry",
    "batch_fields",
    "build_config",
    "capabilities",
    "class_labels",
    "config_fields",
    "create_model",
    "get_entry",
    "given",
    "model_entries",
    "register_model",
    "require",
]
