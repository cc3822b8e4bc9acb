"""The conditional VAE's mathematics (ELBO <= IWAE_k <= log p(x|y) against quadrature, the VAE as its
constant-label case, exact progressions) and the cvae through the trainer, the CLI and `dgm eval`."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dgm
from dgm.cli import main
from dgm.data import Dataset, Split, load_dataset
from dgm.errors import DgmError, DivergenceError
from dgm.io import load_tensors
from dgm.models import create_model
from dgm.training import TrainConfig, Trainer
from dgm.training.trainer import CHECKPOINT
from dgm.viz import has_progression, label_mix, progression, progression_images

DIGITS = {"data_shape": (1, 8, 8), "levels": 17, "num_classes": 10}
TINY = {"hidden_dims": (16,), "latent_dim": 2, "progress": False}


def _digits(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("digits")
    return data.to_float(data.test.x[:n]), data.test.y[:n]


def _one_sentence(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("dgm: error: "), err
    return err


# --- the bounds ------------------------------------------------------------------------------
def test_elbo_below_iwae_k_increasing_in_k_in_expectation():
    torch.manual_seed(0)
    cvae = create_model("cvae", {**DIGITS, "hidden_dims": (16,), "latent_dim": 3}).double()
    with torch.no_grad():
        cvae.decoder[0][0].weight.mul_(4)  # p(x|z,y) that depends on z: a posterior far from q, wide gaps
    x, y = _digits(6)
    reps = 200
    xr, yr = x.double().repeat(reps, 1, 1, 1), y.repeat(reps)
    with torch.no_grad():
        draws = {"elbo": cvae.elbo(xr, y=yr)} | {k: cvae.iwae(xr, k, y=yr) for k in (1, 5, 50)}
    draws = {key: d.reshape(reps, len(x)) for key, d in draws.items()}  # [draw, example]
    mean = {key: d.mean(0) for key, d in draws.items()}
    se = {key: d.std(0) / math.sqrt(reps) for key, d in draws.items()}
    # IWAE_1 is the ELBO with a Monte Carlo KL: the same expectation
    assert torch.all((mean[1] - mean["elbo"]).abs() < 4 * (se[1] + se["elbo"]))
    for lo, hi in (("elbo", 5), (5, 50)):
        assert torch.all(mean[hi] - mean[lo] > 3 * (se[hi] + se[lo])), (lo, hi, mean[lo], mean[hi])


def _tiny_exact_cvae():
    """A cvae over 2x2 binary images with a 1-D latent and linear networks: p(x|z,y) = prod_i Bernoulli(x_i |
    sigmoid(a_i z + V_iy + b_i)), small enough that log p(x|y) is an integral over one line."""
    torch.manual_seed(3)
    cvae = create_model("cvae", {"data_shape": (1, 2, 2), "levels": 2, "num_classes": 3, "hidden_dims": (),
                                 "latent_dim": 1}).double()
    with torch.no_grad():
        cvae.decoder[0][0].weight.mul_(4)  # a decoder that cares about z, so the posterior is not the prior
        cvae.encoder[1][0].bias[0] += 1.0  # and an encoder whose q(z|x,y) misses it: gaps to see
    return cvae


def _quadrature_log_p(cvae, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(x|y) = log int N(z; 0, 1) prod_i Bernoulli(x_i | sigmoid(logit_i(z, y))) dz on a fine grid, the
    logits from the decoder's weights (not from the model's code): [B]."""
    lin = cvae.decoder[0][0]
    w, b = lin.weight.double(), lin.bias.double()  # [4, 1 + K]
    z = torch.linspace(-12, 12, 48_001, dtype=torch.float64)
    logits = z[:, None, None] * w[:, 0] + (F.one_hot(y, 3).double() @ w[:, 1:].T + b)  # [G, B, 4]
    xf = x.flatten(1).double()
    log_px_z = -(xf * F.softplus(-logits) + (1 - xf) * F.softplus(logits)).sum(-1)  # [G, B]
    log_pz = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    dz = z[1] - z[0]
    return torch.logsumexp(log_px_z + log_pz[:, None], 0) + torch.log(dz)


