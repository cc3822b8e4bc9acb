"""The `dgm` command: zoo, data, train, resume, sample, eval, report, compare, plot.

Commands ask a model what it can do (its methods) and never switch on model names.
Exit status: 0 done; 1 a mistake dgm found (one sentence on stderr, no traceback: a bad
value, path, file or option); 2 command-line syntax (argparse's usage message); 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from dgm.errors import DgmError, Interrupted

RESERVED = {"name", "data_shape", "levels", "num_classes"}  # set from the dataset, not by the user


def _parse_overrides(pairs: list[str], model_cls_cfg: type | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split key=value pairs into (model config values, train config values), typed by their fields.

    With model_cls_cfg None (resuming) only training fields may change."""
    from dgm.config import parse_value
    from dgm.models import config_fields
    from dgm.train import TrainConfig

    model_fields = {k: f for k, f in config_fields(model_cls_cfg).items() if k not in RESERVED} if model_cls_cfg else {}
    train_fields = config_fields(TrainConfig)
    model_values: dict[str, Any] = {}
    train_values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise DgmError(f"cannot read '{pair}'; options are written key=value, e.g. latent_dim=2")
        if key in model_fields:
            model_values[key] = parse_value(model_cls_cfg, key, text)
        elif key in train_fields:
            train_values[key] = parse_value(TrainConfig, key, text)
        else:
            known = ", ".join(sorted(model_fields) + sorted(train_fields))
            what = "this model takes" if model_cls_cfg else "a resumed run can change only training options"
            raise DgmError(f"unknown option '{key}'; {what}: {known}")
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
        if trainer.is_writer and (trainer.epoch % every == 0):
            _sample_picture(trainer.model, dataset, run_dir / "samples.png")

    return callback


def _final_pictures(model, dataset, run_dir: Path) -> list[Path]:
    import torch

    from dgm import viz
    from dgm.runs import read_metrics

    device = next(model.parameters()).device
    model.eval()
    paths = [_sample_picture(model, dataset, run_dir / "samples.png")]
    if callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None)):
        x = dataset.to_float(dataset.test.x[torch.linspace(0, len(dataset.test) - 1, 32).long()].to(device))
        paths.append(viz.reconstructions(model, x, run_dir / "reconstructions.png"))
    curves = viz.loss_curves(read_metrics(run_dir), run_dir / "losses.png")
    return paths + ([curves] if curves else [])


def _train(model, dataset, cfg, run_dir: Path, resume: bool, on_checkpoint=None) -> None:
    from dgm.train import Trainer
    from dgm.train.trainer import CHECKPOINT

    if tuple(dataset.shape) != tuple(model.cfg.data_shape):
        raise DgmError(f"the model expects images of shape {tuple(model.cfg.data_shape)} but dataset "
                       f"'{dataset.name}' has {tuple(dataset.shape)}")
    trainer = Trainer(model, dataset, cfg, out_dir=run_dir, on_checkpoint=[on_checkpoint] if on_checkpoint else [])
    trainer.callbacks.append(_picture_callback(run_dir, dataset, trainer.total_steps / trainer.steps_per_epoch))
    summary = trainer.fit(resume_from=run_dir / CHECKPOINT if resume else None)
    if trainer.is_writer:
        import dgm

        best = dgm.load(run_dir, device=trainer.device)
        paths = _final_pictures(best, dataset, run_dir)
        note = f" (stopped by {summary['stop_reason'].replace('_', ' ')})" if summary["stop_reason"] else ""
        metric = (f", best valid {cfg.monitor} {summary['best_metric']:.4f} at step {summary['best_step']}"
                  if math.isfinite(summary["best_metric"]) else "")
        print(f"trained {summary['epochs']:.0f} epochs, {summary['steps']} steps in {summary['seconds']:.1f} s"
              f"{note}{metric}\nrun folder: {run_dir}\npictures: {', '.join(p.name for p in paths)}")
    from dgm.train.distributed import shutdown

    shutdown()


