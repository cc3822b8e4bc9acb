"""The library's one-call path: train, resume, evaluate and sample a run, as `dgm train / resume /
eval / sample` do (the command line is a thin parser over these functions).

    import dgm
    run = dgm.train("vae", data="digits", epochs=20, latent_dim=2, hidden_dims=(64,))
    run.metrics[-1]["valid/elbo"], run.pictures
    dgm.evaluate(run, metrics=["likelihood"], k=500)
    x = dgm.sample(run, 16)
    run = dgm.resume(run, epochs=40)

Options are the fields of the model's config and of the training config, as Python values
(tuples, floats, strings such as time_limit="90s"), each checked against its field's rule.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dgm.errors import DgmError, Interrupted
from dgm.models import DATASET_FIELDS, batch_fields

RESERVED = {"name", *DATASET_FIELDS}  # set from the dataset, not by the user
EVAL_METRICS = ("likelihood", "representation", "disentanglement", "colorization", "conditioning", "classification",
                "modes", "fid", "kid", "inception_score", "precision_recall", "diversity", "memorisation", "critic")
# (the last seven: dgm.evaluation.quality.METRICS)
EVAL_FILE = "eval.json"
FINGERPRINT = "weights_sha256"  # in eval.json: the weights its scores are of


@dataclass
class Run:
    """A run folder: its config, metrics, pictures and scores, and its model (the best weights)."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)
        self._model: nn.Module | None = None

    @property
    def config(self) -> dict[str, Any]:
        from dgm.runs import read_config

        return read_config(self.path)

    @property
    def model(self) -> nn.Module:
        """The model with the best weights on the validation split (loaded once, on the CPU)."""
        if self._model is None:
            from dgm.runs import load

            self._model = load(self.path)
        return self._model

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl: one dict per logged step (train and valid terms, lr, time)."""
        from dgm.runs import read_metrics

        return read_metrics(self.path)

    @property
    def scores(self) -> dict[str, Any]:
        """RUN/eval.json, the scores of `evaluate` ({} before any)."""
        return read_scores(self.path)

    @property
    def pictures(self) -> list[Path]:
        return sorted(self.path.glob("*.png"))

    def __fspath__(self) -> str:
        return str(self.path)


def split_options(config_cls: type | None, options: dict[str, Any], parse: bool = False
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config values, training config values) from options by field name, each checked (or, with
    parse, read from command-line text first). config_cls None (resuming): training fields only."""
    from dgm.config import check_value, parse_value
    from dgm.models import config_fields
    from dgm.training import TrainConfig

    model_fields = {k for k in config_fields(config_cls) if k not in RESERVED} if config_cls else set()
    train_fields = set(config_fields(TrainConfig))
    model_values: dict[str, Any] = {}
    train_values: dict[str, Any] = {}
    for key, value in options.items():
        target, cls = ((model_values, config_cls) if key in model_fields else
                       (train_values, TrainConfig) if key in train_fields else (None, None))
        if target is None:
            known = ", ".join(sorted(model_fields) + sorted(train_fields))
            what = "this model takes" if config_cls else "a resumed run can change only training options"
            raise DgmError(f"unknown option '{key}'; {what}: {known}")
        target[key] = parse_value(cls, key, value) if parse else check_value(cls, key, value)
    return model_values, train_values


def _free_run_dir(model: str, data: str) -> Path:
    base = Path("runs") / f"{model}-{data.replace(':', '_').replace('/', '_')}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def _sample_picture(model, dataset, path: Path) -> Path:
    """samples.png: a grid of 64 images from fixed noise, or 2,500 points over the true modes."""
    from dgm import viz

    if dataset.mixture is not None:
        return viz.samples(model, path, n=2500, centres=dataset.mixture[0])
    return viz.samples(model, path)


def _picture_callback(run_dir: Path, dataset, epochs: float):
    """Write samples.png from fixed noise about ten times during training, so progress is visible."""
    every = max(1, math.ceil(epochs / 10))

    def callback(trainer) -> None:
        if trainer.is_writer and trainer.epoch % every == 0 and callable(getattr(trainer.model, "sample", None)):
            _sample_picture(trainer.model, dataset, run_dir / "samples.png")

    return callback


