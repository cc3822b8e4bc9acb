"""8-bit MNIST (256 grey levels): test bits/dim of models whose likelihood is a probability of the
stored pixel values, trained through the real CLI in a fixed CPU budget (`time_limit`), then
scored by `dgm eval RUN --metrics likelihood --json` (IWAE_k for the VAE on an evenly strided
test subset; exact for pixelcnn++ on all 10,000 test images).

    OMP_NUM_THREADS=1 python bench/mnist8_bpd.py vae-dlogistic --data-dir ../shared/data --minutes 25
    OMP_NUM_THREADS=1 python bench/mnist8_bpd.py pixelcnn++ --data-dir ../shared/data --minutes 25

Published 8-bit MNIST bits/dim of dequantized flows (continuous densities on x + uniform noise,
a bound on the discrete bits/dim): RealNVP 1.06, Glow 1.05 (FFJORD paper, Table 2), MAF 1.89
(MAF paper's 8-bit figure as quoted there).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli_runs import budget_arguments, train_then_eval

from dgm.runs import read_metrics

RECIPES = {
    # the VampPrior paper's standard VAE sizes (gated MLP 300-300, 40 latents), 8-bit likelihoods
    "vae-dlogistic": ("vae", ["hidden_dims=300,300", "activation=gated", "latent_dim=40", "likelihood=dlogistic",
                              "n_mix=5", "kl_warmup_steps=10000", "batch_size=100", "lr=1e-3"]),
    "vae-gaussian": ("vae", ["hidden_dims=300,300", "activation=gated", "latent_dim=40", "likelihood=gaussian",
                             "learned_scale=true", "kl_warmup_steps=10000", "batch_size=100", "lr=1e-3"]),
    # a CPU-sized PixelCNN++ (the paper: 160 filters, 5 resnets per scale, 10 components)
    "pixelcnn++": ("pixelcnn++", ["filters=32", "n_resnet=1", "n_mix=5", "n_scales=3", "batch_size=32", "lr=1e-3"]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", choices=sorted(RECIPES))
    budget_arguments(p)
    p.add_argument("--k", type=int, default=1000, help="importance samples for the VAE's IWAE_k")
    p.add_argument("--n-examples", type=int, default=2000, help="test images for the VAE (strided)")
    args = p.parse_args()
    model, options = RECIPES[args.recipe]
    out = Path(args.out or f"bench/out/mnist8-{args.recipe}")
    train = ["train", model, "--data", "mnist", "--data-dir", args.data_dir, "--out", str(out), "--epochs", "1000",
             "--no-progress", *options, f"time_limit={args.minutes}"]
    evaluate = ["eval", str(out), "--metrics", "likelihood", "--json", "--data-dir", args.data_dir]
    if model == "vae":
        evaluate += ["--k", str(args.k), "--n-examples", str(args.n_examples)]
    result = train_then_eval(train, evaluate, args.skip_train)
    metrics = read_metrics(out)
    result.update(recipe=args.recipe, epochs=max((r.get("epoch", 0) for r in metrics), default=0),
                  train_seconds=max((r.get("time", 0) for r in metrics), default=0), train_minutes_limit=args.minutes)
    print(json.dumps(result), flush=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
