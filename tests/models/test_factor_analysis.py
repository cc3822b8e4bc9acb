"""Factor analysis (seed 004): the Woodbury log-density against torch, normalisation, the dequantization
bounds of log P(x) against the exact bin probability, IWAE with the exact posterior, maximum-likelihood
fitting, and the model through the trainer, `dgm.train` and `dgm.evaluate`."""
import json
import math

import pytest
import torch
from torch import distributions as D

import dgm
from dgm.cli import main
from dgm.data import Dataset, Split
from dgm.errors import DgmError
from dgm.evaluation import likelihood_metrics
from dgm.models import capabilities, create_model, require
from dgm.training import TrainConfig, Trainer


def _fa(data_shape, levels, m, weight, bias, psi):
    """A float64 factor-analysis model with the given W [D, M], b [D] and diag(Psi) [D]."""
    fa = create_model("factor-analysis", {"data_shape": data_shape, "levels": levels, "latent_dim": m}).double()
    with torch.no_grad():
        fa.weight.copy_(torch.as_tensor(weight, dtype=torch.float64).reshape(-1, m))
        fa.bias.copy_(torch.as_tensor(bias, dtype=torch.float64))
        fa.log_psi.copy_(torch.as_tensor(psi, dtype=torch.float64).log())
    return fa


def _random_fa(data_shape=(1, 2, 3), m=2, levels=0, seed=1):
    g = torch.Generator().manual_seed(seed)
    d = math.prod(data_shape)
    return _fa(data_shape, levels, m, torch.randn(d, m, generator=g, dtype=torch.float64),
               torch.randn(d, generator=g, dtype=torch.float64),
               0.2 + torch.rand(d, generator=g, dtype=torch.float64))


def _marginal(fa) -> D.MultivariateNormal:
    """N(b, W W^T + Psi) formed explicitly: the reference for the model's O(D M^2) computations."""
    w, b, psi = fa.weight.detach(), fa.bias.detach(), fa.log_psi.detach().exp()
    return D.MultivariateNormal(b, w @ w.T + torch.diag(psi))


# --- the exact log-density ------------------------------------------------------------------------
@pytest.mark.parametrize("data_shape,m", [((1, 2, 3), 2), ((7,), 3), ((1, 4, 4), 5)])
def test_woodbury_log_density_equals_the_full_covariance_gaussian(data_shape, m):
    fa = _random_fa(data_shape, m)
    x = torch.randn(20, *data_shape, dtype=torch.float64) * 2
    with torch.no_grad():
        got = fa.log_prob(x)
    assert got.shape == (20,)
    assert torch.allclose(got, _marginal(fa).log_prob(x.reshape(20, -1)), rtol=0, atol=1e-9)
    assert torch.allclose(fa.covariance(), _marginal(fa).covariance_matrix)


def test_log_density_integrates_to_one_in_1d_and_2d():
    fa1 = _fa((1,), 0, 2, [[0.6, -0.3]], [0.2], [0.05])
    sd = math.sqrt(0.6**2 + 0.3**2 + 0.05)
    y = torch.linspace(0.2 - 12 * sd, 0.2 + 12 * sd, 20_001, dtype=torch.float64)
    with torch.no_grad():
        assert abs(torch.trapezoid(fa1.log_prob(y[:, None]).exp(), y).item() - 1) < 1e-9
    fa2 = _fa((2,), 0, 1, [[0.8], [0.6]], [0.0, 1.0], [0.1, 0.02])  # strongly correlated
    g = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g + 1.0)
    with torch.no_grad():
        p = fa2.log_prob(grid).exp().reshape(len(g), len(g))
    assert abs(torch.trapezoid(torch.trapezoid(p, g, dim=1), g).item() - 1) < 1e-6


