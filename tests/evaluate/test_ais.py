"""AIS and BDMC: importance sampling at one step, the exact marginal of linear-Gaussian models, HMC's invariance,
the sandwich, and `ais_metrics` on models whose log p(x) is known."""
import json
import math

import pytest
import torch
from torch import distributions as D
from torch import nn

from dgm.data import Dataset, Split, load_dataset
from dgm.evaluation import likelihood_metrics, strided_subset
from dgm.evaluation.ais import ais_log_likelihood, ais_metrics, bdmc, hmc_sample, sigmoid_schedule
from dgm.models import create_model
from dgm.models.factor_analysis import FactorAnalysis

LOG_2PI = math.log(2 * math.pi)


class LinearGaussian:
    """p(z) = N(0, I_M), p(x|z) = N(Wz + b, s^2 I_D): log p(x) = log N(x; b, W W^T + s^2 I) exactly."""

    def __init__(self, m: int, d: int, s: float, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.m, self.d, self.s = m, d, s
        self.w = torch.randn(d, m, generator=g, dtype=torch.float64)
        self.b = torch.randn(d, generator=g, dtype=torch.float64)

    def log_prior(self, z):
        return -0.5 * z.pow(2).sum(-1) - 0.5 * self.m * LOG_2PI

    def log_lik(self, z, x):
        return (-0.5 * ((x - z @ self.w.T - self.b) / self.s).pow(2).sum(-1)
                - self.d * (math.log(self.s) + 0.5 * LOG_2PI))

    def sample_prior(self, n, generator=None):
        return torch.randn(n, self.m, generator=generator, dtype=torch.float64)

    def simulate(self, n: int, seed: int):
        """(z ~ p(z) [n, M], x ~ p(x|z) [n, D]): z is an exact draw of p(z|x)."""
        g = torch.Generator().manual_seed(seed)
        z = self.sample_prior(n, g)
        return z, z @ self.w.T + self.b + self.s * torch.randn(n, self.d, generator=g, dtype=torch.float64)

    def exact(self, x):
        cov = self.w @ self.w.T + self.s**2 * torch.eye(self.d, dtype=torch.float64)
        return D.MultivariateNormal(self.b, cov).log_prob(x)


def test_sigmoid_schedule_is_the_rescaled_sigmoid_and_symmetric():
    t, delta = 50, 4.0
    betas = sigmoid_schedule(t)
    gamma = [1 / (1 + math.exp(-delta * (2 * i / t - 1))) for i in range(t + 1)]
    expected = torch.tensor([(g - gamma[0]) / (gamma[-1] - gamma[0]) for g in gamma], dtype=torch.float64)
    assert torch.allclose(betas, expected, atol=1e-12)
    assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
    assert torch.allclose(betas + betas.flip(0), torch.ones_like(betas))
    assert betas.diff()[0] < betas.diff()[t // 2] / 4  # denser near 0 and 1
    assert sigmoid_schedule(1).tolist() == [0.0, 1.0]


def test_one_step_is_importance_sampling_from_the_prior():
    model = LinearGaussian(3, 6, 0.5)
    _, x = model.simulate(5, seed=1)
    chains = 32
    out = ais_log_likelihood(model.log_prior, model.log_lik, model.sample_prior, x, chains=chains, steps=1,
                             generator=torch.Generator().manual_seed(7))
    z = model.sample_prior(chains * 5, torch.Generator().manual_seed(7)).reshape(chains, 5, 3)
    expected = torch.logsumexp(model.log_lik(z, x), 0) - math.log(chains)
    assert torch.allclose(out, expected, atol=1e-10)
    # the reverse direction at one step is the harmonic-mean estimate from posterior draws
    upper = ais_log_likelihood(model.log_prior, model.log_lik, model.sample_prior, x, steps=1, reverse_from=z)
    assert torch.allclose(upper, -(torch.logsumexp(-model.log_lik(z, x), 0) - math.log(chains)), atol=1e-10)


def test_ais_weights_are_unbiased_even_for_a_short_schedule():
    """E[w] = p(x) for any schedule: with many chains, 5 transitions already give log p(x)."""
    model = LinearGaussian(2, 5, 0.3, seed=2)
    _, x = model.simulate(4, seed=3)
    out = ais_log_likelihood(model.log_prior, model.log_lik, model.sample_prior, x, chains=6000, steps=5,
                             step_size=0.3, generator=torch.Generator().manual_seed(0))
    assert (out - model.exact(x)).abs().max() < 0.15


@pytest.mark.parametrize("m, d", [(2, 5), (4, 10)])
def test_ais_converges_to_the_exact_marginal_of_a_linear_gaussian_model(m, d):
    model = LinearGaussian(m, d, 0.3, seed=m)
    _, x = model.simulate(8, seed=4)
    exact = model.exact(x)

    def error(steps):
        out = ais_log_likelihood(model.log_prior, model.log_lik, model.sample_prior, x, chains=128, steps=steps,
                                 leapfrog=5, generator=torch.Generator().manual_seed(0))
        return (out - exact).abs().mean().item()

    short, long = error(10), error(300)
    assert long < 0.15
    assert long < short / 3


def test_hmc_leaves_a_gaussian_invariant_and_converges_to_it_from_far_away():
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    target = D.MultivariateNormal(mu, cov)
    g = torch.Generator().manual_seed(0)
    n = 2000
    exact = mu + torch.randn(n, 1, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T

    def moments(z):
        z = z[:, 0]
        return z.mean(0), torch.cov(z.T)

    mean_tol, cov_tol = 4 * (cov.diagonal() / n).sqrt(), 0.1
    z, _ = hmc_sample(target.log_prob, exact, n_steps=20, step_size=0.3, adapt=False, generator=g)
    assert not torch.equal(z, exact)  # the chains moved
    mean, c = moments(z)
    assert ((mean - mu).abs() < mean_tol).all() and (c - cov).abs().max() < cov_tol
    far = torch.full((n, 1, 2), 20.0, dtype=torch.float64)
    z, eps = hmc_sample(target.log_prob, far, n_steps=100, step_size=0.05, generator=g)
    mean, c = moments(z)
    assert ((mean - mu).abs() < mean_tol).all() and (c - cov).abs().max() < cov_tol
    assert eps.item() > 0.2  # adapted up from its start


def test_bdmc_sandwiches_the_exact_marginal_and_its_gap_shrinks():
    model = LinearGaussian(3, 8, 0.3, seed=5)
    z, x = model.simulate(8, seed=6)
    exact = model.exact(x)

    def bounds(steps):
        lower, upper, _ = bdmc(model.log_prior, model.log_lik, model.sample_prior, x, z[None].expand(16, -1, -1),
                               chains=64, steps=steps, leapfrog=5, step_size=0.3,
                               generator=torch.Generator().manual_seed(1))
        return lower, upper

    lower, upper = bounds(10)
    lower_long, upper_long = bounds(150)
    for lo, up in ((lower, upper), (lower_long, upper_long)):
        assert lo.mean() <= exact.mean() + 0.05
        assert up.mean() >= exact.mean() - 0.05
    gap, gap_long = (upper - lower).mean(), (upper_long - lower_long).mean()
    assert gap_long < gap / 2


# --- ais_metrics -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def factor_analysis():
    """Factor analysis with 2 factors fitted to digits: its own initialisation, then full-batch Adam on its loss; its noise
    variances floored at one bin width squared."""
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = create_model("factor-analysis", {"data_shape": (1, 8, 8), "levels": 17, "latent_dim": 2})
    x = data.to_float(data.train.x)
    model.fit_before_training(x)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(30):
        loss = model.loss((x,))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # noise no narrower than a pixel bin (border pixels never vary): a smooth likelihood
        model.log_psi.clamp_(min=2 * math.log(1 / 16))
    return model.eval()


def _latent_fa(trained: FactorAnalysis, levels: int) -> FactorAnalysis:
    """The fitted model for data with `levels` (0: the same images as continuous points), in float64."""
    model = FactorAnalysis(type(trained.cfg)(**{**vars(trained.cfg), "levels": levels}))
    model.load_state_dict(trained.state_dict())
    return model.double().eval()


def _continuous(data: Dataset) -> Dataset:
    """The same images as floats with levels 0: points whose density is a density."""
    def split(s):
        return Split(data.to_float(s.x), s.y)

    return Dataset(data.name + "-continuous", split(data.train), split(data.valid), split(data.test), levels=0)


def test_ais_metrics_on_factor_analysis_density_matches_its_exact_log_density(factor_analysis):
    data = _continuous(load_dataset("digits"))
    model = _latent_fa(factor_analysis, levels=0)
    result = ais_metrics(model, data, chains=32, steps=150, n_examples=16, leapfrog=5, progress=False)
    x = data.test.x[strided_subset(len(data.test), 16)]
    exact = model.log_density(x).mean().item()
    assert abs(result["log_density_ais"] - exact) < 0.15
    assert "log_likelihood_ais" not in result and "bits_per_dim_ais" not in result
    counts = (result["ais_chains"], result["ais_steps"], result["ais_leapfrog"], result["ais_examples"])
    assert counts == (32, 150, 5, 16)
    assert result["ais_seconds"] > 0 and 0 < result["ais_acceptance"] < 1


def test_ais_metrics_on_factor_analysis_pixels_is_the_probability_its_bounds_bound(factor_analysis):
    """On 17-level digits the number is log P(x), the cube's probability: checked against a quadrature over the
    2-D latent space, and above factor analysis' own dequantization bound of the same P(x)."""
    data = load_dataset("digits")
    model = _latent_fa(factor_analysis, levels=17)
    n = 4
    result = ais_metrics(model, data, chains=64, steps=150, n_examples=n, leapfrog=5, progress=False)
    x = data.to_float(data.test.x[strided_subset(len(data.test), n)]).double()
    with torch.no_grad():  # quadrature on a grid around each posterior mean of the density model
        post = _latent_fa(factor_analysis, levels=0).posterior(x)
        exact = []
        for i in range(n):
            sd = post.covariance_matrix[i].diagonal().sqrt()
            axes = [torch.linspace(-10, 10, 201, dtype=torch.float64) * sd[j] + post.mean[i, j] for j in range(2)]
            grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
            log_f = model.log_prior(grid) + model.log_px_z(grid, x[i : i + 1].expand(len(grid), -1, -1, -1))
            cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
            exact.append(torch.logsumexp(log_f, 0) + cell.log())
    exact = torch.stack(exact).mean().item()
    assert abs(result["log_likelihood_ais"] - exact) < 0.2
    assert result["bits_per_dim_ais"] == pytest.approx(-result["log_likelihood_ais"] / (64 * math.log(2)))
    own = likelihood_metrics(factor_analysis, data, k=500, n_examples=n, progress=False)["log_likelihood"]
    assert own <= result["log_likelihood_ais"] + 0.1


def test_ais_metrics_on_a_tiny_vae_lies_between_its_bounds_and_bdmc_sandwiches():
    data = load_dataset("digits")
    model = create_model("vae", {"data_shape": (1, 8, 8), "levels": 17, "latent_dim": 2, "hidden_dims": (16,)})
    x = data.to_float(data.train.x)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):  # a few epochs of the ELBO
        loss = model.loss((x[torch.randint(len(x), (64,))],))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    n = 6
    result = ais_metrics(model, data, chains=16, steps=100, n_examples=n, bdmc=True, leapfrog=5, progress=False)
    bounds = likelihood_metrics(model, data, k=2000, n_examples=n, progress=False)
    value = result["log_likelihood_ais"]
    assert math.isfinite(value)
    assert value >= bounds["elbo"] - 0.2
    assert abs(value - bounds["log_likelihood"]) < 0.5  # IWAE_2000 in 2-D is nearly exact
    assert result["bdmc_lower"] <= result["bdmc_upper"] + 0.3  # the sandwich, up to Monte Carlo noise
    assert result["bdmc_gap"] == pytest.approx(result["bdmc_upper"] - result["bdmc_lower"])
    assert result["bdmc_gap"] < 0.5
    assert "simulated" in result["ais_note"]


class LinearGenerator(nn.Module):
    """A GAN's interface without a discriminator: generate(z) = Wz + b, z ~ N(0, I) (sample_latent, log_prior)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.cfg = type("Cfg", (), {"latent_dim": w.shape[1], "levels": 0})()
        self.w, self.b = nn.Parameter(w.float()), nn.Parameter(b.float())

    def generate(self, z, y=None):
        return z @ self.w.T + self.b

    def sample_latent(self, n, generator=None):
        return torch.randn(n, self.cfg.latent_dim, generator=generator)

    def log_prior(self, z):
        return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)

    def sample(self, n, y=None, generator=None):
        return self.generate(self.sample_latent(n, generator))


def test_a_generator_gets_a_gaussian_observation_model_with_sigma_chosen_on_validation():
    truth = LinearGaussian(2, 5, 0.2, seed=8)
    splits = [Split(truth.simulate(n, seed)[1].float()) for n, seed in ((50, 1), (30, 2), (30, 3))]
    data = Dataset("linear", *splits, levels=0)
    model = LinearGenerator(truth.w, truth.b)

    def exact(split, sigma):
        return LinearGaussian.exact(_with_noise(truth, sigma), split.x.double()).mean().item()

    grid = (0.05, 0.2, 0.8)
    result = ais_metrics(model, data, chains=32, steps=60, n_examples=30, sigmas=grid, progress=False)
    best = max(grid, key=lambda s: exact(data.valid, s))
    assert result["ais_sigma"] == best
    assert abs(result["log_density_ais_gaussian"] - exact(data.test, best)) < 0.15
    assert "log_density_ais" not in result and "sigma" in result["ais_note"]


def _with_noise(model: LinearGaussian, sigma: float) -> LinearGaussian:
    other = LinearGaussian(model.m, model.d, sigma)
    other.w, other.b = model.w, model.b
    return other


def test_models_without_a_latent_prior_get_nothing_and_improper_likelihoods_a_note():
    data = load_dataset("digits")
    pixel = create_model("pixelcnn", {"data_shape": (1, 8, 8), "levels": 17, "channels": 4, "n_blocks": 1})
    assert ais_metrics(pixel, data, steps=2, n_examples=2, progress=False) == {}
    fa = create_model("factor-analysis", {"data_shape": (1, 8, 8), "levels": 17, "latent_dim": 2})
    assert set(ais_metrics(fa, data, steps=2, n_examples=2, progress=False)) >= {"log_likelihood_ais",
                                                                                 "bits_per_dim_ais"}
    vae = create_model("vae", {"data_shape": (1, 8, 8), "levels": 17, "latent_dim": 2, "hidden_dims": (8,),
                               "likelihood": "bernoulli"})
    result = ais_metrics(vae, data, steps=2, n_examples=2, progress=False)
    assert set(result) == {"ais_note"} and "Bernoulli" in result["ais_note"]


def test_dgm_eval_ais_on_a_gan_run_and_its_refusals(tmp_path, capsys):
    """`dgm eval RUN --ais` alone reports the Gaussian-observation estimate of a GAN (its own prior, N(0, I)), and
    AIS options without --ais, or a model with no latent prior, are one sentence each."""
    import dgm
    from dgm.cli import main

    gan = dgm.train("gan", data="digits", out=tmp_path / "gan", steps=3, batch_size=32, hidden_dims=(16,),
                    latent_dim=2, quiet=True, progress=False)
    assert main(["eval", str(gan.path), "--ais", "--chains", "2", "--ais-steps", "3", "--n-examples", "4",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ais_chains"] == 2 and out["ais_steps"] == 3 and out["ais_examples"] == 4
    assert math.isfinite(out["log_likelihood_ais_gaussian"]) and out["ais_sigma"] > 0
    assert "fid" not in out  # AIS alone
    assert main(["eval", str(gan.path), "--chains", "2"]) == 1
    assert "add --ais" in capsys.readouterr().err
    pixel = dgm.train("pixelcnn", data="digits", out=tmp_path / "pix", steps=1, channels=4, n_blocks=1,
                      quiet=True, progress=False)
    assert main(["eval", str(pixel.path), "--ais", "--ais-steps", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "no latent prior" in err and "\n" not in err and "Traceback" not in err
