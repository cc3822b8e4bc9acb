"""Posterior flows and priors: each flow's log-determinant against the autograd Jacobian of the whole flow,
the structure of each step (orthogonal reflections, triangular IAF steps, invertible planar maps for any
parameters), every prior's density integrating to 1, the VampPrior's mixture and ownership of the encoder,
samples against the priors' moments, and the flow prior's sampler inverting its density."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn
from torch.autograd.functional import jacobian

from dgm.errors import DgmError
from dgm.nn.flows import FLOWS, MADE, PosteriorFlow, planar_u_hat
from dgm.nn.priors import PRIORS, FlowPrior, MixturePrior, StandardPrior, VampPrior, make_prior

F64 = torch.float64
C = 4  # context size


def _flow(kind: str, dim: int, length: int) -> PosteriorFlow:
    return PosteriorFlow(kind, dim, length, context_dim=C, hidden_dim=12).double()


def _rank(order: torch.Tensor) -> torch.Tensor:
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return rank


# --- posterior flows --------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,dim", [(1, 3), (3, 5)])
@pytest.mark.parametrize("kind", FLOWS)
def test_log_det_is_the_log_abs_det_of_the_whole_flows_jacobian(kind, length, dim):
    flow = _flow(kind, dim, length)
    z0, h = torch.randn(4, dim, dtype=F64), 2 * torch.randn(4, C, dtype=F64)
    zk, log_det = flow(z0, h)
    assert zk.shape == z0.shape and log_det.shape == (4,)
    jacs = torch.stack([jacobian(lambda z: flow(z, h[b])[0], z0[b]) for b in range(4)])
    assert torch.allclose(torch.linalg.slogdet(jacs)[1], log_det, atol=1e-8, rtol=0)
    assert (jacs - torch.eye(dim, dtype=F64)).abs().max() > 0.05  # the flow does something


@pytest.mark.parametrize("kind", FLOWS)
def test_samples_by_examples_equal_the_flow_applied_per_sample(kind):
    flow = _flow(kind, 4, 3)
    z0, h = torch.randn(3, 5, 4, dtype=F64), torch.randn(5, C, dtype=F64)
    zk, log_det = flow(z0, h)
    assert zk.shape == (3, 5, 4) and log_det.shape == (3, 5)
    for s in range(3):
        zs, ls = flow(z0[s], h)
        assert torch.allclose(zk[s], zs, atol=1e-12) and torch.allclose(log_det[s], ls, atol=1e-12)


def test_householder_steps_are_reflections_and_the_flow_preserves_norms():
    flow = _flow("householder", 4, 3)
    h, z = torch.randn(C, dtype=F64), torch.randn(4, dtype=F64)
    eye = torch.eye(4, dtype=F64)
    for step in flow.steps(h):
        H = jacobian(lambda x: step(x)[0], z)
        assert torch.allclose(H @ H.T, eye, atol=1e-12) and torch.allclose(H, H.T, atol=1e-12)
        assert abs(torch.linalg.det(H) + 1) < 1e-12  # a reflection
    z0, hb = torch.randn(2, 6, 4, dtype=F64), torch.randn(6, C, dtype=F64)
    zk, log_det = flow(z0, hb)
    assert torch.allclose(zk.norm(dim=-1), z0.norm(dim=-1), atol=1e-12) and torch.all(log_det == 0)


def test_made_output_d_depends_only_on_inputs_before_d_and_every_output_on_the_context():
    order = torch.tensor([2, 0, 4, 1, 3])
    made = MADE(5, 20, 3, context_dim=2, order=order, n_hidden_layers=2).double()
    z, h = torch.randn(5, dtype=F64), torch.randn(2, dtype=F64)
    rank = _rank(order)
    before = rank[None, :] < rank[:, None]  # [d, i]: i comes before d
    jz = jacobian(lambda x: made(x, h), z)  # [3, D, D]
    assert torch.all(jz[:, ~before] == 0) and torch.all(jz[:, before] != 0)
    jh = jacobian(lambda c: made(z, c), h)  # [3, D, 2]
    assert torch.all(jh.abs().sum(-1) > 0)  # also the first dimension in the order (rank 0)
    assert made(torch.randn(7, 6, 5, dtype=F64), torch.randn(6, 2, dtype=F64)).shape == (7, 6, 3, 5)


def test_iaf_steps_are_triangular_in_alternating_orders_with_diagonal_sigma():
    flow = _flow("iaf", 4, 3)
    h, z = torch.randn(C, dtype=F64), torch.randn(4, dtype=F64)
    orders = [made.order for made in flow.mades]
    assert torch.equal(orders[0], orders[1].flip(0)) and torch.equal(orders[0], orders[2])
    for made, step in zip(flow.mades, flow.steps(h)):
        rank = _rank(made.order)
        at_or_after = rank[None, :] >= rank[:, None]  # [d, i]: i is d itself or comes after it
        assert torch.all(jacobian(lambda x: made(x, h), z)[:, at_or_after] == 0)
        J = jacobian(lambda x: step(x)[0], z)
        assert torch.all(J[rank[None, :] > rank[:, None]] == 0)
        _, s = made(z, h).unbind(-2)
        assert torch.allclose(torch.diagonal(J), torch.sigmoid(s + flow.forget_bias), atol=1e-12)
        z = step(z)[0]
    whole = jacobian(lambda x: flow(x, h)[0], torch.randn(4, dtype=F64))
    assert torch.all(whole != 0)  # the composition is triangular in no order


@pytest.mark.parametrize("u,w,b", [(-10.0, 1.0, 0.3), (-1.0, 30.0, -1.234), (50.0, -0.2, 2.0), (-0.5, 40.0, 0.1),
                                   (-40.0, 0.5, 0.37)])
def test_planar_map_is_monotone_for_adversarial_raw_parameters(u, w, b):
    """1-D, w u from -10 to -30 and steep or wide tanh: f(z) = z + u_hat tanh(w z + b) increases on a fine grid,
    and exp(log_det) = f'(z) > 0 with log_det finite."""
    flow = _flow("planar", 1, 1)
    with torch.no_grad():
        flow.params.weight.zero_()
        flow.params.bias.copy_(torch.tensor([u, w, b]))
    z = torch.linspace(-30, 30, 60_001, dtype=F64)[:, None].requires_grad_()
    fz, log_det = flow(z, torch.zeros(len(z), C, dtype=F64))
    (slope,) = torch.autograd.grad(fz.sum(), z)
    assert torch.all(fz.diff(dim=0) > 0) and torch.all(slope > 0) and torch.all(torch.isfinite(log_det))
    assert torch.allclose(log_det.exp(), slope.squeeze(-1), atol=1e-12, rtol=1e-9)


