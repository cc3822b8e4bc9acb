"""Train the feature networks that ship in src/dgm/evaluation/weights/ (seeded, deterministic on CPU).

    OMP_NUM_THREADS=1 python bench/train_feature_nets.py [--data-dir ../shared/data] [--only digits|mnist]

digits: 8x8, conv 32-64, 128 features, trained on the train split (1,438 images).
mnist:  28x28, conv 32-64-64, 128 features, trained on the 50,000 training images; every
        batch has half its images Bernoulli-binarized so that binarized MNIST is scored
        by the same network. Test accuracy (grey and binarized) is stored in the file's
        metadata and printed.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from dgm.data import load_dataset
from dgm.evaluation.features import WEIGHTS_DIR, DigitNet, save_feature_net

RECIPES = {
    "digits": dict(dataset="digits", channels=(32, 64), epochs=60, batch_size=64, lr=2e-3, binarize_half=False),
    "mnist": dict(dataset="mnist", channels=(32, 64, 64), epochs=4, batch_size=128, lr=2e-3, binarize_half=True),
}


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    pred = torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


def train(name: str, data_dir: str | None, seed: int = 0) -> dict:
    recipe = RECIPES[name]
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    ds = load_dataset(recipe["dataset"], data_dir=data_dir)
    x, y = ds.to_float(ds.train.x), ds.train.y
    net = DigitNet(ds.shape[-1], recipe["channels"])
    steps = recipe["epochs"] * -(-len(x) // recipe["batch_size"])
    opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    start, step = time.time(), 0
    for epoch in range(recipe["epochs"]):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), recipe["batch_size"]):
            idx = perm[i : i + recipe["batch_size"]]
            xb = x[idx]
            if recipe["binarize_half"]:
                half = torch.rand(len(xb), 1, 1, 1, generator=g) < 0.5
                xb = torch.where(half, torch.bernoulli(xb, generator=g), xb)
            loss = nn.functional.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        net.eval()
        print(f"{name} epoch {epoch + 1}: loss {loss.item():.4f}, valid accuracy "
              f"{accuracy(net, ds.to_float(ds.valid.x), ds.valid.y):.4f} ({time.time() - start:.0f} s)", flush=True)
    net.eval()
    xt = ds.to_float(ds.test.x)
    info = {"dataset": recipe["dataset"], "seed": seed, "trained_by": "bench/train_feature_nets.py",
            "test_accuracy": round(accuracy(net, xt, ds.test.y), 5)}
    if recipe["binarize_half"]:
        info["test_accuracy_binarized"] = round(accuracy(net, torch.bernoulli(xt, generator=g), ds.test.y), 5)
    save_feature_net(net, WEIGHTS_DIR / f"{name}.safetensors", **info)
    print(name, info, f"{sum(p.numel() for p in net.parameters())} parameters")
    return info


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--only", choices=sorted(RECIPES))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for name in [args.only] if args.only else RECIPES:
        train(name, args.data_dir, args.seed)
