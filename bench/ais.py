"""Annealed importance sampling (Wu et al. 2017) checked where the answer is known, and on a trained VAE.

    python bench/ais.py --vae-run bench/out/vae-family/vae --data-dir ../shared/data --out bench/out/ais

1. Factor analysis on digits taken as continuous points (pixel values in [0, 1] as real numbers), 8 factors,
   fitted by full-batch Adam on its exact log-likelihood: log p(x) = log N(x; b, W W^T + Psi) is known exactly,
   so AIS (16 chains, --fa-steps intermediate distributions, 10 leapfrog steps) is compared with it on all 179
   test images: the mean error and the mean absolute error per image, in nats.
2. A trained VAE on static binarized MNIST (--vae-run, e.g. the seed-004 family's `vae`): AIS on the first
   --n-examples test images (evenly strided) against IWAE-5000 on the same images (the issue's check: AIS >=
   IWAE-5000 - 0.2 nats), and BDMC on as many examples simulated from the model: the gap between the reverse
   (upper) and forward (lower) bounds. Wall times, and the time extrapolated to 1,000 test images.
3. With --wu, Wu et al.'s comparison on 8-bit MNIST: a VAE (its own discretized Gaussian p(x|z) with a learned
   per-pixel scale) and a GAN trained --wu-steps steps with the same MLP size (latent 10, one hidden layer of
   512), both scored by AIS on the same --n-examples test images; the GAN under a discretized Gaussian
   observation model whose sigma is chosen on the validation split (Wu et al.'s protocol).
Everything runs on one process; the results go to OUT/ais.json and are printed.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch


def factor_analysis_check(steps: int, chains: int, seed: int) -> dict:
    from dgm.data import Dataset, Split, load_dataset
    from dgm.evaluation.ais import ais_log_likelihood
    from dgm.models import create_model

    torch.manual_seed(seed)
    digits = load_dataset("digits")
    points = Dataset("digits-continuous", *(Split(digits.to_float(s.x), s.y) for s in
                                           (digits.train, digits.valid, digits.test)), levels=0)
    model = create_model("factor-analysis", {"data_shape": (1, 8, 8), "levels": 0, "latent_dim": 8}).double()
    x = points.train.x.double()
    model.fit_before_training(x)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(300):
        loss = model.loss((x,))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # border pixels never vary: keep every noise variance at least (1/16)^2
        model.log_psi.clamp_(min=2 * math.log(1 / 16))
    model.eval()
    test = points.test.x.double()
    with torch.no_grad():
        exact = model.log_density(test)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    estimate = ais_log_likelihood(model.log_prior, model.log_px_z, model.sample_latent, test, chains=chains,
                                  steps=steps, generator=g)
    seconds = time.perf_counter() - t0
    err = estimate - exact
    return {"fa_examples": len(test), "fa_steps": steps, "fa_chains": chains, "fa_exact_mean": exact.mean().item(),
            "fa_ais_mean": estimate.mean().item(), "fa_mean_error": err.mean().item(),
            "fa_mean_abs_error": err.abs().mean().item(), "fa_max_abs_error": err.abs().max().item(),
            "fa_seconds": seconds}


def vae_check(run: str, data_dir: str | None, n: int, steps: int, chains: int, seed: int) -> dict:
    import dgm
    from dgm.evaluation.ais import ais_metrics
    from dgm.evaluation.likelihood import strided_subset
    from dgm.runs import load_data, read_config

    model = dgm.load(run).eval()
    dataset = load_data(read_config(run), data_dir)
    t0 = time.perf_counter()
    ais = ais_metrics(model, dataset, chains=chains, steps=steps, n_examples=n, bdmc=True, seed=seed,
                      progress=False)
    seconds = time.perf_counter() - t0
    idx = strided_subset(len(dataset.test), n)
    x = dataset.to_float(dataset.test.x[idx])
    torch.manual_seed(seed)
    t1 = time.perf_counter()
    with torch.no_grad():
        iwae = torch.cat([model.iwae(x[i : i + 10], k=5000) for i in range(0, len(x), 10)])
    iwae_seconds = time.perf_counter() - t1
    return {"vae_run": str(run), "vae_examples": n, "vae_steps": steps, "vae_chains": chains,
            "vae_iwae5000": iwae.mean().item(), "vae_iwae5000_seconds": iwae_seconds,
            "vae_ais_and_bdmc_seconds": seconds,
            **{f"vae_{k}": v for k, v in ais.items()},
            "vae_ais_minus_iwae": ais["log_likelihood_ais"] - iwae.mean().item(),
            "vae_ais_seconds_per_1000_images": ais["ais_seconds"] * 1000 / n}


def wu_comparison(data_dir: str | None, out: Path, train_steps: int, n: int, steps: int, chains: int,
                  seed: int) -> dict:
    import dgm

    result = {"wu_train_steps": train_steps, "wu_examples": n, "wu_ais_steps": steps, "wu_chains": chains}
    shared = {"hidden_dims": (512,), "latent_dim": 10, "batch_size": 128, "seed": seed}
    for name, options in (("vae", {"likelihood": "gaussian", "learned_scale": True}), ("gan", {})):
        run = out / f"wu-{name}"
        if not (run / "model.safetensors").exists():
            dgm.train(name, data="mnist", out=run, data_dir=data_dir, steps=train_steps, progress=False, quiet=True,
                      **shared, **options)
        t0 = time.perf_counter()
        done = json.loads((run / "eval.json").read_text()) if (run / "eval.json").exists() else {}
        if (done.get("ais_steps"), done.get("ais_chains"), done.get("ais_examples")) == (steps, chains, n):
            scores = done  # this run was scored with these settings already: reuse its eval.json
        else:
            scores = dgm.evaluate(run, ais=True, chains=chains, ais_steps=steps, n_examples=n, seed=seed,
                                  data_dir=data_dir, progress=False)
        result.update({f"wu_{name}_{k}": v for k, v in scores.items() if k.startswith(("log_", "ais_", "bits"))})
        result[f"wu_{name}_seconds"] = time.perf_counter() - t0
        result[f"wu_{name}_parameters"] = sum(p.numel() for p in dgm.load(run).parameters())
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vae-run", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n-examples", type=int, default=100)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--fa-steps", type=int, default=1000)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out/ais")
    p.add_argument("--only-wu", action="store_true", help="run part 3 alone")
    p.add_argument("--wu", action="store_true")
    p.add_argument("--wu-steps", type=int, default=3000)
    p.add_argument("--wu-ais-steps", type=int, default=300)
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = {"machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"}
    if not args.only_wu:
        result.update(factor_analysis_check(args.fa_steps, args.chains, args.seed))
        print(json.dumps(result), flush=True)
    if args.vae_run and not args.only_wu:
        result.update(vae_check(args.vae_run, args.data_dir, args.n_examples, args.steps, args.chains, args.seed))
    if args.wu or args.only_wu:
        result.update(wu_comparison(args.data_dir, Path(args.out), args.wu_steps, args.n_examples, args.wu_ais_steps,
                                    args.chains, args.seed))
    name = "wu.json" if args.only_wu else "ais.json"
    (Path(args.out) / name).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
