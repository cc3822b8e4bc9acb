"""Training cost per batch of the pixel models at equal width: forward, backward and Adam step on 64
binarized 28x28 images, each model timed in turn within one process (rounds interleaved, median
kept), reported as a ratio to the Gated PixelCNN. A proxy for the epoch: an epoch of binarized MNIST's 50,000
training images is 782 such batches.

    OMP_NUM_THREADS=1 python bench/pixel_speed.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from dgm.models import create_model

# equal width: 16 hidden features per layer, 6 layers (the Gated PixelCNN size of bench/pixel_nll.py)
MODELS = {
    "gated-pixelcnn": ("gated-pixelcnn", {"channels": 16, "n_layers": 6}),
    "pixelrnn row": ("pixelrnn", {"variant": "row", "channels": 16, "n_layers": 6}),
    "pixelrnn diagonal": ("pixelrnn", {"variant": "diagonal", "channels": 16, "n_layers": 6}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--train-size", type=int, default=50_000, help="training images per epoch")
    args = p.parse_args()
    torch.manual_seed(0)
    x = (torch.rand(args.batch, 1, 28, 28) > 0.5).float()
    setups = {}
    for label, (name, size) in MODELS.items():
        model = create_model(name, {"data_shape": (1, 28, 28), "levels": 2, **size})
        setups[label] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))
    times: dict[str, list[float]] = {label: [] for label in MODELS}
    for r in range(args.rounds + 1):  # round 0 warms up
        for label, (model, opt) in setups.items():
            t0 = time.perf_counter()
            loss = -model.log_prob(x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if r:
                times[label].append(time.perf_counter() - t0)
    base = statistics.median(times["gated-pixelcnn"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}, "
          f"median of {args.rounds}")
    batches = -(-args.train_size // args.batch)
    print(f"| model | s per batch | x Gated PixelCNN | s per epoch ({batches} batches) |")
    print("|---|---|---|---|")
    for label, ts in times.items():
        t = statistics.median(ts)
        print(f"| {label} | {t:.3f} | {t / base:.2f} | {batches * t:.0f} |")


if __name__ == "__main__":
    main()
