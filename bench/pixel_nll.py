"""Static binarized MNIST: test NLL (nats) of the pixel models trained through the real CLI
(`dgm train ... time_limit=MIN`, then `dgm eval RUN --json` on all 10,000 test images), plus a
sample grid and completions (the first 14 rows kept) of each trained model into docs/images/.

    OMP_NUM_THREADS=1 python bench/pixel_nll.py pixelcnn --data-dir ../shared/data --minutes 25
    OMP_NUM_THREADS=1 python bench/pixel_nll.py gated-pixelcnn --data-dir ../shared/data --minutes 25
    OMP_NUM_THREADS=1 python bench/pixel_nll.py pixelrnn-row --data-dir ../shared/data --minutes 25 --metrics likelihood
    OMP_NUM_THREADS=1 python bench/pixel_nll.py pixelrnn-diagonal --data-dir ../shared/data --minutes 25 \
        --metrics likelihood

Published (van den Oord et al. 2016; PixelVAE paper): PixelCNN 81.30, Gated PixelCNN 80.10,
Diagonal BiLSTM 79.20 nats.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from cli_runs import budget_arguments, train_then_eval

import dgm
from dgm.runs import load_data, read_config, read_metrics
from dgm.viz import completions, save_grid

# CPU-sized versions of the papers' networks (PixelCNN: 15 layers of 128 features; Gated: 15 layers),
# about the same cost per image
# (model, options) by recipe name
RECIPES = {
    "pixelcnn": ("pixelcnn", ["channels=32", "n_blocks=6", "batch_size=64", "lr=1e-3"]),
    "gated-pixelcnn": ("gated-pixelcnn", ["channels=16", "n_layers=6", "batch_size=64", "lr=1e-3"]),  # its layers
    # cost ~8x a block's
    "pixelcnn++": ("pixelcnn++", ["filters=32", "n_resnet=1", "n_mix=5", "n_scales=3", "batch_size=32", "lr=1e-3"]),
    # the PixelRNNs at the Gated PixelCNN's width (bench/pixel_speed.py times the three)
    "pixelrnn-row": ("pixelrnn", ["variant=row", "channels=16", "n_layers=6", "batch_size=64", "lr=1e-3"]),
    "pixelrnn-diagonal": ("pixelrnn", ["variant=diagonal", "channels=16", "n_layers=6", "batch_size=64", "lr=1e-3"]),
}
# PixelCNN++ reports no binarized MNIST; the PixelRNN paper gives only the Diagonal BiLSTM
PUBLISHED = {"pixelcnn": 81.30, "gated-pixelcnn": 80.10, "pixelcnn++": None, "pixelrnn-row": None,
             "pixelrnn-diagonal": 79.20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(RECIPES))
    budget_arguments(p)
    p.add_argument("--images", default="docs/images", help="where the sample and completion PNGs go")
    p.add_argument("--metrics", help="dgm eval's --metrics (default all; `likelihood` skips the 1,000 samples that "
                                     "models without a cached sampler draw slowly)")
    args = p.parse_args()
    out = Path(args.out or f"bench/out/{args.model}-nll")
    model_name, options = RECIPES[args.model]
    train = ["train", model_name, "--data", "binarized-mnist", "--data-dir", args.data_dir, "--out", str(out),
             "--epochs", "1000", "--no-progress", *options, f"time_limit={args.minutes}"]
    evaluate = ["eval", str(out), "--json", "--data-dir", args.data_dir, *(["--metrics", args.metrics] if args.metrics
                                                                          else [])]
    result = train_then_eval(train, evaluate, args.skip_train)
    epochs = max((r.get("epoch", 0) for r in read_metrics(out)), default=0)
    result.update(model=args.model, nll=-result["log_likelihood"], published=PUBLISHED[args.model], epochs=epochs,
                  train_minutes_limit=args.minutes)
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
