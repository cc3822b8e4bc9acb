"""Sample-quality scores: exact values on identical sets, monotone in corruption, unbiasedness."""
import pytest
import torch

from dgm.data import load_dataset
from dgm.evaluation import quality
from dgm.evaluation.features import SHIPPED, feature_net_for, load_feature_net


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    net, _ = load_feature_net("digits")
    return ds, net


def test_fid_is_zero_against_itself_and_grows_with_noise(digits):
    ds, net = digits
    x = ds.to_float(ds.test.x)
    real = quality.extract(net, x)[0]
    assert quality.fid(real, real) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    scores = [quality.fid(real, quality.extract(net, (x + s * noise).clamp(0, 1))[0]) for s in (0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    """Over several independent draws of two samples from N(0, I), mean KID is 0 within its standard error."""
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([quality.kid(torch.randn(200, 16, generator=g, dtype=torch.float64),
                                      torch.randn(200, 16, generator=g, dtype=torch.float64), subsets=20, seed=i)[0]
                          for i in range(8)])
    assert abs(draws.mean().item()) < 3 * draws.std().item() / len(draws) ** 0.5
    shifted = quality.kid(torch.randn(200, 16, generator=g, dtype=torch.float64),
                          torch.randn(200, 16, generator=g, dtype=torch.float64) + 0.5, subsets=20)[0]
    assert shifted > draws.mean().item() + 10 * draws.std().item()


def test_kid_std_reflects_the_generated_side():
    """With every real feature the same, real subsets are all alike: the spread over subsets can come
    only from the generated side, so subsets must be smaller than the generated set."""
    g = torch.Generator().manual_seed(0)
    real = torch.randn(1, 16, generator=g, dtype=torch.float64).expand(400, -1)
    fake = torch.randn(200, 16, generator=g, dtype=torch.float64)
    mean, std = quality.kid(real, fake, subsets=30)
    assert std > 0.01 * abs(mean) > 0


def test_precision_recall_are_one_for_identical_sets_and_recall_falls_without_half_the_classes(digits):
    ds, net = digits
    feats = quality.extract(net, ds.to_float(ds.train.x[:600]))[0]
    y = ds.train.y[:600]
    assert quality.precision_recall(feats, feats) == (1.0, 1.0)
    half = feats[y < 5]
    precision, recall = quality.precision_recall(feats, half)
    assert precision > 0.9 and recall < 0.65


def test_inception_score_is_one_for_one_class_and_k_for_k_even_confident_classes():
    logits = torch.full((40, 10), -30.0)
    logits[:, 3] = 30.0
    assert quality.inception_score(logits) == pytest.approx(1.0)
    logits = torch.full((40, 10), -30.0)
    logits[torch.arange(40), torch.arange(40) % 4] = 30.0
    assert quality.inception_score(logits) == pytest.approx(4.0, rel=1e-6)


@pytest.mark.parametrize("size, scales, sigma, taps", [(8, 2, 0.3, 3), (28, 3, 0.5, 5), (32, 4, 0.3, 3),
                                                       (64, 5, 0.3, 3), (176, 5, 1.5, 11)])
def test_ms_ssim_settings_fit_small_images(size, scales, sigma, taps):
    betas, s, k = quality.ms_ssim_settings(size, size)
    assert len(betas) == scales and s == sigma and k == taps and sum(betas) == pytest.approx(1.0)
    assert k - 1 < size // 2 ** (scales - 1)  # the window fits the coarsest scale
    x = torch.rand(6, 1, size, size, generator=torch.Generator().manual_seed(0))
    assert 0.0 < quality.ms_ssim_diversity(x, n_pairs=10) <= 1.0 + 1e-6  # torchmetrics accepts the settings


def test_diversity_is_zero_for_identical_images_and_positive_for_real_digits(digits):
    ds, _ = digits
    x = ds.to_float(ds.test.x)
    assert quality.ms_ssim_diversity(x[:1].repeat(30, 1, 1, 1), n_pairs=50) == pytest.approx(0.0, abs=1e-6)
    assert quality.ms_ssim_diversity(x, n_pairs=300) > 0.3


def test_memorisation_flags_copies_of_training_images(digits):
    ds, _ = digits
    train, test = ds.to_float(ds.train.x), ds.to_float(ds.test.x)
    test_d = quality.nearest_distances(test, train)[0][:, 0]
    copies = quality.memorisation(train[:50], train, test_d)
    assert copies == {"nn_distance": 0.0, "close_copies": 1.0}
    real = quality.memorisation(test, train, test_d)
    assert real["close_copies"] == pytest.approx(0.05, abs=0.01) and real["nn_distance"] > 0.5


def test_independent_critic_estimate_is_larger_for_a_shifted_distribution(digits):
    ds, _ = digits
    valid, train = ds.to_float(ds.valid.x), ds.to_float(ds.train.x)
    shifted = (train + 0.3).clamp(0, 1)
    same = quality.independent_critic(valid[::2], train[:90], valid[1::2], train[90:180], steps=200)
    moved = quality.independent_critic(valid[::2], shifted[:90], valid[1::2], shifted[90:180], steps=200)
    assert moved > same + 1.0


def test_shipped_feature_nets_load_from_the_package_without_a_download(monkeypatch):
    import dgm.evaluation.features as features

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    for name in set(SHIPPED.values()):
        path = features.WEIGHTS_DIR / f"{name}.safetensors"
        assert path.stat().st_size < 1_000_000
        net, info = load_feature_net(name)
        assert info["trained_by"] == "bench/train_feature_nets.py" and info["test_accuracy"] >= 0.985
    ds, _ = load_dataset("digits"), None
    net, label = feature_net_for("digits")
    logits = net(ds.to_float(ds.test.x))
    assert label == "dgm-digits" and (logits.argmax(1) == ds.test.y).float().mean() > 0.98


def test_a_dataset_without_a_net_or_inception_weights_says_where_to_put_them(monkeypatch, tmp_path):
    from dgm.errors import DgmError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(DgmError, match="inception_v3_google-0cc3c7bd.pth"):
        feature_net_for("cifar10")


@pytest.mark.slow
def test_mnist_feature_net_classifies_the_mnist_test_set(shared_data):
    ds = load_dataset("mnist", data_dir=shared_data)
    net, label = feature_net_for("mnist")
    _, logits = quality.extract(net, ds.to_float(ds.test.x), batch_size=1000)
    assert label == "dgm-mnist" and (logits.argmax(1) == ds.test.y).double().mean().item() >= 0.99
