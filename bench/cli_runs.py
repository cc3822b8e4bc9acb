"""What the likelihood benchmarks share: train a run through the real CLI in a time budget, then
score it with `dgm eval --json`."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

from dgm.cli import main as dgm_main


def budget_arguments(p: argparse.ArgumentParser) -> None:
    """--data-dir, --out, --minutes and --skip-train, as every such script takes them."""
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--out", help="run folder (default under bench/out/)")
    p.add_argument("--minutes", type=float, default=25.0, help="training time budget (time_limit)")
    p.add_argument("--skip-train", action="store_true", help="evaluate an existing --out run")


def train_then_eval(train: list[str], evaluate: list[str], skip_train: bool) -> dict:
    """Run `dgm TRAIN...` (unless skip_train), then `dgm EVAL... --json`; its JSON with eval_seconds."""
    print("dgm " + " ".join(train), flush=True)
    if not skip_train:
        t0 = time.perf_counter()
        if dgm_main(train):
            raise SystemExit(1)
        print(f"training wall time {time.perf_counter() - t0:.0f} s", flush=True)
    print("dgm " + " ".join(evaluate), flush=True)
    t0 = time.perf_counter()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        if dgm_main(evaluate):
            raise SystemExit(1)
    return {**json.loads(buffer.getvalue()), "eval_seconds": round(time.perf_counter() - t0, 1)}
