"""The shipped sprites factor net and the factor read-outs of dgm.evaluation.factors, on the real test split."""
import pytest
import torch

from dgm.data import sprites
from dgm.errors import DgmError
from dgm.evaluation import factors, quality
from dgm.evaluation.features import SHIPPED, FactorNet, feature_net_for, load_feature_net


@pytest.fixture(scope="module")
def shipped():
    return load_feature_net("sprites")


@pytest.fixture(scope="module")
def data():
    return sprites.load_sprites()


@pytest.fixture(scope="module")
def test_split(data):
    return data.test.factors, data.test.x, data.test.masks


@pytest.fixture(scope="module")
def read(shipped, test_split):
    f, images, _ = test_split
    return factors.read_factors(images, shipped[0])


def test_sprites_and_sprites64_are_scored_by_the_shipped_factor_net():
    assert SHIPPED["sprites"] == SHIPPED["sprites64"] == "sprites" and "sprites-grey" not in SHIPPED
    net, label = feature_net_for("sprites64")
    assert isinstance(net, FactorNet) and label == "dgm-sprites" and net.num_features == 128
    assert not net.training


def test_the_shipped_net_reaches_its_stored_test_accuracies(shipped, test_split, read):
    """Recomputed on the whole test split (5,000 images) the metadata was computed on: within 0.5 %."""
    _, info = shipped
    f, _, _ = test_split
    want = factors.factor_targets(f)
    assert info["trained_by"] == "bench/train_feature_nets.py"
    assert info["test_accuracy"] == info["test_accuracies"]["shape"]
    for k, stored in info["test_accuracies"].items():
        assert (read[k] == want[k]).double().mean().item() == pytest.approx(stored, abs=0.005), k
    for k, stored in info["test_mean_absolute_errors"].items():
        assert (read[k] - want[k]).abs().mean().item() == pytest.approx(stored, rel=0.05), k
    acc = info["test_accuracies"]
    assert acc["shape"] >= 0.985 and acc["colour"] >= 0.99 and acc["background"] >= 0.99
    assert min(acc["row"], acc["column"]) >= 0.97 and acc["size"] >= 0.9  # thirds: sharp boundaries at 32x32


def test_sprites64_is_read_through_2x2_means_as_well(shipped, test_split):
    """The first 1,000 test scenes drawn at 64x64 (sprites64's test split): the stored sprites64 accuracies
    (on all 5,000) within 1.5 %."""
    net, info = shipped
    f = test_split[0][:1000]
    images64 = sprites.render(f, 64)[0]
    read64 = factors.read_factors(images64, net)
    want = factors.factor_targets(f)
    for k, stored in info["sprites64_test_accuracies"].items():
        assert (read64[k] == want[k]).double().mean().item() == pytest.approx(stored, abs=0.015), k
    pooled = torch.nn.functional.avg_pool2d(images64.float() / 255, 2)
    with torch.no_grad():
        assert torch.allclose(net.features(images64.float() / 255), net.features(pooled), atol=1e-5)
    with pytest.raises(DgmError, match="32x32 images or square multiples"):
        net.features(torch.zeros(1, 3, 48, 48))


def test_measured_boxes_are_the_datasets_boxes_exactly(test_split):
    """The renderer draws hard edges in one saturated colour on grey, so the chroma test finds exactly the mask."""
    f, images, masks = test_split
    assert torch.equal(factors.object_masks(images), masks)
    assert torch.equal(factors.measured_boxes(images), sprites.boxes_of(masks))
    images64, masks64 = sprites.render(f[:500], 64)
    assert torch.equal(factors.measured_boxes(images64.float() / 255), sprites.boxes_of(masks64))


def test_measured_boxes_of_hand_made_images():
    x = torch.full((2, 3, 8, 8), 0.5)  # grey
    x[0, :, 3, 5] = torch.tensor([1.0, 0.2, 0.2])  # one red pixel at row 3, column 5
    x[0, :, 6, 1] = torch.tensor([0.1, 0.1, 0.8])  # one blue pixel at row 6, column 1
    assert factors.measured_boxes(x).tolist() == [[1, 3, 6, 7], [0, 0, 0, 0]]  # no object: the empty box


