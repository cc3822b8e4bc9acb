"""Classification error of a model that classifies (M2's q(y|x), seed 004), for any model with `classify`.

    classification_error   the fraction of the split's images whose argmax_y classify(x) is not their label

`classify(x)` returns class scores [B, K] (probabilities or logits: only their argmax is read). A model
without `classify`, or a split without labels, has no score ({}). `dgm eval` reports it with the
representation scores (dgm.evaluation.representation).
"""
from __future__ import annotations

import torch
from torch import nn

from dgm.data import Dataset

BATCH = 500


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """argmax_y classify(x) of images x [N, C, H, W] (floats), in batches on the model's device: [N] on the CPU."""
    device = next(model.parameters()).device
    return torch.cat([model.classify(x[i : i + BATCH].to(device)).argmax(-1).cpu() for i in range(0, len(x), BATCH)])


@torch.no_grad()
def classification_metrics(model: nn.Module, dataset: Dataset, split: str = "test",
                           seed: int = 0) -> dict[str, float]:
    """{"classification_error": in [0, 1]} on `split`; {} for a model without `classify` or a split without labels."""
    data = dataset.split(split)
    if not callable(getattr(model, "classify", None)) or data.y is None or len(data) == 0:
        return {}
    model.eval()
    torch.manual_seed(seed)  # dynamic binarization draws the images
    wrong = predictions(model, dataset.to_float(data.x)) != data.y
    return {"classification_error": wrong.double().mean().item()}
