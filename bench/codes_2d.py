"""The seed 002 picture (Hinton & Salakhutdinov 2006, Fig. 3): 2-D codes of MNIST test images, coloured by
class, from PCA of the pixels, a stacked autoencoder 784-1000-500-250-2, a VAE and a conditional VAE with
2-D latents, each trained through the real CLI in a time budget and drawn by `dgm plot RUN embedding`.
The four PNGs go to docs/images/codes-2d-*.png.

    OMP_NUM_THREADS=1 python bench/codes_2d.py --data-dir ../shared/data --minutes 5
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cli_runs import budget_arguments

from dgm.cli import main as dgm_main

# (model, options): the 2006 paper's widths for every model
RUNS = {
    "stacked": ["hidden_dims=1000,500,250", "latent_dim=2", "likelihood=bernoulli", "pretrain_epochs=1"],
    "vae": ["hidden_dims=1000,500,250", "latent_dim=2", "likelihood=bernoulli"],
    "cvae": ["hidden_dims=1000,500,250", "latent_dim=2", "likelihood=bernoulli"],
}


def dgm(*args: str) -> None:
    print("dgm " + " ".join(args), flush=True)
    if dgm_main(list(args)):
        raise SystemExit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget_arguments(p)
    p.add_argument("--images", default="docs/images")
    p.add_argument("--n", default="2000", help="test images per picture")
    args = p.parse_args()
    out = Path(args.out or "bench/out/codes-2d")
    images = Path(args.images)
    for model, options in RUNS.items():
        run = out / model
        if not args.skip_train:
            dgm("train", model, "--data", "mnist", "--data-dir", args.data_dir, "--out", str(run), "--epochs", "1000",
                "--no-progress", *options, f"time_limit={args.minutes}")
        dgm("plot", str(run), "embedding", "--method", "code", "--n", args.n, "--out",
            str(images / f"codes-2d-{model}.png"))
    # PCA of the pixels needs no model: any MNIST run names the data
    dgm("plot", str(out / "vae"), "embedding", "--method", "pca", "--n", args.n, "--out", str(images / "codes-2d-pca.png"))


if __name__ == "__main__":
    main()
