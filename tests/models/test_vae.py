"""The VAE's mathematics: closed-form KL, the ELBO <= IWAE_k <= log p(x) chain on factor analysis."""
import math

import numpy as np
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


def _factor_analysis_vae(d_shape=(1, 2, 3), m=2, psi=0.5, levels=0, scales=(2.0, 1.0), b_range=(0.0, 1.0)):
    """A VAE whose decoder is linear Gaussian, p(x|z) = N(Wz + b, psi^2 I): factor analysis (seed 004),
    on continuous data (levels 0) unless `levels` says otherwise.

    W has orthogonal columns, so the exact posterior N(A(x - b), Sigma) is diagonal and the
    encoder can represent it exactly."""
    d = math.prod(d_shape)
    vae = create_model("vae", {"data_shape": d_shape, "levels": levels, "latent_dim": m, "hidden_dims": (),
                               "likelihood": "gaussian", "learned_scale": True}).double()
    g = torch.Generator().manual_seed(1)
    W = torch.linalg.qr(torch.randn(d, m, generator=g, dtype=torch.float64))[0] * torch.tensor(scales,
                                                                                             dtype=torch.float64)
    b = b_range[0] + b_range[1] * torch.randn(d, generator=g, dtype=torch.float64)  # centre, spread
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


def test_gaussian_and_laplace_log_density_on_continuous_data_match_torch():
    out = torch.randn(2, 2, 2)  # [P*C, H, W]: location channel, then raw-scale channel
    x = torch.rand(1, 2, 2)
    for name, family in (("gaussian", D.Normal), ("laplace", D.Laplace)):
        lik = make_likelihood(name, 1, 0, learned_scale=True)
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


def test_8bit_linear_gaussian_gives_the_probability_of_the_pixels():
    """1x2x2 8-bit images from a linear-Gaussian decoder (one latent, psi = 0.05, so the continuous
    density exceeds 1): dgm's log_likelihood is the probability of the stored pixel values, checked
    against quadrature over z of prod_d [Phi(upper_d) - Phi(lower_d)] with SciPy's normal CDF."""
    import scipy.integrate
    from scipy.special import ndtr

    vae, px, _ = _factor_analysis_vae(d_shape=(1, 2, 2), m=1, psi=0.05, levels=256, scales=(0.3,),
                                       b_range=(0.5, 0.1))
    dec = vae.decoder[0][0]
    W, b = dec.weight[:4, 0].detach().numpy(), dec.bias[:4].detach().numpy()
    torch.manual_seed(3)
    x = (px.sample((3,)).clamp(0, 1) * 255).round() / 255  # three 8-bit images, [3, 4]
    z = np.linspace(-12, 12, 200_001)  # p(x) = int N(z) prod_d P(bin_d | Wz + b, psi) dz, trapezoid rule
    reference = []
    for xi in x.numpy():
        lower = np.where(xi < 0.5 / 255, -np.inf, xi - 0.5 / 255)
        upper = np.where(xi > 1 - 0.5 / 255, np.inf, xi + 0.5 / 255)
        loc = z[:, None] * W + b
        bins = ndtr((upper - loc) / 0.05) - ndtr((lower - loc) / 0.05)
        reference.append(np.log(scipy.integrate.trapezoid(np.exp(-z**2 / 2) / np.sqrt(2 * np.pi) * bins.prod(1), z)))
    reference = torch.tensor(reference)
    x = x.reshape(3, 1, 2, 2)
    with torch.no_grad():
        iwae = vae.iwae(x, 20_000)  # the encoder holds the exact posterior of the continuous model
        elbo = vae.elbo(x, n_samples=20_000)
    continuous = px.log_prob(x.reshape(3, -1))
    assert (continuous > 0).all()  # a density above 1: never a probability of pixels
    assert (reference < 0).all()
    assert torch.allclose(iwae, reference, atol=0.01), (iwae, reference)
    assert (elbo <= iwae + 0.01).all()
    # narrow bins: the probability is about the density times the bin width (1/255 per pixel)
    assert torch.allclose(reference, continuous - 4 * math.log(255), atol=0.1)


@pytest.mark.parametrize("options", [{"likelihood": "gaussian", "learned_scale": True},
                                     {"likelihood": "gaussian", "scale": 0.01},
                                     {"likelihood": "laplace", "learned_scale": True},
                                     {"likelihood": "dlogistic"}, {"likelihood": "categorical"}])
def test_8bit_vae_reports_log_probabilities(options):
    """A VAE trained on nearly constant 8-bit images (where a learned density spikes far above 1)
    reports log_likelihood <= 0 and bits_per_dim >= 0 for every likelihood."""
    from dgm.data import Dataset, Split
    from dgm.evaluation import likelihood_metrics

    g = torch.Generator().manual_seed(0)
    def split(n):
        return Split((torch.full((n, 1, 3, 3), 120) + torch.randint(0, 3, (n, 1, 3, 3), generator=g)).to(torch.uint8))
    data = Dataset("flat8", split(256), split(64), split(64), levels=256)
    vae = create_model("vae", {"data_shape": (1, 3, 3), "levels": 256, "hidden_dims": (32,), "latent_dim": 2,
                               **options})
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(300):
        loss = vae.loss((data.to_float(data.train.x), None))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    result = likelihood_metrics(vae, data, k=50, progress=False)
    assert result["elbo"] <= 0 and result["log_likelihood"] <= 0 and result["bits_per_dim"] >= 0
    # the model learned: better than uniform over the 256 values (8 bits/dim; the data hold log2(3) = 1.58)
    assert result["bits_per_dim"] < 6, result