# --- the posterior: encode and a zero-variance IWAE ------------------------------------------------
def test_exact_posterior_gives_zero_variance_importance_weights_and_encode_is_its_mean():
    """p(z|x) = N(Sigma W^T Psi^-1 (x - b), Sigma), Sigma = (I + W^T Psi^-1 W)^-1 (Bishop 12.2 for FA): with it as
    the proposal every weight p(x|z) p(z) / q(z|x) is p(x) itself, so IWAE_k = log p(x) for every draw and k."""
    fa = _random_fa((1, 2, 3), m=2)
    w, b, psi = fa.weight.detach(), fa.bias.detach(), fa.log_psi.detach().exp()
    x = _marginal(fa).sample((30,))
    sigma = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + w.T @ (w / psi[:, None]))
    mean = (x - b) @ (w / psi[:, None]) @ sigma  # rows: Sigma W^T Psi^-1 (x - b)
    with torch.no_grad():
        q = fa.posterior(x.reshape(30, 1, 2, 3))
        assert torch.allclose(q.mean, mean, atol=1e-10) and torch.allclose(q.covariance_matrix[0], sigma, atol=1e-10)
        # encode is E[z|x] = W^T C^-1 (x - b), here with C inverted explicitly
        direct = torch.linalg.solve(_marginal(fa).covariance_matrix, (x - b).T).T @ w
        assert torch.allclose(fa.encode(x.reshape(30, 1, 2, 3)), direct, atol=1e-10)
        z = q.sample((50,))  # [50, 30, 2]
        log_w = (D.Normal(z @ w.T + b, psi.sqrt()).log_prob(x).sum(-1) + D.Normal(0.0, 1.0).log_prob(z).sum(-1)
                 - q.log_prob(z))
        exact = fa.log_prob(x.reshape(30, 1, 2, 3))
    assert torch.allclose(log_w, exact.expand(50, -1), rtol=0, atol=1e-9)  # every single weight
    assert torch.allclose(torch.logsumexp(log_w, 0) - math.log(50), exact, rtol=0, atol=1e-9)


def test_monte_carlo_estimate_with_the_prior_approaches_the_exact_log_likelihood():
    """The density network's estimate log 1/S sum_s p(x|z_s), z_s ~ p(z), on factor analysis: its error
    shrinks with S, to within 0.02 nats of the exact log p(x) at S = 200,000."""
    fa = _fa((3,), 0, 2, [[1.0, 0.5], [-0.5, 1.0], [0.8, 0.8]], [0.0, 0.5, -0.5], [0.1, 0.2, 0.15])
    w, b, psi = fa.weight.detach(), fa.bias.detach(), fa.log_psi.detach().exp()
    x = _marginal(fa).sample((8,))
    exact = fa.log_prob(x).detach()

    def estimate(s):
        z = torch.randn(s, 1, 2, dtype=torch.float64)
        log_px_z = D.Normal(z @ w.T + b, psi.sqrt()).log_prob(x).sum(-1)  # [S, 8]
        return torch.logsumexp(log_px_z, 0) - math.log(s)

    errors = {s: torch.stack([(estimate(s) - exact).abs() for _ in range(5 if s < 1000 else 1)]).mean()
              for s in (10, 200_000)}
    assert errors[200_000] < 0.02, errors
    assert errors[200_000] < errors[10] / 5, errors


# --- pixel data: the dequantization bounds of log P(x) ---------------------------------------------
L = 4  # levels: values 0, 1/3, 2/3, 1, each owning a bin of width 1/3


def _pixel_fa():
    """Two pixels, one factor; psi comparable to the bin width, so p varies within a bin and the bound has gaps."""
    return _fa((1, 1, 2), L, 1, [[0.3], [0.25]], [0.4, 0.6], [0.01, 0.02])


def _exact_bin_log_probs(fa) -> tuple[torch.Tensor, torch.Tensor]:
    """(all L^2 images [16, 1, 1, 2], log P(x) = log P(Y in x + [-h, h]^2), Y ~ N(b, C)) with SciPy: the
    bivariate normal's rectangle probability as an integral over y1 of N(y1) times the conditional
    normal's CDF difference in y2 (adaptive quadrature)."""
    import scipy.integrate
    from scipy.special import ndtr
    from scipy.stats import norm

    c, b = _marginal(fa).covariance_matrix.numpy(), fa.bias.detach().numpy()
    h = 0.5 / (L - 1)
    slope, s = c[0, 1] / c[0, 0], math.sqrt(c[1, 1] - c[0, 1] ** 2 / c[0, 0])
    values = torch.arange(L, dtype=torch.float64) / (L - 1)
    images = torch.cartesian_prod(values, values)
    logs = []
    for x1, x2 in images.numpy():
        def integrand(y1):
            m2 = b[1] + slope * (y1 - b[0])
            return norm.pdf(y1, b[0], math.sqrt(c[0, 0])) * (ndtr((x2 + h - m2) / s) - ndtr((x2 - h - m2) / s))
        logs.append(math.log(scipy.integrate.quad(integrand, x1 - h, x1 + h, epsabs=1e-14, epsrel=1e-12)[0]))
    return images.reshape(-1, 1, 1, 2), torch.tensor(logs, dtype=torch.float64)