def test_box_iou_exact_values():
    a = torch.tensor([[0, 0, 2, 2], [0, 0, 4, 4], [0, 0, 2, 2], [0, 0, 2, 2], [3, 1, 7, 9], [0, 0, 0, 0]])
    b = torch.tensor([[1, 1, 3, 3], [1, 1, 3, 3], [2, 0, 4, 2], [5, 5, 6, 6], [3, 1, 7, 9], [0, 0, 0, 0]])
    # 1 / (4 + 4 - 1); nested 4 / 16; touching edges and disjoint 0; identical 1; two empty boxes 0
    want = torch.tensor([1 / 7, 0.25, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(factors.box_iou(a, b), want)
    assert torch.equal(factors.box_iou(b, a), factors.box_iou(a, b))
    assert factors.box_iou(a.float() + 0.5, b.float() + 0.5)[0].item() == pytest.approx(1 / 7)  # translation


def test_caption_accuracy_is_the_heads_accuracy_and_chance_on_shuffled_factors(shipped, test_split, read):
    net, info = shipped
    f, images, _ = test_split
    own = factors.caption_accuracy(images, f, read=read)
    for k in factors.ATTRIBUTES:
        assert own[k] == pytest.approx(info["test_accuracies"][k], abs=0.005), k
    assert own["all"] <= min(own[k] for k in factors.ATTRIBUTES) and own["all"] >= 1 - sum(
        1 - own[k] for k in factors.ATTRIBUTES) - 1e-12  # the union bound
    shuffled = f[torch.randperm(len(f), generator=torch.Generator().manual_seed(1))]
    other = factors.caption_accuracy(images, shuffled, read=read)
    want = factors.factor_targets(shuffled)
    for k in factors.ATTRIBUTES:  # chance: sum_c P(read c) P(asked c), within 4 binomial standard errors
        n = factors.CLASSES[k]
        p_read, p_asked = (torch.bincount(c, minlength=n).double() / len(f) for c in (read[k], want[k]))
        chance = (p_read * p_asked).sum()
        assert abs(other[k] - chance.item()) < 4 * (chance * (1 - chance) / len(f)).sqrt().item(), k
        assert other[k] < own[k] - 0.4


def test_features_see_colour_fid_of_valid_vs_test_is_far_below_colour_shifted_sets(shipped, data):
    """All 5,000 test vs valid images (1,000 would leave FID's small-sample bias of about 1 in 128 dimensions), and
    the valid scenes with every colour code c drawn as 2 floor(c / 2) (half the colours gone, nothing else changed)
    or as red. (Permuting R, G, B would not do: it maps the palette close onto itself.)"""
    net, _ = shipped
    real = quality.extract(net, data.to_float(data.test.x))[0]
    same = quality.fid(real, quality.extract(net, data.to_float(data.valid.x))[0])
    shifted = {}
    for name, recolour in (("halved", lambda c: 2 * torch.div(c, 2, rounding_mode="floor")), ("red", torch.zeros_like)):
        f = data.valid.factors.clone()
        f[:, sprites.COLOUR] = recolour(f[:, sprites.COLOUR])
        shifted[name] = quality.fid(real, quality.extract(net, data.to_float(sprites.render(f, 32)[0]))[0])
    assert shifted["halved"] > 5 * same and shifted["red"] > 4 * shifted["halved"], (same, shifted)


def test_the_inception_style_score_is_over_the_five_shapes(shipped, test_split):
    net, _ = shipped
    f, images, _ = test_split
    logits = quality.extract(net, images.float() / 255)[1]
    assert logits.shape[1] == len(sprites.SHAPES)
    # IS <= the number of classes the set's p(y) spreads over: above 4, the net tells all five shapes apart
    assert 4 < quality.inception_score(logits) <= 5
    squares = logits[f[:, sprites.SHAPE] == 0]
    assert 1 <= quality.inception_score(squares) < 1.2  # one shape: close to 1


class _Renders(torch.nn.Module):
    """A 'conditional generator' whose condition is the true factors and which draws exactly that scene
    (or, with `fixed`, always the first one): the metric's ceiling and a floor."""

    conditional = True

    def __init__(self, fixed: bool = False):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.fixed = fixed

    def batch_fields(self, dataset, split):
        return (split.factors,)

    def sample(self, n, y=None, generator=None):
        y = y[:1].expand(n, -1) if self.fixed else y
        return sprites.render(y, 32)[0].float() / 255


def test_conditioning_scores_a_perfect_conditional_generator_at_the_nets_accuracy_and_a_fixed_one_at_chance(
        data, read, test_split):
    f, images, _ = test_split
    perfect = factors.conditioning_metrics(_Renders(), data, n_examples=500)
    idx = torch.linspace(0, len(f) - 1, 500).round().long()
    want = factors.caption_accuracy(images[idx], f[idx], read={k: v[idx] for k, v in read.items()})
    assert perfect["conditioning_examples"] == 500 and perfect["conditioning_box_iou"] == 1.0
    for word, value in want.items():
        assert perfect[f"conditioning_{word}"] == pytest.approx(value)
    fixed = factors.conditioning_metrics(_Renders(fixed=True), data, n_examples=500)
    assert fixed["conditioning_colour"] < 0.3 and fixed["conditioning_shape"] < 0.4 and fixed["conditioning_all"] < 0.05
    assert fixed["conditioning_box_iou"] < 0.5
    assert factors.conditioning_metrics(torch.nn.Linear(1, 1), data) == {}  # no condition, no scores
