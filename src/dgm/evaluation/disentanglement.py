"""Disentanglement of a model's codes against a dataset's known generating factors (`sprites`), for any model
with `encode`: the mutual information gap (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs")
and the FactorVAE score (Kim & Mnih 2018, "Disentangling by Factorising"). Both lie in [0, 1], 1 for a code
whose every factor is read off one code dimension of its own.

Codes z = encode(x) of a split's images (a VAE's posterior mean; a conditional model is given each image's
label y), factors v_1 .. v_K the split's columns `Split.factors`.

MIG (Chen et al.'s definition, estimated as Locatello et al. 2019's disentanglement_lib does, with its 20 bins):

    I_jk   = I(z_j ; v_k)                   plug-in mutual information in nats (sklearn's mutual_info_score)
                                            of z_j cut into 20 equal-width bins over its range and v_k
    gap_k  = (I_(1)k - I_(2)k) / H(v_k)     the largest minus the second largest I_jk over the code dims j,
                                            over the factor's entropy: `mig_<factor>`
    MIG    = mean_k gap_k                   `mig`, over the factors with H(v_k) > 0 (a constant one is skipped)

A discrete factor is taken as its integer codes; a continuous one (scale, rotation, x, y) is cut into the same
20 equal-width bins over its range, so H(v_k) and I_jk are of the binned factor (<= ln 20). With one code dim
the second largest I is 0. A factor that two dims know equally well scores 0 (the gap): one copied twice,
or one that both its own dim and a dim mixing it with another factor determine. The plug-in estimate is
biased upwards by about (bins - 1)(K_v - 1) / 2N nats for independent z_j and v_k (N codes, K_v values of
v_k): small for the 5,000 test codes of sprites, not for a few hundred.

FactorVAE score (Kim & Mnih), on standardised codes z_j / s_j, s_j the std of z_j over the training codes:

    1. drop the dims with s_j < 0.05 (collapsed units, e.g. a VAE's dims left at the prior; the threshold of
       disentanglement_lib's configs, in the codes' own units, so meant for codes on the scale of an N(0, I)
       prior), `factorvae_active_dims` says how many are kept
    2. a vote: draw a factor k uniformly, an example uniformly, and a batch of L = 64 examples that share
       the example's value of v_k (all of them when fewer); its dim d = argmin_j Var_batch(z_j / s_j)
    3. the classifier d -> k is the majority vote of 800 such votes on the training split's codes (at most
       `n_train`, evenly strided); `factorvae_score` is its accuracy on 800 votes from the evaluated split
       (`factorvae_train_accuracy` on its own votes). A dim with no training vote is mapped to factor 0.

The data is stored, not simulated, so "v_k fixed" means "the same value" for a discrete factor and "the same
bin of 20 equal-width bins" for a continuous one: within such a batch v_k still varies over 1/20 of its range,
so a dim that reads v_k has a small, not zero, variance (its ratio is about 1/400 of the others'). Only
values with at least two examples are drawn. Kim & Mnih and disentanglement_lib draw fresh batches from the
simulator with v_k exactly fixed, and disentanglement_lib uses 10,000 training and 5,000 evaluation votes
(its configs); here 800 and 800, so the score has a binomial standard error of up to sqrt(0.25 / 800) =
0.018. A code that ignores the factors scores about 1/K (every vote's dim is independent of its factor).
With `split="train"` both sets of votes come from the same codes (different draws).

Caveat on sprites: the rotation factor is ambiguous for symmetric shapes (a circle looks the same at every
angle, a square every pi/2, a star every 2 pi/5), so no encoder can read it from every image; its gap and
its votes are bounded below 1 even for a perfect code. It is not special-cased.

Published values on dSprites (Locatello et al.'s and Chen et al.'s benchmark, not these sprites: the numbers
are not comparable, only the scale): not verified from the papers here. What was found: disentanglement_lib's
metric configs (mig.gin: 20 bins, 10,000 codes; factor_vae_score: L = 64, 10,000 / 5,000 votes, prune
threshold 0.05 on the std); a user's report (YannDubs/disentangling-vae issue 64) that Chen et al.'s own code
gives MIG about 0.5 for an MLP beta-TCVAE on dSprites, where Chen et al.'s MIG leaves the shape factor out;
and a thread (google-research/disentanglement_lib issue 33) that Locatello et al.'s MIG distributions on
dSprites are low and that recomputed values differ across scikit-learn versions.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dgm.data import Dataset
from dgm.evaluation.likelihood import strided_subset
from dgm.evaluation.representation import _batched
from dgm.models import batch_fields, given

BINS = 20  # equal-width bins of a code dim or a continuous factor (disentanglement_lib's setting)
VOTE_BATCH = 64  # L: examples per FactorVAE vote
TRAIN_VOTES = 800
EVAL_VOTES = 800
MIN_STD = 0.05  # code dims with a smaller std over the data are collapsed units, left out of the votes
MAX_TRAIN_CODES = 10_000


def discretize(values: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """The bin of each value [N] among `bins` equal-width bins over [min, max] (numpy.histogram's edges, the
    maximum in the last bin): int64 [N]; all 0 for a constant."""
    v = values.double()
    low, high = v.min(), v.max()
    if high <= low:
        return torch.zeros(v.shape, dtype=torch.long)
    return ((v - low) / (high - low) * bins).floor().clamp(0, bins - 1).long()


def factor_labels(factors: torch.Tensor, discrete: list[bool], bins: int = BINS) -> torch.Tensor:
    """Integer labels of the factors [N, F]: a discrete factor's codes, a continuous one's bin: int64 [N, F]."""
    if factors.shape[1] != len(discrete):
        raise ValueError(f"{factors.shape[1]} factor columns but {len(discrete)} discrete flags")
    columns = [factors[:, k].round().long() if d else discretize(factors[:, k], bins)
               for k, d in enumerate(discrete)]
    return torch.stack(columns, 1)


def mutual_information_gap(codes: torch.Tensor, factors: torch.Tensor, discrete: list[bool],
                           bins: int = BINS) -> tuple[float, list[float]]:
    """(MIG, [gap_k for each factor]) of codes [N, D] against factors [N, F] (see the module docstring); a
    factor with zero entropy has gap nan and is left out of the mean (MIG is nan when every factor is)."""
    from sklearn.metrics import mutual_info_score

    codes = codes.flatten(1)
    if codes.shape[0] != factors.shape[0]:
        raise ValueError(f"{codes.shape[0]} codes but {factors.shape[0]} rows of factors")
    z = [discretize(codes[:, j], bins).numpy() for j in range(codes.shape[1])]
    v = factor_labels(factors, discrete, bins).numpy()
    gaps = []
    for k in range(v.shape[1]):
        entropy = mutual_info_score(v[:, k], v[:, k])
        if entropy <= 0:
            gaps.append(float("nan"))
            continue
        info = sorted((mutual_info_score(v[:, k], zj) for zj in z), reverse=True) + [0.0]
        gaps.append(float((info[0] - info[1]) / entropy))
    kept = [g for g in gaps if g == g]
    return (float(np.mean(kept)) if kept else float("nan")), gaps


def _votes(codes: torch.Tensor, labels: torch.Tensor, n: int, generator: torch.Generator,
           batch_size: int) -> list[tuple[int, int]]:
    """n votes (factor k, dim argmin_j Var_batch(codes_j)) on standardised codes [N, D] and factor labels
    [N, F]: k uniform over the factors with a value held by two examples, the batch's value that of a
    uniformly drawn example among those."""
    groups, eligible = [], []
    for k in range(labels.shape[1]):
        _, inverse, counts = torch.unique(labels[:, k], return_inverse=True, return_counts=True)
        members = [torch.nonzero(inverse == g).squeeze(1) for g in range(len(counts))]
        anchors = torch.nonzero(counts[inverse] >= 2).squeeze(1)
        groups.append((inverse, members, anchors))
        if len(anchors):
            eligible.append(k)
    if not eligible:
        return []
    out = []
    for _ in range(n):
        k = eligible[int(torch.randint(len(eligible), (), generator=generator))]
        inverse, members, anchors = groups[k]
        anchor = anchors[int(torch.randint(len(anchors), (), generator=generator))]
        group = members[int(inverse[anchor])]
        if len(group) > batch_size:
            group = group[torch.randperm(len(group), generator=generator)[:batch_size]]
        out.append((k, int(codes[group].var(0).argmin())))
    return out


def factorvae_score(train_codes: torch.Tensor, train_factors: torch.Tensor, test_codes: torch.Tensor,
                    test_factors: torch.Tensor, discrete: list[bool], bins: int = BINS,
                    batch_size: int = VOTE_BATCH, train_votes: int = TRAIN_VOTES, eval_votes: int = EVAL_VOTES,
                    min_std: float = MIN_STD, seed: int = 0) -> dict[str, float | int]:
    """The FactorVAE score (see the module docstring) of a majority-vote classifier fitted on votes from the
    training codes [N, D] and factors [N, F], scored on votes from the test ones: {factorvae_score,
    factorvae_train_accuracy, factorvae_active_dims}; a score of 0 when no dim is active or no vote can be drawn."""
    generator = torch.Generator().manual_seed(seed)
    train_codes, test_codes = train_codes.flatten(1).double(), test_codes.flatten(1).double()
    std = train_codes.std(0)
    active = torch.nonzero(std >= min_std).squeeze(1)
    out: dict[str, float | int] = {"factorvae_active_dims": len(active)}
    train = _votes(train_codes[:, active] / std[active], factor_labels(train_factors, discrete, bins), train_votes,
                   generator, batch_size)
    test = _votes(test_codes[:, active] / std[active], factor_labels(test_factors, discrete, bins), eval_votes,
                  generator, batch_size)
    if not len(active) or not train or not test:
        return {**out, "factorvae_score": 0.0, "factorvae_train_accuracy": 0.0}
    counts = torch.zeros(len(active), len(discrete), dtype=torch.long)  # [dim, factor]
    for k, d in train:
        counts[d, k] += 1
    classifier = counts.argmax(1)  # dim -> its majority factor
    accuracy = lambda votes: sum(int(classifier[d]) == k for k, d in votes) / len(votes)  # noqa: E731
    return {**out, "factorvae_score": accuracy(test), "factorvae_train_accuracy": accuracy(train)}


@torch.no_grad()
def _codes(model: nn.Module, dataset: Dataset, split, index: torch.Tensor | None = None) -> torch.Tensor:
    """encode(x) [N, D] of a split's images (those at `index`), on the model's device in batches; a conditional
    model is given each image's label (`batch_fields`' first field)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = split.x if index is None else split.x[index]
    labels = batch_fields(model, dataset, split)[0]
    if labels is not None and index is not None:
        labels = labels[index]
    return _batched(model.encode, device, dataset.to_float(x), **given(model, labels)).flatten(1).double()


