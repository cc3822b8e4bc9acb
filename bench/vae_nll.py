"""Static binarized MNIST, MLP VAE: test NLL by IWAE with k = 5000 on all 10,000 test images,
through the real CLI (`dgm train`, then `dgm eval`), plus the wall time of that evaluation against
a per-example loop (one test image at a time, its k samples batched, as pythae's get_nll does).

    python bench/vae_nll.py --data-dir ../shared/data --minutes 35 --out bench/out/vae-nll
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import dgm
from dgm.cli import main as dgm_main
from dgm.evaluation import strided_subset
from dgm.runs import load_data, read_config

# The VampPrior paper's "standard VAE": gated MLP 300-300, 40 latents, warm-up 100 epochs,
# batch 100, early stopping with patience 50 on the validation loss; to fit a CPU budget we
# use lr 1e-3 and a 20-epoch warm-up instead of the paper's 5e-4 and 100 epochs.
RECIPE = ["hidden_dims=300,300", "activation=gated", "latent_dim=40", "likelihood=bernoulli",
          "kl_warmup_steps=10000", "lr=1e-3", "early_stopping=50", "batch_size=100"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--out", default="bench/out/vae-nll")
    p.add_argument("--minutes", type=float, default=35.0, help="training time budget")
    p.add_argument("--epochs", type=int, default=2000)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--loop-examples", type=int, default=50, help="test images timed in the per-example loop")
    p.add_argument("--chunk-size", type=int, default=8192, help="(sample x example) pairs per decoder call")
    p.add_argument("--skip-train", action="store_true", help="evaluate an existing --out run")
    args = p.parse_args()
    out = Path(args.out)
    if not args.skip_train:
        t0 = time.perf_counter()
        code = dgm_main(["train", "vae", "--data", "binarized-mnist", "--data-dir", args.data_dir, "--out", str(out),
                         "--epochs", str(args.epochs), "--no-progress", *RECIPE, f"time_limit={args.minutes}"])
        if code:
            raise SystemExit(code)
        print(f"training wall time {time.perf_counter() - t0:.0f} s", flush=True)

    model = dgm.load(out)
    dataset = load_data(read_config(out), args.data_dir)
    test = dataset.test
    x_all = dataset.to_float(test.x)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        batch = max(1, args.chunk_size // args.k)
        nll = -sum(model.iwae(x_all[i : i + batch], args.k, chunk_size=args.chunk_size).sum().item()
                   for i in range(0, len(x_all), batch))
    batched_s = time.perf_counter() - t0
    nll /= len(x_all)

    idx = strided_subset(len(test), args.loop_examples)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in idx:  # the per-example loop: one image, its k samples in one batch
            model.iwae(x_all[i : i + 1], args.k, chunk_size=args.k)
    loop_per_example = (time.perf_counter() - t0) / len(idx)

    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    summary = {
        "test_nll_nats": round(nll, 2), "k": args.k, "test_images": len(x_all),
        "eval_seconds_batched": round(batched_s, 1), "chunk_size": args.chunk_size,
        "eval_seconds_per_example_loop_extrapolated": round(loop_per_example * len(x_all), 1),
        "eval_speedup": round(loop_per_example * len(x_all) / batched_s, 1),
        "loop_examples_timed": len(idx),
        "train_epochs": metrics[-1]["epoch"], "train_seconds": metrics[-1]["time"],
        "best_valid_loss": min(m.get("valid/loss", math.inf) for m in metrics),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    print(json.dumps(summary))
    (out / "bench.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