def final_pictures(model, dataset, run_dir: Path) -> list[Path]:
    """samples.png (models that sample), reconstructions.png (models with an encoder; given the images' labels
    when the model is conditional), progression.png (conditional models that decode mixed labels), the model's
    own figures of eight test images (`figures(x, y) -> {name: (images, nrow)}`, NAME.png) and losses.png of a
    trained run."""
    from dgm import viz
    from dgm.runs import read_metrics

    device = next(model.parameters()).device
    model.eval()
    can_sample = callable(getattr(model, "sample", None))
    paths = [_sample_picture(model, dataset, run_dir / "samples.png")] if can_sample else []
    images = len(dataset.shape) == 3  # points (the toy sets) have no picture of their reconstructions
    if images and callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None)):
        idx = torch.linspace(0, len(dataset.test) - 1, 32).long()
        x = dataset.to_float(dataset.test.x[idx].to(device))
        y = batch_fields(model, dataset, dataset.test)[0]
        y = None if y is None else y[idx].to(device)
        paths.append(viz.reconstructions(model, x, run_dir / "reconstructions.png", y=y))
    if viz.has_progression(model):
        paths.append(viz.progression(model, run_dir / "progression.png"))
    if images and callable(getattr(model, "figures", None)):  # a model's own pictures of test images
        idx = torch.linspace(0, len(dataset.test) - 1, 8).long()
        y = batch_fields(model, dataset, dataset.test)[0]
        x = dataset.to_float(dataset.test.x[idx].to(device))
        figures = model.figures(x, None if y is None else y[idx].to(device))
        paths += [viz.save_grid(grid, run_dir / f"{name}.png", nrow=nrow) for name, (grid, nrow) in figures.items()]
    curves = viz.loss_curves(read_metrics(run_dir), run_dir / "losses.png")
    return paths + ([curves] if curves else [])


def _fit(model, dataset, cfg, run_dir: Path, resume: bool, on_checkpoint=None, quiet: bool = False) -> None:
    from dgm.io import save_tensors
    from dgm.runs import load
    from dgm.training import Trainer
    from dgm.training.distributed import shutdown
    from dgm.training.trainer import CHECKPOINT, WEIGHTS

    if tuple(dataset.shape) != tuple(model.cfg.data_shape):
        raise DgmError(f"the model expects images of shape {tuple(model.cfg.data_shape)} but dataset "
                       f"'{dataset.name}' has {tuple(dataset.shape)}")
    trainer = Trainer(model, dataset, cfg, out_dir=run_dir, on_checkpoint=[on_checkpoint] if on_checkpoint else [])
    trainer.callbacks.append(_picture_callback(run_dir, dataset, trainer.total_steps / trainer.steps_per_epoch))
    summary = trainer.fit(resume_from=run_dir / CHECKPOINT if resume else None)
    if trainer.is_writer:
        best = load(run_dir, device=trainer.device)
        if callable(getattr(best, "fit_after_training", None)):  # e.g. a density of the best weights' codes
            best.fit_after_training(dataset.to_float(dataset.train.x.to(trainer.device)))
            save_tensors(run_dir / WEIGHTS, best.state_dict())
        paths = final_pictures(best, dataset, run_dir)
        note = f" (stopped by {summary['stop_reason'].replace('_', ' ')})" if summary["stop_reason"] else ""
        metric = (f", best valid {summary['monitor']} {summary['best_metric']:.4f} at step {summary['best_step']}"
                  if math.isfinite(summary["best_metric"]) else "")
        if not quiet:
            print(f"trained {summary['epochs']:.0f} epochs, {summary['steps']} steps in {summary['seconds']:.1f} s"
                  f"{note}{metric}\nrun folder: {run_dir}\npictures: {', '.join(p.name for p in paths)}")
    shutdown()


def _check_length(cfg) -> None:
    if cfg.epochs < 1 and cfg.steps < 1:
        raise DgmError("give at least one epoch (--epochs N) or step (--steps N)")


