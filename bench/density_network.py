"""Density network against the VAE (seed 004): the Monte Carlo estimate log 1/S sum_s p(x|z_s), z_s ~ p(z),
"scales badly in high dimensional cases".

For each latent size (2, 8, 32) on each dataset (digits, binarized-mnist), a density network trained by that
estimate (S = --train-samples) and beside it a VAE with the same decoder (the same hidden_dims, latent_dim and
likelihood; `vae` with its ELBO), each trained through `dgm.train` for --minutes. Then the test log-likelihood
against S in (10, 100, 1000, 10000) on a strided subset of --test-examples test images: for the density
network its own estimate with S prior samples, for the VAE its IWAE_S (q(z|x) as the proposal), both by
`dgm.evaluation.likelihood_metrics`, as `dgm eval --k S` computes them. The seed's claim, which the figure
puts to the test: with prior samples the estimate needs more S the larger the latent space (and trains worse
with a fixed S), while the VAE's proposal makes its estimate nearly flat in S.

Writes RUN folders, bench.json (every number) and loglik_vs_S.png (log-likelihood against S on a log axis,
one line per latent size, one panel per dataset, VAE lines dashed) to --out, and prints a table.

    OMP_NUM_THREADS=2 python bench/density_network.py --data-dir ../shared/data --minutes 10 \\
        --out bench/out/density-network
    OMP_NUM_THREADS=1 python bench/density_network.py --datasets digits,binarized-mnist --latents 2,8 \\
        --ks 10,100 --minutes 0.05 --epochs 1 --train-samples 5 --test-examples 20 --out /tmp/dn-smoke  # smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import dgm
from dgm.evaluation import likelihood_metrics
from dgm.runs import load_data, read_config

MODELS = ("density-network", "vae")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def train_run(model: str, data: str, latent: int, args, out: Path) -> dgm.Run:
    """Train `model` with the shared decoder options into `out` (or reuse it with --skip-train)."""
    if args.skip_train:
        return dgm.Run(out)
    options = {"hidden_dims": tuple(_ints(args.hidden_dims)), "latent_dim": latent, "likelihood": args.likelihood,
               "epochs": args.epochs, "time_limit": args.minutes, "batch_size": args.batch_size, "progress": False}
    if model == "density-network":
        options["n_samples"] = args.train_samples
    print(f"dgm.train({model!r}, data={data!r}, out={str(out)!r}, "
          + ", ".join(f"{k}={v!r}" for k, v in options.items()) + ")", flush=True)
    t0 = time.perf_counter()
    run = dgm.train(model, data=data, out=out, data_dir=args.data_dir, **options)
    print(f"training wall time {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def score_run(run: dgm.Run, args) -> dict:
    """elbo and the test log-likelihood at every S (IWAE_S: prior samples for the density network, the encoder's
    for the VAE), mean nats per image on the strided test subset, with the seconds each took."""
    model = run.model
    dataset = load_data(read_config(run.path), args.data_dir)
    row: dict = {"log_likelihood": {}, "eval_seconds": {}}
    for k in _ints(args.ks):
        t0 = time.perf_counter()
        scores = likelihood_metrics(model, dataset, "test", k=k, n_examples=args.test_examples,
                                    chunk_size=args.chunk_size, seed=0, progress=False)
        row["eval_seconds"][str(k)] = round(time.perf_counter() - t0, 1)
        if "log_likelihood" not in scores:  # a likelihood that is not a probability of the pixels
            raise SystemExit(f"{run.path}: no log_likelihood ({scores.get('likelihood_note')}); "
                             "choose a normalised --likelihood")
        row["log_likelihood"][str(k)] = scores["log_likelihood"]
        row.setdefault("elbo", scores["elbo"])
        row["n_examples"] = scores["n_examples"]
    metrics = run.metrics
    last = metrics[-1] if metrics else {}
    row["train_epochs"] = last.get("epoch")
    row["train_steps"] = last.get("step")
    row["train_seconds"] = round(last.get("time", 0.0), 1)
    row["best_valid_loss"] = min((m["valid/loss"] for m in metrics if "valid/loss" in m), default=math.nan)
    return row


def table(results: dict, ks: list[int]) -> str:
    lines = ["| data | latent | model | " + " | ".join(f"S={k}" for k in ks) + " | elbo | epochs | training time |",
             "|---|---|---|" + "---|" * (len(ks) + 3)]
    for data, by_latent in results.items():
        for latent, by_model in by_latent.items():
            for model, r in by_model.items():
                cells = " | ".join(f"{r['log_likelihood'][str(k)]:.2f}" for k in ks)
                epochs = r["train_epochs"]
                lines.append(f"| {data} | {latent} | {model} | {cells} | {r['elbo']:.2f} | "
                             f"{'-' if epochs is None else f'{epochs:.0f}'} | {r['train_seconds']:.0f} s |")
    return "\n".join(lines)


def figure(results: dict, ks: list[int], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, (data, by_latent) in zip(axes[0], results.items()):
        for i, (latent, by_model) in enumerate(by_latent.items()):
            colour = f"C{i}"
            for model, style in (("density-network", "-"), ("vae", "--")):
                if model in by_model:
                    ys = [by_model[model]["log_likelihood"][str(k)] for k in ks]
                    label = f"{'density net' if model == 'density-network' else 'VAE'}, latent {latent}"
                    ax.plot(ks, ys, style, marker="o", color=colour, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("S, samples per test image")
        ax.set_ylabel("test log-likelihood (nats per image)")
        ax.set_title(data)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("log 1/S sum p(x|z_s): z_s ~ p(z) (density network, solid) or q(z|x) (VAE, dashed)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--out", default="bench/out/density-network")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget of each run (time_limit)")
    p.add_argument("--epochs", type=int, default=1000, help="most epochs per run (--minutes usually stops first)")
    p.add_argument("--datasets", default="digits,binarized-mnist", help="comma-separated dataset names")
    p.add_argument("--latents", default="2,8,32", help="comma-separated latent sizes")
    p.add_argument("--ks", default="10,100,1000,10000", help="comma-separated S at which to estimate log p(x)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--hidden-dims", default="300", help="the decoder's MLP widths (the VAE's encoder mirrors them)")
    p.add_argument("--likelihood", default="auto", help="p(x|z) of both models (auto: Bernoulli on binary data, "
                                                          "categorical on digits' 17 levels)")
    p.add_argument("--train-samples", type=int, default=100, help="S of the density network's training estimate")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--test-examples", type=int, default=1000, help="strided test subset scored at every S")
    p.add_argument("--chunk-size", type=int, default=8192, help="(sample x example) pairs per decoder call")
    p.add_argument("--skip-train", action="store_true", help="score the runs already in --out")
    args = p.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - set(MODELS):
        p.error(f"unknown model(s) {', '.join(sorted(set(models) - set(MODELS)))}; choose from {', '.join(MODELS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ks = _ints(args.ks)
    results: dict = {}
    for data in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        for latent in _ints(args.latents):
            for model in models:
                run = train_run(model, data, latent, args, out / f"{data}-{model}-z{latent}")
                row = score_run(run, args)
                results.setdefault(data, {}).setdefault(str(latent), {})[model] = row
                print(f"{data} latent {latent} {model}: " + ", ".join(
                    f"S={k} {row['log_likelihood'][str(k)]:.2f}" for k in ks), flush=True)
                (out / "bench.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(table(results, ks), flush=True)
    summary = {"args": vars(args), "results": results, "threads": torch.get_num_threads(), "torch": torch.__version__}
    (out / "bench.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out / 'bench.json'} and {figure(results, ks, out / 'loglik_vs_S.png')}")


if __name__ == "__main__":
    main()
