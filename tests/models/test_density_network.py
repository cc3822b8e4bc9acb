"""The density network (seed 004): its Monte Carlo estimate log 1/S sum_s p(x|z_s), z_s ~ p(z), against the exact
log p(x) of a linear-Gaussian decoder (factor analysis), the bound's order in k, and the model through the
trainer, `dgm.train` and `dgm.evaluate`."""
import json
import math

import pytest
import torch
from torch import distributions as D

import dgm
from dgm.cli import main
from dgm.errors import DgmError
from dgm.models import capabilities, create_model, require

SIGMA = 0.5


def _linear_gaussian(seed=1):
    """A density network whose decoder is linear, p(x|z) = N(Wz + b, sigma^2 I), on continuous 1x2x3 data: then
    p(x) = N(b, W W^T + sigma^2 I) exactly. Returns (model, p(x))."""
    dn = create_model("density-network", {"data_shape": (1, 2, 3), "levels": 0, "latent_dim": 2, "hidden_dims": (),
                                          "likelihood": "gaussian", "scale": SIGMA}).double()
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 2, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        dn.decoder[0][0].weight.copy_(w)  # MLP with no hidden layer: one Linear(2 -> 6)
        dn.decoder[0][0].bias.copy_(b)
    return dn, D.MultivariateNormal(b, w @ w.T + SIGMA**2 * torch.eye(6, dtype=torch.float64))


def test_monte_carlo_estimate_converges_to_the_exact_log_likelihood():
    """Mean absolute error over 40 points: about 2 nats at S = 10, about 0.03 at S = 10,000 (asserted < 0.1 and
    a tenth of the error at S = 10)."""
    dn, px = _linear_gaussian()
    x = px.sample((40,))
    exact = px.log_prob(x)
    with torch.no_grad():
        error = {s: torch.stack([(dn.iwae(x.reshape(40, 1, 2, 3), s) - exact).abs() for _ in range(reps)]).mean()
                 for s, reps in ((10, 20), (10_000, 1))}
    assert error[10_000] < 0.1, error
    assert error[10_000] < error[10] / 10, error


def test_prior_proposal_bound_is_below_log_p_and_rises_with_k_in_expectation():
    dn, px = _linear_gaussian()
    x = px.sample((10,))
    exact = px.log_prob(x)
    reps = 300
    xr = x.reshape(10, 1, 2, 3).repeat(reps, 1, 1, 1)
    with torch.no_grad():
        draws = {k: dn.iwae(xr, k).reshape(reps, 10) for k in (1, 10, 100)}
        draws["elbo"] = dn.elbo(xr).reshape(reps, 10)
    mean = {k: d.mean(0) for k, d in draws.items()}
    se = {k: d.std(0) / math.sqrt(reps) for k, d in draws.items()}
    for k in (1, 10, 100):
        assert (mean[k] <= exact + 3 * se[k]).all(), k  # a lower bound in expectation
    assert (mean[1] - mean["elbo"]).abs().max() < 4 * (se[1] + se["elbo"]).max()  # IWAE_1 is E_p(z)[log p(x|z)]
    total = {k: m.sum() for k, m in mean.items()}
    assert total[1] < total[10] < total[100] < exact.sum()


def test_has_no_encoder_and_its_bounds_batch_and_train():
    dn = create_model("density-network", {"data_shape": (1, 8, 8), "levels": 17, "architecture": "conv",
                                          "conv_channels": (8, 8), "latent_dim": 3, "n_samples": 5})
    assert set(capabilities(dn)) == {"loss", "sample", "decode", "elbo", "iwae"}
    assert not hasattr(dn, "encode") and not hasattr(dn, "reconstruct")
    with pytest.raises(DgmError, match="encode"):
        require(dn, "encode", purpose="encode images")
    x = torch.randint(0, 17, (4, 1, 8, 8)).float() / 16
    assert dn.sample(6).shape == (6, 1, 8, 8) and dn.decode(torch.zeros(2, 3)).shape == (2, 1, 8, 8)
    with torch.no_grad():
        assert dn.iwae(x, 7, chunk_size=8).shape == (4,)  # 2 samples per chunk, 4 chunks
    out = dn.loss((x, None))
    out["loss"].backward()
    assert out["loss"].item() == pytest.approx(-out["iwae"].item())
    assert all(p.grad is not None for p in dn.parameters())
    # a Bernoulli on grey levels is not a probability of them: only the loss, no term named as a bound
    grey = create_model("density-network", {"data_shape": (1, 8, 8), "levels": 17, "likelihood": "bernoulli",
                                            "hidden_dims": (8,), "latent_dim": 2, "n_samples": 3})
    assert set(grey.loss((x, None))) == {"loss"}


def test_trains_on_digits_and_eval_reports_elbo_and_log_likelihood(tmp_path):
    run = dgm.train("density-network", data="digits", steps=8, out=tmp_path / "dn", quiet=True, progress=False,
                    hidden_dims=(16,), latent_dim=2, n_samples=10, batch_size=32)
    assert run.metrics and "train/iwae" in run.metrics[-1]
    scores = dgm.evaluate(run, metrics=["likelihood"], k=50, n_examples=30, progress=False)
    assert scores["elbo"] < scores["log_likelihood"] < 0 < scores["bits_per_dim"]
    assert scores["k"] == 50
    names = {p.name for p in run.pictures}
    assert "samples.png" in names and "reconstructions.png" not in names  # no encoder, nothing to reconstruct
    assert "encode" not in capabilities(run.model)
    with pytest.raises(DgmError, match="encode"):
        dgm.evaluate(run, metrics=["representation"], progress=False)


def test_zoo_lists_the_density_network_with_seed_004(capsys):
    assert main(["zoo", "--json"]) == 0
    zoo = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    entry = zoo["density-network"]
    assert "004" in entry["seeds"] and entry["family"] == "vae"
    assert set(entry["capabilities"].split()) == {"loss", "sample", "decode", "elbo", "iwae"}