def train(model: str, data: str = "digits", out: str | Path | None = None, *, data_dir: str | Path | None = None,
          binarize: str = "none", resume: bool = False, quiet: bool = False, **options: Any) -> Run:
    """Train `model` (a name from `dgm zoo`) on `data` into the run folder `out` (default
    runs/MODEL-DATA, numbered if taken) and return the Run: config.json, weights, checkpoint,
    metrics and pictures, exactly as `dgm train`. `options` are model and training config fields
    (epochs=..., steps=..., lr=..., latent_dim=...). With resume=True a folder that already holds
    a checkpoint is continued (`resume`) instead of refused, so a notebook cell can be run again;
    its model options must then be the run's own. A run that fails or is interrupted before its
    first checkpoint leaves no folder behind."""
    from dgm.data import load_dataset
    from dgm.models import build_config, get_entry
    from dgm.runs import model_values_for, write_config
    from dgm.training import TrainConfig
    from dgm.training.distributed import world
    from dgm.training.trainer import CHECKPOINT

    entry = get_entry(model)
    model_values, train_values = split_options(entry.config_cls, options)
    if resume and out is not None and (Path(out) / CHECKPOINT).exists():
        from dgm.runs import read_config

        saved = read_config(out)["model"]
        for key, value in {"name": model, **model_values}.items():
            if json.loads(json.dumps(value)) != saved.get(key):
                raise DgmError(f"{out} holds a run trained with {key}={saved.get(key)}, not {value}; "
                               "resume it with its own model options or choose another out")
        return _continue(out, data_dir=data_dir, quiet=quiet, **train_values)
    cfg = build_config(TrainConfig, train_values)
    _check_length(cfg)
    dataset = load_dataset(data, data_dir=data_dir, binarize=binarize)
    run_dir = Path(out) if out else _free_run_dir(model, data)
    if world()[0] == 0 and (run_dir / CHECKPOINT).exists():  # a folder whose training never checkpointed is reused
        raise DgmError(f"{run_dir} already holds a run; continue it with `dgm resume {run_dir}` "
                       "or choose another --out")
    torch.manual_seed(cfg.seed)
    net = entry.model_cls(build_config(entry.config_cls, {**model_values,
                                                          **model_values_for(dataset, entry.config_cls),
                                                          "name": model}))
    if callable(getattr(net, "fit_before_training", None)):  # e.g. pseudo-inputs that start as training images
        fields = batch_fields(net, dataset, dataset.train) if callable(getattr(net, "batch_fields", None)) else ()
        net.fit_before_training(dataset.to_float(dataset.train.x), *fields)
    created = not run_dir.exists()
    try:
        if world()[0] == 0:
            folder = str(Path(data_dir).resolve()) if data_dir else None  # so eval works from anywhere
            write_config(run_dir, net, {"name": data, "binarize": binarize, "data_dir": folder}, cfg)
        _fit(net, dataset, cfg, run_dir, resume=False, quiet=quiet)
    except BaseException as e:  # a run that never reached its first checkpoint leaves nothing behind
        if created and world()[0] == 0 and not (run_dir / CHECKPOINT).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            if isinstance(e, (Interrupted, KeyboardInterrupt)):
                raise Interrupted(f"interrupted before the first checkpoint; {run_dir} was removed, so the same "
                                  "`dgm train` command starts it again") from None
        raise
    return Run(run_dir)


def resume(run: str | Path | Run, *, data_dir: str | Path | None = None, quiet: bool = False,
           **options: Any) -> Run:
    """Continue a run from its last checkpoint, bitwise as if never stopped (on CPU); `options` may
    change training fields (epochs=N alone means N epochs in all). They reach config.json with the
    first checkpoint trained with them, never before."""
    from dgm.models import build_config
    from dgm.runs import build_model, load_data, read_config, train_config, write_config
    from dgm.training import TrainConfig
    from dgm.training.trainer import CHECKPOINT

    run_dir = Path(run)
    config = read_config(run_dir)
    if not (run_dir / CHECKPOINT).is_file():
        raise DgmError(f"{run_dir} has no checkpoint.safetensors to resume from (its training never reached one); "
                       f"start it again with `dgm train ... --out {run_dir}`")
    _, train_values = split_options(None, options)
    if "epochs" in train_values:
        train_values.setdefault("steps", 0)
    cfg = build_config(TrainConfig, {**asdict(train_config(config)), **train_values})
    _check_length(cfg)
    dataset = load_data(config, data_dir)
    model = build_model(config)
    _fit(model, dataset, cfg, run_dir, resume=True, quiet=quiet,
         on_checkpoint=lambda trainer: write_config(run_dir, model, config["data"], cfg))
    return Run(run_dir)


_continue = resume  # `train` has a parameter named resume


