"""Training throughput of dgm's VampPrior, IAF and planar-flow VAEs against pythae's VAMP, VAE_IAF and
VAE_LinNF with the same networks and batch, measured side by side: each measurement in its own process,
alternating dgm and pythae, pythae in its own virtual environment (never a dgm dependency).

    python3 -m venv /work/pythae-venv && /work/pythae-venv/bin/pip install torch pythae
    python bench/pythae_throughput.py --pythae-python /work/pythae-venv/bin/python --data-dir ../shared/data

Both sides: MLP 784-300-300-40 (ReLU) and back, Bernoulli/BCE on static binarized MNIST, batch 100, Adam
1e-3 (each library's own: dgm's trainer builds a fused Adam, pythae's trainer torch's default), one training
step = forward, backward, optimizer step on the same preloaded batches (no data loader on either side, so the
models' own cost is what is timed). VampPrior: 500 pseudo-inputs. IAF: 2 MADE blocks, one
hidden layer of 128 (dgm's MADEs also read the encoder's context h, 300 values: a little more work for dgm).
Planar: 10 planar flows (pythae's are global parameters; dgm's are amortised from h, as Rezende & Mohamed
do: more work for dgm).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("vampprior", "iaf", "planar")


def batches(data_dir: Path, n: int, batch: int):
    import numpy as np
    import torch

    x = np.load(data_dir / "binarized_mnist" / "binarized_mnist.npz")["train"][: n * batch]
    x = torch.from_numpy(x.astype(np.float32))
    return x.reshape(n, batch, 1, 28, 28)


def ours(variant: str, xs, steps: int) -> list[float]:
    import torch

    from dgm.models import create_model
    from dgm.training import TrainConfig
    from dgm.training.trainer import make_optimizer

    options = {"vampprior": {"prior": "vampprior", "n_pseudo": 500},
               "iaf": {"flow": "iaf", "flow_length": 2, "flow_hidden": 128, "flow_context": 300},
               "planar": {"flow": "planar", "flow_length": 10, "flow_context": 300}}[variant]
    torch.manual_seed(0)
    model = create_model("vae", {"data_shape": (1, 28, 28), "levels": 2, "hidden_dims": (300, 300),
                                 "latent_dim": 40, "likelihood": "bernoulli", **options})
    if model.fit_before_training is not None:
        model.fit_before_training(xs[0].repeat(5, 1, 1, 1))
    opt = make_optimizer(model.parameters(), TrainConfig(lr=1e-3))  # the optimizer dgm's trainer builds
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.loss((xs[i % len(xs)], None))["loss"].backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def peer(variant: str, xs, steps: int) -> list[float]:
    import torch
    from torch import nn
    from pythae.models import VAE_IAF, VAE_IAF_Config, VAE_LinNF, VAE_LinNF_Config, VAMP, VAMPConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU())
            self.mu, self.log_var = nn.Linear(300, 40), nn.Linear(300, 40)

        def forward(self, x):
            h = self.net(x)
            return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(40, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU(),
                                     nn.Linear(300, 784), nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).reshape(-1, 1, 28, 28))

    common = {"input_dim": (1, 28, 28), "latent_dim": 40, "reconstruction_loss": "bce"}
    torch.manual_seed(0)
    if variant == "vampprior":
        model = VAMP(VAMPConfig(**common, number_components=500), encoder=Encoder(), decoder=Decoder())
    elif variant == "iaf":
        model = VAE_IAF(VAE_IAF_Config(**common, n_made_blocks=2, n_hidden_in_made=1, hidden_size=128),
                        encoder=Encoder(), decoder=Decoder())
    else:
        model = VAE_LinNF(VAE_LinNF_Config(**common, flows=["Planar"] * 10), encoder=Encoder(), decoder=Decoder())
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model({"data": xs[i % len(xs)]}, epoch=100).loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--pythae-python", default="/work/pythae-venv/bin/python")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--worker", choices=["peer", "dgm"])
    p.add_argument("--variant", choices=VARIANTS)
    args = p.parse_args()
    if args.worker:
        xs = batches(Path(args.data_dir), 20, 100)
        times = (peer if args.worker == "peer" else ours)(args.variant, xs, args.steps)
        print(json.dumps({"step_seconds": times}))
        return
    pythons = {"dgm": sys.executable, "peer": args.pythae_python}
    summary = {}
    for variant in args.variants:
        rates: dict[str, list[float]] = {"peer": [], "dgm": []}
        for r in range(args.repeats):
            for who in ("peer", "dgm"):
                out = subprocess.run([pythons[who], __file__, "--worker", who, "--variant", variant, "--steps",
                                      str(args.steps), "--data-dir", args.data_dir],
                                     check=True, capture_output=True, text=True)
                secs = json.loads(out.stdout.strip().splitlines()[-1])["step_seconds"][20:]  # after warm-up
                rates[who].append(100 * len(secs) / sum(secs))
                print(f"{variant} repeat {r}: {who:>4} {rates[who][-1]:8.0f} images/s", flush=True)
        peer_rate, ours_rate = statistics.median(rates["peer"]), statistics.median(rates["dgm"])
        summary[variant] = {"pythae_images_per_s": round(peer_rate), "dgm_images_per_s": round(ours_rate),
                            "ratio": round(ours_rate / peer_rate, 2)}
    import torch

    summary["setup"] = {"steps": args.steps, "repeats": args.repeats, "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                        "machine": platform.processor() or platform.machine()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
