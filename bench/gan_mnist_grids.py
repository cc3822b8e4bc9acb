"""MNIST sample grids for every GAN in the zoo, trained through the real CLI for a fixed number of
generator steps each, written to docs/images/gan-mnist-MODEL.png (64 samples from fixed noise;
conditional models cycle through the labels 0..9 along each row).

    python bench/gan_mnist_grids.py --data-dir ../shared/data --steps 5000

Each run's folder (under --out) keeps its config, metrics and loss curves, so the grids can be
re-scored once sample-quality metrics exist (`dgm eval RUN`).
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from dgm.cli import main as dgm_main
from dgm.models import model_entries

# per model: extra options (DCGAN's convolutions cost ~50x an MLP step on a CPU, so it runs in bf16
# with half the paper's widths)
OPTIONS = {"dcgan": ["base_channels=32", "precision=bf16"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--steps", type=int, default=5000, help="generator steps per model")
    p.add_argument("--dcgan-steps", type=int, default=3000)
    p.add_argument("--models", default=",".join(e.name for e in model_entries() if e.family == "gan"))
    p.add_argument("--out", default="bench/out/gan-mnist")
    p.add_argument("--images", default="docs/images")
    args = p.parse_args()
    for model in args.models.split(","):
        run = Path(args.out) / model
        steps = args.dcgan_steps if model == "dcgan" else args.steps
        t0 = time.perf_counter()
        if not (run / "model.safetensors").exists():
            code = dgm_main(["train", model, "--data", "mnist", "--data-dir", args.data_dir, "--steps", str(steps),
                             "--batch-size", "64", "--out", str(run), "--no-progress", *OPTIONS.get(model, [])])
            if code:
                raise SystemExit(code)
        target = Path(args.images) / f"gan-mnist-{model}.png"
        shutil.copyfile(run / "samples.png", target)
        print(f"{model}: {steps} steps, {time.perf_counter() - t0:.0f} s -> {target}", flush=True)


if __name__ == "__main__":
    main()
