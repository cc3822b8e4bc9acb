"""Hinton & Salakhutdinov (2006)'s MNIST table: PCA against autoencoders, by test reconstruction error.

The error of 30-D codes is the sum of squared errors per test image (pixels in [0, 1]); beside it, the
linear-probe and 5-NN accuracy of each model's codes. PCA is dgm's own (`pca_reconstruction_error`, fitted
on the training split); every model is trained through the real CLI in a time budget (`dgm train ...
time_limit=`), then scored by `dgm eval RUN --metrics representation --json`.

    OMP_NUM_THREADS=1 python bench/ae_mnist.py --data-dir ../shared/data --minutes 20
    OMP_NUM_THREADS=1 python bench/ae_mnist.py --models stacked,vae --minutes 60
    python bench/ae_mnist.py --data digits --hidden-dims 16 --latent-dim 4 --epochs 4 --pretrain-epochs 1 \\
        --out /tmp/ae-smoke                                                   # a smoke test of the whole table

The paper's figures (30-D codes, MNIST test set): deep autoencoder 3.00, logistic PCA 8.01, PCA 13.87.
Every model uses the same widths (784-1000-500-250-30 by default) and the paper's loss, the cross-entropy
of logistic output units on grey levels (`likelihood=bernoulli`); stacked pretrains each layer for
--pretrain-epochs epochs (autoencoders where the paper had RBMs), then fine-tunes the stack.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cli_runs import budget_arguments, train_then_eval

from dgm.data import load_dataset
from dgm.evaluation import strided_subset
from dgm.evaluation.representation import MAX_TRAIN_CODES, pca_reconstruction_error, principal_axes, probe_accuracies
from dgm.runs import read_metrics

# options of each row beyond the shared widths and likelihood
RECIPES = {
    "stacked": [],  # --pretrain-epochs is added below
    "ae": [],
    "dae": ["noise=masking", "noise_level=0.25"],
    "sae": ["sparsity=kl", "sparsity_target=0.05", "sparsity_weight=1"],
    "cae": ["contraction_weight=0.1"],  # hidden layers: the exact Jacobian by torch.func
    "vae": [],
}


def pca_row(data: str, data_dir: str, k: int) -> dict:
    """The PCA baseline: reconstruction error of k components and the two classifiers on its k-D codes."""
    t0 = time.perf_counter()
    dataset = load_dataset(data, data_dir=data_dir)
    train_x, test_x = dataset.to_float(dataset.train.x), dataset.to_float(dataset.test.x)
    row = {"sse_per_image": pca_reconstruction_error(train_x, test_x, k)}
    mean, axes = principal_axes(train_x, k)
    idx = strided_subset(len(train_x), MAX_TRAIN_CODES)
    codes = [(x.flatten(1).double() - mean) @ axes for x in (train_x[idx], test_x)]
    row.update(probe_accuracies(codes[0], dataset.train.y[idx], codes[1], dataset.test.y))
    return {**row, "epochs": "-", "train_seconds": round(time.perf_counter() - t0, 1)}


def model_row(model: str, args, out: Path) -> dict:
    train = ["train", model, "--data", args.data, "--data-dir", args.data_dir, "--out", str(out), "--epochs",
             str(args.epochs), "--no-progress", f"hidden_dims={args.hidden_dims}", f"latent_dim={args.latent_dim}",
             "likelihood=bernoulli", f"time_limit={args.minutes}", *RECIPES[model]]
    if model == "stacked":
        train.append(f"pretrain_epochs={args.pretrain_epochs}")
    evaluate = ["eval", str(out), "--metrics", "representation", "--json", "--data-dir", args.data_dir]
    row = train_then_eval(train, evaluate, args.skip_train)
    metrics = read_metrics(out)
    last = metrics[-1] if metrics else {}
    epochs = f"{last.get('epoch', 0):.0f}" + (" (pretraining only)" if "train/pretrain_layer" in last else "")
    return {**row, "epochs": epochs, "train_seconds": round(last.get("time", 0.0), 1)}


def table(rows: dict[str, dict]) -> str:
    lines = ["| model | SSE per image | linear probe | 5-NN | epochs | training time |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['sse_per_image']:.2f} | {r.get('probe_accuracy', float('nan')):.4f} | "
                     f"{r.get('knn_accuracy', float('nan')):.4f} | {r['epochs']} | {r['train_seconds']:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget_arguments(p)
    p.add_argument("--data", default="mnist", help="dataset name (default mnist)")
    p.add_argument("--models", default=",".join(RECIPES), help=f"comma-separated rows (default {','.join(RECIPES)})")
    p.add_argument("--hidden-dims", default="1000,500,250", help="encoder widths, the decoder mirrors them")
    p.add_argument("--latent-dim", type=int, default=30, help="code size, also PCA's number of components")
    p.add_argument("--epochs", type=int, default=1000, help="most epochs per model (--minutes usually stops first)")
    p.add_argument("--pretrain-epochs", type=int, default=5, help="stacked: greedy pretraining epochs per layer")
    args = p.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(RECIPES)
    if unknown:
        p.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(RECIPES)}")
    out = Path(args.out or "bench/out/ae-mnist")
    rows = {f"PCA ({args.latent_dim} components)": pca_row(args.data, args.data_dir, args.latent_dim)}
    for model in models:
        rows[model] = model_row(model, args, out / model)
    print(table(rows), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