def test_planar_constraint_holds_for_any_raw_parameters():
    w = 30 * torch.randn(200, 3, dtype=F64)
    u = torch.cat([-10 * w[:100] / w[:100].pow(2).sum(-1, keepdim=True),  # w^T u = -10 exactly
                   50 * torch.randn(100, 3, dtype=F64)])  # w^T u in the thousands, either sign
    u_hat, c = planar_u_hat(u, w)
    wu_hat = (w * u_hat).sum(-1)
    assert torch.allclose(c, F.softplus((w * u).sum(-1))) and torch.all(c[:100] > 0)
    assert torch.all(wu_hat >= -1 - 1e-9) and torch.allclose(1 + wu_hat, c, atol=1e-9)
    flow = _flow("planar", 3, 2)
    with torch.no_grad():
        flow.params.weight.mul_(20)
    h = torch.randn(5, C, dtype=F64)
    for b in range(5):
        for z in torch.randn(20, 3, dtype=F64) * 3:
            sign, logabsdet = torch.linalg.slogdet(jacobian(lambda x: flow(x, h[b])[0], z))
            log_det = flow(z, h[b])[1]
            assert sign > 0 and torch.isfinite(log_det) and abs(logabsdet - log_det) < 1e-8


def test_bad_flow_kind_and_made_order():
    with pytest.raises(DgmError, match="planar, householder, iaf"):
        PosteriorFlow("radial", 2, 1, context_dim=3)
    with pytest.raises(DgmError, match="order"):
        MADE(3, 8, 2, order=torch.tensor([0, 0, 1]))


