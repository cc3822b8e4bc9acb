"""The autoencoders' mathematics (contraction, sparsity, corruption, greedy pretraining, code density),
the representation scores and the PCA baseline, and the autoencoders through the CLI and the trainer."""
import copy
import json

import pytest
import torch

import dgm
from dgm.cli import main
from dgm.data import Dataset, Split, load_dataset
from dgm.errors import DgmError, DivergenceError, Interrupted
from dgm.evaluation.representation import pca_reconstruction_error, representation_metrics
from dgm.io import load_tensors
from dgm.models import create_model
from dgm.models.autoencoder import REG_COVAR
from dgm.training import TrainConfig, Trainer
from dgm.training.trainer import CHECKPOINT

DIGITS = {"data_shape": (1, 8, 8), "levels": 17}
TINY = {"hidden_dims": (16,), "latent_dim": 3, "progress": False}


def _same_tensors(a, b) -> bool:
    ta, tb = load_tensors(a)[0], load_tensors(b)[0]
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def _frobenius_by_autograd(model, x: torch.Tensor) -> torch.Tensor:
    """||dh/dx||_F^2 of every example, one torch.autograd.functional.jacobian each: [B]."""
    return torch.stack([torch.autograd.functional.jacobian(lambda v: model.encode(v[None])[0], xi).pow(2).sum()
                        for xi in x])


