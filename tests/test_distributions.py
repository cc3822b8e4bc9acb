"""Every observation model is a probability of the data as stored: the L values of a pixel sum to 1."""
import math

import pytest
import torch

from dgm.distributions import auto_likelihood, make_likelihood

LEVELS = (2, 4, 17, 256)


def _all_values(levels: int, channels: int = 1) -> torch.Tensor:
    """Every value of one pixel with `channels` channels: [L^C, C, 1, 1] in [0, 1]."""
    grid = torch.cartesian_prod(*[torch.arange(levels, dtype=torch.float64)] * channels).reshape(-1, channels)
    return (grid / (levels - 1))[:, :, None, None]


def _total(lik, out: torch.Tensor, levels: int, channels: int = 1) -> torch.Tensor:
    """sum over every value x of one pixel of p(x), for each parameter setting out [S, P, 1, 1]: [S]."""
    x = _all_values(levels, channels)  # [V, C, 1, 1]
    log_p = lik.log_prob(out[:, None].expand(-1, x.shape[0], -1, -1, -1), x[None].expand(out.shape[0], -1, -1, -1, -1))
    return torch.logsumexp(log_p, dim=1).exp()


def _settings(n_params: int, extreme: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(n_params)
    out = torch.randn(64, n_params, 1, 1, generator=g, dtype=torch.float64) * (8.0 if extreme else 1.0)
    if extreme:  # locations far outside [0, 1], scales at the floor and huge
        out[:8] = torch.tensor([-50.0, 50.0, 0.0, 1.0, 0.5, -1e3, 1e3, 0.25])[:, None, None, None]
    return out


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("name,options", [
    ("gaussian", {"learned_scale": True}), ("gaussian", {"scale": 0.1}), ("gaussian", {"scale": 1e-3}),
    ("laplace", {"learned_scale": True}), ("laplace", {"scale": 0.05}),
    ("categorical", {}), ("dlogistic", {"n_mix": 1}), ("dlogistic", {"n_mix": 3}),
])
@pytest.mark.parametrize("extreme", [False, True])
def test_probabilities_of_all_values_sum_to_one(levels, name, options, extreme):
    lik = make_likelihood(name, 1, levels, **options).double()
    totals = _total(lik, _settings(lik.out_channels, extreme), levels)
    assert lik.normalised
    assert torch.allclose(totals, torch.ones_like(totals), atol=1e-6), (totals.min(), totals.max())


@pytest.mark.parametrize("levels", (2, 4, 17))
def test_coupled_colour_mixture_sums_to_one_over_every_rgb_value(levels):
    lik = make_likelihood("dlogistic", 3, levels, n_mix=2).double()
    totals = _total(lik, _settings(lik.out_channels, False) * 2, levels, channels=3)
    assert torch.allclose(totals, torch.ones_like(totals), atol=1e-6)


@pytest.mark.parametrize("levels", LEVELS)
def test_bernoulli_is_a_distribution_over_binary_pixels_only(levels):
    lik = make_likelihood("bernoulli", 1, levels).double()
    totals = _total(lik, torch.zeros(1, 1, 1, 1, dtype=torch.float64), levels)
    if levels == 2:
        assert lik.normalised and torch.allclose(totals, torch.ones(1, dtype=torch.float64))
    else:  # at logit 0 every value gets 1/2: the "probabilities" add up to L / 2
        assert not lik.normalised and "not a distribution" in lik.improper
        assert totals.item() == pytest.approx(levels / 2)


def test_float32_discretized_log_probs_are_finite_with_finite_gradients():
    for name in ("gaussian", "laplace"):
        lik = make_likelihood(name, 1, 256, learned_scale=True)
        out = (torch.randn(512, 2, 1, 1) * 30).requires_grad_(True)
        x = torch.randint(0, 256, (512, 1, 1, 1)).float() / 255
        log_p = lik.log_prob(out, x)
        log_p.sum().backward()
        assert torch.isfinite(log_p).all() and (log_p <= 0).all()
        assert torch.isfinite(out.grad).all()


def test_a_narrow_bin_is_the_density_times_its_width():
    """Where the density is flat over a bin, P(bin) = density x width: the discretized value is the
    continuous one minus log(L - 1) per dimension, the correction a dequantized density needs."""
    for name in ("gaussian", "laplace"):
        lik = make_likelihood(name, 1, 256, scale=0.3).double()
        out = torch.full((1, 1, 1, 1), 0.4, dtype=torch.float64)
        x = torch.full((1, 1, 1, 1), 100 / 255, dtype=torch.float64)
        density = lik.distribution(out).log_prob(x).sum()
        assert lik.log_prob(out, x).item() == pytest.approx(density.item() - math.log(255), abs=1e-4)


@pytest.mark.parametrize("name", ["gaussian", "laplace", "dlogistic"])
def test_samples_are_on_the_grid_with_the_right_frequencies(name):
    lik = make_likelihood(name, 1, 4, scale=0.4, n_mix=2).double()
    g = torch.Generator().manual_seed(0)
    out = torch.randn(1, lik.out_channels, 1, 1, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    draws = lik.sample(out.expand(40_000, -1, -1, -1))
    counts = torch.stack([(draws == k / 3).double().mean() for k in range(4)])
    assert counts.sum().item() == pytest.approx(1.0)  # every draw is one of the 4 values
    probs = _total(lik, out, 4) and torch.stack([lik.log_prob(out, torch.full((1, 1, 1, 1), k / 3, dtype=torch.float64))
                                                 for k in range(4)]).exp().flatten()
    assert torch.allclose(counts, probs, atol=0.01), (counts, probs)


def test_auto_picks_a_normalised_likelihood_for_every_kind_of_data():
    assert [auto_likelihood(levels) for levels in (2, 17, 32, 33, 256, 0)] == [
        "bernoulli", "categorical", "categorical", "dlogistic", "dlogistic", "gaussian"]
    for levels in (2, 4, 17, 256):
        assert make_likelihood("auto", 1, levels).normalised