# --- priors -----------------------------------------------------------------------------------------------
class _Owner(nn.Module):
    """What the VAE is to its VampPrior: it owns a (linear) encoder and the prior, passing its bound method."""

    def __init__(self, dim: int, shape=(1, 2, 2), n_pseudo: int = 4):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(-3), nn.Linear(math.prod(shape), 2 * dim))
        self.prior = VampPrior(dim, n_pseudo, shape, self.posterior)

    def posterior(self, x: torch.Tensor) -> D.Normal:
        mu, log_var = self.encoder(x).chunk(2, dim=-1)
        return D.Normal(mu, torch.exp(0.5 * log_var))


def _priors(dim: int) -> dict[str, nn.Module]:
    """One prior of each kind with parameters away from their initial values, in float64."""
    mog = MixturePrior(dim, 3).double()
    owner = _Owner(dim).double()
    flow = FlowPrior(dim, 2, hidden_dim=8).double()
    with torch.no_grad():
        mog.means.mul_(2)
        mog.log_vars.normal_(0, 0.5)
        mog.logits.normal_()
        owner.prior.raw_pseudo_inputs.uniform_()
        owner.encoder[1].weight.mul_(4)  # posteriors of clearly different locations and scales
        for made in flow.mades:  # m and s now vary with z_<d; moderately, as exp(s(z_<d)) widens the tails
            made.out.weight.normal_(0, 0.15)
            made.out.bias.normal_(0, 0.15)
    return {"standard": StandardPrior(dim).double(), "mog": mog, "vampprior": owner.prior, "flow": flow}


@pytest.mark.parametrize("kind", PRIORS)
def test_prior_densities_integrate_to_one_in_one_and_two_dimensions(kind):
    """A Riemann sum in t, z = sinh(t) per dimension (dz = cosh(t) dt), over |t| <= 6, i.e. the box |z| <= 201:
    fine steps (<= 0.012 in z) where the mass is, long ones far out. Within 1e-6 of 1."""
    for dim, n in ((1, 1001), (2, 401)):
        prior = _priors(dim)[kind]
        t = torch.linspace(-6, 6, n, dtype=F64)
        grid, width = torch.sinh(t), torch.cosh(t) * (t[1] - t[0])
        if dim == 1:
            z, widths = grid[:, None], width
        else:
            z, widths = torch.cartesian_prod(grid, grid), torch.outer(width, width).flatten()
        with torch.no_grad():
            total = (prior.log_prob(z).exp() * widths).sum()
        assert abs(total.item() - 1) < 1e-6, (dim, total)


def test_vampprior_is_the_mean_of_the_posteriors_at_the_pseudo_inputs():
    owner = _Owner(3).double()
    prior = owner.prior
    z = torch.randn(5, 6, 3, dtype=F64)
    u = prior.pseudo_inputs
    each = [owner.posterior(u[k : k + 1]).log_prob(z).sum(-1).exp() for k in range(4)]  # [5, 6] each
    assert prior.log_prob(z).shape == (5, 6)
    assert torch.allclose(prior.log_prob(z), torch.stack(each).mean(0).log(), atol=1e-10)


def test_vampprior_does_not_register_the_encoder_and_trains_both():
    owner = _Owner(3)
    prior = owner.prior
    assert list(prior.state_dict()) == ["raw_pseudo_inputs"]
    assert [name for name, _ in prior.named_parameters()] == ["raw_pseudo_inputs"]
    assert sorted(owner.state_dict()) == ["encoder.1.bias", "encoder.1.weight", "prior.raw_pseudo_inputs"]
    assert len(list(owner.parameters())) == 3
    prior.log_prob(torch.randn(8, 3)).sum().backward()
    assert prior.raw_pseudo_inputs.grad.abs().sum() > 0 and owner.encoder[1].weight.grad.abs().sum() > 0
    twin = copy.deepcopy(owner)  # the copy's prior reads the copy's encoder
    with torch.no_grad():
        twin.encoder[1].bias.add_(1.0)
    z = torch.randn(8, 3)
    assert torch.allclose(twin.prior.log_prob(z), twin.prior.posterior.__self__.prior.log_prob(z))
    assert twin.prior.posterior.__self__ is twin and not torch.allclose(twin.prior.log_prob(z), prior.log_prob(z))


