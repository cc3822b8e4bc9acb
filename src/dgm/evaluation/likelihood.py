"""Likelihood metrics on a data split, batched over examples and importance samples.

For latent models: `elbo` (one reparameterized sample per example, closed-form KL) and
`log_likelihood`, the IWAE_k estimate of log p(x) (seed 004's Monte Carlo estimate of
the marginal), both mean nats per example. For exact models: `log_likelihood` from
`log_prob`. `bits_per_dim` is -log_likelihood / (D ln 2). Every observation model in
`dgm.distributions` but the Bernoulli on grey levels is a probability of the data's discrete
values, so these are log-probabilities (<= 0), never densities, on pixel data.

A conditional model's bounds (the conditional VAE's) are given each image's label y and bound
log p(x | y), not log p(x): they are reported as `conditional_elbo`, `conditional_log_likelihood`
and `conditional_bits_per_dim`, with a `likelihood_note` saying so, and are not comparable with
an unconditional model's `log_likelihood`. (`log_prob` is called without labels: a conditional
autoregressive model then gives the marginal log p(x).) A conditional model whose `elbo` takes no labels (M2, which
sums y out) bounds log p(x) and is scored as an unconditional one (`bounds_take_labels`).
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from dgm.data import Dataset
from dgm.errors import DgmError
from dgm.models import batch_fields, given

CONDITIONAL_NOTE = ("the conditional_ scores bound log p(x | y), the log-probability of each image given its own "
                    "label y, not log p(x); they are not comparable with an unconditional model's log_likelihood")


def bounds_take_labels(model: nn.Module) -> bool:
    """Whether the model's elbo/iwae are given the images' labels y and so bound log p(x | y) (the cvae's): a
    conditional model whose `elbo` has a parameter y. M2 is conditional (it samples and decodes a given label) but its
    bounds take no y: they are of log p(x)."""
    if not getattr(model, "conditional", False):
        return False
    try:
        return "y" in inspect.signature(model.elbo).parameters
    except (TypeError, ValueError):  # no signature to read: trust `conditional`
        return True


def strided_subset(n_total: int, n: int | None) -> torch.Tensor:
    """n indices spread evenly over the split (splits may be stored grouped by class)."""
    if n is None or n >= n_total:
        return torch.arange(n_total)
    return torch.linspace(0, n_total - 1, n).round().long()


@torch.no_grad()
def likelihood_metrics(model: nn.Module, dataset: Dataset, split: str = "test", k: int = 1000,
                       n_examples: int | None = None, chunk_size: int | None = None, seed: int = 0,
                       progress: bool = True) -> dict[str, float | int | str]:
    """Mean per-example likelihood metrics the model supports on `split`; {} if it has none.

    On data with discrete levels: `elbo`, `log_likelihood` and `bits_per_dim`, all of the
    log-probability of the pixels as stored. On continuous data (levels 0): `elbo` and
    `log_density`, which are densities, so no bits per dimension. A model whose observation
    model is not normalised over the data's values (a Bernoulli on grey levels) gets its
    training loss under its own name (`bce_kl`, per example) and `likelihood_note` saying why.
    A conditional model's bounds are of log p(x | y) and their keys say so (see the module docstring)."""
    has_bounds = callable(getattr(model, "iwae", None)) and callable(getattr(model, "elbo", None))
    has_exact = callable(getattr(model, "log_prob", None))
    if not (has_bounds or has_exact):
        return {}
    conditional = has_bounds and bounds_take_labels(model)
    prefix = "conditional_" if conditional else ""
    if k < 1:
        raise DgmError(f"k must be at least 1, got {k}")
    # (sample x example) pairs per call: the model's own setting (a PixelVAE's are maps), else 8192
    chunk_size = chunk_size or getattr(getattr(model, "cfg", None), "chunk_size", 8192)
    model_levels = getattr(getattr(model, "cfg", None), "levels", dataset.model_levels)
    if model_levels != dataset.model_levels:
        raise DgmError(f"the model was trained on data with {model_levels} levels per pixel but '{dataset.name}' "
                       f"has {dataset.model_levels}, so its likelihood is not a probability of these pixels")
    likelihood = getattr(model, "likelihood", None)
    improper = getattr(likelihood, "improper", None)
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    data = dataset.split(split)
    labels_of = batch_fields(model, dataset, data)[0]  # the labels (or attribute vectors) a conditional model reads
    if conditional:
        given(model, labels_of)  # data without labels is refused before any work
    idx = strided_subset(len(data), n_examples)
    torch.manual_seed(seed)
    # as many examples per call as fit k samples each into one chunk
    batch = max(1, chunk_size // k) if has_bounds and not improper else 256
    sums = {"elbo": 0.0, "log_likelihood": 0.0}
    for start in tqdm(range(0, len(idx), batch), disable=not progress, desc=f"{split} likelihood", unit="batch",
                      mininterval=1.0):
        x = dataset.to_float(data.x[idx[start : start + batch]].to(device))
        if has_bounds:
            labels = given(model, labels_of[idx[start : start + batch]].to(device)) if conditional else {}
            sums["elbo"] += model.elbo(x, **labels).sum().item()
            if not improper:
                sums["log_likelihood"] += model.iwae(x, k=k, chunk_size=chunk_size, **labels).sum().item()
        else:
            sums["log_likelihood"] += model.log_prob(x).sum().item()
    n = len(idx)
    if improper:
        name = prefix + (f"{likelihood.loss_name}_kl" if has_bounds else likelihood.loss_name)
        value = -(sums["elbo"] if has_bounds else sums["log_likelihood"]) / n
        note = (f"no log_likelihood or bits_per_dim: {improper}; {name} is the training loss per example. Train "
                "with a normalised likelihood (likelihood=auto) for one")
        if conditional:
            note += f"; {CONDITIONAL_NOTE}"
        return {name: value, "n_examples": n, "likelihood_note": note}
    out: dict[str, float | int | str] = {key: value / n for key, value in sums.items()
                                         if has_bounds or key == "log_likelihood"}
    if dataset.levels == 0:
        out["log_density"] = out.pop("log_likelihood")
    else:
        out["bits_per_dim"] = -out["log_likelihood"] / (math.prod(dataset.shape) * math.log(2))
    out = {prefix + key: value for key, value in out.items()}
    out["n_examples"] = n
    if has_bounds:
        out["k"] = k
    if conditional:
        out["likelihood_note"] = CONDITIONAL_NOTE
    return out
