"""Stacked MNIST (1,000 modes) and its mode metrics: the histogram scores on exact values, the dataset
and the per-channel classifier on the real MNIST files (slow; skipped with the reason when absent)."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from dgm.data import Dataset, Split
from dgm.evaluation.modes import mode_histogram_scores, mode_metrics

slow = pytest.mark.slow


@functools.lru_cache(maxsize=1)
def _stacked(folder: Path):
    """The stacked set and the modes the shipped MNIST network reads in its 10,000 test images (about 20 s)."""
    from dgm.data.stacked import load_stacked_mnist
    from dgm.evaluation.features import channel_modes, load_feature_net

    ds = load_stacked_mnist(folder)
    return ds, channel_modes(load_feature_net("mnist")[0], ds.to_float(ds.test.x))


class _Replay(nn.Module):
    """A fake generator: real images at indices drawn from the caller's generator."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.images = images
        self.weight = nn.Parameter(torch.zeros(1))  # so next(model.parameters()) names a device

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.images[torch.randint(len(self.images), (n,), generator=generator)]


# --- mode_histogram_scores: exact values ------------------------------------------------------------
def test_uniform_histogram_covers_every_mode_with_zero_kl():
    assert mode_histogram_scores(torch.arange(1000).repeat(7), 1000) == {"modes_covered": 1000, "mode_kl": 0.0}


def test_one_mode_has_kl_log_k():
    assert mode_histogram_scores(torch.full((26000,), 417), 1000) == {"modes_covered": 1, "mode_kl": math.log(1000)}


def test_two_modes_by_hand():
    # q = (3/4, 1/4) over K = 1000: KL = 3/4 log(750) + 1/4 log(250) = log(1000) - H(q)
    scores = mode_histogram_scores(torch.tensor([5, 999, 5, 5]), 1000)
    assert scores["modes_covered"] == 2
    assert scores["mode_kl"] == pytest.approx(0.75 * math.log(750) + 0.25 * math.log(250), rel=1e-15)
    assert scores["mode_kl"] == pytest.approx(math.log(1000) + 0.75 * math.log(0.75) + 0.25 * math.log(0.25))


def test_mode_metrics_is_empty_without_modes_or_samples():
    x = torch.zeros(4, 3, 28, 28, dtype=torch.uint8)
    plain = Dataset("plain", Split(x), Split(x), Split(x), levels=256)
    stacked = Dataset("stacked", Split(x), Split(x), Split(x), levels=256, channel_modes="mnist")
    assert mode_metrics(_Replay(x.float()), plain) == {}
    assert mode_metrics(nn.Linear(1, 1), stacked) == {}  # no sample()


