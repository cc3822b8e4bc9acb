"""Train the feature networks that ship in src/dgm/evaluation/weights/ (seeded, deterministic on CPU).

    OMP_NUM_THREADS=1 python bench/train_feature_nets.py [--data-dir ../shared/data] [--only digits|mnist|sprites]

digits: 8x8, conv 32-64, 128 features, trained on the train split (1,438 images).
mnist:  28x28, conv 32-64-64, 128 features, trained on the 50,000 training images; every
        batch has half its images Bernoulli-binarized so that binarized MNIST is scored
        by the same network. Test accuracy (grey and binarized) is stored in the file's
        metadata and printed.
sprites: 32x32 RGB, `FactorNet` (RGB + object-mask + coordinate planes, conv 32-32-64,
        128 BatchNorm-ReLU features, a head per factor: dgm.evaluation.factors), trained on
        the 50,000 training sprites for 10 epochs; in every batch half the scenes are drawn
        at 64x64 and 2x2-averaged, as sprites64 is read. Loss: the sum of the six heads'
        cross-entropies plus `regression_weight` times the squared error of x, y and scale
        over their ranges (each mapped to [0, 1]). Per-head test accuracies and the mean
        absolute errors of x, y, scale (factor units), at 32x32 and on sprites64, are stored
        in the metadata and printed; `test_accuracy` is the shape head's (the classes of the
        Inception-style score). About 20 minutes on one CPU core of a busy machine.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from dgm.data import load_dataset
from dgm.evaluation.features import WEIGHTS_DIR, DigitNet, FactorNet, save_feature_net

RECIPES = {
    "digits": dict(dataset="digits", channels=(32, 64), epochs=60, batch_size=64, lr=2e-3, binarize_half=False),
    "mnist": dict(dataset="mnist", channels=(32, 64, 64), epochs=4, batch_size=128, lr=2e-3, binarize_half=True),
    "sprites": dict(dataset="sprites", channels=(32, 32, 64), epochs=10, batch_size=128, lr=2e-3, pooled_half=True,
                    regression_weight=20.0),
}


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    pred = torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


@torch.no_grad()
def factor_scores(net: FactorNet, x: torch.Tensor, factors: torch.Tensor) -> dict:
    """Accuracy of every classified head and mean absolute error of every regressed one (factor units)."""
    from dgm.evaluation.factors import CLASSES, factor_targets

    want = factor_targets(factors)
    outs = [net.outputs(x[i : i + 1000]) for i in range(0, len(x), 1000)]
    scores = {}
    for k, target in want.items():
        out = torch.cat([o[k] for o in outs])
        scores[k] = round(((out.argmax(1) == target).double().mean() if k in CLASSES
                           else (out.double() - target).abs().mean()).item(), 6)
    return scores


def pooled(factors: torch.Tensor, size: int) -> torch.Tensor:
    """The scenes drawn at twice the size and 2x2-averaged, float in [0, 1]."""
    from dgm.data.sprites import render

    return nn.functional.avg_pool2d(render(factors, 2 * size)[0].float() / 255, 2)


def train_factors(name: str, data_dir: str | None, seed: int = 0) -> dict:
    from dgm.evaluation.factors import CLASSES, REGRESSION, factor_targets

    recipe = RECIPES[name]
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    ds = load_dataset(recipe["dataset"], data_dir=data_dir)
    size = ds.shape[-1]
    x, f = ds.train.x, ds.train.factors
    want = factor_targets(f)
    net = FactorNet(size, recipe["channels"], CLASSES, REGRESSION)
    low, span = net.low, net.span
    steps = recipe["epochs"] * -(-len(x) // recipe["batch_size"])
    opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for epoch in range(recipe["epochs"]):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), recipe["batch_size"]):
            idx = perm[i : i + recipe["batch_size"]]
            xb = ds.to_float(x[idx])
            if recipe["pooled_half"]:
                half = idx[: len(idx) // 2]
                xb[: len(half)] = pooled(f[half], size)
            out = net.read(net.features(xb), units=False)
            loss = sum(nn.functional.cross_entropy(out[k], want[k][idx]) for k in CLASSES)
            u = torch.stack([(want[k][idx] - low[j]) / span[j] for j, k in enumerate(REGRESSION)], 1)
            u_hat = torch.stack([out[k] for k in REGRESSION], 1)
            loss = loss + recipe["regression_weight"] * ((u_hat - u) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        valid = factor_scores(net, ds.to_float(ds.valid.x), ds.valid.factors)
        print(f"{name} epoch {epoch + 1}: loss {loss.item():.4f}, valid {valid} ({time.time() - start:.0f} s)",
              flush=True)
    net.eval()
    test = factor_scores(net, ds.to_float(ds.test.x), ds.test.factors)
    test64 = factor_scores(net, pooled(ds.test.factors, size), ds.test.factors)
    info = {"dataset": recipe["dataset"], "seed": seed, "trained_by": "bench/train_feature_nets.py",
            "test_accuracy": test["shape"],
            "test_accuracies": {k: v for k, v in test.items() if k in CLASSES},
            "test_mean_absolute_errors": {k: v for k, v in test.items() if k in REGRESSION},
            "sprites64_test_accuracies": {k: v for k, v in test64.items() if k in CLASSES},
            "sprites64_test_mean_absolute_errors": {k: v for k, v in test64.items() if k in REGRESSION}}
    save_feature_net(net, WEIGHTS_DIR / f"{name}.safetensors", **info)
    print(name, info, f"{sum(p.numel() for p in net.parameters())} parameters")
    return info


def train(name: str, data_dir: str | None, seed: int = 0) -> dict:
    recipe = RECIPES[name]
    if "regression_weight" in recipe:
        return train_factors(name, data_dir, seed)
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
