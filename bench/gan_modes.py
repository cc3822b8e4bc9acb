"""Mode coverage on the toy 2-D mixtures (VEEGAN / PacGAN protocol): for each model and dataset,
train with several seeds through the real CLI and score 2,500 samples with `dgm eval`.

    python bench/gan_modes.py --models gan,wgan-gp,lsgan --datasets ring8,grid25 --seeds 5 --steps 10000
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import statistics
import time
from pathlib import Path

from dgm.cli import main as dgm_main


def finished(out: Path, steps: int) -> bool:
    """Whether `out` holds a run that reached `steps` (a run cut short is trained again, not scored)."""
    from dgm.runs import read_metrics

    return (out / "model.safetensors").exists() and max((r["step"] for r in read_metrics(out)), default=0) >= steps


def run_one(model: str, data: str, seed: int, steps: int, out: Path, options: list[str]) -> dict:
    if not finished(out, steps):
        shutil.rmtree(out, ignore_errors=True)
        code = dgm_main(["train", model, "--data", data, "--steps", str(steps), "--seed", str(seed), "--out", str(out),
                         "--no-progress", "batch_size=256", *options])
        if code:
            raise SystemExit(code)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        dgm_main(["eval", str(out), "--json", "--seed", str(seed)])
    return json.loads(buffer.getvalue())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="gan,wgan-gp,lsgan")
    p.add_argument("--datasets", default="ring8,grid25")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1 (so several "
                                                            "processes can share a sweep)")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--options", default="", help="extra key=value options for every run, comma-free, space-separated")
    p.add_argument("--out", default="bench/out/gan-modes")
    args = p.parse_args()
    rows = []
    for data in args.datasets.split(","):
        for model in args.models.split(","):
            results, t0 = [], time.perf_counter()
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                out = Path(args.out) / f"{model}-{data}-s{seed}"
                r = run_one(model, data, seed, args.steps, out, args.options.split())
                results.append(r)
                print(f"{data} {model} seed {seed}: {r['modes_covered']} modes, "
                      f"{100 * r['high_quality_fraction']:.1f} % high quality", flush=True)
            rows.append({"dataset": data, "model": model, "seeds": args.seeds, "steps": args.steps,
                         "modes_mean": statistics.mean(r["modes_covered"] for r in results),
                         "modes_min": min(r["modes_covered"] for r in results),
                         "hq_percent_mean": 100 * statistics.mean(r["high_quality_fraction"] for r in results),
                         "seconds_per_run": (time.perf_counter() - t0) / args.seeds})
    print("| dataset | model | seeds | steps | modes (mean / min) | % high quality | s per run |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['model']} | {r['seeds']} | {r['steps']} | {r['modes_mean']:.1f} / "
              f"{r['modes_min']} | {r['hq_percent_mean']:.1f} | {r['seconds_per_run']:.0f} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
