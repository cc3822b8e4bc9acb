"""The VAE's mathematics: closed-form KL, the ELBO <= IWAE_k <= log p(x) chain on factor analysis."""
import math

import pytest
import torch
from torch import distributions as D

from dgm.distributions import make_likelihood
from dgm.models import create_model


def test_closed_form_kl_equals_monte_carlo():
    vae = create_model("vae", {"data_shape": (1, 4, 4), "levels": 2, "latent_dim": 5})
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.3))
    q = vae.posterior(x)
    _, kl = vae.elbo_terms(x)
    z = q.sample((400_000,))
    log_ratio = (q.log_prob(z) - D.Normal(0.0, 1.0).log_prob(z)).sum(-1)  # [S, B]
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(z.shape[0])
    assert torch.all((kl.detach() - mc).abs() < 4 * se + 1e-4), (kl, mc, se)


def _factor_analysis_vae(d_shape=(1, 2, 3), m=2, psi=0.5):
    """A VAE whose decoder is linear Gaussian, p(x|z) = N(Wz + b, psi^2 I): factor analysis (seed 004).

    W has orthogonal columns, so the exact posterior N(A(x - b), Sigma) is diagonal and the
    encoder can represent it exactly."""
    d = math.prod(d_shape)
    vae = create_model("vae", {"data_shape": d_shape, "levels": 256, "latent_dim": m, "hidden_dims": (),
                               "likelihood": "gaussian", "learned_scale": True}).double()
    g = torch.Generator().manual_seed(1)
    W = torch.linalg.qr(torch.randn(d, m, generator=g, dtype=torch.float64))[0] * torch.tensor([2.0, 1.0],
                                                                                             dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    dec = vae.decoder[0][0]  # Linear(m -> 2d): loc rows, then raw-scale rows
    enc = vae.encoder[1][0]  # Linear(d -> 2m): mu rows, then log-variance rows
    min_scale = vae.likelihood.min_scale
    with torch.no_grad():
        dec.weight.zero_()
        dec.weight[:d] = W
        dec.bias[:d] = b
        dec.bias[d:] = math.log(math.expm1(psi - min_scale))  # softplus^-1, so the scale is exactly psi
        sigma = torch.linalg.inv(torch.eye(m, dtype=torch.float64) + W.T @ W / psi**2)
        A = sigma @ W.T / psi**2
        enc.weight.zero_()
        enc.weight[:m] = A
        enc.bias[:m] = -A @ b
        enc.bias[m:] = torch.log(torch.diagonal(sigma))
    x = D.MultivariateNormal(b, W @ W.T + psi**2 * torch.eye(d, dtype=torch.float64))
    return vae, x, enc


def test_exact_posterior_makes_every_bound_exact():
    vae, px, _ = _factor_analysis_vae()
    x = px.sample((50,)).reshape(50, 1, 2, 3)
    exact = px.log_prob(x.reshape(50, -1))
    with torch.no_grad():
        # every importance weight p(x, z) / q(z|x) equals p(x): no variance at all
        assert torch.allclose(vae.iwae(x, 1), exact, atol=1e-8)
        # the closed-form-KL ELBO still has Monte Carlo noise in E_q[log p(x|z)], but no gap
        assert torch.allclose(vae.elbo(x, n_samples=20_000), exact, atol=0.03)
        assert torch.allclose(vae.iwae(x, 3000, chunk_size=4096), exact, atol=1e-8)  # several chunks


def test_iwae_tightens_towards_exact_log_likelihood():
    vae, px, enc = _factor_analysis_vae()
    with torch.no_grad():  # a worse encoder: shifted means, too-wide variances
        enc.bias[:2] += 0.7
        enc.bias[2:] += 1.0
    x = px.sample((400,)).reshape(400, 1, 2, 3)
    exact = px.log_prob(x.reshape(400, -1)).mean().item()
    with torch.no_grad():
        elbo = vae.elbo(x, n_samples=2000).mean().item()
        bounds = {k: torch.stack([vae.iwae(x, k) for _ in range(20 if k < 1000 else 2)]).mean().item()
                  for k in (1, 10, 100, 5000)}
    assert abs(bounds[1] - elbo) < 0.02  # IWAE_1 is the ELBO
    assert elbo + 0.1 < bounds[10] < bounds[100] < bounds[5000] <= exact + 0.005
    assert exact - bounds[5000] < 0.01 < exact - elbo  # the gap closes as k grows


@pytest.mark.parametrize("name,levels", [("bernoulli", 2), ("categorical", 17), ("categorical", 5)])
def test_discrete_likelihoods_are_normalised(name, levels):
    """Summing p(x|z) over every possible image gives 1 (2x1 images, all level combinations)."""
    lik = make_likelihood(name, channels=1, levels=levels)
    out = torch.randn(lik.params_per_pixel, 1, 2)
    values = torch.arange(levels, dtype=torch.float32) / (levels - 1)
    grid = torch.cartesian_prod(values, values).reshape(-1, 1, 1, 2)
    total = torch.logsumexp(lik.log_prob(out.expand(len(grid), -1, -1, -1), grid), 0)
    assert abs(total.item()) < 1e-5


def test_gaussian_and_laplace_log_prob_match_torch():
    out = torch.randn(2, 2, 2)  # [P*C, H, W]: location channel, then raw-scale channel
    x = torch.rand(1, 2, 2)
    for name, family in (("gaussian", D.Normal), ("laplace", D.Laplace)):
        lik = make_likelihood(name, 1, 256, learned_scale=True)
        scale = torch.nn.functional.softplus(out[1:]) + lik.min_scale
        assert torch.allclose(lik.log_prob(out, x), family(out[:1], scale).log_prob(x).sum())


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_shapes_and_batched_bounds(architecture, shape):
    vae = create_model("vae", {"data_shape": shape, "levels": 256, "architecture": architecture, "latent_dim": 3})
    x = torch.rand(4, *shape)
    assert vae.sample(5).shape == (5, *shape)
    assert vae.reconstruct(x).shape == x.shape
    assert vae.encode(x).shape == (4, 3)
    with torch.no_grad():
        assert vae.iwae(x, 7, chunk_size=8).shape == (4,)  # 2 samples per chunk, 4 chunks
    out = vae.loss((x, None), step=0)
    assert out["loss"].shape == () and torch.isfinite(out["loss"])


def test_kl_warmup_and_beta():
    vae = create_model("vae", {"data_shape": (1, 8, 8), "levels": 17, "beta": 2.0, "kl_warmup_steps": 10})
    assert vae.kl_weight(0) == pytest.approx(0.2)
    assert vae.kl_weight(4) == pytest.approx(1.0)
    assert vae.kl_weight(100) == vae.kl_weight(None) == 2.0


def test_iwae_objective_trains_on_the_bound():
    vae = create_model("vae", {"data_shape": (1, 8, 8), "levels": 17, "objective": "iwae", "n_samples": 5})
    x = torch.randint(0, 17, (6, 1, 8, 8)).float() / 16
    out = vae.loss((x, None))
    out["loss"].backward()
    assert out["loss"].item() == pytest.approx(-out["iwae"].item())
    assert all(p.grad is not None for p in vae.parameters())
