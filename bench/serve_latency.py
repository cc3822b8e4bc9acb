"""Latency of `dgm serve`'s endpoints: each run's app in a uvicorn server in this process, every endpoint the
model has asked 20 times over HTTP (after one warm-up), the median and the slowest in milliseconds.

    OMP_NUM_THREADS=1 python bench/serve_latency.py                         # the README tour's models, digits
    OMP_NUM_THREADS=1 python bench/serve_latency.py --data-dir ../shared/data   # and 28x28 MNIST models
    OMP_NUM_THREADS=1 python bench/serve_latency.py --run runs/vae-digits --run runs/pixelcnn-binarized-mnist

Without --run it trains each model a few steps into a temporary folder: latency depends on the architecture
and the image size, not on how well the weights are trained.
"""
from __future__ import annotations

import argparse
import base64
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch

import dgm
from dgm.serve import Background, create_app, load_explorer

# (name, model, data, options): the README tour's runs
TOUR = [("vae", "vae", "digits", {}), ("cvae", "cvae", "digits", {"latent_dim": 2, "hidden_dims": (128,)}),
        ("pixelcnn", "pixelcnn", "digits", {"channels": 32, "n_blocks": 6})]
MNIST = [("vae-mnist", "vae", "binarized-mnist", {}),
         ("pixelcnn-mnist", "pixelcnn", "binarized-mnist", {"channels": 32, "n_blocks": 6})]


def canvas_png(size: int = 224) -> str:
    """A drawing as the page sends it: a white stroke on a black size x size canvas, as a data URL."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    ImageDraw.Draw(picture).line([(size * 0.4, size * 0.2), (size * 0.55, size * 0.5), (size * 0.5, size * 0.85)],
                                 fill=(255, 255, 255, 255), width=size // 10)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def requests(info: dict) -> list[tuple[str, str, dict]]:
    """(endpoint, method, query or body) for every part of the page this model has."""
    can, drawing = info["can"], canvas_png()
    out = [("info", "GET /api/info", {})]
    if can["sample"]:
        out.append(("sample n=16", "GET /api/sample", {"n": 16, "seed": 1}))
    if info["test_images"]:
        out.append(("test-image", "GET /api/test-image", {"index": 3}))
    label = {"label": 1} if info["classes"] and info["conditional"] else {}
    if can["sliders"]:
        out.append(("decode", "POST /api/decode", {"z": [0.5] * info["sliders"]["count"], **label}))
    if can["reconstruct"]:
        out.append(("reconstruct canvas", "POST /api/reconstruct", {"image": drawing, **label}))
    if can["interpolate"] and info["test_images"] > 1:
        out.append(("interpolate 8", "POST /api/interpolate", {"a": 0, "b": 1, "steps": 8}))
    if can["complete"]:
        out.append(("complete n=4", "POST /api/complete",
                    {"image": drawing, "rows": info["shape"][1] // 2, "n": 4, **label}))
    return out


def time_run(path: Path, repeats: int) -> list[tuple[str, float, float]]:
    import httpx

    app = create_app(load_explorer(path))
    rows = []
    with Background(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        for name, what, data in requests(client.get("/api/info").json()):
            method, endpoint = what.split()
            ask = ((lambda: client.get(endpoint, params=data)) if method == "GET" else
                   (lambda: client.post(endpoint, json=data)))
            assert ask().status_code == 200, (name, ask().text)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                response = ask()
                times.append(time.perf_counter() - t0)
                assert response.status_code == 200, response.text
            rows.append((name, 1000 * statistics.median(times), 1000 * max(times)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", help="a trained run folder (repeatable); default: train the tour's")
    p.add_argument("--data-dir", help="with it, also the tour's 28x28 binarized-MNIST vae and pixelcnn")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median and max of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(r) for r in args.run or []]
        if not runs:
            for name, model, data, options in TOUR + (MNIST if args.data_dir else []):
                runs.append(dgm.train(model, data=data, out=Path(tmp) / name, steps=2, quiet=True, progress=False,
                                      data_dir=args.data_dir, **options).path)
        print(f"{'run':<16} {'endpoint':<20} {'median ms':>10} {'max ms':>8}")
        for path in runs:
            for endpoint, median, slowest in time_run(path, args.repeats):
                print(f"{path.name:<16} {endpoint:<20} {median:>10.1f} {slowest:>8.1f}")


if __name__ == "__main__":
    main()
