"""The `dgm` command: zoo, data, train, resume, sample, eval, report, compare, plot, serve.

Commands ask a model what it can do (its methods) and never switch on model names.
Exit status: 0 done; 1 a mistake dgm found (one sentence on stderr, no traceback: a bad
value, path, file or option); 2 command-line syntax (argparse's usage message); 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dgm.errors import DgmError, Interrupted


def _options(pairs: list[str]) -> dict[str, str]:
    """key=value pairs as {key: text}; keys may use - for _."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise DgmError(f"cannot read '{pair}'; options are written key=value, e.g. latent_dim=2")
        out[key] = text
    return out


def _typed_options(args, config_cls: type | None) -> dict[str, Any]:
    """The key=value options read as the fields they set declare, then the training flags on top
    (--epochs N alone means N epochs: steps back to 0), each checked."""
    from dgm.api import split_options

    model_values, train_values = split_options(config_cls, _options(args.options), parse=True)
    flags = {key: getattr(args, key) for key in ("epochs", "steps", "seed", "device", "batch_size")
             if getattr(args, key, None) is not None}
    if "epochs" in flags and "steps" not in flags and "steps" not in train_values:
        flags["steps"] = 0
    if args.no_progress:
        flags["progress"] = False
    return {**model_values, **train_values, **split_options(config_cls, flags)[1]}


def cmd_train(args) -> None:
    from dgm.api import train
    from dgm.models import get_entry

    options = _typed_options(args, get_entry(args.model).config_cls)
    train(args.model, data=args.data, out=args.out, data_dir=args.data_dir, binarize=args.binarize, **options)


def cmd_resume(args) -> None:
    from dgm.api import resume

    resume(args.run, data_dir=args.data_dir, **_typed_options(args, None))


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
    if args.grey:
        import torch

        from dgm.io import read_images
        from dgm.models.colorization import colorization_grid

        if not callable(getattr(model, "colorize", None)):
            raise DgmError(f"{type(model).__name__} cannot colorize grey images; train colorization on sprites-grey")
        if args.k < 1:
            raise DgmError(f"--k must be at least 1, got {args.k}")
        x = read_images(Path(args.grey), tuple(model.cfg.data_shape), model.cfg.levels)
        out = Path(args.out) if args.out else Path(args.run) / "colorizations.png"
        grid, nrow = colorization_grid(model, x, args.k, generator=torch.Generator().manual_seed(args.seed))
        viz.save_grid(grid, out, nrow=nrow)
        print(out)
        return
    if args.input:
        out = Path(args.out) if args.out else Path(args.run) / "translations.png"
        _translate(model, Path(args.input), out, args.seed, args.reverse)
        print(out)
        return
    if args.reverse:
        raise DgmError("--reverse translates --input FILE from domain B to A (cyclegan); add --input")
    out = Path(args.out) if args.out else Path(args.run) / "samples.png"
    if args.caption is not None or args.box is not None:
        _sample_captioned(model, args, out)
    else:
        viz.samples(model, out, n=args.n, seed=args.seed, y=args.label)
    print(out)


def _translate(model, path: Path, out: Path, seed: int, reverse: bool) -> None:
    """A grid of --input images (left) and their translations (right), by the model's `translate`."""
    import inspect

    import torch

    from dgm import viz
    from dgm.io import read_images

    if not callable(getattr(model, "translate", None)):
        raise DgmError(f"{type(model).__name__} does not translate images; pix2pix and cyclegan do")
    if reverse and "reverse" not in inspect.signature(model.translate).parameters:
        raise DgmError(f"{type(model).__name__} translates one way only; --reverse is for cyclegan")
    x = read_images(path, tuple(model.input_shape), model.cfg.levels)
    generator = torch.Generator().manual_seed(seed)
    y = model.translate(x, reverse=True, generator=generator) if reverse else model.translate(x, generator=generator)
    pairs = torch.stack([x.expand(-1, y.shape[1], -1, -1), y.to(x.dtype)], 1)
    viz.save_grid(pairs.reshape(-1, *y.shape[1:]), out, nrow=2)


