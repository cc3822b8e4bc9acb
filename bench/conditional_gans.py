"""Seed 001's conditional GANs beyond class labels on `sprites`, scored by what the conditioning asked for.

    python bench/conditional_gans.py --part text --steps 3000 --out bench/out/conditional
    python bench/conditional_gans.py --part pix2pix --steps 2000 --batch-size 32 --out bench/out/conditional
    python bench/conditional_gans.py --part cycle --steps 2000 --batch-size 32 --out bench/out/conditional

Every model trains through `dgm.train` on `sprites` (32x32 RGB, 50,000 training images; batch --batch-size; each
model's paper optimiser: Adam 2e-4, betas (0.5, 0.999)); a finished run folder is scored again, not retrained. Scores on
--n-examples evenly strided test images, read off the generated images by the shipped sprites factor net
(`dgm.evaluation.factors`), whose own reading of the real test images is the "real images" row:

- text part: `text-gan` (GAN-INT-CLS), `www-gan` (caption + box) and the class-conditional `cgan` (conv; its
  label is the shape, so its other attributes are at chance: the point of a caption). Each draws one image per
  test caption (and box) and `dgm eval --metrics conditioning` reads them: caption accuracy per attribute =
  the fraction whose read-off word equals the caption's ("all": all six words right); box IoU between the test
  example's box and the object's measured box (the saturated pixels' tight box); then FID, precision and
  recall on the sprites features (`dgm eval`, --n-samples samples, their conditions drawn from the training
  captions, against the training set).
- pix2pix part: `pix2pix` on mask -> image, grey -> colour and edges -> image, and the plain U-Net regressor
  (the same U-Net, gan_weight=0, L1 only) on mask -> image and edges -> image. Mean absolute error per channel
  (pixels in [0, 1]) on the object's pixels and on the whole image against the true image, and edge
  sharpness: the mean gradient magnitude |dx| + |dy| summed over RGB on the true object boundary (pixels of the
  mask with a 4-neighbour outside it) of the output, divided by the truth's (1 = as sharp as the truth, a blur
  gives less). Also the factor net's shape / background reading of the outputs against the truth.
- cycle part: `cyclegan`, circle <-> square with the same pose (unpaired). For G: A -> B the exact target is
  known (the same scene with a square): mean absolute error against it (object pixels and whole image); the
  cycle error |F(G(a)) - a| and |G(F(b)) - b|; target-domain accuracy: the factor net reads "square" on G(a)
  and "circle" on F(b); and how much of the rest of the scene survives: colour and background read off G(a)
  against a's.
Rows go to OUT/results.jsonl as they finish, tables to OUT/table.md, pictures to OUT/pictures.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from dgm.evaluation.likelihood import strided_subset

SMALL = {"base_channels": 32}
TEXT_MODELS = {  # row name -> (model, options)
    "text-gan": ("text-gan", SMALL),
    "text-gan (no matching-aware D)": ("text-gan", {**SMALL, "matching_aware": False}),  # GAN-INT alone
    "www-gan": ("www-gan", SMALL),
    "cgan (shape label)": ("cgan", {**SMALL, "architecture": "conv", "latent_dim": 100}),
}
PIX2PIX_MODELS = {
    "pix2pix (mask)": ("pix2pix", {**SMALL, "task": "mask"}),
    "u-net L1 (mask)": ("pix2pix", {**SMALL, "task": "mask", "gan_weight": 0.0}),
    "pix2pix (grey)": ("pix2pix", {**SMALL, "task": "grey"}),
    "pix2pix (edges)": ("pix2pix", {**SMALL, "task": "edges"}),
    "u-net L1 (edges)": ("pix2pix", {**SMALL, "task": "edges", "gan_weight": 0.0}),
}
CYCLE_MODELS = {"cyclegan (circle-square)": ("cyclegan", {"base_channels": 16, "n_blocks": 3})}  # 6 generator
# passes a step: at base 32 and 6 blocks one step of 64 images took 4.8 s on one thread


def trained(out: Path, steps: int) -> bool:
    from dgm.runs import read_metrics

    return (out / "model.safetensors").exists() and max((r["step"] for r in read_metrics(out)), default=0) >= steps


def train(row: str, name: str, options: dict, args) -> tuple[Path, float | None]:
    import dgm

    out = Path(args.out) / row.replace(" ", "_").replace("(", "").replace(")", "")
    if trained(out, args.steps):
        return out, None
    t0 = time.perf_counter()
    if (out / "checkpoint.safetensors").exists():  # trained fewer steps before: go on to --steps
        dgm.resume(out, steps=args.steps, progress=False, quiet=True)
    else:
        dgm.train(name, data="sprites", out=out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                  eval_every=max(args.steps // 2, 1), progress=False, quiet=True, **options)
    return out, time.perf_counter() - t0


def keep_pictures(out: Path, row: str, args) -> None:
    pictures = Path(args.out) / "pictures"
    pictures.mkdir(exist_ok=True)
    for png in out.glob("*.png"):
        if png.stem != "losses":
            shutil.copy(png, pictures / f"{out.name}-{png.name}")


def text_row(row: str, name: str, options: dict, args) -> dict:
    import dgm

    out, seconds = train(row, name, options, args)
    scores = dgm.evaluate(out, metrics=["conditioning", "fid", "precision_recall"], n_examples=args.n_examples,
                          n_samples=args.n_samples, seed=args.seed, progress=False)
    keep_pictures(out, row, args)
    return {"model": row, "steps": args.steps, "train_seconds": seconds, **scores}


def real_row(args) -> dict:
    """The factor net reading the real test images against their own factors: the ceiling of every score above."""
    from dgm.data import load_dataset
    from dgm.evaluation.factors import box_iou, caption_accuracy, read_factors

    test = load_dataset("sprites").test
    idx = strided_subset(len(test), args.n_examples)
    read = read_factors(test.x[idx])
    result = {f"conditioning_{k}": v for k, v in caption_accuracy(test.x[idx], test.factors[idx], read=read).items()}
    return {"model": "real test images", **result,
            "conditioning_box_iou": box_iou(read["box"], test.boxes[idx]).mean().item()}


def edge_sharpness(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean |dx| + |dy| (summed over channels) of images [N, C, H, W] on each mask's boundary pixels: [N]."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().sum(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().sum(1)
    grad = torch.zeros(images.shape[0], *images.shape[2:])
    grad[..., :, :-1] += dx
    grad[..., :-1, :] += dy
    m = masks.float()
    inner = torch.nn.functional.max_pool2d(-m[:, None], 3, stride=1, padding=1).neg()[:, 0]  # erosion (4-ish)
    boundary = (m - inner).clamp(min=0) > 0
    return (grad * boundary).flatten(1).sum(1) / boundary.flatten(1).sum(1).clamp(min=1)


def object_error(output: torch.Tensor, truth: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    """(mean |output - truth| per channel on the object's pixels, on the whole image), pixels in [0, 1]."""
    err = (output - truth).abs().mean(1)
    m = masks.float()
    return ((err * m).sum() / m.sum()).item(), err.mean().item()


def pix2pix_row(row: str, name: str, options: dict, args) -> dict:
    import dgm
    from dgm.data import load_dataset
    from dgm.evaluation.factors import read_factors
    from dgm.models import batch_fields

    out, seconds = train(row, name, options, args)
    dataset = load_dataset("sprites")
    test = dataset.test
    idx = strided_subset(len(test), args.n_examples)
    model = dgm.load(out).eval()
    a = batch_fields(model, dataset, test)[0][idx]
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        output = torch.cat([model.translate(part, generator=g) for part in a.split(250)]).float()
    truth = dataset.to_float(test.x[idx])
    masks = test.masks[idx]
    l1_object, l1_image = object_error(output, truth, masks)
    sharp = (edge_sharpness(output, masks).mean() / edge_sharpness(truth, masks).mean()).item()
    read, real = read_factors(output), read_factors(test.x[idx])
    keep_pictures(out, row, args)
    return {"model": row, "steps": args.steps, "train_seconds": seconds, "l1_object": l1_object,
            "l1_image": l1_image, "edge_sharpness": sharp,
            "shape_agrees": (read["shape"] == real["shape"]).double().mean().item(),
            "background_agrees": (read["background"] == real["background"]).double().mean().item()}


def cycle_row(row: str, name: str, options: dict, args) -> dict:
    import dgm
    from dgm import viz
    from dgm.data import load_dataset
    from dgm.data import sprites as S
    from dgm.evaluation.factors import object_masks, read_factors
    from dgm.models import batch_fields

    out, seconds = train(row, name, options, args)
    dataset = load_dataset("sprites")
    test = dataset.test
    idx = strided_subset(len(test), args.n_examples)
    model = dgm.load(out).eval()
    a, b = (f[idx] for f in batch_fields(model, dataset, test))
    target = model.translation_targets(dataset, test)[idx].float() / 255
    a_f, b_f = a.float() / 255, b.float() / 255
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        ga = torch.cat([model.translate(p, generator=g) for p in a_f.split(250)]).float()
        fb = torch.cat([model.translate(p, reverse=True, generator=g) for p in b_f.split(250)]).float()
        fga = torch.cat([model.translate(p, reverse=True, generator=g) for p in ga.split(250)]).float()
        gfb = torch.cat([model.translate(p, generator=g) for p in fb.split(250)]).float()
    l1_object, l1_image = object_error(ga, target, object_masks(a) | object_masks(target))  # both objects' pixels
    read_ga, read_fb, read_a = read_factors(ga), read_factors(fb), read_factors(a_f)
    square, circle = S.SHAPES.index("square"), S.SHAPES.index("circle")
    keep_pictures(out, row, args)
    rows = torch.stack([a_f[:8], ga[:8], fga[:8], target[:8], b_f[:8], fb[:8], gfb[:8]], 1)  # both directions
    viz.save_grid(rows.reshape(-1, *rows.shape[2:]), Path(args.out) / "pictures" / f"{out.name}-both-ways.png",
                  nrow=7, col_labels=["a", "G(a)", "F(G(a))", "target", "b", "F(b)", "G(F(b))"])
    return {"model": row, "steps": args.steps, "train_seconds": seconds, "l1_object": l1_object,
            "l1_image": l1_image, "cycle_a": (fga - a_f).abs().mean().item(),
            "cycle_b": (gfb - b_f).abs().mean().item(),
            "g_reads_square": (read_ga["shape"] == square).double().mean().item(),
            "f_reads_circle": (read_fb["shape"] == circle).double().mean().item(),
            "colour_kept": (read_ga["colour"] == read_a["colour"]).double().mean().item(),
            "background_kept": (read_ga["background"] == read_a["background"]).double().mean().item()}


def table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [fmt.format(r[c]) if r.get(c) is not None else "–" for c, fmt in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


PARTS = {  # part -> (models, scorer, table columns)
    "text": (TEXT_MODELS, text_row, [("model", "{}")] + [(f"conditioning_{k}", "{:.3f}") for k in (
        "shape", "colour", "size", "row", "column", "background", "all")] + [
        ("conditioning_box_iou", "{:.3f}"), ("fid", "{:.1f}"), ("precision", "{:.3f}"), ("recall", "{:.3f}"),
        ("train_seconds", "{:.0f}")]),
    "pix2pix": (PIX2PIX_MODELS, pix2pix_row, [("model", "{}"), ("l1_object", "{:.4f}"), ("l1_image", "{:.4f}"),
                                              ("edge_sharpness", "{:.3f}"), ("shape_agrees", "{:.3f}"),
                                              ("background_agrees", "{:.3f}"), ("train_seconds", "{:.0f}")]),
    "cycle": (CYCLE_MODELS, cycle_row, [("model", "{}"), ("l1_object", "{:.4f}"), ("l1_image", "{:.4f}"),
                                        ("cycle_a", "{:.4f}"), ("cycle_b", "{:.4f}"), ("g_reads_square", "{:.3f}"),
                                        ("f_reads_circle", "{:.3f}"), ("colour_kept", "{:.3f}"),
                                        ("background_kept", "{:.3f}"), ("train_seconds", "{:.0f}")]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=tuple(PARTS), required=True)
    p.add_argument("--models", default=None, help="comma-separated row names (default: all of the part)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-examples", type=int, default=1000)
    p.add_argument("--n-samples", type=int, default=5000, help="samples for FID / precision / recall")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out/conditional")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    models, scorer, cols = PARTS[args.part]
    chosen = args.models.split(",") if args.models else list(models)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rows = [real_row(args)] if args.part == "text" else []
    for row in chosen:
        name, options = models[row]
        rows.append(scorer(row, name, options, args))
        with open(Path(args.out) / "results.jsonl", "a") as f:
            f.write(json.dumps(rows[-1]) + "\n")
        print(json.dumps(rows[-1]), flush=True)
    text = table(rows, cols)
    with open(Path(args.out) / "table.md", "a") as f:
        f.write(f"{args.part}, {args.steps} steps\n\n{text}\n\n")
    print(text)


if __name__ == "__main__":
    main()
