"""Seed 003's experiment: the auto-encoding GANs beside DCGAN and WGAN-GP, with the same DCGAN-style networks
and the same number of generator steps for every model, on Stacked MNIST (1,000 modes) and MNIST.

    python bench/hybrids.py --data-dir ../shared/data --datasets stacked-mnist,mnist --steps 1000

Each model trains through `dgm.train` (its run folder under --out; a finished run is scored again, not
retrained), then `dgm.evaluate` gives: modes of 1,000 and KL(p_model(mode) || uniform) on 26,000 samples
(stacked-mnist: the PacGAN protocol), FID / KID / precision / recall on the shipped features (per-channel
MNIST features on stacked-mnist), the Inception-style score (over the 1,000 modes on stacked-mnist),
1 - MS-SSIM diversity and the independent Wasserstein critic (fitted on samples against the validation
split, scored on held-out halves: the seed's memorisation / mode-collapse check). For the models with an
encoder, the test reconstruction error of 1,000 test images: L1 and squared error per image (sums over the
image's values in [0, 1]). Rows are written to OUT/results.jsonl as they finish and the table to
OUT/table.md.

Same networks: DCGAN's generator and discriminator sized from the image (base_channels, latent_dim shared),
the encoders are DCGAN discriminator bodies with latent_dim outputs, code discriminators MLPs. WGAN-GP
keeps its paper's critic settings (layer norm, 5 critic steps, Adam 1e-4, betas (0, 0.9)); the others
DCGAN's Adam 2e-4, betas (0.5, 0.999). One trainer step is one generator update for every model except
AGE, whose step holds its paper's g_updates generator updates (stated in the table).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

MODELS = ("dcgan", "wgan-gp", "alpha-gan", "vae-gan", "aae", "bigan", "age")
CONV = {"wgan-gp": {"architecture": "conv"}}  # the GANs' defaults are MLPs except dcgan's
QUALITY = ["fid", "kid", "precision_recall", "inception_score", "diversity", "critic"]


def trained(out: Path, steps: int) -> bool:
    from dgm.runs import read_metrics

    return (out / "model.safetensors").exists() and max((r["step"] for r in read_metrics(out)), default=0) >= steps


@torch.no_grad()
def reconstruction_errors(model, dataset, n: int = 1000) -> dict[str, float]:
    """Mean per-image L1 and squared error of G(E(x)) on n evenly spaced test images."""
    idx = torch.linspace(0, len(dataset.test) - 1, n).long()
    x = dataset.to_float(dataset.test.x[idx])
    x_rec = torch.cat([model.reconstruct(x[i : i + 250]) for i in range(0, n, 250)])
    diff = (x - x_rec).flatten(1)
    return {"rec_l1": diff.abs().sum(1).mean().item(), "rec_mse": diff.pow(2).sum(1).mean().item()}


def run_one(name: str, data: str, args) -> dict:
    import dgm
    from dgm.data import load_dataset

    out = Path(args.out) / data / name
    seconds = None
    if not trained(out, args.steps):
        options = {"base_channels": args.base_channels, "latent_dim": args.latent_dim, **CONV.get(name, {})}
        t0 = time.perf_counter()
        dgm.train(name, data=data, out=out, data_dir=args.data_dir, steps=args.steps, batch_size=args.batch_size,
                  seed=args.seed, progress=False, quiet=True, **options)
        seconds = time.perf_counter() - t0
    metrics = (["modes"] if data == "stacked-mnist" else []) + QUALITY
    scores = dgm.evaluate(out, metrics=metrics, n_samples=args.n_samples, seed=args.seed, data_dir=args.data_dir,
                          progress=False)
    row = {"model": name, "data": data, "steps": args.steps, "train_seconds": seconds,
           **{k: v for k, v in scores.items() if k not in ("run", "split", "reference")},
           "reference": scores.get("reference")}
    model = dgm.load(out)
    if callable(getattr(model, "reconstruct", None)):
        row.update(reconstruction_errors(model.eval(), load_dataset(data, data_dir=args.data_dir)))
    return row


def table(rows: list[dict]) -> str:
    cols = [("model", "{}"), ("train_seconds", "{:.0f}"), ("modes_covered", "{}"), ("mode_kl", "{:.2f}"),
            ("fid", "{:.1f}"), ("kid", "{:.1f}"), ("precision", "{:.3f}"), ("recall", "{:.3f}"),
            ("inception_score", "{:.2f}"), ("diversity", "{:.3f}"), ("critic_w", "{:.3f}"), ("rec_l1", "{:.1f}"),
            ("rec_mse", "{:.1f}")]
    lines = []
    for data in dict.fromkeys(r["data"] for r in rows):
        sub = [r for r in rows if r["data"] == data]
        present = [(c, f) for c, f in cols if any(r.get(c) is not None for r in sub)]
        lines += [f"\n{data}\n", "| " + " | ".join(c for c, _ in present) + " |",
                  "|" + "---|" * len(present)]
        for r in sub:
            lines.append("| " + " | ".join("-" if r.get(c) is None else f.format(r[c]) for c, f in present) + " |")
        ref = {**(sub[0].get("reference") or {}), "model": "real test images"}
        lines.append("| " + " | ".join("-" if ref.get(c) is None else f.format(ref[c]) for c, f in present) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--datasets", default="stacked-mnist,mnist")
    p.add_argument("--steps", type=int, default=1000, help="generator steps of every model")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--n-samples", type=int, default=1000, help="samples for the quality scores")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="bench/out/hybrids")
    p.add_argument("--table", action="store_true", help="only write the table of the rows in OUT/results.jsonl")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}", flush=True)
    for data in [] if args.table else args.datasets.split(","):
        for name in args.models.split(","):
            row = run_one(name, data, args)
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k != "reference"}), flush=True)
    rows = {}  # the latest row of every (data, model) in results.jsonl, in the order of --models
    for line in open(out / "results.jsonl"):
        row = json.loads(line)
        key = row["data"], row["model"]  # a rescored run keeps the training time of the row that trained it
        rows[key] = {**rows.get(key, {}), **{k: v for k, v in row.items() if v is not None}}
    order = {name: i for i, name in enumerate(MODELS)}
    rows = sorted(rows.values(), key=lambda r: (r["data"], order.get(r["model"], len(order))))
    (out / "table.md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
