"""Training throughput of the MLP VAE on MNIST: dgm's trainer against a loop written the way
the official PyTorch VAE example writes it (torchvision MNIST, ToTensor, DataLoader, batch 128,
784-400-20, Adam 1e-3, BCE summed + KL). Each measurement runs in its own process (so process-wide
settings such as flush-denormal do not leak between the two), alternating peer and dgm.

    python bench/vae_throughput.py --data-dir ../shared/data --epochs 3 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peer(data_dir: Path, epochs: int) -> dict:
    """The official example's loop, kept as it is written there (one epoch = 60,000 images)."""
    import torch
    import torch.nn.functional as F
    from torch import nn, optim
    from torchvision import datasets, transforms

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = torch.exp(0.5 * logvar)
            return mu + torch.randn_like(std) * std

        def decode(self, z):
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, 784))
            return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    def loss_function(recon_x, x, mu, logvar):
        bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
        return bce + -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

    with tempfile.TemporaryDirectory() as tmp:  # torchvision extracts next to the .gz files: use a copy
        shutil.copytree(data_dir / "MNIST", Path(tmp) / "MNIST")
        train = datasets.MNIST(tmp, train=True, download=True, transform=transforms.ToTensor())
        loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True, num_workers=0)
        torch.manual_seed(1)
        model = VAE()
        optimizer = optim.Adam(model.parameters(), lr=1e-3)
        times, images = [], 0
        for _ in range(epochs):
            model.train()
            t0 = time.perf_counter()
            for data, _ in loader:
                optimizer.zero_grad()
                recon, mu, logvar = model(data)
                loss = loss_function(recon, data, mu, logvar)
                loss.backward()
                optimizer.step()
            times.append(time.perf_counter() - t0)
            images = len(train)
    return {"images_per_epoch": images, "epoch_seconds": times}


def ours(data_dir: Path, epochs: int) -> dict:
    import torch

    from dgm.data import load_dataset
    from dgm.models import create_model
    from dgm.training import TrainConfig, Trainer

    ds = load_dataset("mnist", data_dir=data_dir)
    torch.manual_seed(1)
    model = create_model("vae", {"data_shape": (1, 28, 28), "levels": 256, "hidden_dims": (400,), "latent_dim": 20,
                                 "likelihood": "bernoulli"})
    times = []

    def clock(trainer):
        times.append(time.perf_counter())

    trainer = Trainer(model, ds, TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, progress=False),
                      callbacks=[clock])
    t0 = time.perf_counter()
    trainer.fit()  # each epoch includes dgm's validation pass over 10,000 images
    edges = [t0, *times]
    return {"images_per_epoch": len(ds.train), "epoch_seconds": [b - a for a, b in zip(edges[:-1], edges[1:])]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", choices=["peer", "dgm"])
    args = p.parse_args()
    data_dir = Path(args.data_dir)
    if args.worker:
        print(json.dumps((peer if args.worker == "peer" else ours)(data_dir, args.epochs)))
        return
    rates: dict[str, list[float]] = {"peer": [], "dgm": []}
    for r in range(args.repeats):
        for who in ("peer", "dgm"):
            out = subprocess.run([sys.executable, __file__, "--worker", who, "--epochs", str(args.epochs),
                                  "--data-dir", str(data_dir)], check=True, capture_output=True, text=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            # skip the first epoch (allocator and thread-pool warm-up) when there are several
            secs = res["epoch_seconds"][1:] or res["epoch_seconds"]
            rate = res["images_per_epoch"] * len(secs) / sum(secs)
            rates[who].append(rate)
            print(f"repeat {r}: {who:>4} {rate:8.0f} images/s", flush=True)
    peer_rate, ours_rate = statistics.median(rates["peer"]), statistics.median(rates["dgm"])
    import torch

    summary = {"peer_images_per_s": round(peer_rate), "dgm_images_per_s": round(ours_rate),
               "ratio": round(ours_rate / peer_rate, 2), "epochs": args.epochs, "repeats": args.repeats,
               "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "machine": platform.processor() or platform.machine()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
