"""Semi-supervised M2 on MNIST with 100 labels (Kingma et al. 2014, table 1): test classification error, mean and
standard deviation over label draws (`label_seed` 0, 1, ...), each run trained through the real CLI.

    OMP_NUM_THREADS=1 python bench/m2_mnist.py --data-dir ../shared/data --minutes 6 --draws 5 --out bench/out/m2

The paper's M2: one hidden layer of 500 units in every network, 50 latent units, alpha = 0.1 N, Bernoulli
likelihood; we train on dynamically binarized MNIST (the labelled MNIST files; binarized-mnist has no labels) with
a labelled batch of 100 beside every batch of 100 and a time budget per draw.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import dgm
from dgm.cli import main as dgm_main

RECIPE = ["hidden_dims=500", "latent_dim=50", "likelihood=bernoulli", "labels=100", "labelled_batch=100",
          "alpha=0.1", "batch_size=100", "lr=3e-4"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--out", default="bench/out/m2")
    p.add_argument("--minutes", type=float, default=6.0, help="training time budget per draw")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--extra", nargs="*", default=[], help="more model options, e.g. alpha=1")
    args = p.parse_args()
    errors = []
    for seed in range(args.draws):
        out = Path(args.out) / f"labels100-seed{seed}"
        if not (out / "model.safetensors").exists():
            t0 = time.perf_counter()
            code = dgm_main(["train", "m2", "--data", "mnist", "--binarize", "dynamic", "--data-dir", args.data_dir, "--out", str(out),
                             "--epochs", "1000", "--no-progress", *RECIPE, *args.extra, f"label_seed={seed}",
                             f"time_limit={args.minutes}"])
            if code:
                raise SystemExit(code)
            print(f"draw {seed}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        scores = dgm.evaluate(out, metrics=["classification"], data_dir=args.data_dir, progress=False)
        metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
        errors.append(scores["classification_error"])
        print(json.dumps({"label_seed": seed, "test_error": errors[-1], "epochs": round(metrics[-1]["epoch"], 1),
                          "train_seconds": round(metrics[-1]["time"])}), flush=True)
    summary = {"test_error_mean": round(statistics.mean(errors), 4),
               "test_error_sd": round(statistics.stdev(errors), 4) if len(errors) > 1 else None,
               "errors": errors, "recipe": RECIPE + args.extra, "minutes": args.minutes}
    print(json.dumps(summary, indent=2))
    (Path(args.out) / "bench.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
