"""Mode coverage on 2-D Gaussian mixtures (the VEEGAN / PacGAN protocol; see BENCHMARKS.md).

Draw samples (2,500 in the protocol); a sample is high quality if it lies within 3 sd of
its nearest mode centre; a mode is covered if at least one high-quality sample is nearest
to it. Centres and sd of the toy datasets: `dgm.data.toy.TOY_MIXTURES`.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def mode_metrics(model, dataset, n: int = 2500, seed: int = 0) -> dict[str, float | int]:
    """Mode coverage of `n` samples for datasets that know their mixture; {} otherwise."""
    if dataset.mixture is None or not callable(getattr(model, "sample", None)):
        return {}
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    centres, sd = dataset.mixture
    return {**mode_coverage(model.sample(n, generator=generator), centres, sd), "n_samples": n}


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
