"""DCGAN training throughput on MNIST resized to 32x32: dgm's trainer against a loop written the way
the official PyTorch DCGAN example writes it (torchvision MNIST with Resize(32) + ToTensor + Normalize,
DataLoader, nz 100, 64 filters, batch 64, Adam 2e-4 / 0.5, BCELoss). Same network on both sides:
G 100 -> 256x4x4 -> 128x8x8 -> 64x16x16 -> 1x32x32, D its mirror. Each measurement runs in its own
process, alternating peer, dgm (float32, as the peer) and dgm with `precision=bf16` (bfloat16 autocast).

    python bench/dcgan_throughput.py --data-dir ../shared/data --steps 150 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peer(data_dir: Path, steps: int) -> float:
    import torch
    from torch import nn, optim
    from torchvision import datasets, transforms

    nz, ngf, ndf, nc = 100, 64, 64, 1

    class Generator(nn.Module):  # the example's generator with one doubling fewer (32x32 output)
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
                nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

        def forward(self, x):
            return self.main(x)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False), nn.Sigmoid())

        def forward(self, x):
            return self.main(x).view(-1, 1).squeeze(1)

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(data_dir / "MNIST", Path(tmp) / "MNIST")
        dataset = datasets.MNIST(tmp, download=True, transform=transforms.Compose([
            transforms.Resize(32), transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
        loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True, num_workers=0)
        torch.manual_seed(1)
        netG, netD = Generator(), Discriminator()
        criterion = nn.BCELoss()
        optD = optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        optG = optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        t0, done = None, 0
        for i, (data, _) in enumerate(loader):
            if i == 10:
                t0 = time.perf_counter()  # 10 warm-up steps
            netD.zero_grad()
            b = data.size(0)
            label = torch.full((b,), 1.0)
            errD_real = criterion(netD(data), label)
            errD_real.backward()
            fake = netG(torch.randn(b, nz, 1, 1))
            label.fill_(0.0)
            errD_fake = criterion(netD(fake.detach()), label)
            errD_fake.backward()
            optD.step()
            netG.zero_grad()
            label.fill_(1.0)
            errG = criterion(netD(fake), label)
            errG.backward()
            optG.step()
            if i >= 10:
                done += b
            if i == 10 + steps:
                break
        return done / (time.perf_counter() - t0)


def ours(data_dir: Path, steps: int, precision: str = "fp32") -> float:
    import torch
    import torch.nn.functional as F

    from dgm.data import Dataset, Split, load_dataset
    from dgm.models import create_model
    from dgm.training import TrainConfig, Trainer

    mnist = load_dataset("mnist", data_dir=data_dir)

    def resize(split: Split) -> Split:  # 28 -> 32 once, in memory, as uint8
        x = F.interpolate(split.x.float(), size=32, mode="bilinear", antialias=True, align_corners=False)
        return Split(x.round().clamp(0, 255).to(torch.uint8), split.y)

    ds = Dataset("mnist32", resize(mnist.train), resize(mnist.valid), resize(mnist.test), levels=256,
                 num_classes=10)
    torch.manual_seed(1)
    model = create_model("dcgan", {"data_shape": (1, 32, 32), "levels": 256, "num_classes": 10, "latent_dim": 100,
                                   "base_channels": 64})
    trainer = Trainer(model, ds, TrainConfig(steps=10 + steps, batch_size=64, precision=precision,
                                                  progress=False))
    t0 = time.perf_counter()
    trainer.fit()  # timed whole, its 10 warm-up steps included (the peer's are not): conservative
    return (10 + steps) * 64 / (time.perf_counter() - t0)


WORKERS = {"peer": peer, "dgm": ours, "dgm-bf16": lambda data_dir, steps: ours(data_dir, steps, "bf16")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", choices=list(WORKERS))
    args = p.parse_args()
    if args.worker:
        print(json.dumps({"images_per_s": WORKERS[args.worker](Path(args.data_dir), args.steps)}))
        return
    rates: dict[str, list[float]] = {who: [] for who in WORKERS}
    for r in range(args.repeats):
        for who in WORKERS:
            out = subprocess.run([sys.executable, __file__, "--worker", who, "--steps", str(args.steps),
                                  "--data-dir", args.data_dir], check=True, capture_output=True, text=True)
            rate = json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]
            rates[who].append(rate)
            print(f"repeat {r}: {who:>4} {rate:7.0f} images/s", flush=True)
    median = {who: statistics.median(r) for who, r in rates.items()}
    print(json.dumps({"images_per_s": {who: round(m) for who, m in median.items()},
                      "ratio_to_peer": {who: round(m / median["peer"], 2) for who, m in median.items()},
                      "steps": args.steps, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
