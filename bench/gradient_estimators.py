"""Score function against reparameterization (seeds 003, 004): the variance of each estimator of the encoder's
gradient against the number of samples on one trained VAE (log-log), and training curves of the same VAE
trained with each estimator.

    OMP_NUM_THREADS=1 python bench/gradient_estimators.py --data digits --steps 3000 --out bench/out/estimators

Variance: on one fixed batch of 100 test images, the gradient of the loss with respect to the encoder's
weights is drawn `--repeats` times with n_samples = S for each estimator; the figure shows the total variance
(sum over weights of the per-weight variance across draws) divided by the squared norm of the true gradient
(estimated by the mean of the reparameterization draws at the largest S, whose own relative error is tiny;
every estimator is unbiased for it), so the three estimators are on one scale. Training: the same VAE from the same initial weights, trained for
`--steps` steps with each estimator (n_samples 4, so the leave-one-out baseline has 3 other samples),
validation ELBO every `--eval-every` steps.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import dgm
from dgm.models import create_model
from dgm.runs import load_data, read_config

ESTIMATORS = ("reparameterization", "score_function", "score_function_baseline")
NETWORK = {"hidden_dims": (200,), "latent_dim": 8}


def gradient_variance(run: Path, data_dir: str | None, samples: list[int], repeats: int) -> dict:
    """{estimator: {S: relative variance}} on the trained run's weights."""
    trained = dgm.load(run)
    dataset = load_data(read_config(run), data_dir)
    x = dataset.to_float(dataset.test.x[:100])
    cfg = {k: v for k, v in vars(trained.cfg).items() if k not in ("estimator", "n_samples")}
    out: dict[str, dict[int, float]] = {}
    draws: dict[tuple[str, int], torch.Tensor] = {}
    for estimator in ESTIMATORS:
        out[estimator] = {}
        for s in samples:
            if estimator == "score_function_baseline" and s < 2:
                continue
            model = create_model("vae", {**cfg, "estimator": estimator, "n_samples": s})
            model.load_state_dict(trained.state_dict())
            weight = model.encoder[1][0].weight
            torch.manual_seed(0)
            grads = torch.stack([torch.autograd.grad(model.loss((x, None))["loss"], weight)[0]
                                 for _ in range(repeats)])
            draws[estimator, s] = grads.var(0).sum()
            if estimator == "reparameterization" and s == max(samples):
                true_sq = grads.mean(0).pow(2).sum()  # every estimator is unbiased for this gradient
    for (estimator, s), var in draws.items():
        out[estimator][s] = (var / true_sq).item()
        print(f"{estimator:<26} S={s:<5} relative variance {out[estimator][s]:.4g}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="bench/out/estimators")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--samples", default="1,2,4,8,16,32,64,128")
    p.add_argument("--repeats", type=int, default=100)
    args = p.parse_args()
    out = Path(args.out)
    runs = {}
    for estimator in ESTIMATORS:
        run = out / estimator
        if not (run / "model.safetensors").exists():
            dgm.train("vae", data=args.data, out=run, data_dir=args.data_dir, steps=args.steps,
                      eval_every=args.eval_every, quiet=True, estimator=estimator, n_samples=4, seed=0,
                      progress=False, **NETWORK)
        runs[estimator] = [json.loads(line) for line in open(run / "metrics.jsonl")]
    variance = gradient_variance(out / "reparameterization", args.data_dir,
                                 [int(s) for s in args.samples.split(",")], args.repeats)
    curves = {e: [(m["step"], m["valid/elbo"]) for m in runs[e] if "valid/elbo" in m] for e in ESTIMATORS}
    summary = {"variance": variance, "final_valid_elbo": {e: c[-1][1] for e, c in curves.items()},
               "best_valid_elbo": {e: max(v for _, v in c) for e, c in curves.items()},
               "steps": args.steps, "data": args.data, "threads": torch.get_num_threads()}
    (out / "bench.json").write_text(json.dumps({**summary, "curves": curves}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for e in ESTIMATORS:
        s = sorted(variance[e])
        a.loglog(s, [variance[e][k] for k in s], "o-", label=e)
        steps, elbo = zip(*curves[e])
        b.plot(steps, elbo, label=e)
    a.set(xlabel="samples S per image", ylabel="Var[grad] / |E grad|^2 (encoder weights)",
          title="gradient variance on one trained VAE")
    b.set(xlabel="step", ylabel="validation ELBO (nats)", title=f"training with each estimator ({args.data})")
    lo = min(v for c in curves.values() for _, v in c[len(c) // 4:])
    b.set_ylim(bottom=lo - 5)
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "estimators.png", dpi=120)
    print(f"figure: {out / 'estimators.png'}")


if __name__ == "__main__":
    main()
