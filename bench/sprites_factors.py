"""Seeds 000 and 002's representation tasks on `sprites`, whose generating factors are known: disentanglement
of the VAE, the beta-VAE, DC-IGN and the attribute-conditioned CVAE, and diverse colorization.

    python bench/sprites_factors.py --part factors --steps 6000 --out bench/out/sprites
    python bench/sprites_factors.py --part colour --steps 4000 --out bench/out/sprites

Every model trains through `dgm.train` on `sprites` (32x32 RGB, 50,000 training images) with the same conv
encoder and decoder (conv_channels 32, 64; 10 latent units; batch 64; Adam 1e-3; a discretized Gaussian
p(x|z) of scale 0.1, see COMMON) and the same number of steps; a finished run folder is scored again, not retrained. Factors part: MIG (Chen et al. 2018) and the
FactorVAE score (Kim & Mnih 2018) on the test split's codes (`dgm.evaluation.disentanglement`), MIG per
factor, test ELBO (nats per image, log-probability of the 8-bit pixels as stored) and the reconstruction
error (sum of squared errors per image, pixels in [0, 1]) on 1,000 test images, and a traversal picture per
model. The CVAE is given all factors as its condition, so its code z should hold none of them: its MIG
measures what leaks into z, not a disentangled code, and its ELBO bounds log p(x | y), not log p(x).
Colour part: `colorization` with method mdn (Deshpande et al.), cvae and l2 on `sprites-grey`: the hues of
the object among k = 8 colorizations of each of 500 test grey images (`dgm.evaluation.colorization`).
Rows go to OUT/results.jsonl as they finish and the tables to OUT/table.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

# p(x|z): a Gaussian of fixed scale 0.1 integrated over each of the 256 levels (a probability of the stored
# pixels). The default discretized logistic mixture models each pixel's marginal (black, white, the textures'
# greys, the colours) without z: in a first run (3,000 steps) the VAE and DC-IGN ignored the object, their
# reconstructions were grey and MIG 0.01-0.03 (bench/out/sprites-dlogistic).
COMMON = {"architecture": "conv", "conv_channels": (32, 64), "latent_dim": 10, "likelihood": "gaussian",
          "scale": 0.1}
FACTOR_MODELS = {  # row name -> (model, options)
    "vae": ("vae", {}),
    "beta-vae (beta 4)": ("vae", {"beta": 4.0}),
    "beta-vae (beta 8)": ("vae", {"beta": 8.0}),
    "dc-ign": ("dcign", {}),
    "dc-ign (KL warm-up)": ("dcign", {"kl_warmup_steps": 2000}),
    "dc-ign (KL warm-up; clamp 100)": ("dcign", {"kl_warmup_steps": 2000, "clamp_weight": 100.0}),
    "cvae (factors given)": ("cvae", {"condition": "attributes"}),
}
COLOUR_MODELS = {f"colorization ({m})": ("colorization", {"method": m}) for m in ("mdn", "cvae", "l2")}


def trained(out: Path, steps: int) -> bool:
    from dgm.runs import read_metrics

    return (out / "model.safetensors").exists() and max((r["step"] for r in read_metrics(out)), default=0) >= steps


def train(row: str, name: str, options: dict, data: str, args) -> tuple[Path, float | None]:
    import dgm

    out = Path(args.out) / row.replace(" ", "_").replace("(", "").replace(")", "")
    if trained(out, args.steps):
        return out, None
    t0 = time.perf_counter()
    dgm.train(name, data=data, out=out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
              eval_every=1000, progress=False, quiet=True, **options)
    return out, time.perf_counter() - t0


def factor_row(row: str, name: str, options: dict, args) -> dict:
    import dgm
    from dgm import viz
    from dgm.data import load_dataset
    from dgm.evaluation.disentanglement import disentanglement_metrics

    out, seconds = train(row, name, {**COMMON, **options}, "sprites", args)
    dataset = load_dataset("sprites")
    model = dgm.load(out).eval()
    scores = dgm.evaluate(out, metrics=["likelihood", "representation"], n_examples=1000, k=10, seed=args.seed,
                          progress=False)
    result = {"model": row, "steps": args.steps, "train_seconds": seconds,
              **disentanglement_metrics(model, dataset, seed=args.seed),
              "elbo": scores.get("elbo", scores.get("conditional_elbo")), "sse_per_image": scores.get("sse_per_image")}
    x = dataset.to_float(dataset.test.x[:1])
    labels = {}
    if getattr(model, "conditional", False):
        from dgm.models import batch_fields

        labels = {"y": batch_fields(model, dataset, dataset.test)[0][:1]}
    viz.traversal(model, x, Path(args.out) / "pictures" / f"{out.name}-traversal.png", **labels)
    return result


def colour_row(row: str, name: str, options: dict, args) -> dict:
    import dgm
    from dgm.data import load_dataset
    from dgm.evaluation.colorization import colorization_metrics

    out, seconds = train(row, name, options, "sprites-grey", args)
    model = dgm.load(out).eval()
    return {"model": row, "steps": args.steps, "train_seconds": seconds,
            **colorization_metrics(model, load_dataset("sprites-grey"), k=8, n_examples=500, seed=args.seed)}


def table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [fmt.format(r[c]) if r.get(c) is not None else "–" for c, fmt in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("factors", "colour"), required=True)
    p.add_argument("--models", default=None, help="comma-separated row names (default: all of the part)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out/sprites")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    models = FACTOR_MODELS if args.part == "factors" else COLOUR_MODELS
    chosen = args.models.split(",") if args.models else list(models)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rows = []
    for row in chosen:
        name, options = models[row]
        result = (factor_row if args.part == "factors" else colour_row)(row, name, options, args)
        rows.append(result)
        with open(Path(args.out) / "results.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        print(json.dumps(result))
    if args.part == "factors":
        cols = [("model", "{}"), ("mig", "{:.3f}"), ("factorvae_score", "{:.3f}"), ("elbo", "{:.1f}"),
                ("sse_per_image", "{:.1f}"), ("train_seconds", "{:.0f}")]
        cols += [(f"mig_{f}", "{:.2f}") for f in ("shape", "scale", "rotation", "x", "y", "colour", "background")]
    else:
        cols = [("model", "{}"), ("distinct_hues", "{:.2f}"), ("hue_coverage", "{:.3f}"),
                ("best_of_k_error", "{:.2f}"), ("mean_error", "{:.2f}"), ("train_seconds", "{:.0f}")]
    text = table(rows, cols)
    with open(Path(args.out) / "table.md", "a") as f:
        f.write(text + "\n\n")
    print(text)


if __name__ == "__main__":
    main()