def test_bounds_against_log_p_x_given_y_by_quadrature():
    cvae = _tiny_exact_cvae()
    images = torch.tensor([[int(b) for b in f"{i:04b}"] for i in range(16)], dtype=torch.float64).reshape(16, 1, 2, 2)
    x, y = images.repeat(3, 1, 1, 1), torch.arange(3).repeat_interleave(16)  # every image with every label
    with torch.no_grad():
        exact = _quadrature_log_p(cvae, x, y)
    # p(x|y) is a distribution over the 16 images for every y
    assert torch.allclose(torch.logsumexp(exact.reshape(3, 16), 1), torch.zeros(3, dtype=torch.float64), atol=1e-9)
    reps = 400
    xr, yr = x.repeat(reps, 1, 1, 1), y.repeat(reps)
    with torch.no_grad():
        draws = {"elbo": cvae.elbo(xr, n_samples=10, y=yr)} | {k: cvae.iwae(xr, k, y=yr) for k in (5, 50)}
        large = cvae.iwae(x, 20_000, y=y)
    gap = {key: exact - d.reshape(reps, -1).mean(0) for key, d in draws.items()}  # log p(x|y) - bound, [48]
    se = {key: d.reshape(reps, -1).std(0) / math.sqrt(reps) for key, d in draws.items()}
    # every example: the ELBO is below log p(x|y), and no IWAE_k is above it beyond its noise
    assert torch.all(gap["elbo"] > 3 * se["elbo"])
    assert all(torch.all(gap[k] > -3 * se[k]) for k in (5, 50))
    # over the 48 (image, label) pairs: ELBO < IWAE_5 < IWAE_50 < log p(x|y) in expectation
    mean = {key: g.mean() for key, g in gap.items()}
    pooled = {key: s.pow(2).sum().sqrt() / len(s) for key, s in se.items()}
    assert mean["elbo"] - mean[5] > 3 * (pooled["elbo"] + pooled[5])
    assert mean[5] - mean[50] > 3 * (pooled[5] + pooled[50])
    assert mean[50] > 3 * pooled[50]
    assert torch.allclose(large, exact, atol=0.03), (large - exact).abs().max()


# --- the VAE as the constant-label case ------------------------------------------------------
def _fold_condition_into_biases(vae, cvae, label: int) -> None:
    """Give the cvae the vae's weights, with random weights V on its condition inputs and the first layers'
    biases lowered by V's column of `label`, so that with that label every first layer computes what the
    vae's does. A conv encoder's condition maps get a kernel with only its centre tap: a constant map then
    adds the same V at every output position, borders included (kernel 3, padding 1)."""
    g = torch.Generator().manual_seed(5)
    ours, theirs = vae.state_dict(), cvae.state_dict()
    assert ours.keys() == theirs.keys()
    new, shift = {}, {}
    for key, w in ours.items():
        if theirs[key].shape == w.shape:
            new[key] = w.clone()
            continue
        shape = theirs[key].shape
        v = torch.randn(shape[0], shape[1] - w.shape[1], *shape[2:], generator=g, dtype=w.dtype)
        if v.dim() == 4:
            centre = torch.zeros_like(v)
            centre[..., 1, 1] = 1
            v = v * centre
        new[key] = torch.cat([w, v], dim=1)
        shift[key.replace("weight", "bias")] = v[:, label].reshape(len(v), -1).sum(1)
    assert len(shift) == 2  # the encoder's first layer and the decoder's
    for key, s in shift.items():
        new[key] = new[key] - s
    cvae.load_state_dict(new)


@pytest.mark.parametrize("options", [{"hidden_dims": (12,)},
                                     {"architecture": "conv", "conv_channels": (4, 6), "likelihood": "gaussian",
                                      "learned_scale": True}])