def test_data_list_shows_stacked_mnist(capsys):
    from dgm.cli import main

    assert main(["data", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("stacked-mnist "))
    assert row.split()[1:3] == ["3x28x28", "1000"]
    assert "1,000 modes" in row


# --- the dataset, on the real MNIST files -----------------------------------------------------------
@slow
def test_building_twice_is_bitwise_equal(shared_data):
    from dgm.data.stacked import load_stacked_mnist

    a, b = load_stacked_mnist(shared_data), load_stacked_mnist(shared_data)
    for s in ("train", "valid", "test"):
        assert torch.equal(a.split(s).x, b.split(s).x) and torch.equal(a.split(s).y, b.split(s).y)


@slow
def test_shapes_sizes_and_labels_of_the_source_digits(shared_data):
    from dgm.data import load_dataset
    from dgm.data.sources import load_mnist
    from dgm.data.stacked import source_indices

    ds, mnist = load_dataset("stacked-mnist", data_dir=shared_data), load_mnist(shared_data)
    assert (ds.shape, ds.levels, ds.num_classes, ds.class_names, ds.channel_modes) == ((3, 28, 28), 256, 1000,
                                                                                       None, "mnist")
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [60000, 10000, 10000]
    for s in ("train", "valid", "test"):
        split, source = ds.split(s), mnist.split(s)
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
        idx = source_indices(s, len(source))  # drawn from the whole source split, with replacement
        assert idx.shape == (len(split), 3) and idx.max() >= len(source) - 50 and len(idx.unique()) < idx.numel()
        assert torch.equal(split.x, source.x[:, 0][idx])
        assert torch.equal(split.y, 100 * source.y[idx[:, 0]] + 10 * source.y[idx[:, 1]] + source.y[idx[:, 2]])
    # independent of source_indices: find each channel's digit among MNIST's test images by its pixels
    for i in range(5):
        digits = []
        for c in range(3):
            found = (mnist.test.x[:, 0] == ds.test.x[i, c]).flatten(1).all(1).nonzero()[:, 0]
            assert len(found) >= 1 and (mnist.test.y[found] == mnist.test.y[found[0]]).all()
            digits.append(int(mnist.test.y[found[0]]))
        assert int(ds.test.y[i]) == 100 * digits[0] + 10 * digits[1] + digits[2]


# --- the per-channel classifier and the mode metrics --------------------------------------------------
@slow
def test_per_channel_features_and_joint_log_probabilities(shared_data):
    from dgm.evaluation.features import channel_modes, feature_net_for, load_feature_net
    from dgm.evaluation.quality import extract

    ds, _ = _stacked(shared_data)
    net, name = feature_net_for("stacked-mnist")
    digit_net = load_feature_net("mnist")[0]
    x = ds.to_float(ds.test.x[:300])
    with torch.no_grad():
        features, logits = net.features(x), net(x)
        per_channel = [digit_net(x[:, c : c + 1]).log_softmax(1) for c in range(3)]
        assert torch.equal(features, torch.cat([digit_net.features(x[:, c : c + 1]) for c in range(3)], 1))
    assert name == "dgm-mnist-per-channel" and net.num_features == 384 and features.shape == (300, 384)
    assert logits.shape == (300, 1000)
    assert logits.logsumexp(1).abs().max() < 1e-5  # normalised log-probabilities over the 1,000 modes
    r, g, b = 4, 0, 7  # index 100 d_R + 10 d_G + d_B holds log p_R(d_R) + log p_G(d_G) + log p_B(d_B)
    assert torch.allclose(logits[:, 100 * r + 10 * g + b], per_channel[0][:, r] + per_channel[1][:, g]
                          + per_channel[2][:, b], atol=1e-6)
    assert torch.equal(logits.argmax(1), channel_modes(digit_net, x, batch_size=300))
    f64, l64 = extract(net, x)  # what FID, KID, precision/recall and the Inception-style score read
    assert f64.shape == (300, 384) and torch.allclose(l64, logits.double(), atol=1e-5)
    assert feature_net_for("mnist")[1] == "dgm-mnist"  # the other datasets keep their network


@slow
def test_the_real_test_split_covers_the_modes(shared_data):
    ds, modes = _stacked(shared_data)
    assert (modes == ds.test.y).double().mean() > 0.97  # 0.9929 per digit, cubed: 0.979
    scores = mode_histogram_scores(modes, 1000)
    # 10,000 uniform draws over 1,000 modes leave a given mode empty with prob. e^-10, some mode with
    # prob. ~ 1000 e^-10 = 0.045: allow 5 empty. The KL of an empirical histogram of n draws over K
    # uniform modes is about chi^2_(K-1) / 2n: mean (K-1)/2n = 0.050, sd sqrt(2(K-1))/2n = 0.0022; the
    # classifier's 2 % misreads spread mass over other modes and barely change it (0.056 observed).
    assert scores["modes_covered"] >= 995
    assert scores["mode_kl"] < 0.1


@slow
def test_copies_of_one_image_are_one_mode(shared_data):
    from dgm.evaluation.features import channel_modes, load_feature_net

    ds, modes = _stacked(shared_data)
    copies = ds.to_float(ds.test.x[:1]).expand(1000, -1, -1, -1)
    found = channel_modes(load_feature_net("mnist")[0], copies)
    assert (found == modes[0]).all()
    assert mode_histogram_scores(found, 1000) == {"modes_covered": 1, "mode_kl": math.log(1000)}


@slow
def test_mode_metrics_draws_26000_samples_in_seeded_batches(shared_data):
    ds, modes = _stacked(shared_data)
    scores = mode_metrics(_Replay(ds.to_float(ds.test.x)), ds, seed=3)
    g = torch.Generator().manual_seed(3)  # the model's draws: 26 batches of 1,000 from one generator
    drawn = torch.cat([torch.randint(len(ds.test), (1000,), generator=g) for _ in range(26)])
    assert scores == {**mode_histogram_scores(modes[drawn], 1000), "n_samples": 26000}
    assert scores["modes_covered"] == 1000 and scores["mode_kl"] < 0.1


@slow
def test_dgm_eval_scores_the_modes_of_a_dcgan(shared_data, tmp_path):
    import dgm

    run = dgm.train("dcgan", data="stacked-mnist", out=tmp_path / "r", data_dir=shared_data, steps=2, quiet=True,
                    batch_size=64, base_channels=8, progress=False)
    scores = dgm.evaluate(run, metrics=["modes"], progress=False)
    assert scores["n_samples"] == 26000 and 1 <= scores["modes_covered"] <= 1000
    assert 0 <= scores["mode_kl"] <= math.log(1000)
