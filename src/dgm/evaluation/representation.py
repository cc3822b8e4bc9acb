"""Representation quality of a model's codes (seed 002; Hinton & Salakhutdinov 2006), for any model with `encode`.

On a split's images x (pixels in [0, 1]) with codes z = encode(x) (a VAE's posterior mean):

    sse_per_image   mean_x sum_i (x_i - x^_i)^2, x^ = decode(z): the 2006 paper's reconstruction error
    recon_<name>    mean_x -log p(x | z) in nats from the model's own likelihood (`log_px_z`, where it has
                    one): recon_nll, or recon_bce for a Bernoulli on grey levels, which is no likelihood
    probe_accuracy  test accuracy of a linear probe, multinomial logistic regression on standardised codes
    knn_accuracy    test accuracy of a 5-nearest-neighbour classifier (Euclidean distance between codes)

Both classifiers are fitted on the codes of at most MAX_TRAIN_CODES training images, evenly strided
(`probe_train_codes` says how many), and exist only on datasets with labels. A model with
`code_statistics(codes)` adds its own scores (the sparse autoencoder's activations).

A conditional model (the conditional VAE) encodes and decodes each image with its own label: its
codes are those of q(z | x, y), so the classifiers measure how much of the label is left in z.

`pca_reconstruction_error` is the same measure for PCA, the baseline of the 2006 paper's table.
"""
from __future__ import annotations

import torch
from torch import nn

from dgm.data import Dataset
from dgm.evaluation.likelihood import strided_subset
from dgm.models import batch_fields, given

MAX_TRAIN_CODES = 10_000  # training codes the classifiers are fitted on: enough for a 30-D code, quick to fit
BATCH = 500


@torch.no_grad()
def _batched(fn, device: torch.device, *xs: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """fn over equally long tensors xs in batches on `device`, concatenated on the CPU; the labels y [N] are
    passed along (keyword y) when the model is conditional (`given` makes fn's keywords)."""
    def batch(i: int) -> torch.Tensor:
        labels = {} if y is None else {"y": y[i : i + BATCH].to(device)}
        return fn(*(x[i : i + BATCH].to(device) for x in xs), **labels).cpu()

    return torch.cat([batch(i) for i in range(0, len(xs[0]), BATCH)])


def probe_accuracies(train_z: torch.Tensor, train_y: torch.Tensor, test_z: torch.Tensor,
                     test_y: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Test accuracies of a linear probe (logistic regression on standardised codes) and of k-NN, fitted on
    the training codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_z, train_y, test_z, test_y = (t.numpy() for t in (train_z, train_y, test_z, test_y))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(train_z, train_y)
    knn = KNeighborsClassifier(n_neighbors=k).fit(train_z, train_y)
    return {"probe_accuracy": float(probe.score(test_z, test_y)), "knn_accuracy": float(knn.score(test_z, test_y))}


def representation_metrics(model: nn.Module, dataset: Dataset, split: str = "test",
                           seed: int = 0) -> dict[str, float | int]:
    """The scores above on `split`; {} for a model without `encode`."""
    if not callable(getattr(model, "encode", None)):
        return {}
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)  # dynamic binarization draws the images
    data = dataset.split(split)
    x = dataset.to_float(data.x)
    labels = given(model, batch_fields(model, dataset, data)[0])
    z = _batched(model.encode, device, x, **labels)
    out: dict[str, float | int] = {}
    if callable(getattr(model, "decode", None)):
        x_hat = _batched(model.decode, device, z, **labels)
        out["sse_per_image"] = (x - x_hat).pow(2).flatten(1).sum(1).mean().item()
    if callable(getattr(model, "log_px_z", None)):
        name = getattr(getattr(model, "likelihood", None), "loss_name", "nll")
        out[f"recon_{name}"] = -_batched(model.log_px_z, device, z, x, **labels).mean().item()
    train = dataset.train
    if train.y is not None and data.y is not None:
        idx = strided_subset(len(train), MAX_TRAIN_CODES)
        train_labels = batch_fields(model, dataset, train)[0]
        train_z = _batched(model.encode, device, dataset.to_float(train.x[idx]),
                           **given(model, None if train_labels is None else train_labels[idx]))
        out.update(probe_accuracies(train_z, train.y[idx], z, data.y))
        out["probe_train_codes"] = len(idx)
    if callable(getattr(model, "code_statistics", None)):
        out.update(model.code_statistics(z))
    return out


def principal_axes(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [D], the k leading principal axes [D, k]) of x [N, ...] flattened, in float64: the top
    eigenvectors of the scatter matrix (x - mean)^T (x - mean)."""
    flat = x.flatten(1).double()
    mean = flat.mean(0)
    centred = flat - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return mean, vectors[:, -k:].flip(-1)


def pca_reconstruction_error(train_x: torch.Tensor, test_x: torch.Tensor, k: int) -> float:
    """Mean over test images of sum_i (x_i - x^_i)^2, x^ = mean + V V^T (x - mean) the projection onto the
    k leading principal axes V of the training images (pixels in [0, 1])."""
    mean, axes = principal_axes(train_x, k)
    centred = test_x.flatten(1).double() - mean
    residual = centred - centred @ axes @ axes.T
    return residual.pow(2).sum(1).mean().item()