def test_with_a_constant_label_the_cvae_is_the_vae(options):
    opts = {"data_shape": (1, 8, 8), "levels": 17, "latent_dim": 3, **options}
    vae = create_model("vae", opts).double()
    cvae = create_model("cvae", {**opts, "num_classes": 10}).double()
    label = 7
    _fold_condition_into_biases(vae, cvae, label)
    x = _digits(5)[0].double()
    y = torch.full((5,), label)
    pairs = {"elbo": (lambda: vae.elbo(x, n_samples=3), lambda: cvae.elbo(x, n_samples=3, y=y)),
             "iwae": (lambda: vae.iwae(x, 7), lambda: cvae.iwae(x, 7, y=y)),
             "loss": (lambda: vae.loss((x, None))["loss"], lambda: cvae.loss((x, y))["loss"])}
    with torch.no_grad():
        for name, (of_vae, of_cvae) in pairs.items():
            torch.manual_seed(1)  # the same noise for both
            ours = of_vae()
            torch.manual_seed(1)
            theirs = of_cvae()
            assert torch.allclose(theirs, ours, rtol=1e-12, atol=1e-10), (name, theirs, ours)
        assert torch.allclose(cvae.encode(x, label), vae.encode(x), atol=1e-12)
        z = torch.randn(4, 3, dtype=torch.float64)
        assert torch.allclose(cvae.decode(z, label), vae.decode(z), atol=1e-12)
        torch.manual_seed(1)
        other = cvae.elbo(x, y=torch.full((5,), 2))
        torch.manual_seed(1)
        assert not torch.allclose(other, vae.elbo(x))  # the label does matter


# --- progression -----------------------------------------------------------------------------
def test_progression_ends_decode_exactly_as_the_pure_labels():
    torch.manual_seed(0)
    cvae = create_model("cvae", {**DIGITS, "hidden_dims": (16,), "latent_dim": 2})
    alphas = torch.linspace(0, 1, 8)
    mix = label_mix(cvae, torch.tensor([0, 3]), torch.tensor([1, 9]), alphas)  # [2, 8, 10]
    assert torch.equal(mix[:, 0], F.one_hot(torch.tensor([0, 3]), 10).float())
    assert torch.equal(mix[:, -1], F.one_hot(torch.tensor([1, 9]), 10).float())
    assert torch.allclose(mix[1, 3], (1 - alphas[3]) * F.one_hot(torch.tensor(3), 10) + alphas[3] * F.one_hot(
        torch.tensor(9), 10))
    z = torch.randn(3, 2)
    pairs = [(0, 1), (3, 9)]
    with torch.no_grad():
        x = progression_images(cvae, z, pairs, alphas)  # [pair, z, alpha, C, H, W]
        for p, (a, b) in enumerate(pairs):
            assert torch.allclose(x[p, :, 0], cvae.decode(z, a), rtol=0, atol=1e-6)
            assert torch.allclose(x[p, :, -1], cvae.decode(z, b), rtol=0, atol=1e-6)
            assert not torch.allclose(x[p, :, 0], x[p, :, -1])


@pytest.mark.parametrize("name,text", [("vae", "is not conditional"), ("cgan", "takes class labels only"),
                                       ("pixelcnn", "is not conditional")])
def test_models_that_cannot_mix_labels_say_why(name, text, tmp_path):
    model = create_model(name, DIGITS)
    assert not has_progression(model)
    with pytest.raises(DgmError, match=text):
        progression(model, tmp_path / "p.png")


# --- through the trainer, the CLI and eval ---------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return dgm.train("cvae", out=tmp_path_factory.mktemp("runs") / "cvae", steps=24, quiet=True, **TINY).path


def test_a_trained_run_samples_by_label_and_writes_its_pictures(run, capsys, tmp_path):
    assert {"samples.png", "reconstructions.png", "progression.png", "losses.png"} <= {p.name for p in
                                                                                       run.iterdir()}
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train/elbo", "valid/elbo", "train/kl"} <= set(record)
    model = dgm.load(run)
    x = dgm.sample(run, 4, seed=2, label=3)
    with torch.no_grad():
        z = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
        assert torch.equal(x, model.decode(z, 3))
    assert main(["sample", str(run), "--label", "3", "--n", "4", "--out", str(tmp_path / "3.png")]) == 0
    assert (tmp_path / "3.png").is_file()
    capsys.readouterr()
    for label in ("10", "-1"):
        assert main(["sample", str(run), "--label", label]) == 1
        assert "labels must lie in 0 .. 9" in _one_sentence(capsys.readouterr().err)
    with pytest.raises(DgmError, match="labels must lie in 0 .. 9"):
        dgm.sample(run, 2, label=10)


