"""DCGAN on MNIST: validation FID (shipped features, 500 fixed-noise samples against the validation
split, every 500 steps) against training minutes, then `dgm eval --metrics fid` of the best weights
(1,000 samples against the training set, as every FID in docs/benchmarks.md), and their grid.

    OMP_NUM_THREADS=1 python bench/dcgan_curve.py --data-dir ../shared/data --minutes 30
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli_runs import budget_arguments, train_then_eval

from dgm.runs import read_metrics

OPTIONS = ["base_channels=32", "precision=bf16", "g_ema=0.999", "eval_every=500", "batch_size=64"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget_arguments(p)
    p.add_argument("--images", default="docs/images", help="where the curve and the grid go")
    args = p.parse_args()
    out = Path(args.out or "bench/out/dcgan-curve")
    train = ["train", "dcgan", "--data", "mnist", "--data-dir", args.data_dir, "--out", str(out), "--epochs", "1000",
             "--no-progress", *OPTIONS, f"time_limit={args.minutes}m"]
    result = train_then_eval(train, ["eval", str(out), "--metrics", "fid", "--json", "--data-dir", args.data_dir],
                             args.skip_train)
    curve = [(r["time"] / 60, r["step"], r["valid/fid"]) for r in read_metrics(out) if "valid/fid" in r]
    best = min(curve, key=lambda c: c[2])
    result.update(curve=curve, best_valid_fid=best[2], best_step=best[1], best_minutes=round(best[0], 1))
    print(json.dumps(result), flush=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot([c[0] for c in curve], [c[2] for c in curve], marker="o", ms=3)
    ax.axhline(20, ls="--", c="grey", lw=0.8, label="target 20")
    ax.set(xlabel="training minutes (1 CPU thread)", ylabel="validation FID (500 samples)", yscale="log",
           title=f"DCGAN on MNIST ({' '.join(OPTIONS)})")
    ax.title.set_fontsize(7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    images = Path(args.images)
    fig.savefig(images / "dcgan-mnist-fid-curve.png")
    import shutil

    shutil.copy(out / "samples.png", images / "dcgan-mnist-best-fid-samples.png")


if __name__ == "__main__":
    main()