def _train_values(args, values: dict[str, Any]) -> dict[str, Any]:
    """Training options from key=value pairs and the flags (--epochs N alone means: train N epochs)."""
    if args.epochs is not None:
        values.update(epochs=args.epochs, steps=values.get("steps", 0))
    for key in ("steps", "seed", "device", "batch_size"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    if args.no_progress:
        values["progress"] = False
    return values


def cmd_train(args) -> None:
    import shutil

    import torch

    from dgm.data import load_dataset
    from dgm.models import build_config, get_entry
    from dgm.runs import model_values_for, write_config
    from dgm.train import TrainConfig
    from dgm.train.distributed import world
    from dgm.train.trainer import CHECKPOINT

    entry = get_entry(args.model)
    model_values, train_values = _parse_overrides(args.options, entry.config_cls)
    cfg = build_config(TrainConfig, _train_values(args, train_values))
    if cfg.epochs < 1 and cfg.steps < 1:
        raise DgmError("give at least one epoch (--epochs N) or step (--steps N)")
    dataset = load_dataset(args.data, data_dir=args.data_dir, binarize=args.binarize)
    run_dir = Path(args.out) if args.out else _free_run_dir(args.model, args.data)
    if world()[0] == 0 and (run_dir / CHECKPOINT).exists():  # a folder whose training never checkpointed is reused
        raise DgmError(f"{run_dir} already holds a run; continue it with `dgm resume {run_dir}` "
                       "or choose another --out")
    torch.manual_seed(cfg.seed)
    model = entry.model_cls(build_config(entry.config_cls, {**model_values, **model_values_for(dataset),
                                                            "name": args.model}))
    created = not run_dir.exists()
    try:
        if world()[0] == 0:
            data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None  # so eval works from anywhere
            write_config(run_dir, model, {"name": args.data, "binarize": args.binarize, "data_dir": data_dir}, cfg)
        _train(model, dataset, cfg, run_dir, resume=False)
    except BaseException as e:  # a run that never reached its first checkpoint leaves nothing behind
        if created and world()[0] == 0 and not (run_dir / CHECKPOINT).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            if isinstance(e, (Interrupted, KeyboardInterrupt)):
                raise Interrupted(f"interrupted before the first checkpoint; {run_dir} was removed, so the same "
                                  "`dgm train` command starts it again") from None
        raise


def cmd_resume(args) -> None:
    from dataclasses import asdict

    from dgm.models import build_config
    from dgm.runs import build_model, load_data, read_config, train_config, write_config
    from dgm.train import TrainConfig
    from dgm.train.trainer import CHECKPOINT

    run_dir = Path(args.run)
    config = read_config(run_dir)
    if not (run_dir / CHECKPOINT).is_file():
        raise DgmError(f"{run_dir} has no checkpoint.safetensors to resume from (its training never reached one); "
                       f"start it again with `dgm train ... --out {run_dir}`")
    _, train_values = _parse_overrides(args.options, None)
    cfg = build_config(TrainConfig, {**asdict(train_config(config)), **_train_values(args, train_values)})
    if cfg.epochs < 1 and cfg.steps < 1:
        raise DgmError("give at least one epoch (--epochs N) or step (--steps N)")
    dataset = load_data(config, args.data_dir)
    model = build_model(config)
    # the changed options reach config.json with the first checkpoint trained with them, never before
    _train(model, dataset, cfg, run_dir, resume=True,
           on_checkpoint=lambda trainer: write_config(run_dir, model, config["data"], cfg))


def cmd_sample(args) -> None:
    import dgm
    from dgm import viz

    model = dgm.load(args.run)
    if args.complete:
        from dgm.io import read_images

        if args.rows is None:
            raise DgmError("--complete needs --rows K, the number of rows to keep")
        if not callable(getattr(model, "complete", None)):
            raise DgmError(f"{type(model).__name__} cannot complete images; autoregressive models can")
        x = read_images(Path(args.complete), tuple(model.cfg.data_shape), model.cfg.levels)
        out = Path(args.out) if args.out else Path(args.run) / "completions.png"
        viz.completions(model, x, args.rows, out, seed=args.seed, y=args.label)
        print(out)
        return
    out = Path(args.out) if args.out else Path(args.run) / "samples.png"
    if args.n < 1:
        raise DgmError(f"--n must be at least 1, got {args.n}")
    viz.samples(model, out, n=args.n, seed=args.seed, y=args.label)
    print(out)


EVAL_METRICS = ("likelihood", "modes", "fid", "kid", "inception_score", "precision_recall", "diversity",
                "memorisation", "critic")  # the last seven: dgm.evaluate.quality.METRICS
EVAL_FILE = "eval.json"


def _evaluate(model, dataset, metrics: list[str] | None, split: str = "test", k: int = 1000,
              n_examples: int | None = None, n_samples: int = 1000, seed: int = 0,
              progress: bool = True) -> dict[str, Any]:
    """Every metric in `metrics` (None: all the model's capabilities allow); naming one it cannot have is an error."""
    from dgm.evaluate import likelihood_metrics, mode_metrics, sample_quality
    from dgm.evaluate.quality import METRICS as SAMPLE_METRICS

    chosen = metrics or list(EVAL_METRICS)
    results: dict[str, Any] = {}
    if "likelihood" in chosen:
        found = likelihood_metrics(model, dataset, split, k=k, n_examples=n_examples, seed=seed, progress=progress)
        if metrics and not found:
            raise DgmError(f"{type(model).__name__} has no elbo()/iwae() or log_prob(), so it has no likelihood")
        results.update(found)
    if "modes" in chosen:
        found = mode_metrics(model, dataset, seed=seed)
        if metrics and not found:
            raise DgmError(f"mode coverage needs a toy 2-D mixture dataset (ring8, grid25), not '{dataset.name}'")
        results.update(found)
    sample_names = [m for m in chosen if m in SAMPLE_METRICS]
    if sample_names:
        found = sample_quality(model, dataset, sample_names, n_samples=n_samples, seed=seed, progress=progress)
        if metrics and not found:
            raise DgmError(f"sample-quality metrics ({', '.join(sample_names)}) need image samples, and this run has none")
        results.update(found)
    return results


def _parse_metrics(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [m.strip().replace("-", "_") for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in EVAL_METRICS]
    if unknown or not names:
        raise DgmError(f"unknown metric '{unknown[0] if unknown else text}'; choose from {', '.join(EVAL_METRICS)}")
    return names


def _print_results(results: dict[str, Any]) -> None:
    reference = results.get("reference") or {}
    notes = [v for k, v in results.items() if k.endswith("_note")]
    plain = {k: v for k, v in results.items() if k not in reference and k != "reference" and not k.endswith("_note")}
    width = max(map(len, plain), default=0)
    for key, value in plain.items():
        print(f"{key:>{width}}  {value:.4f}" if isinstance(value, float) else f"{key:>{width}}  {value}")
    for note in notes:
        print(f"\nnote: {note}")
    if reference:
        print(f"\nsample quality of {results['n_samples']} samples against the training set; the floor is "
              f"{results['n_samples']} real test images scored the same way")
        _table(("metric", "model", "real test vs train"),
               [(k, f"{results[k]:.4f}", f"{v:.4f}") for k, v in reference.items() if k in results])


def cmd_eval(args) -> None:
    import dgm
    from dgm.runs import load_data, read_config

    metrics = _parse_metrics(args.metrics)
    run_dir = Path(args.run)
    config = read_config(run_dir)
    model = dgm.load(args.run)
    if args.data:
        from dgm.data import load_dataset

        dataset = load_dataset(args.data, data_dir=args.data_dir)
        if tuple(dataset.shape) != tuple(model.cfg.data_shape):
            raise DgmError(f"the model expects images of shape {tuple(model.cfg.data_shape)} but dataset "
                           f"'{args.data}' has {tuple(dataset.shape)}")
    else:
        dataset = load_data(config, args.data_dir)
    results: dict[str, Any] = {"run": str(args.run), "split": args.split}
    results.update(_evaluate(model, dataset, metrics, args.split, k=args.k, n_examples=args.n_examples,
                             n_samples=args.n_samples, seed=args.seed, progress=not args.json))
    if not args.data:  # cache for `dgm report` and `dgm compare`, merged with earlier scores of the same weights
        results = _save_scores(run_dir, results)
    results.pop(FINGERPRINT, None)
    if not results.get("reference"):
        results.pop("reference", None)
    if args.json:
        print(json.dumps(results))
    else:
        _print_results(results)


FINGERPRINT = "weights_sha256"  # in eval.json: the weights its scores are of


def _read_eval(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DgmError(f"{path} is corrupt; delete it and run `dgm eval {run_dir}` again") from None


def _scores(run_dir: Path) -> tuple[dict[str, Any], bool]:
    """(RUN/eval.json, whether its scores are of weights since replaced: trained further, resumed, retrained)."""
    from dgm.runs import weights_fingerprint

    scores = _read_eval(run_dir)
    return scores, bool(scores) and scores.get(FINGERPRINT) != weights_fingerprint(run_dir)


def _save_scores(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """Write results to RUN/eval.json with the fingerprint of the weights they score, merged with the
    scores already there when those are of the same weights; returns what was written."""
    from dgm.io import atomic_write_json
    from dgm.runs import weights_fingerprint

    fingerprint = weights_fingerprint(run_dir)
    cached = _read_eval(run_dir)
    if cached.get(FINGERPRINT) == fingerprint:
        reference = {**cached.get("reference", {}), **results.get("reference", {})}
        results = {**cached, **{k: v for k, v in results.items() if k != "reference"}, "reference": reference}
    results = {**results, FINGERPRINT: fingerprint}
    atomic_write_json(run_dir / EVAL_FILE, results)
    return results


def _stale_note(run_dir) -> str:
    return (f"the scores in {run_dir}/{EVAL_FILE} are of weights since replaced (the run trained further); "
            f"rescore with `dgm eval {run_dir}`")


def cmd_report(args) -> None:
    import dgm
    from dgm.runs import load_data, read_config, read_metrics
    from dgm.viz.report import write_report

    run_dir = Path(args.run)
    config = read_config(run_dir)
    model = dgm.load(run_dir)
    dataset = load_data(config, args.data_dir)
    metrics, stale = _scores(run_dir)
    if stale:
        print(f"dgm: note: {_stale_note(run_dir)}" + ("; the report leaves them out" if args.no_eval else ""),
              file=sys.stderr)
        metrics = {}
    if not metrics and not args.no_eval:
        print(f"{run_dir} has no current {EVAL_FILE}; computing the default metrics (likelihood on 1,000 test "
              f"images, k=100) first and saving them there", file=sys.stderr)
        metrics = _save_scores(run_dir, {"run": str(run_dir), "split": "test", **_evaluate(
            model, dataset, None, k=100, n_examples=1000, seed=args.seed, progress=True)})
    path = write_report(run_dir, model, dataset, config, read_metrics(run_dir), metrics or None, seed=args.seed)
    print(path)


def cmd_compare(args) -> None:
    from dgm.runs import read_config
    from dgm.viz.report import leaderboard, markdown_table

    entries = []
    for run in args.runs:
        config = read_config(Path(run))
        metrics, stale = _scores(Path(run))
        if not metrics:
            raise DgmError(f"{run} has no {EVAL_FILE}; score it first with `dgm eval {run}`")
        if stale:
            print(f"dgm: note: {_stale_note(run)}; its row is marked (stale)", file=sys.stderr)
        entries.append((Path(run).name + (" (stale)" if stale else ""), config, metrics))
    header, rows = leaderboard(entries)
    if args.markdown:
        print(markdown_table(header, rows))
    else:
        _table(header, rows)


def cmd_plot(args) -> None:
    import torch

    import dgm
    from dgm import viz
    from dgm.runs import load_data, read_config

    config = read_config(Path(args.run))
    model = dgm.load(args.run)
    out = Path(args.out) if args.out else Path(args.run) / f"{args.kind}.png"
    has_encoder = callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))
    if args.kind == "manifold":
        viz.manifold(model, out)
    elif args.kind == "interpolate" and not has_encoder:
        viz.latent_interpolations(model, out, mode=args.mode, seed=args.seed)
    elif args.kind == "nearest":
        dataset = load_data(config, args.data_dir)
        viz.nearest_neighbours(model, dataset.to_float(dataset.train.x), out, seed=args.seed)
    else:
        dataset = load_data(config, args.data_dir)
        test = dataset.test
        if args.kind == "embedding":
            idx = torch.linspace(0, len(test) - 1, min(len(test), args.n)).long()
            viz.embedding(model, dataset.to_float(test.x[idx]), None if test.y is None else test.y[idx], out)
        else:
            g = torch.Generator().manual_seed(args.seed)
            idx = torch.randperm(len(test), generator=g)[:16]
            x = dataset.to_float(test.x[idx])
            if args.kind == "interpolate":
                viz.interpolations(model, x[:8], x[8:], out, mode=args.mode)
            else:
                viz.traversal(model, x, out)
    print(out)


def cmd_zoo(args) -> None:
    from dgm.models import capabilities, model_entries

    rows = [(e.name, e.family, ",".join(e.seeds), " ".join(capabilities(e.model_cls)), e.description)
            for e in model_entries()]
    if args.json:
        print(json.dumps([dict(zip(("name", "family", "seeds", "capabilities", "description"), r)) for r in rows]))
        return
    _table(("model", "family", "seeds", "capabilities", "description"), rows)


def cmd_data(args) -> None:
    from dgm.data import data_root, dataset_specs

    root = data_root(args.data_dir)
    rows = [(s.name, "x".join(map(str, s.shape)), str(s.num_classes or "-"), str(s.levels),
             "yes" if s.available(root) else "no", s.description) for s in dataset_specs()]
    rows += [("folder:PATH", "any", "subfolders", "256", "yes", "a folder of images, one subfolder per class"),
             ("npz:PATH", "any", "y_*", "256", "yes", "arrays x_train, x_test [, x_valid, y_*] in an .npz")]
    _table(("dataset", "shape", "classes", "levels", "offline", "description"), rows)


def _table(header, rows) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def make_parser() -> argparse.ArgumentParser:
    import dgm

    p = argparse.ArgumentParser(prog="dgm", description="Deep generative models: train, sample, evaluate, plot.",
                                epilog="Exit status: 0 done, 1 a mistake dgm found (one sentence on stderr), "
                                       "2 command-line syntax, 130 interrupted (Ctrl-C).")
    p.add_argument("--version", action="version", version=f"dgm {dgm.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    z = sub.add_parser("zoo", help="list every model, its family, seed lecture and capabilities")
    z.add_argument("--json", action="store_true", help="one JSON list on stdout")
    z.set_defaults(func=cmd_zoo)

    d = sub.add_parser("data", help="datasets: `dgm data list`")
    d.add_argument("action", choices=["list"], help="list: every dataset, its shape, levels and whether it is here")
    d.add_argument("--data-dir", help="folder with local dataset files (default $DGM_DATA_DIR)")
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("train", help="train a model and write a run folder",
                       epilog="Every key=value sets a field of the model's config or of the training config; "
                              "an unknown key lists the valid ones. time_limit takes a unit (90s, 25m, 1.5h; a "
                              "bare number is minutes) and counts training time summed over resumes.")
    t.add_argument("model", help="a name from `dgm zoo`")
    t.add_argument("options", nargs="*", help="config fields as key=value (latent_dim=2 lr=1e-3 time_limit=25m ...)")
    t.add_argument("--data", default="digits", help="dataset name, folder:PATH or npz:PATH (default digits)")
    t.add_argument("--data-dir", help="folder with local dataset files (default $DGM_DATA_DIR)")
    t.add_argument("--binarize", default="none", choices=["none", "dynamic"],
                   help="dynamic: resample a Bernoulli binarization of every batch")
    t.add_argument("--epochs", type=int, help="passes over the training set (default 100)")
    t.add_argument("--steps", type=int, help="total optimizer steps (overrides --epochs)")
    t.add_argument("--batch-size", type=int, help="examples per step and process (default 128)")
    t.add_argument("--seed", type=int, help="seed of the weights, batches and noise (default 0)")
    t.add_argument("--device", help="auto (default: CUDA if present, else CPU), cpu, cuda, cuda:N")
    t.add_argument("--out", help="run folder (default runs/MODEL-DATA)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("resume", help="continue a run from its last checkpoint",
                       epilog="Options given here reach RUN/config.json with the first checkpoint trained "
                              "with them.")
    r.add_argument("run", help="the run folder")
    r.add_argument("options", nargs="*", help="training config fields to change, as key=value (time_limit=60m)")
    r.add_argument("--epochs", type=int, help="new total number of epochs")
    r.add_argument("--steps", type=int, help="new total number of steps")
    r.add_argument("--data-dir", help="folder with local dataset files (default: the run's, then $DGM_DATA_DIR)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_resume)

    s = sub.add_parser("sample", help="write a grid of samples")
    s.add_argument("run", help="the run folder")
    s.add_argument("--n", type=int, default=64, help="how many samples (default 64)")
    s.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    s.add_argument("--label", type=int,
                   help="class to sample, for class-conditional models (cgan, acgan, gated-pixelcnn conditional=true)")
    s.add_argument("--out", help="PNG file (default RUN/samples.png, or RUN/completions.png)")
    s.add_argument("--complete", metavar="FILE",
                   help="complete these images (autoregressive models): an .npz with an array x [N, C, H, W] or "
                        "[N, H, W] (floats in [0, 1] or uint8 0..255), or one PNG of the model's image size")
    s.add_argument("--rows", type=int, help="with --complete: keep this many top rows, sample the rest")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="every metric the model supports (writes RUN/eval.json)")
    e.add_argument("run", help="the run folder")
    e.add_argument("--metrics", help=f"comma-separated subset of: {', '.join(EVAL_METRICS)} (default: all the model "
                                     "supports)")
    e.add_argument("--split", default="test", choices=["train", "valid", "test"], help="split for likelihoods")
    e.add_argument("--k", type=int, default=1000, help="importance samples for log_likelihood (IWAE)")
    e.add_argument("--n-examples", type=int, help="likelihoods on an evenly strided subset of this size")
    e.add_argument("--n-samples", type=int, default=1000,
                   help="samples for sample quality, at most the test set's size (default 1000)")
    e.add_argument("--data", help="evaluate on another dataset of the same shape")
    e.add_argument("--data-dir", help="folder with local dataset files (default: the run's, then $DGM_DATA_DIR)")
    e.add_argument("--seed", type=int, default=0, help="seed of the samples and subsets (default 0)")
    e.add_argument("--json", action="store_true", help="one JSON object on stdout, no progress bars")
    e.set_defaults(func=cmd_eval)

    rp = sub.add_parser("report", help="write RUN/report.html: config, curves, pictures, metrics")
    rp.add_argument("run", help="the run folder")
    rp.add_argument("--data-dir", help="folder with local dataset files (default: the run's, then $DGM_DATA_DIR)")
    rp.add_argument("--seed", type=int, default=0, help="seed of the pictures and metrics (default 0)")
    rp.add_argument("--no-eval", action="store_true", help="do not compute metrics when RUN/eval.json is missing")
    rp.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="a leaderboard of runs scored by `dgm eval`")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run folders scored by `dgm eval`")
    c.add_argument("--markdown", action="store_true", help="a Markdown table, for docs/benchmarks.md")
    c.set_defaults(func=cmd_compare)

    pl = sub.add_parser("plot", help="pictures: interpolations, traversals, the 2-D manifold, embeddings, "
                                     "nearest training images")
    pl.add_argument("run", help="the run folder")
    pl.add_argument("kind", choices=["interpolate", "traverse", "manifold", "embedding", "nearest"],
                    help="interpolate (between encoded test images, or in z), traverse (one latent at a time, "
                         "ordered by KL), manifold (latent_dim=2), embedding (t-SNE of codes), nearest (samples "
                         "beside their nearest training images)")
    pl.add_argument("--mode", default="slerp", choices=["slerp", "lerp"], help="interpolation path")
    pl.add_argument("--n", type=int, default=2000, help="test images in the embedding")
    pl.add_argument("--seed", type=int, default=0, help="seed of the images and noise picked (default 0)")
    pl.add_argument("--out", help="PNG file (default RUN/KIND.png)")
    pl.add_argument("--data-dir", help="folder with local dataset files (default: the run's, then $DGM_DATA_DIR)")
    pl.set_defaults(func=cmd_plot)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    # key=value options may come after --flags, which argparse alone would not accept
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "options")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.options = [*args.options, *extra]
    try:
        _check_counts(args)
        args.func(args)
    except Interrupted as e:
        print(f"dgm: {e}", file=sys.stderr)
        return 130
    except DgmError as e:
        print(f"dgm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dgm: interrupted before anything was written", file=sys.stderr)
        return 130
    return 0


# flags that count something, and the least each may be; --epochs and --steps are training-config fields
COUNTS = {"n": 1, "k": 1, "n_examples": 1, "n_samples": 2, "rows": 0, "seed": 0}


def _check_counts(args) -> None:
    for key, least in COUNTS.items():
        value = getattr(args, key, None)
        if value is not None and value < least:
            raise DgmError(f"--{key.replace('_', '-')} must be at least {least}, got {value}")


if __name__ == "__main__":
    raise SystemExit(main())