def test_dequantized_bounds_lie_below_the_exact_bin_probability_and_converge_to_it():
    fa = _pixel_fa()
    x, exact = _exact_bin_log_probs(fa)
    assert exact.exp().sum() <= 1  # the bins do not overlap: at most one in all (mass outside [-h, 1+h]^2 lost)
    with torch.no_grad():
        elbo = fa.elbo(x, n_samples=100_000)  # E_u[log p(x + u)] + log vol, nearly without Monte Carlo error
        iwae = fa.iwae(x, 200_000)
    gap = exact - elbo
    assert (gap > 0.1).all(), gap  # Jensen: strictly below where p varies over the bin
    assert ((iwae - exact).abs() < 0.03).all(), iwae - exact  # IWAE_k -> log P(x)
    assert ((iwae - exact).abs() < gap / 4).all()


def test_iwae_increases_with_k_in_expectation_and_stays_below_log_p():
    """Summed over the 16 images (one draw of the bound per image per repetition), E[IWAE_k] increases with k
    and stays below sum log P(x)."""
    fa = _pixel_fa()
    x, exact = _exact_bin_log_probs(fa)
    reps = 1000
    with torch.no_grad():
        draws = {k: fa.iwae(x.repeat(reps, 1, 1, 1), k).reshape(reps, -1).sum(1) for k in (1, 4, 32)}
        draws["elbo"] = fa.elbo(x.repeat(reps, 1, 1, 1)).reshape(reps, -1).sum(1)
    mean = {k: d.mean().item() for k, d in draws.items()}
    se = {k: d.std().item() / math.sqrt(reps) for k, d in draws.items()}
    assert abs(mean[1] - mean["elbo"]) < 4 * (se[1] + se["elbo"])  # IWAE_1 is the ELBO
    for lo, hi in ((1, 4), (4, 32)):
        assert mean[hi] - mean[lo] > 4 * (se[hi] + se[lo]), (lo, hi, mean, se)
    assert mean[32] < exact.sum().item() + 3 * se[32]


def test_pixel_data_has_bounds_not_a_density_and_continuous_data_the_reverse():
    pixels = create_model("factor-analysis", {"data_shape": (1, 8, 8), "levels": 17, "latent_dim": 3})
    points = create_model("factor-analysis", {"data_shape": (2,), "levels": 0, "latent_dim": 1})
    assert {"elbo", "iwae"} <= set(capabilities(pixels)) and "log_prob" not in capabilities(pixels)
    assert "log_prob" in capabilities(points) and not {"elbo", "iwae"} & set(capabilities(points))
    with pytest.raises(DgmError, match="not a probability of these 17-level pixels"):
        require(pixels, "log_prob", purpose="give a log-density")
    with pytest.raises(DgmError, match="exact log-density"):
        require(points, "iwae", purpose="bound log p(x)")
    x = torch.randint(0, 17, (5, 1, 8, 8)).float() / 16
    assert pixels.sample(4).shape == (4, 1, 8, 8) and pixels.sample(4).min() >= 0 and pixels.sample(4).max() <= 1
    assert pixels.reconstruct(x).shape == x.shape and pixels.encode(x).shape == (5, 3)
    with torch.no_grad():
        assert pixels.iwae(x, 7, chunk_size=10).shape == (5,)  # 2 samples per chunk, 4 chunks
    # on points, sample draws p(x) exactly: the covariance of many draws is C, not W W^T
    draws = points.sample(200_000, generator=torch.Generator().manual_seed(0)).double()
    assert torch.allclose(torch.cov(draws.T), points.covariance().detach().double(), atol=3e-3)