def test_vampprior_initialise_copies_training_images_and_pseudo_inputs_stay_in_the_unit_box():
    """initialise() copies training images (moved `margin` inside [0, 1], so every pixel has a gradient)."""
    prior = _Owner(2, shape=(1, 3, 3), n_pseudo=4).prior
    assert torch.all((prior.pseudo_inputs > 0) & (prior.pseudo_inputs < 1))  # valid before any data
    x = torch.rand(10, 1, 3, 3)
    prior.initialise(x)
    chosen = torch.randperm(10, generator=torch.Generator().manual_seed(0))[:4]
    m = prior.margin
    assert torch.equal(prior.pseudo_inputs, x[chosen].clamp(m, 1 - m))
    few = torch.rand(3, 1, 3, 3)
    prior.initialise(few)  # fewer images than pseudo-inputs: drawn with replacement
    assert all(any(torch.equal(u, xi.clamp(m, 1 - m)) for xi in few) for u in prior.pseudo_inputs)
    binary = torch.bernoulli(torch.full((10, 1, 3, 3), 0.5))
    prior.initialise(binary)  # pixels at exactly 0 and 1 still get a gradient (hardtanh's is 0 at its corners)
    prior.log_prob(torch.randn(5, 2)).sum().backward()
    assert torch.all(prior.raw_pseudo_inputs.grad != 0)
    with pytest.raises(DgmError, match="shape"):
        prior.initialise(torch.rand(10, 1, 4, 4))
    with torch.no_grad():
        prior.raw_pseudo_inputs.normal_(0, 10)
    u = prior.pseudo_inputs
    assert u.min() >= 0 and u.max() <= 1 and (u == 0).any() and (u == 1).any()
    assert torch.all(torch.isfinite(prior.log_prob(torch.randn(5, 2))))


def _check_samples(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, cdf) -> None:
    """Sample mean and variance within 5 standard errors of the exact ones, and each dimension's empirical
    distribution within 2 / sqrt(n) of the exact marginal CDF (Kolmogorov-Smirnov, about a 1e-3 level test)."""
    n = len(z)
    assert torch.all((z.mean(0) - mean).abs() < 5 * (var / n).sqrt()), (z.mean(0), mean)
    se_var = ((z - mean).pow(2).var(0) / n).sqrt()
    assert torch.all((z.var(0) - var).abs() < 5 * se_var), (z.var(0), var)
    sorted_z = z.sort(0).values
    exact, steps = cdf(sorted_z), torch.arange(n + 1, dtype=z.dtype)[:, None] / n
    ks = torch.maximum((steps[1:] - exact).abs(), (steps[:-1] - exact).abs()).max()
    assert ks < 2 / math.sqrt(n), ks


def _mixture_cdf(weights: torch.Tensor, q: D.Normal):
    """t [n, D] -> sum_k pi_k Phi((t - mu_k) / sigma_k) [n, D], the marginal CDFs of a diagonal mixture."""
    return lambda t: (weights[:, None] * q.cdf(t[:, None, :])).sum(1)