# --- contractive -----------------------------------------------------------------------------
def test_contraction_closed_form_and_torch_func_equal_the_autograd_jacobian():
    cae = create_model("cae", {**DIGITS, "latent_dim": 5}).double()
    assert cae.one_layer
    with torch.no_grad():
        cae.encoder[1][0].weight.mul_(3)  # weights large enough that sigmoids leave their linear middle
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    exact = _frobenius_by_autograd(cae, x)
    closed = cae.contraction_closed_form(cae.encode(x))
    assert torch.allclose(closed, exact, rtol=1e-10) and torch.allclose(cae.contraction_exact(x), exact, rtol=1e-10)
    # the torch.func path is differentiable in the weights, with the closed form's gradient
    w = cae.encoder[1][0].weight
    g_closed = torch.autograd.grad(cae.contraction_closed_form(cae.encode(x)).sum(), w)[0]
    g_exact = torch.autograd.grad(cae.contraction_exact(x).sum(), w)[0]
    assert torch.allclose(g_closed, g_exact, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("options", [{"hidden_dims": (7,), "activation": "tanh"},
                                     {"architecture": "conv", "conv_channels": (4,)}])
def test_deeper_encoders_use_the_exact_jacobian(options):
    cae = create_model("cae", {**DIGITS, "latent_dim": 4, "contraction_weight": 0.5, **options}).double()
    assert not cae.one_layer
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    assert torch.allclose(cae.contraction_exact(x), _frobenius_by_autograd(cae, x), rtol=1e-10)
    out = cae.loss((x, None))
    assert out["loss"].item() == pytest.approx(out["nll"].item() + 0.5 * out["contraction"].item(), rel=1e-12)


# --- sparse ----------------------------------------------------------------------------------
def test_kl_sparsity_is_zero_at_the_target_positive_elsewhere_and_its_gradient_moves_towards_it():
    rho = 0.2
    sae = create_model("sae", {**DIGITS, "latent_dim": 6, "sparsity_target": rho, "sparsity_weight": 3.0})
    at_target = rho + 0.1 * torch.tensor([[1.0], [-1.0]]).repeat(32, 6)  # every unit's mean is exactly rho
    assert abs(sae.sparsity(at_target).item()) < 1e-6
    g = torch.Generator().manual_seed(0)
    pre = (2 * torch.randn(64, 6, generator=g) + torch.linspace(-3, 3, 6)).requires_grad_()
    h = torch.sigmoid(pre)
    kl = sae.sparsity(h)
    assert kl.item() > 0.01
    kl.backward()
    with torch.no_grad():
        moved = torch.sigmoid(pre - 0.5 * pre.grad)
    assert ((moved.mean(0) - rho).abs() < (h.mean(0) - rho).abs()).all()  # every unit, from above and below
    x = torch.rand(5, 1, 8, 8)
    out = sae.loss((x, None))
    assert out["loss"].item() == pytest.approx(out["nll"].item() + 3.0 * out["sparsity"].item(), rel=1e-6)
    assert ((sae.encode(x) > 0) & (sae.encode(x) < 1)).all()  # sigmoid code units


def test_l1_sparsity_is_the_mean_absolute_activation_summed_over_units():
    sae = create_model("sae", {**DIGITS, "latent_dim": 4, "sparsity": "l1"})
    h = torch.rand(10, 4)
    assert sae.sparsity(h).item() == pytest.approx(h.sum(1).mean().item())


# --- denoising -------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", ["gaussian", "masking", "salt_pepper"])
def test_denoising_without_noise_is_the_plain_autoencoder(noise):
    ae = create_model("ae", {**DIGITS, "hidden_dims": (8,), "latent_dim": 3})
    dae = create_model("dae", {**DIGITS, "hidden_dims": (8,), "latent_dim": 3, "noise": noise, "noise_level": 0.0})
    dae.load_state_dict(ae.state_dict())
    x = torch.rand(7, 1, 8, 8)
    assert torch.equal(dae.loss((x, None))["loss"], ae.loss((x, None))["loss"])
    noisy = create_model("dae", {**DIGITS, "hidden_dims": (8,), "latent_dim": 3, "noise": noise, "noise_level": 0.5})
    noisy.load_state_dict(ae.state_dict())
    assert torch.equal(noisy.encode(x), ae.encode(x))  # the corruption is in the loss only
    assert noisy.loss((x, None))["loss"] != ae.loss((x, None))["loss"]


def test_corruption_has_the_stated_statistics():
    x = torch.full((400, 1, 28, 28), 0.5)  # 313,600 pixels: standard errors below 1e-3
    def corrupt(noise, level):
        return create_model("dae", {"data_shape": (1, 28, 28), "levels": 256, "hidden_dims": (), "latent_dim": 1,
                                    "noise": noise, "noise_level": level}).corrupt(x)
    diff = corrupt("gaussian", 0.3) - x
    assert abs(diff.mean().item()) < 3e-3 and diff.std().item() == pytest.approx(0.3, rel=0.01)
    masked = corrupt("masking", 0.3)
    assert (masked == 0).float().mean().item() == pytest.approx(0.3, abs=3e-3)
    assert set(masked.unique().tolist()) == {0.0, 0.5}
    salted = corrupt("salt_pepper", 0.3)
    assert (salted == 0).float().mean().item() == pytest.approx(0.15, abs=3e-3)
    assert (salted == 1).float().mean().item() == pytest.approx(0.15, abs=3e-3)
    assert (salted == 0.5).float().mean().item() == pytest.approx(0.7, abs=3e-3)


# --- stacked ---------------------------------------------------------------------------------
def _digits_with(test_x: torch.Tensor | None = None, train_x: torch.Tensor | None = None) -> Dataset:
    d = load_dataset("digits")
    train = d.train if train_x is None else Split(train_x, d.train.y)
    test = d.test if test_x is None else Split(test_x, d.test.y)
    return Dataset("digits", train, d.valid, test, levels=17, num_classes=10)


def test_greedy_pretraining_trains_each_layer_alone_and_better_than_its_start():
    torch.manual_seed(0)
    model = create_model("stacked", {**DIGITS, "hidden_dims": (24, 12), "latent_dim": 4, "pretrain_epochs": 4})
    init = copy.deepcopy(model)
    data = _digits_with()
    x = data.to_float(data.train.x)
    per_epoch, batch = 12, 120
    model.plan_training(per_epoch, 4 * 3 * per_epoch + 1)
    opts = model.optimizers(TrainConfig(lr=3e-3))
    for step in range(3 * 4 * per_epoch):
        idx = torch.randperm(len(x))[:batch]
        layer = model.pretraining_layer(step)
        assert layer == step // (4 * per_epoch)
        out = model.train_step((x[idx], None), opts, step)
        assert out["pretrain_layer"].item() == layer
        if (step + 1) % (4 * per_epoch) == 0:  # the end of a phase: the layers above are still as they started
            for above in range(layer + 1, 3):
                for now, then in zip(model.layer(above), init.layer(above)):
                    assert all(torch.equal(a, b) for a, b in zip(now.parameters(), then.parameters()))
    assert model.pretraining_layer(3 * 4 * per_epoch) is None
    with torch.no_grad():
        for layer in range(3):
            start = copy.deepcopy(model)  # the trained layers below, this layer as initialised
            for now, then in zip(start.layer(layer), init.layer(layer)):
                now.load_state_dict(then.state_dict())
            trained, initial = model.pretrain_loss(x, layer)["loss"], start.pretrain_loss(x, layer)["loss"]
            assert trained < 0.7 * initial, (layer, trained, initial)


def test_stacked_training_never_reads_the_test_split():
    data = _digits_with(test_x=torch.full(load_dataset("digits").test.x.shape, float("nan")))
    torch.manual_seed(0)
    model = create_model("stacked", {**DIGITS, "hidden_dims": (16,), "latent_dim": 3, "pretrain_epochs": 1,
                                     "code_density": "gaussian"})
    trainer = Trainer(model, data, TrainConfig(epochs=3, progress=False, device="cpu"))
    trainer.fit()
    model.fit_after_training(data.to_float(data.train.x))
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
    assert model.sample(4).isfinite().all()


def test_stacked_resumes_bitwise_from_an_interruption_in_pretraining(tmp_path):
    def run(out, callbacks=(), resume=False):
        torch.manual_seed(0)
        model = create_model("stacked", {**DIGITS, "hidden_dims": (16,), "latent_dim": 3, "pretrain_epochs": 2})
        trainer = Trainer(model, _digits_with(), TrainConfig(epochs=5, progress=False, device="cpu"), out_dir=out,
                          callbacks=list(callbacks))
        trainer.fit(resume_from=out / CHECKPOINT if resume else None)

    def interrupt(trainer):
        if trainer.epoch == 1:  # half-way through layer 0's pretraining
            raise KeyboardInterrupt

    run(tmp_path / "whole")
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", [interrupt])
    run(tmp_path / "cut", resume=True)
    assert _same_tensors(tmp_path / "whole" / CHECKPOINT, tmp_path / "cut" / CHECKPOINT)


def test_a_run_too_short_to_fine_tune_is_refused(tmp_path, capsys):
    out = tmp_path / "short"
    code = main(["train", "stacked", "--epochs", "2", "--out", str(out), "--no-progress", "hidden_dims=8",
                 "latent_dim=2", "pretrain_epochs=1"])
    err = capsys.readouterr().err
    assert code == 1 and "never fine-tune" in err and err.count("\n") == 1 and not out.exists()


# --- every autoencoder through the trainer ---------------------------------------------------
@pytest.mark.parametrize("name", ["ae", "dae", "sae", "cae", "stacked"])
def test_a_nan_loss_stops_training_with_the_divergence_error(name):
    """No term hides a NaN (a Gaussian likelihood carries a NaN pixel into the loss; a categorical one cannot
    index it)."""
    x = load_dataset("digits").train.x.float()
    x[5] = float("nan")
    model = create_model(name, {**DIGITS, "hidden_dims": (8,), "latent_dim": 2, "likelihood": "gaussian", **(
        {"pretrain_epochs": 0} if name == "stacked" else {})})
    trainer = Trainer(model, _digits_with(train_x=x), TrainConfig(epochs=2, progress=False, device="cpu"))
    with pytest.raises(DivergenceError, match="NaN"):
        trainer.fit()


def test_denoising_resume_is_bitwise_with_its_code_density(tmp_path):
    options = {**TINY, "code_density": "gaussian", "noise": "salt_pepper"}
    whole = dgm.train("dae", out=tmp_path / "whole", epochs=3, quiet=True, **options)
    part = dgm.train("dae", out=tmp_path / "part", epochs=1, quiet=True, **options)
    dgm.resume(part, epochs=3, quiet=True)
    assert _same_tensors(whole.path / CHECKPOINT, part.path / CHECKPOINT)
    assert _same_tensors(whole.path / "model.safetensors", part.path / "model.safetensors")


# --- code density, sampling, evaluation ------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A plain ae, an ae with a Gaussian code density and a 2-D ae, each trained 24 steps on digits."""
    folder = tmp_path_factory.mktemp("runs")
    return {name: dgm.train("ae", out=folder / name, steps=24, quiet=True, **{**TINY, **options}).path
            for name, options in (("plain", {}), ("gaussian", {"code_density": "gaussian"}),
                                  ("flat", {"latent_dim": 2}))}


def test_the_gaussian_code_density_is_that_of_the_training_codes(runs):
    model = dgm.load(runs["gaussian"])
    data = load_dataset("digits")
    with torch.no_grad():
        codes = model.encode(data.to_float(data.train.x)).double()
    density = model.density
    cov = (density.scale_tril[0] @ density.scale_tril[0].T).double() - REG_COVAR * torch.eye(3, dtype=torch.float64)
    assert torch.allclose(density.means[0].double(), codes.mean(0), atol=1e-5)
    assert torch.allclose(cov, torch.cov(codes.T, correction=0), rtol=1e-4, atol=1e-6)
    x = dgm.sample(runs["gaussian"], 6, seed=1)
    assert x.shape == (6, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert (runs["gaussian"] / "samples.png").is_file() and not (runs["plain"] / "samples.png").exists()


def test_mixture_codes_are_drawn_from_the_fitted_mixture():
    model = create_model("ae", {**DIGITS, "hidden_dims": (8,), "latent_dim": 2, "code_density": "gmm",
                                "code_components": 3})
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    codes = centres.repeat(400, 1) + 0.3 * torch.randn(1200, 2, generator=g)
    model.density.fit(codes)
    assert sorted(model.density.weights.tolist()) == pytest.approx([1 / 3] * 3, abs=0.01)
    found = model.density.means[model.density.means[:, 0].argsort()]
    assert torch.allclose(found, centres, atol=0.05)
    drawn = model.density.sample(30_000, torch.Generator().manual_seed(1))
    assert torch.allclose(drawn.mean(0), codes.mean(0), atol=0.05)
    assert torch.allclose(torch.cov(drawn.T), torch.cov(codes.T), rtol=0.02, atol=0.1)


def test_an_autoencoder_without_a_density_cannot_sample_and_says_why(runs, capsys):
    model = dgm.load(runs["plain"])
    assert not callable(getattr(model, "sample", None))
    assert main(["sample", str(runs["plain"])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cannot sample" in err and "code_density=gmm" in err and "vae" in err
    with pytest.raises(DgmError, match="cannot sample"):
        dgm.sample(runs["plain"], 4)
    assert main(["eval", str(runs["plain"]), "--metrics", "fid"]) == 1
    assert "cannot sample" in capsys.readouterr().err
    assert main(["eval", str(runs["plain"]), "--json"]) == 0  # every metric it can have, the others skipped
    scores = json.loads(capsys.readouterr().out)
    assert "sse_per_image" in scores and "fid" not in scores and "elbo" not in scores


def test_representation_scores_of_a_tiny_run(runs):
    scores = dgm.evaluate(runs["gaussian"], metrics=["representation"], progress=False)
    assert {"sse_per_image", "recon_nll", "probe_accuracy", "knn_accuracy", "probe_train_codes"} <= set(scores)
    assert 0 <= scores["probe_accuracy"] <= 1 and 0 <= scores["knn_accuracy"] <= 1
    assert scores["knn_accuracy"] > 0.3  # ten classes: far above chance even after 24 steps
    model = dgm.load(runs["gaussian"])
    data = load_dataset("digits")
    x = data.to_float(data.test.x)
    with torch.no_grad():
        assert scores["sse_per_image"] == pytest.approx((x - model.reconstruct(x)).pow(2).sum((1, 2, 3)).mean().item())
        assert scores["recon_nll"] == pytest.approx(-model.log_px_z(model.encode(x), x).mean().item(), rel=1e-5)
    assert scores["probe_train_codes"] == len(data.train)


def test_the_vae_and_the_sparse_autoencoder_have_representation_scores():
    data = load_dataset("digits")
    vae = create_model("vae", {**DIGITS, "hidden_dims": (8,), "latent_dim": 2})
    assert {"sse_per_image", "recon_nll", "probe_accuracy", "knn_accuracy"} <= set(representation_metrics(vae, data))
    sae = create_model("sae", {**DIGITS, "hidden_dims": (8,), "latent_dim": 5})
    scores = representation_metrics(sae, data)
    with torch.no_grad():
        codes = sae.encode(data.to_float(data.test.x))
    assert scores["mean_activation"] == pytest.approx(codes.mean().item())
    assert scores["active_fraction"] == pytest.approx((codes > 0.5).float().mean().item())


def test_pca_baseline_equals_scikit_learn():
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(0)
    mix = torch.randn(12, 30, generator=g)
    train, test = (torch.rand(n, 12, generator=g, dtype=torch.float64) @ mix.double() for n in (300, 80))
    for k in (1, 5, 11):
        pca = PCA(k).fit(train.numpy())
        reference = ((test.numpy() - pca.inverse_transform(pca.transform(test.numpy()))) ** 2).sum(1).mean()
        assert pca_reconstruction_error(train, test, k) == pytest.approx(reference, rel=1e-9)
    assert pca_reconstruction_error(train, test, 12) < 1e-20  # the data span 12 dimensions


def test_embedding_plots_of_any_encoder(runs, capsys):
    for method in ("pca", "tsne"):
        assert main(["plot", str(runs["plain"]), "embedding", "--method", method, "--n", "120"]) == 0
        assert (runs["plain"] / f"embedding-{method}.png").is_file()
    assert main(["plot", str(runs["flat"]), "embedding", "--method", "code"]) == 0
    assert main(["plot", str(runs["plain"]), "embedding", "--method", "code"]) == 1
    assert "latent_dim=2" in capsys.readouterr().err


def test_zoo_lists_the_autoencoders_with_seed_002(capsys):
    assert main(["zoo", "--json"]) == 0
    zoo = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    for name in ("ae", "dae", "sae", "cae", "stacked"):
        assert "002" in zoo[name]["seeds"] and {"loss", "encode", "decode"} <= set(zoo[name]["capabilities"].split())
