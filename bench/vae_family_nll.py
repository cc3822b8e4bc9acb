"""Seed 004's VAE family on static binarized MNIST: each variant trained through the real CLI with the same
networks and time budget, then its test NLL by IWAE_k.

    OMP_NUM_THREADS=1 python bench/vae_family_nll.py --data-dir ../shared/data --minutes 12 \
        --recipes vae vampprior planar10 --out bench/out/vae-family

Every recipe is the VampPrior paper's MLP (gated 784-300-300-40 and back, Bernoulli, batch 100, KL warm-up,
early stopping on the validation loss), as bench/vae_nll.py, with one part changed.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import dgm
from dgm.cli import main as dgm_main
from dgm.models import config_fields, get_entry
from dgm.training import TrainConfig

from vae_nll import RECIPE

RECIPES: dict[str, tuple[str, list[str]]] = {
    "vae": ("vae", []),
    "vampprior": ("vae", ["prior=vampprior", "n_pseudo=500"]),
    "mog": ("vae", ["prior=mog", "n_components=500"]),
    "flow-prior": ("vae", ["prior=flow", "prior_flow_length=2"]),
    "planar10": ("vae", ["flow=planar", "flow_length=10", "flow_context=300"]),
    "householder10": ("vae", ["flow=householder", "flow_length=10", "flow_context=300"]),
    "iaf": ("vae", ["flow=iaf", "flow_length=2", "flow_context=300", "flow_hidden=320"]),
    "hvae-vampprior": ("hvae", ["prior=vampprior", "n_pseudo=500"]),
    "pixelvae": ("pixelvae", ["likelihood=auto"]),  # its decoder's own Bernoulli (binary data)
    # the gated PixelCNN of pixelvae's decoder (depth, width, kernels) alone, for the same budget
    "gated-pixelcnn3": ("gated-pixelcnn", ["n_layers=3", "channels=32", "first_kernel=5", "kernel=3"]),
    "factor-analysis": ("factor-analysis", []),
    "density-network": ("density-network", []),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--out", default="bench/out/vae-family")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--minutes", type=float, default=12.0, help="training time budget per recipe")
    p.add_argument("--epochs", type=int, default=2000)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--test-examples", type=int, default=None, help="strided subset of the test split (all: omit)")
    p.add_argument("--skip-train", action="store_true", help="evaluate existing runs")
    args = p.parse_args()
    results = {}
    for name in args.recipes:
        model, options = RECIPES[name]
        out = Path(args.out) / name
        # the VAE recipe's networks and training; a model keeps the options it has
        known = set(config_fields(get_entry(model).config_cls)) | set(config_fields(TrainConfig))
        recipe = [o for o in RECIPE if o.split("=")[0] in known]
        if not args.skip_train:
            t0 = time.perf_counter()
            code = dgm_main(["train", model, "--data", "binarized-mnist", "--data-dir", args.data_dir, "--out",
                             str(out), "--epochs", str(args.epochs), "--no-progress", *recipe, *options,
                             f"time_limit={args.minutes}"])
            if code:
                print(f"{name}: training failed with exit {code}", flush=True)
                continue
            print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        scores = dgm.evaluate(out, metrics=["likelihood"], k=args.k, n_examples=args.test_examples,
                              data_dir=args.data_dir, progress=False)
        metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
        results[name] = {"model": model, "options": recipe + options, "test_nll": round(-scores["log_likelihood"], 2),
                         "test_elbo": round(scores["elbo"], 2) if "elbo" in scores else None, "k": args.k,  # exact models: none
                         "test_examples": args.test_examples or 10_000,
                         "eval_seconds": round(time.perf_counter() - t0), "epochs": round(metrics[-1]["epoch"], 1),
                         "train_seconds": round(metrics[-1]["time"]), "threads": torch.get_num_threads()}
        print(json.dumps({name: results[name]}), flush=True)
        path = Path(args.out) / f"{name}.json"
        path.write_text(json.dumps(results[name], indent=2) + "\n")
    print(f"{'recipe':<18} {'NLL':>8} {'ELBO':>9} {'epochs':>7} {'train s':>8}")
    for name, r in results.items():
        print(f"{name:<18} {r['test_nll']:>8.2f} {r['test_elbo'] or float('nan'):>9.2f} {r['epochs']:>7} {r['train_seconds']:>8}")


if __name__ == "__main__":
    main()
