"""Sampling speed of pixelcnn and gated-pixelcnn: the cached incremental sampler against the naive one
(one full forward pass per pixel), same model, same random stream, 16 samples of 28x28 binary images.
The two must return identical images; the script checks it.

    OMP_NUM_THREADS=1 python bench/pixel_sampling.py                      # random-init networks
    OMP_NUM_THREADS=1 python bench/pixel_sampling.py --run bench/out/pixelcnn-nll --run bench/out/gated-pixelcnn-nll
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import dgm
from dgm.models import create_model

# the sizes bench/pixel_nll.py trains on binarized MNIST
SIZES = {"pixelcnn": {"channels": 32, "n_blocks": 6}, "gated-pixelcnn": {"channels": 16, "n_layers": 6}}


def timed(model, method: str, n: int, seed: int) -> tuple[torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    x = model.sample(n, generator=g, method=method)
    return x, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", help="a trained run folder (repeatable); default random-init models")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="cached runs timed (the best is kept); naive runs once")
    args = p.parse_args()
    torch.manual_seed(0)
    models = ([dgm.load(r) for r in args.run] if args.run else
              [create_model(name, {"data_shape": (1, 28, 28), "levels": 2, **size}) for name, size in SIZES.items()])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for model in models:
        model.eval()
        cached_s = min(timed(model, "cached", args.n, 0)[1] for _ in range(args.repeats))
        cached, _ = timed(model, "cached", args.n, 0)
        naive, naive_s = timed(model, "naive", args.n, 0)
        result = {"model": model.cfg.name, "n": args.n, "shape": list(model.cfg.data_shape),
                  "naive_s": round(naive_s, 2), "cached_s": round(cached_s, 3), "speedup": round(naive_s / cached_s, 1),
                  "identical": bool(torch.equal(cached, naive))}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