def test_samples_match_each_priors_moments_and_marginal_distributions():
    n, g = 40_000, torch.Generator().manual_seed(3)
    priors = _priors(2)
    zero, one, phi = torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64), D.Normal(0.0, 1.0).cdf
    with torch.no_grad():
        for prior in priors.values():
            assert prior.sample(5, generator=g).shape == (5, 2) and prior.sample(5).dtype == F64
        _check_samples(priors["standard"].sample(n, g), zero, one, phi)
        mog = priors["mog"]
        pi, q = mog.logits.softmax(0), mog.components()
        mean = (pi[:, None] * q.loc).sum(0)
        var = (pi[:, None] * (q.scale**2 + q.loc**2)).sum(0) - mean**2
        _check_samples(mog.sample(n, g), mean, var, _mixture_cdf(pi, q))
        vamp = priors["vampprior"]
        q = vamp.posterior(vamp.pseudo_inputs)
        mean, uniform = q.loc.mean(0), torch.full((4,), 0.25, dtype=F64)
        _check_samples(vamp.sample(n, g), mean, (q.scale**2 + q.loc**2).mean(0) - mean**2, _mixture_cdf(uniform, q))
        eps, _ = priors["flow"].noise(priors["flow"].sample(n, g))  # pushed back to N(0, I)
        _check_samples(eps, zero, one, phi)
    assert StandardPrior(3).sample(2).dtype == torch.float32


def test_flow_prior_sampler_inverts_its_density_and_log_prob_is_the_change_of_variables():
    prior = _priors(4)["flow"]
    with torch.no_grad():
        eps = torch.randn(50, 4, dtype=F64)
        back, _ = prior.noise(prior.from_noise(eps))
        assert torch.allclose(back, eps, atol=1e-6)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        assert torch.equal(prior.sample(7, g1), prior.from_noise(torch.randn(7, 4, generator=g2, dtype=F64)))
    for z in torch.randn(3, 4, dtype=F64):
        J = jacobian(lambda x: prior.noise(x)[0], z)
        eps, log_det = prior.noise(z)
        expected = D.Normal(0.0, 1.0).log_prob(eps).sum() + torch.linalg.slogdet(J)[1]
        assert abs(torch.linalg.slogdet(J)[1] - log_det) < 1e-10 and abs(prior.log_prob(z) - expected) < 1e-10
        assert J.triu(1).abs().max() > 0.01 and J.tril(-1).abs().max() > 0.01  # in no order triangular
    fresh, z = FlowPrior(3, 2, 8), torch.randn(6, 3)  # output layers start at zero: exactly N(0, I)
    assert torch.allclose(fresh.log_prob(z), D.Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_make_prior_builds_each_kind_and_rejects_bad_ones():
    owner = _Owner(2)
    built = {kind: make_prior(kind, 2, n_components=3, n_pseudo=4, data_shape=(1, 2, 2), posterior=owner.posterior,
                              hidden_dim=8) for kind in PRIORS}
    assert [type(p) for p in built.values()] == [StandardPrior, MixturePrior, VampPrior, FlowPrior]
    assert built["mog"].means.shape == (3, 2) and built["vampprior"].pseudo_inputs.shape == (4, 1, 2, 2)
    assert len(built["flow"].mades) == 2
    with pytest.raises(DgmError, match="standard, mog, vampprior, flow"):
        make_prior("gaussian", 2)
    with pytest.raises(DgmError, match="posterior"):
        make_prior("vampprior", 2)


def test_mixture_log_prob_by_matrix_products_equals_broadcasting():
    """diagonal_mixture_log_prob's two matrix products give log sum_k w_k N(z; mu_k, sigma_k^2) as
    torch.distributions does it, for batched z, including components with tiny and huge scales."""
    from dgm.nn.priors import diagonal_mixture_log_prob

    g = torch.Generator().manual_seed(0)
    loc = torch.randn(7, 4, generator=g, dtype=torch.float64) * 3
    scale = torch.exp(torch.randn(7, 4, generator=g, dtype=torch.float64) * 2)
    log_w = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
    z = torch.cat([torch.randn(3, 5, 4, generator=g, dtype=torch.float64) * 4, loc[None, :5]])  # some at a mean
    expected = torch.logsumexp(log_w + D.Normal(loc, scale).log_prob(z.unsqueeze(-2)).sum(-1), dim=-1)
    assert torch.allclose(diagonal_mixture_log_prob(z, loc, scale, log_w), expected, rtol=1e-10, atol=1e-8)
