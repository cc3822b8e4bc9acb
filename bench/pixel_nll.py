"""Static binarized MNIST: test NLL (nats) of pixelcnn and gated-pixelcnn trained through the real CLI
(`dgm train ... time_limit=MIN`, then `dgm eval RUN --json` on all 10,000 test images), plus a
sample grid and completions (the first 14 rows kept) of each trained model into docs/images/.

    OMP_NUM_THREADS=1 python bench/pixel_nll.py pixelcnn --data-dir ../shared/data --minutes 25
    OMP_NUM_THREADS=1 python bench/pixel_nll.py gated-pixelcnn --data-dir ../shared/data --minutes 25

Published (van den Oord et al. 2016; PixelVAE paper): PixelCNN 81.30, Gated PixelCNN 80.10,
Diagonal BiLSTM 79.20 nats.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import torch

import dgm
from dgm.cli import main as dgm_main
from dgm.runs import load_data, read_config, read_metrics
from dgm.viz import completions, save_grid

# CPU-sized versions of the papers' networks (PixelCNN: 15 layers of 128 features; Gated: 15 layers),
# about the same cost per image
RECIPES = {
    "pixelcnn": ["channels=32", "n_blocks=6", "batch_size=64", "lr=1e-3"],
    "gated-pixelcnn": ["channels=16", "n_layers=6", "batch_size=64", "lr=1e-3"],  # its layers cost ~8x a block's
}
PUBLISHED = {"pixelcnn": 81.30, "gated-pixelcnn": 80.10}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(RECIPES))
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--out", help="run folder (default bench/out/MODEL-nll)")
    p.add_argument("--minutes", type=float, default=25.0, help="training time budget (time_limit)")
    p.add_argument("--images", default="docs/images", help="where the sample and completion PNGs go")
    p.add_argument("--skip-train", action="store_true", help="evaluate an existing --out run")
    args = p.parse_args()
    out = Path(args.out or f"bench/out/{args.model}-nll")
    command = ["train", args.model, "--data", "binarized-mnist", "--data-dir", args.data_dir, "--out", str(out),
               "--epochs", "1000", "--no-progress", *RECIPES[args.model], f"time_limit={args.minutes}"]
    print("dgm " + " ".join(command), flush=True)
    if not args.skip_train:
        t0 = time.perf_counter()
        if dgm_main(command):
            raise SystemExit(1)
        print(f"training wall time {time.perf_counter() - t0:.0f} s", flush=True)

    t0 = time.perf_counter()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        if dgm_main(["eval", str(out), "--json", "--data-dir", args.data_dir]):
            raise SystemExit(1)
    result = json.loads(buffer.getvalue())
    epochs = max((r.get("epoch", 0) for r in read_metrics(out)), default=0)
    result.update(model=args.model, nll=-result["log_likelihood"], published=PUBLISHED[args.model], epochs=epochs,
                  train_minutes_limit=args.minutes, eval_seconds=round(time.perf_counter() - t0, 1))
    print(json.dumps(result), flush=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))

    model = dgm.load(out)
    images = Path(args.images)
    g = torch.Generator().manual_seed(0)
    save_grid(model.sample(64, generator=g), images / f"{args.model}-binarized-mnist-samples.png", nrow=8)
    dataset = load_data(read_config(out), args.data_dir)
    idx = torch.linspace(0, len(dataset.test) - 1, 8).round().long()  # the test split is grouped by class
    x = dataset.to_float(dataset.test.x[idx])
    completions(model, x, x.shape[-2] // 2, images / f"{args.model}-binarized-mnist-completions.png")


if __name__ == "__main__":
    main()
