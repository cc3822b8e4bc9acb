"""Likelihood metrics name what they measure: probabilities on pixel data, densities on points."""
import math

import torch
from torch import nn

from dgm.data import load_dataset
from dgm.evaluation import likelihood_metrics


class _Gaussian2D(nn.Module):
    """An exact density on the plane: N(0, s^2 I)."""

    def __init__(self, s: float):
        super().__init__()
        self.log_s = nn.Parameter(torch.tensor(math.log(s)))

    def log_prob(self, x):
        return torch.distributions.Normal(0.0, self.log_s.exp()).log_prob(x).sum(-1)


def test_continuous_data_gets_log_density_and_no_bits_per_dim():
    data = load_dataset("ring8")
    result = likelihood_metrics(_Gaussian2D(0.05), data, n_examples=500, progress=False)
    assert set(result) == {"log_density", "n_examples"}
    x = data.test.x[torch.linspace(0, len(data.test) - 1, 500).round().long()]
    expected = torch.distributions.Normal(0.0, 0.05).log_prob(x).sum(-1).mean().item()
    assert abs(result["log_density"] - expected) < 1e-4