def disentanglement_metrics(model: nn.Module, dataset: Dataset, split: str = "test", seed: int = 0,
                            n_train: int = MAX_TRAIN_CODES) -> dict[str, float | int]:
    """MIG (`mig`, `mig_<factor>`) and the FactorVAE score of the model's codes of `split` (see the module
    docstring), with the numbers of codes used (`disentanglement_codes`, `disentanglement_train_codes`); {} for a
    model without `encode` or a dataset without factors."""
    data = dataset.split(split)
    if not callable(getattr(model, "encode", None)) or dataset.factors is None or data.factors is None:
        return {}
    model.eval()
    torch.manual_seed(seed)  # dynamic binarization draws the images
    discrete = [f.discrete for f in dataset.factors]
    z = _codes(model, dataset, data)
    mig, gaps = mutual_information_gap(z, data.factors, discrete)
    out: dict[str, float | int] = {"mig": mig}
    out.update({f"mig_{name}": g for name, g in zip(dataset.factor_names, gaps) if g == g})
    out["disentanglement_codes"] = len(z)
    if dataset.train.factors is not None:
        idx = strided_subset(len(dataset.train), n_train)
        train_z = _codes(model, dataset, dataset.train, idx)
        out.update(factorvae_score(train_z, dataset.train.factors[idx], z, data.factors, discrete, seed=seed))
        out["disentanglement_train_codes"] = len(idx)
    return out


__all__ = ["discretize", "disentanglement_metrics", "factor_labels", "factorvae_score", "mutual_information_gap"]