# --- maximum likelihood --------------------------------------------------------------------------
def test_maximum_likelihood_through_the_trainer_recovers_the_covariance():
    """4,000 points of a known 6-D, 2-factor model, fitted by the trainer (minibatch Adam on -log p(x)): the
    learned W W^T + Psi is within 10 % (relative Frobenius error; 2.5 % seen) of the true covariance, from which
    the training data's own covariance is 2 % away, and within 3 % (0.9 % seen) of that sample covariance, which
    the maximum-likelihood fit with the true number of factors nearly reproduces."""
    g = torch.Generator().manual_seed(5)
    d, m = 6, 2
    w = torch.randn(d, m, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    psi = 0.1 + 0.4 * torch.rand(d, generator=g, dtype=torch.float64)
    true = D.MultivariateNormal(b, w @ w.T + torch.diag(psi))
    torch.manual_seed(5)
    x = true.sample((6000,)).float()
    data = Dataset("fa6", Split(x[:4000]), Split(x[4000:5000]), Split(x[5000:]), levels=0)
    fa = create_model("factor-analysis", {"data_shape": (d,), "levels": 0, "latent_dim": m})
    fa.fit_before_training(data.train.x)  # as dgm.train does: b, psi of the W = 0 model
    assert torch.allclose(fa.bias, data.train.x.mean(0))
    Trainer(fa, data, TrainConfig(steps=400, batch_size=1000, lr=0.03, progress=False, device="cpu")).fit()
    learned = fa.covariance().detach().double()

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    assert rel(learned, true.covariance_matrix) < 0.10
    assert rel(learned, torch.cov(data.train.x.double().T, correction=0)) < 0.03
    # `dgm eval`'s likelihood on continuous data: the exact log-density, no bound and no bits per dimension
    result = likelihood_metrics(fa, data, k=3, progress=False)
    assert set(result) == {"log_density", "n_examples"}
    with torch.no_grad():
        assert result["log_density"] == pytest.approx(fa.log_prob(data.test.x).mean().item(), abs=1e-4)
        assert abs(result["log_density"] - true.log_prob(data.test.x.double()).mean().item()) < 0.05
        fa.double()  # encode is the posterior mean W^T C^-1 (x - b), C inverted explicitly
        xt = data.test.x[:50].double()
        direct = torch.linalg.solve(_marginal(fa).covariance_matrix, (xt - fa.bias).T).T @ fa.weight
        assert torch.allclose(fa.encode(xt), direct, atol=1e-9)


# --- through the library ---------------------------------------------------------------------------
def test_trains_on_digits_and_eval_reports_bounds_of_the_pixel_log_probability(tmp_path):
    run = dgm.train("factor-analysis", data="digits", steps=30, out=tmp_path / "fa", quiet=True, progress=False,
                    latent_dim=4, lr=1e-2, batch_size=64)
    scores = dgm.evaluate(run, metrics=["likelihood"], k=20, n_examples=60, progress=False)
    assert {"elbo", "log_likelihood", "bits_per_dim"} <= set(scores) and "log_density" not in scores
    assert scores["elbo"] < scores["log_likelihood"] < 0 < scores["bits_per_dim"]
    assert scores["bits_per_dim"] == pytest.approx(-scores["log_likelihood"] / (64 * math.log(2)))
    model = run.model
    assert model.log_prob is None and callable(model.encode)
    assert {"samples.png", "reconstructions.png"} <= {p.name for p in run.pictures}
    valid = [m["valid/elbo"] for m in run.metrics if "valid/elbo" in m]
    assert valid and valid[-1] > 64 * math.log(1 / 17)  # better than uniform over the 17 values of 64 pixels
    x = dgm.sample(run, 5)
    assert x.shape == (5, 1, 8, 8) and 0 <= x.min() and x.max() <= 1


def _tiny_pixels(n=96, levels=17):
    g = torch.Generator().manual_seed(0)
    def split(k):
        return Split(torch.randint(0, levels, (k, 1, 4, 4), generator=g, dtype=torch.uint8))
    return Dataset("tiny", split(n), split(32), split(32), levels=levels)


def test_zoo_lists_factor_analysis_with_seed_004(capsys):
    assert main(["zoo", "--json"]) == 0
    zoo = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert "004" in zoo["factor-analysis"]["seeds"] and zoo["factor-analysis"]["family"] == "vae"