def _sample_captioned(model, args, out: Path) -> None:
    """--n samples for one caption (and box): text-gan, www-gan."""
    import torch

    from dgm import viz

    if not callable(getattr(model, "condition_of", None)):
        raise DgmError(f"{type(model).__name__} takes no caption or box; text-gan and www-gan do")
    if args.caption is None:
        raise DgmError("--box places the object a caption describes; add --caption TEXT")
    if args.label is not None:
        raise DgmError("--label picks a class; a caption model takes --caption (and --box) instead")
    box = None
    if args.box is not None:
        try:
            box = [int(v) for v in args.box.split(",")]
        except ValueError:
            box = []
        if len(box) != 4:
            raise DgmError(f"--box takes four whole pixel edges x0,y0,x1,y1 (e.g. 4,4,20,20), got '{args.box}'")
    y = model.condition_of([args.caption] * args.n, box)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(args.seed)
    with torch.no_grad():
        x = model.sample(args.n, y=y, generator=generator)
    title = args.caption + (f" in box {args.box}" if box else "")
    viz.save_grid(x, out, nrow=int(args.n ** 0.5), title=title)


def _parse_metrics(text: str | None) -> list[str] | None:
    """--metrics a,b as a list (the names are checked by dgm.api.evaluate)."""
    if text is None:
        return None
    return [m.strip().replace("-", "_") for m in text.split(",") if m.strip()]


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
    from dgm.api import evaluate

    if (args.chains != 16 or args.ais_steps != 1000 or args.bdmc) and not args.ais:
        raise DgmError("--chains, --ais-steps and --bdmc set up the AIS estimate; add --ais")
    results = evaluate(args.run, _parse_metrics(args.metrics), split=args.split, k=args.k,
                       n_examples=args.n_examples, n_samples=args.n_samples, seed=args.seed, data=args.data,
                       data_dir=args.data_dir, progress=not args.json, ais=args.ais, chains=args.chains,
                       ais_steps=args.ais_steps, bdmc=args.bdmc)
    if args.json:
        print(json.dumps(results))
    else:
        _print_results(results)


def cmd_report(args) -> None:
    import dgm
    from dgm.api import EVAL_FILE, evaluate, scores_and_staleness, stale_note
    from dgm.runs import load_data, read_config, read_metrics
    from dgm.viz.report import write_report

    run_dir = Path(args.run)
    config = read_config(run_dir)
    model = dgm.load(run_dir)
    dataset = load_data(config, args.data_dir)
    metrics, stale = scores_and_staleness(run_dir)
    if stale:
        print(f"dgm: note: {stale_note(run_dir)}" + ("; the report leaves them out" if args.no_eval else ""),
              file=sys.stderr)
        metrics = {}
    if not metrics and not args.no_eval:
        print(f"{run_dir} has no current {EVAL_FILE}; computing the default metrics (likelihood on 1,000 test "
              f"images, k=100) first and saving them there", file=sys.stderr)
        evaluate(run_dir, k=100, n_examples=1000, seed=args.seed, data_dir=args.data_dir)
        metrics = scores_and_staleness(run_dir)[0]
    path = write_report(run_dir, model, dataset, config, read_metrics(run_dir), metrics or None, seed=args.seed)
    print(path)