def _measure(model, dataset, metrics: list[str] | None, split: str = "test", k: int = 1000,
             n_examples: int | None = None, n_samples: int = 1000, seed: int = 0,
             progress: bool = True, ais: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every metric in `metrics` (None: all the model's capabilities allow); naming one it cannot have is an error.
    `ais` (chains, steps, bdmc) adds the AIS estimate of log p(x), which is never part of "all": it is slow."""
    from dgm.evaluation import (classification_metrics, colorization_metrics, disentanglement_metrics,
                                likelihood_metrics, mode_metrics, representation_metrics, sample_quality)
    from dgm.evaluation.factors import conditioning_metrics
    from dgm.evaluation.quality import METRICS as SAMPLE_METRICS
    from dgm.models import require

    unknown = [m for m in metrics or [] if m not in EVAL_METRICS]
    if unknown or metrics == []:
        raise DgmError(f"unknown metric '{unknown[0] if unknown else ''}'; choose from {', '.join(EVAL_METRICS)}")
    chosen = metrics or ([] if ais is not None else list(EVAL_METRICS))
    name = type(model).__name__
    # metric -> (its scores, {} when the model or data has none; why, said when it was asked for by name)
    scorers = {
        "likelihood": (lambda: likelihood_metrics(model, dataset, split, k=k, n_examples=n_examples, seed=seed,
                                                  progress=progress),
                       f"{name} has no elbo()/iwae() or log_prob(), so it has no likelihood"),
        "representation": (lambda: representation_metrics(model, dataset, split, seed=seed),
                           f"{name} has no encode(), so it has no codes to score"),
        "disentanglement": (lambda: disentanglement_metrics(model, dataset, split, seed=seed),
                            "disentanglement scores need a model with encode() and a dataset with known factors "
                            "(sprites, sprites64)"),
        "colorization": (lambda: colorization_metrics(model, dataset, split, seed=seed),
                         "colorization scores need a model with colorize() and grey images with colour targets "
                         "and masks (sprites-grey)"),
        "conditioning": (lambda: conditioning_metrics(model, dataset, split, n_examples=n_examples or 1000,
                                                      seed=seed),
                         f"{name} does not sample given a condition, or the shipped factor net cannot read "
                         f"'{dataset.name}' (conditioning scores need sprites or sprites64)"),
        "classification": (lambda: classification_metrics(model, dataset, split, seed=seed),
                           f"{name} has no classify() (or this data has no labels), so it has no classification "
                           "error"),
        "modes": (lambda: mode_metrics(model, dataset, seed=seed),
                  f"mode coverage needs a dataset with known modes (ring8, grid25, stacked-mnist), not "
                  f"'{dataset.name}'"),
    }
    results: dict[str, Any] = {}
    for metric, (score, why_none) in scorers.items():
        if metric in chosen:
            found = score()
            if metrics and not found:
                raise DgmError(why_none)
            results.update(found)
    if ais is not None:
        from dgm.evaluation.ais import ais_metrics

        found = ais_metrics(model, dataset, split, n_examples=n_examples or 100, seed=seed, progress=progress, **ais)
        if not found:
            raise DgmError(f"{name} has no latent prior and decoder, so AIS has no path to anneal along; it needs a "
                           "model that decodes z ~ p(z) (the VAE family, GANs, autoencoders with code_density)")
        results.update(found)
    sample_names = [m for m in chosen if m in SAMPLE_METRICS]
    if sample_names and metrics:  # asked for by name: a model that cannot sample says why (an autoencoder)
        require(model, "sample", purpose="be scored on samples")
    if sample_names:
        found = sample_quality(model, dataset, sample_names, n_samples=n_samples, seed=seed, progress=progress)
        if metrics and not found:
            raise DgmError(f"sample-quality metrics ({', '.join(sample_names)}) need image samples, "
                           "and this run has none")
        results.update(found)
    return results


def evaluate(run: str | Path | Run, metrics: list[str] | None = None, *, split: str = "test", k: int = 1000,
             n_examples: int | None = None, n_samples: int = 1000, seed: int = 0, data: str | None = None,
             data_dir: str | Path | None = None, progress: bool = True, ais: bool = False, chains: int = 16,
             ais_steps: int = 1000, bdmc: bool = False) -> dict[str, Any]:
    """Score a run's best weights with every metric it supports (or those named), as `dgm eval`:
    likelihoods, representation quality of codes, mode coverage, sample quality beside the real-data floor
    (under "reference"). With ais=True also log p(x) by annealed importance sampling (dgm.evaluation.ais:
    `chains` chains per example, `ais_steps` intermediate distributions, on n_examples test images, 100 unless
    given), and with bdmc=True the bidirectional Monte Carlo gap on data simulated from the model; AIS alone
    unless `metrics` names others too.
    Scores on the run's own dataset are saved in RUN/eval.json with the fingerprint of the weights."""
    from dgm.runs import load, load_data, read_config

    for name, value, least in (("k", k, 1), ("n_examples", n_examples, 1), ("n_samples", n_samples, 2)):
        if value is not None and value < least:
            raise DgmError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    run_dir = Path(run)
    config = read_config(run_dir)
    model = load(run_dir)
    if data:
        from dgm.data import load_dataset

        dataset = load_dataset(data, data_dir=data_dir)
        if tuple(dataset.shape) != tuple(model.cfg.data_shape):
            raise DgmError(f"the model expects images of shape {tuple(model.cfg.data_shape)} but dataset "
                           f"'{data}' has {tuple(dataset.shape)}")
    else:
        dataset = load_data(config, data_dir)
    results: dict[str, Any] = {"run": str(run_dir), "split": split}
    results.update(_measure(model, dataset, metrics, split, k=k, n_examples=n_examples, n_samples=n_samples,
                            seed=seed, progress=progress,
                            ais={"chains": chains, "steps": ais_steps, "bdmc": bdmc} if ais else None))
    if not data:  # cache for `dgm report` and `dgm compare`, merged with earlier scores of the same weights
        results = save_scores(run_dir, results)
    results.pop(FINGERPRINT, None)
    if not results.get("reference"):
        results.pop("reference", None)
    return results


def sample(run: str | Path | Run, n: int = 64, *, seed: int = 0, label: int | None = None) -> torch.Tensor:
    """n samples [n, C, H, W] in [0, 1] (or points [n, D]) of a run's best weights, from seeded noise."""
    if n < 1:
        raise DgmError(f"--n must be at least 1, got {n}")
    return draw(run.model if isinstance(run, Run) else Run(run).model, n, seed=seed, label=label)


@torch.no_grad()
def draw(model: nn.Module, n: int, *, seed: int = 0, label: int | None = None) -> torch.Tensor:
    """n samples of a loaded model from seeded noise (a label only for a conditional model, or one whose prior
    is split by label, `samples_by_label`); what `sample` and the sample pictures draw."""
    from dgm.models import require

    require(model, "sample", purpose="sample")
    if label is not None and not (getattr(model, "conditional", False) or getattr(model, "samples_by_label", False)):
        raise DgmError(f"{type(model).__name__} is not class-conditional, so it cannot sample a given label")
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    return model.sample(n, generator=generator) if label is None else model.sample(n, y=label, generator=generator)


# --- scores and the weights they are of ------------------------------------------------------
def read_scores(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DgmError(f"{path} is corrupt; delete it and run `dgm eval {run_dir}` again") from None


def scores_and_staleness(run_dir: str | Path) -> tuple[dict[str, Any], bool]:
    """(RUN/eval.json, whether its scores are of weights since replaced: trained further, resumed, retrained)."""
    from dgm.runs import weights_fingerprint

    scores = read_scores(run_dir)
    return scores, bool(scores) and scores.get(FINGERPRINT) != weights_fingerprint(run_dir)


def save_scores(run_dir: str | Path, results: dict[str, Any]) -> dict[str, Any]:
    """Write results to RUN/eval.json with the fingerprint of the weights they score, merged with the
    scores already there when those are of the same weights; returns what was written."""
    from dgm.io import atomic_write_json
    from dgm.runs import weights_fingerprint

    run_dir = Path(run_dir)
    fingerprint = weights_fingerprint(run_dir)
    cached = read_scores(run_dir)
    if cached.get(FINGERPRINT) == fingerprint:
        reference = {**cached.get("reference", {}), **results.get("reference", {})}
        results = {**cached, **{k: v for k, v in results.items() if k != "reference"}, "reference": reference}
    results = {**results, FINGERPRINT: fingerprint}
    atomic_write_json(run_dir / EVAL_FILE, results)
    return results


def stale_note(run_dir) -> str:
    return (f"the scores in {run_dir}/{EVAL_FILE} are of weights since replaced (the run trained further); "
            f"rescore with `dgm eval {run_dir}`")
