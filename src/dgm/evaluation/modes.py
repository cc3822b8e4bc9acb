"""Mode coverage (the VEEGAN / PacGAN protocols; see BENCHMARKS.md).

2-D Gaussian mixtures (`ring8`, `grid25`): draw 2,500 samples; a sample is high quality if it
lies within 3 sd of its nearest mode centre; a mode is covered if at least one high-quality
sample is nearest to it. Centres and sd of the toy datasets: `dgm.data.toy.TOY_MIXTURES`.

Stacked digits (`stacked-mnist`, whose `Dataset.channel_modes` names the shipped network that
reads one channel): draw 26,000 samples; the shipped network classifies each channel, giving the
mode k = 100 d_R + 10 d_G + d_B of 1,000 (`dgm.evaluation.features.channel_modes`). A mode is
covered if at least one sample falls in it, and

    mode_kl = KL(q || uniform) = sum_m q_m log(q_m K)   (nats; 0 log 0 = 0)

with q the empirical distribution of the samples' modes and K = 10**C the number of modes.
"""
from __future__ import annotations

import torch

MIXTURE_SAMPLES = 2500
CHANNEL_SAMPLES = 26000
BATCH_SIZE = 1000  # samples per draw for stacked digits


@torch.no_grad()
def mode_metrics(model, dataset, n: int | None = None, seed: int = 0) -> dict[str, float | int]:
    """Mode coverage of n samples (None: 2,500 for a toy mixture, 26,000 for stacked digits) for datasets
    that know their modes; {} otherwise, or for a model without `sample`."""
    if (dataset.mixture is None and dataset.channel_modes is None) or not callable(getattr(model, "sample", None)):
        return {}
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    if dataset.mixture is not None:
        n = MIXTURE_SAMPLES if n is None else n
        centres, sd = dataset.mixture
        return {**mode_coverage(model.sample(n, generator=generator), centres, sd), "n_samples": n}
    from dgm.evaluation.features import channel_modes, load_feature_net

    n = CHANNEL_SAMPLES if n is None else n
    net = load_feature_net(dataset.channel_modes)[0].to(device)
    modes = torch.cat([channel_modes(net, model.sample(min(BATCH_SIZE, n - i), generator=generator))
                       for i in range(0, n, BATCH_SIZE)])
    return {**mode_histogram_scores(modes, net.head.out_features ** dataset.shape[0]), "n_samples": n}


@torch.no_grad()
def mode_coverage(samples: torch.Tensor, centres: torch.Tensor, sd: float) -> dict[str, float | int]:
    """{"modes_covered": number of modes with a high-quality sample, "high_quality_fraction": in [0, 1]}.

    samples [N, D], centres [K, D], sd the components' standard deviation."""
    samples = samples.detach().to(torch.float64)
    centres = centres.to(samples.device, torch.float64)
    distance, nearest = torch.cdist(samples, centres, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
    high_quality = distance <= 3 * sd
    hits = torch.bincount(nearest[high_quality], minlength=centres.shape[0])
    return {"modes_covered": int((hits > 0).sum()),
            "high_quality_fraction": float(high_quality.double().mean()) if len(samples) else 0.0}


def mode_histogram_scores(modes: torch.Tensor, n_modes: int) -> dict[str, float | int]:
    """{"modes_covered": modes with a sample, "mode_kl": sum_m q_m log(q_m n_modes) in nats} of modes
    int64 [N] in 0 .. n_modes-1, q_m = count_m / N their empirical distribution."""
    counts = torch.bincount(modes.cpu(), minlength=n_modes).double()
    counts = counts[counts > 0]  # 0 log 0 = 0
    q = counts / len(modes)
    return {"modes_covered": len(counts), "mode_kl": float((q * (counts * n_modes / len(modes)).log()).sum())}