def cmd_compare(args) -> None:
    from dgm.api import EVAL_FILE, scores_and_staleness, stale_note
    from dgm.runs import read_config
    from dgm.viz.report import leaderboard, markdown_table

    entries = []
    for run in args.runs:
        config = read_config(Path(run))
        metrics, stale = scores_and_staleness(Path(run))
        if not metrics:
            raise DgmError(f"{run} has no {EVAL_FILE}; score it first with `dgm eval {run}`")
        if stale:
            print(f"dgm: note: {stale_note(run)}; its row is marked (stale)", file=sys.stderr)
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
    from dgm.models import batch_fields
    from dgm.runs import load_data, read_config

    config = read_config(Path(args.run))
    model = dgm.load(args.run)
    name = f"{args.kind}-{args.method}" if args.kind == "embedding" and args.method != "auto" else args.kind
    out = Path(args.out) if args.out else Path(args.run) / f"{name}.png"
    has_encoder = callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))
    if args.label is not None and args.kind != "manifold":
        raise DgmError("--label picks the class of the manifold picture; a progression takes --from-label and "
                       "--to-label")
    if (args.from_label is not None or args.to_label is not None) and args.kind != "progression":
        raise DgmError("--from-label and --to-label belong to the progression picture")
    if args.kind == "manifold":
        viz.manifold(model, out, y=args.label)
    elif args.kind == "progression":
        one_pair = args.from_label is not None or args.to_label is not None
        last = (getattr(model.cfg, "num_classes", None) or 1) - 1
        pairs = [(0 if args.from_label is None else args.from_label,
                  last if args.to_label is None else args.to_label)] if one_pair else None
        by_factor = getattr(model, "attribute_ends", None) is not None and not one_pair  # rows named by factor
        factors = load_data(config, args.data_dir).factors if by_factor else None
        viz.progression(model, out, pairs, styles=8 if one_pair else 1, seed=args.seed, factors=factors)
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
            condition = batch_fields(model, dataset, test)[0]  # what a conditional model reads (labels, attributes)
            viz.embedding(model, dataset.to_float(test.x[idx]), None if test.y is None else test.y[idx], out,
                          seed=args.seed, method=args.method, condition=None if condition is None else condition[idx])
        else:
            g = torch.Generator().manual_seed(args.seed)
            idx = torch.randperm(len(test), generator=g)[:16]
            x = dataset.to_float(test.x[idx])
            y = batch_fields(model, dataset, test)[0]  # the images' labels (or attributes), for a conditional model
            y = None if y is None else y[idx]
            if args.kind == "analogies":
                from dgm.viz.analogies import analogies

                analogies(model, x[:8], out, y=None if y is None else y[:8])
            elif args.kind == "interpolate":
                viz.interpolations(model, x[:8], x[8:], out, mode=args.mode, y_a=None if y is None else y[:8],
                                   y_b=None if y is None else y[8:])
            else:
                viz.traversal(model, x, out, y=y)
    print(out)