def test_plots_of_a_conditional_model(run, capsys):
    for argv, name in ((["progression"], "progression"), (["progression", "--from-label", "2", "--to-label", "7"],
                                                          "progression"),
                       (["embedding", "--method", "code"], "embedding-code"), (["interpolate"], "interpolate"),
                       (["traverse"], "traverse"), (["manifold", "--label", "4"], "manifold")):
        (run / f"{name}.png").unlink(missing_ok=True)
        assert main(["plot", str(run), *argv]) == 0, capsys.readouterr().err
        assert (run / f"{name}.png").is_file()
    capsys.readouterr()
    for argv, text in ((["manifold"], "give it with --label"), (["progression", "--to-label", "10"], "0 .. 9"),
                       (["traverse", "--label", "3"], "manifold")):
        assert main(["plot", str(run), *argv]) == 1
        assert text in _one_sentence(capsys.readouterr().err)


def test_eval_reports_conditional_bounds_and_codes_given_labels(run, capsys):
    assert main(["eval", str(run), "--metrics", "likelihood,representation", "--k", "50", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert "log_likelihood" not in scores and "elbo" not in scores and "bits_per_dim" not in scores
    assert scores["conditional_elbo"] < scores["conditional_log_likelihood"] < 0
    assert scores["conditional_bits_per_dim"] == pytest.approx(-scores["conditional_log_likelihood"] /
                                                               (64 * np.log(2)))
    assert "log p(x | y)" in scores["likelihood_note"]
    model = dgm.load(run)
    data = load_dataset("digits")
    x, y = data.to_float(data.test.x), data.test.y
    with torch.no_grad():
        assert scores["sse_per_image"] == pytest.approx((x - model.reconstruct(x, y)).pow(2).sum((1, 2, 3))
                                                        .mean().item(), rel=1e-5)
    assert 0 <= scores["probe_accuracy"] <= 1


def test_a_dataset_without_labels_is_one_clear_error(run, tmp_path, capsys):
    digits = load_dataset("digits")
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x_train=digits.train.x[:, 0].numpy(), x_test=digits.test.x[:, 0].numpy(), levels=17)
    assert main(["train", "cvae", "--data", f"npz:{path}", "--steps", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 1
    assert "has none" in _one_sentence(capsys.readouterr().err) and not (tmp_path / "r").exists()
    for metrics in ("likelihood", "representation"):
        assert main(["eval", str(run), "--data", f"npz:{path}", "--metrics", metrics]) == 1
        assert "needs the class labels" in _one_sentence(capsys.readouterr().err)
    model = create_model("cvae", {**DIGITS, "hidden_dims": (8,)})
    with pytest.raises(DgmError, match="needs a dataset with class labels"):
        model.loss((_digits(4)[0], None))


def test_zoo_lists_the_cvae_with_seed_002(capsys):
    assert main(["zoo", "--json"]) == 0
    zoo = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert "002" in zoo["cvae"]["seeds"]
    assert {"loss", "sample", "encode", "decode", "elbo", "iwae"} <= set(zoo["cvae"]["capabilities"].split())


def _same_tensors(a, b) -> bool:
    ta, tb = load_tensors(a)[0], load_tensors(b)[0]
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_resume_is_bitwise(tmp_path):
    options = {**TINY, "objective": "iwae", "n_samples": 3}
    whole = dgm.train("cvae", out=tmp_path / "whole", epochs=3, quiet=True, **options)
    part = dgm.train("cvae", out=tmp_path / "part", epochs=1, quiet=True, **options)
    dgm.resume(part, epochs=3, quiet=True)
    assert _same_tensors(whole.path / CHECKPOINT, part.path / CHECKPOINT)
    assert _same_tensors(whole.path / "model.safetensors", part.path / "model.safetensors")


def test_a_nan_loss_stops_training_with_the_divergence_error():
    d = load_dataset("digits")
    x = d.train.x.float()
    x[5] = float("nan")
    data = Dataset("digits", Split(x, d.train.y), d.valid, d.test, levels=17, num_classes=10)
    model = create_model("cvae", {**DIGITS, "hidden_dims": (8,), "latent_dim": 2, "likelihood": "gaussian"})
    with pytest.raises(DivergenceError, match="NaN"):
        Trainer(model, data, TrainConfig(epochs=2, progress=False, device="cpu")).fit()


# --- on attribute vectors (Attribute2Image's CVAE p(x|y,z), seeds 000 and 002) ----------------
ATTRIBUTES = {"condition": "attributes", "architecture": "conv", "conv_channels": (8, 16), "latent_dim": 4,
              "batch_size": 32, "progress": False}


@pytest.fixture(scope="module")
def attribute_run(tmp_path_factory):
    return dgm.train("cvae", data="sprites", out=tmp_path_factory.mktemp("runs") / "attributes", steps=30, quiet=True,
                     **ATTRIBUTES).path


def test_an_attribute_cvae_reads_the_datasets_attribute_vectors_in_training_and_eval(attribute_run):
    from dgm.models import batch_fields

    data = load_dataset("sprites")
    model = dgm.load(attribute_run)
    assert model.cfg.factor_sizes == (5, 1, 1, 1, 1, 8, 5) and model.condition_dim == 22  # set from the dataset
    for split in (data.train, data.valid, data.test):  # what the trainer, validation and eval index
        (y,) = batch_fields(model, data, split)
        assert y.dtype == torch.float32 and torch.equal(y, data.attributes(split))
        assert torch.equal(model.condition(y[:7], 7), y[:7])  # the condition vectors are the attributes themselves
    record = json.loads((attribute_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 30 and {"train/elbo", "train/kl"} <= set(record)
    # eval's log p(x | y): the bounds of the test images given their own attribute vectors (seed 0, one batch)
    scores = dgm.evaluate(attribute_run, ["likelihood"], n_examples=20, k=5, progress=False)
    idx = torch.linspace(0, len(data.test) - 1, 20).round().long()
    x, y = data.to_float(data.test.x[idx]), data.attributes(data.test)[idx]
    torch.manual_seed(0)
    with torch.no_grad():
        elbo, iwae = model.elbo(x, y=y), model.iwae(x, 5, y=y)
        torch.manual_seed(0)
        shuffled = model.elbo(x, y=y.roll(1, 0))
    assert scores["conditional_elbo"] == pytest.approx(elbo.mean().item(), rel=1e-5)
    assert scores["conditional_log_likelihood"] == pytest.approx(iwae.mean().item(), rel=1e-5)
    assert "log p(x | y)" in scores["likelihood_note"]
    assert not torch.allclose(shuffled, elbo)  # the attributes do matter


def test_sampling_without_y_draws_uniform_attribute_vectors(attribute_run, capsys):
    model = dgm.load(attribute_run)
    n = 4000
    y = model.random_attributes(n, torch.Generator().manual_seed(0))
    assert y.shape == (n, 22)
    for k, part in zip(model.cfg.factor_sizes, y.split(model.cfg.factor_sizes, dim=1)):
        if k > 1:  # one value of K, uniformly: one-hot rows, each value with frequency 1/K
            assert set(part.unique().tolist()) == {0.0, 1.0} and torch.equal(part.sum(1), torch.ones(n))
            assert (part.mean(0) - 1 / k).abs().max() < 4 * math.sqrt((1 / k) * (1 - 1 / k) / n)
        else:  # U(0, 1): mean 1/2, variance 1/12
            assert 0 <= part.min() and part.max() <= 1
            assert abs(part.mean() - 0.5) < 4 * math.sqrt(1 / 12 / n) and abs(part.var() - 1 / 12) < 0.01
    x = dgm.sample(attribute_run, 6, seed=3)  # z first, then y, from the same generator
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        z = torch.randn(6, 4, generator=g)
        assert torch.equal(x, model.decode(z, model.random_attributes(6, g)))
    assert x.shape == (6, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(DgmError, match="conditions on attribute vectors"):
        model.sample(2, y=3)
    capsys.readouterr()
    assert main(["sample", str(attribute_run), "--label", "1"]) == 1
    assert "not class labels" in _one_sentence(capsys.readouterr().err)


def test_condition_attributes_needs_a_dataset_with_factors(tmp_path, capsys):
    with pytest.raises(DgmError, match="this dataset has none"):
        create_model("cvae", {**DIGITS, "condition": "attributes", "hidden_dims": (8,)})
    assert main(["train", "cvae", "--data", "digits", "--steps", "1", "--out", str(tmp_path / "r"), "--no-progress",
                 "condition=attributes"]) == 1
    assert "sprites" in _one_sentence(capsys.readouterr().err) and not (tmp_path / "r").exists()


def test_an_attribute_progression_moves_one_factor_from_y_min_to_y_max(attribute_run, monkeypatch, capsys):
    from dgm import viz

    model = dgm.load(attribute_run)
    sizes = model.cfg.factor_sizes
    y_rest = model.random_attributes(1, torch.Generator().manual_seed(1))[0]
    y_min, y_max = model.attribute_ends(y_rest)
    assert y_min.shape == y_max.shape == (len(sizes), 22)
    start = 0
    for f, k in enumerate(sizes):
        inside = torch.zeros(22, dtype=torch.bool)
        inside[start : start + k] = True
        assert torch.equal(y_min[f, ~inside], y_rest[~inside]) and torch.equal(y_max[f, ~inside], y_rest[~inside])
        low, high = torch.zeros(k), torch.zeros(k)  # discrete: first value's one-hot to the last's; continuous 0 -> 1
        low[0], high[-1] = float(k > 1), 1.0
        assert torch.equal(y_min[f, inside], low) and torch.equal(y_max[f, inside], high)
        start += k
    alphas = torch.linspace(0, 1, 6)
    mix = label_mix(model, y_min, y_max, alphas)  # [F, T, A]
    assert torch.equal(mix, (1 - alphas[None, :, None]) * y_min[:, None] + alphas[None, :, None] * y_max[:, None])
    assert torch.equal(mix[:, 0], y_min) and torch.equal(mix[:, -1], y_max)
    z = torch.randn(2, 4)
    with torch.no_grad():
        x = progression_images(model, z, list(zip(y_min, y_max)), alphas)  # [factor, z, alpha, C, H, W]
        for f in range(len(sizes)):
            for t, a in enumerate(alphas):
                y_alpha = (1 - a) * y_min[f] + a * y_max[f]
                assert torch.allclose(x[f, :, t], model.decode(z, y_alpha.expand(2, -1)), rtol=0, atol=1e-6)
    # the picture: z and then y_rest from the seed, every factor's row with the same z, rows named by factor
    assert has_progression(model) and (attribute_run / "progression.png").is_file()
    drawn = {}
    monkeypatch.setattr(viz, "save_grid", lambda images, path, nrow, **kw: drawn.update(images=images, nrow=nrow, **kw))
    data = load_dataset("sprites")
    progression(model, attribute_run / "p.png", steps=6, seed=4, factors=data.factors)
    g = torch.Generator().manual_seed(4)
    z = torch.randn(1, 4, generator=g)
    ends = model.attribute_ends(model.random_attributes(1, g)[0])
    assert torch.equal(drawn["images"], progression_images(model, z, list(zip(*ends)), alphas).flatten(0, 2))
    assert drawn["nrow"] == 6 and drawn["row_labels"][0] == "shape: square \u2192 star"
    assert drawn["row_labels"][1].startswith("scale: 0.14") and len(drawn["row_labels"]) == 7
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["plot", str(attribute_run), "progression"]) == 0 and (attribute_run / "progression.png").is_file()
    assert main(["plot", str(attribute_run), "progression", "--to-label", "2"]) == 1
    assert "drop --from-label and --to-label" in _one_sentence(capsys.readouterr().err)


def test_the_pictures_of_an_attribute_cvae_encode_with_the_images_attribute_vectors(attribute_run, capsys):
    """traverse, embedding, interpolate and reconstructions pass [n, A] condition vectors, never class labels."""
    for argv, name in ((["traverse"], "traverse"), (["embedding", "--method", "tsne"], "embedding-tsne"),
                       (["interpolate"], "interpolate")):
        (attribute_run / f"{name}.png").unlink(missing_ok=True)
        assert main(["plot", str(attribute_run), *argv]) == 0, capsys.readouterr().err
        assert (attribute_run / f"{name}.png").is_file()
