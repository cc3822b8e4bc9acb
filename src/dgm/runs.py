"""Run folders: everything needed to reload, resume and report a trained model.

    RUN/config.json             {"dgm_version", "model": {...}, "data": {...}, "train": {...}}
    RUN/model.safetensors       weights (best on validation)
    RUN/checkpoint.safetensors  weights, optimizer states and counters for `dgm resume`
    RUN/metrics.jsonl           one JSON record per epoch (and per log_every steps)
    RUN/*.png                   samples, reconstructions, plots
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

import dgm
from dgm import io
from dgm.data import Dataset, load_dataset
from dgm.errors import DgmError
from dgm.models import build_config, get_entry
from dgm.training.trainer import CHECKPOINT, METRICS, WEIGHTS, TrainConfig

CONFIG = "config.json"


def model_values_for(dataset: Dataset, config_cls: type | None = None) -> dict[str, Any]:
    """The config fields a model takes from its dataset: shape, levels and classes for every model, and the
    factors' sizes and the captions' vocabulary for a config class that declares `factor_sizes` / `vocabulary`."""
    from dgm.data import factor_sizes
    from dgm.models import config_fields

    values = {"data_shape": tuple(dataset.shape), "levels": dataset.model_levels, "num_classes": dataset.num_classes}
    declared = config_fields(config_cls) if config_cls is not None else {}
    if "factor_sizes" in declared:
        values["factor_sizes"] = factor_sizes(dataset.factors)
    if "vocabulary" in declared:
        values["vocabulary"] = dataset.vocabulary or ()
    return values


def write_config(run_dir: Path, model: nn.Module, data: dict[str, Any], train: TrainConfig) -> None:
    io.atomic_write_json(Path(run_dir) / CONFIG, {
        "dgm_version": dgm.__version__,
        "model": asdict(model.cfg),
        "data": data,
        "train": asdict(train),
    })


def read_config(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise DgmError(f"run folder {run_dir} does not exist; give the --out folder of a `dgm train` run")
    if not path.is_file():
        raise DgmError(f"{run_dir} has no config.json, so it is not a dgm run folder (or its training never started)")
    try:
        config = json.loads(path.read_text())
        config["model"]["name"], config["data"], config["train"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DgmError(f"{path} is corrupt ({type(e).__name__}); restore it or train a new run") from None
    return config


def train_config(config: dict[str, Any]) -> TrainConfig:
    return build_config(TrainConfig, config["train"])


def build_model(config: dict[str, Any]) -> nn.Module:
    values = dict(config["model"])
    entry = get_entry(values["name"])
    return entry.model_cls(build_config(entry.config_cls, values))


def load(run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: bool = False) -> nn.Module:
    """A ready model from a run folder: its best weights, or the latest with checkpoint=True."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    model = build_model(config)
    if checkpoint:
        tensors, _ = io.load_tensors(run_dir / CHECKPOINT)
        tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    else:
        tensors, _ = io.load_tensors(run_dir / WEIGHTS)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise DgmError(f"the weights in {run_dir} do not fit the model its config.json describes "
                       f"({str(e).splitlines()[0][:160]})") from None
    return model.to(device).eval()


def weights_fingerprint(run_dir: Path) -> str:
    """SHA-256 of RUN/model.safetensors: what a score in eval.json was computed from."""
    import hashlib

    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        raise DgmError(f"{run_dir} has no {WEIGHTS}; its training never reached a checkpoint")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_data(config: dict[str, Any], data_dir: str | Path | None = None) -> Dataset:
    data = config["data"]
    return load_dataset(data["name"], data_dir=data_dir or data.get("data_dir"), binarize=data.get("binarize", "none"))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