def cmd_serve(args) -> None:
    from dgm.serve import serve

    try:
        serve(args.run, host=args.host, port=args.port, data_dir=args.data_dir,
              announce=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        raise Interrupted(f"stopped serving {args.run}") from None


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
                   help="class to sample, for class-conditional models (cvae, cgan, acgan, gated-pixelcnn "
                        "conditional=true)")
    s.add_argument("--out", help="PNG file (default RUN/samples.png, RUN/completions.png or RUN/colorizations.png)")
    s.add_argument("--complete", metavar="FILE",
                   help="complete these images (autoregressive models): an .npz with an array x [N, C, H, W] or "
                        "[N, H, W] (floats in [0, 1] or uint8 0..255), or one PNG of the model's image size")
    s.add_argument("--rows", type=int, help="with --complete: keep this many top rows, sample the rest")
    s.add_argument("--grey", metavar="FILE",
                   help="colorize these grey images (colorization models): one PNG of the model's image size or an "
                        ".npz with an array x [N, 1, H, W] or [N, H, W]; writes a row per image: the input, then "
                        "--k colorizations (default RUN/colorizations.png)")
    s.add_argument("--k", type=int, default=8, help="with --grey: colorizations per image (default 8)")
    s.add_argument("--caption", help="text-gan / www-gan: draw --n images of this caption, e.g. \"a big green "
                                     "square at the top on black\" (words of the training captions)")
    s.add_argument("--box", metavar="X0,Y0,X1,Y1",
                   help="www-gan: where the object goes, in pixel edges (half-open: columns x0..x1-1, rows y0..y1-1)")
    s.add_argument("--input", metavar="FILE",
                   help="pix2pix / cyclegan: translate these images (one PNG of the model's input size or an .npz "
                        "with an array x); writes input | output rows (default RUN/translations.png)")
    s.add_argument("--reverse", action="store_true", help="with --input: cyclegan's translation from B to A")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="every metric the model supports (writes RUN/eval.json)")
    e.add_argument("run", help="the run folder")
    e.add_argument("--metrics", help="comma-separated subset of: likelihood, representation, disentanglement, "
                                     "colorization, conditioning, classification, modes, fid, kid, inception_score, "
                                     "precision_recall, diversity, memorisation, critic (default: all the model "
                                     "supports)")
    e.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="split for likelihoods and representation scores")
    e.add_argument("--k", type=int, default=1000, help="importance samples for log_likelihood (IWAE)")
    e.add_argument("--n-examples", type=int, help="likelihoods on an evenly strided subset of this size (AIS: 100 "
                                                  "unless given)")
    e.add_argument("--ais", action="store_true",
                   help="log p(x) by annealed importance sampling with HMC (Wu et al. 2017), for any model that "
                        "decodes z ~ p(z): log_likelihood_ais, a stochastic lower bound (alone unless --metrics "
                        "names others too)")
    e.add_argument("--chains", type=int, default=16, help="with --ais: chains per example (default 16)")
    e.add_argument("--ais-steps", type=int, default=1000,
                   help="with --ais: intermediate distributions, a sigmoidal schedule of beta (default 1000)")
    e.add_argument("--bdmc", action="store_true",
                   help="with --ais: also the bidirectional Monte Carlo gap (upper - lower bound) on data simulated "
                        "from the model: how far the estimate can be trusted")
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
                                     "nearest training images, label progressions, analogies")
    pl.add_argument("run", help="the run folder")
    pl.add_argument("kind", choices=["interpolate", "traverse", "manifold", "embedding", "nearest", "progression",
                                     "analogies"],
                    help="interpolate (between encoded test images, or in z), traverse (one latent at a time, "
                         "ordered by KL), manifold (latent_dim=2), embedding (test codes in 2-D, see --method), "
                         "nearest (samples beside their nearest training images), progression (conditional "
                         "models: fixed z decoded with y_alpha = (1 - alpha) y_from + alpha y_to; rows 0->1, "
                         "1->2, ... or, with --from-label/--to-label, 8 codes z for that pair), analogies "
                         "(conditional models with an encoder: 8 test images, each one's code z decoded with every "
                         "label)")
    pl.add_argument("--mode", default="slerp", choices=["slerp", "lerp"], help="interpolation path")
    pl.add_argument("--method", default="auto", choices=["auto", "pca", "tsne", "code"],
                    help="embedding: pca (of the pixels, no model needed), tsne (of the codes), code (the codes "
                         "themselves, latent_dim=2); auto: code for 2-D codes, else tsne")
    pl.add_argument("--n", type=int, default=2000, help="test images in the embedding")
    pl.add_argument("--label", type=int, help="manifold of a conditional model: the class it is drawn for")
    pl.add_argument("--from-label", type=int, help="progression: the label at alpha = 0 (default 0)")
    pl.add_argument("--to-label", type=int, help="progression: the label at alpha = 1 (default the last class)")
    pl.add_argument("--seed", type=int, default=0, help="seed of the images and noise picked (default 0)")
    pl.add_argument("--out", help="PNG file (default RUN/KIND.png; RUN/embedding-METHOD.png for a --method)")
    pl.add_argument("--data-dir", help="folder with local dataset files (default: the run's, then $DGM_DATA_DIR)")
    pl.set_defaults(func=cmd_plot)

    sv = sub.add_parser("serve", help="a local web page to explore a run: samples, latent sliders, a canvas to "
                                      "encode or complete, interpolations",
                        epilog="The model is loaded once; every part of the page the model can do is on "
                               "(GET /api/info says which). Ctrl-C stops.")
    sv.add_argument("run", help="the run folder")
    sv.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: any free port)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    sv.add_argument("--data-dir", help="folder with local dataset files (default: the run's, then $DGM_DATA_DIR)")
    sv.set_defaults(func=cmd_serve)
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
        _import_holding_ctrl_c()
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


def _import_holding_ctrl_c() -> None:
    """Import the libraries every command needs with Ctrl-C held back until they are loaded, then act on it:
    an interrupt that lands inside some third-party imports ends in a RecursionError traceback instead of
    a KeyboardInterrupt (seen once in ten start-up timings, inside scikit-learn's datasets import)."""
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread()  # signal handlers live in the main thread
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):  # ignored (nohup), or the caller's
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda *_: held.append(True))
    try:
        import sklearn.datasets  # noqa: F401  (the digits loader's, and scikit-learn's lazy submodules)
        import torch  # noqa: F401

        import dgm.api  # noqa: F401
        from dgm.models import model_entries

        model_entries()  # imports every model module
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


# flags that count something and reach no other check, and the least each may be (--epochs and --steps are
# training-config fields; eval's --k, --n-examples and --n-samples are checked by dgm.api.evaluate)
COUNTS = {"n": 1, "rows": 0, "seed": 0}


def _check_counts(args) -> None:
    for key, least in COUNTS.items():
        value = getattr(args, key, None)
        if value is not None and value < least:
            raise DgmError(f"--{key.replace('_', '-')} must be at least {least}, got {value}")


if __name__ == "__main__":
    raise SystemExit(main())
