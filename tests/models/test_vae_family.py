"""Seed 004's VAE family inside the VAE: every prior with every posterior flow, the hierarchical VAE, and the
gradient estimators (score function against reparameterization)."""
import math

import pytest
import torch
from torch import distributions as D

import dgm
from dgm.errors import DgmError
from dgm.models import create_model

PRIORS = ("standard", "mog", "vampprior", "flow")
FLOWS = ("none", "planar", "householder", "iaf")
SMALL = {"data_shape": (1, 4, 4), "levels": 2, "latent_dim": 3, "hidden_dims": (12,), "n_pseudo": 4,
         "flow_hidden": 12, "flow_context": 6, "flow_length": 2}


def _binary(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.35), generator=g).double()


def _model(name="vae", **options):
    torch.manual_seed(3)
    model = create_model(name, {**SMALL, **options}).double()
    if model.fit_before_training is not None:
        model.fit_before_training(_binary(8, seed=5))
    return model


@pytest.mark.parametrize("name,prior,flow", [("vae", p, f) for p in PRIORS for f in FLOWS] +
                         [("hvae", p, "none") for p in PRIORS])
def test_elbo_below_iwae_k_below_iwae_larger_k(name, prior, flow):
    """ELBO <= IWAE_5 <= IWAE_100 in expectation, for every prior and posterior flow: the bounds need only
    log p(z) and log q(z|x) = log q(z_0|x) - sum log|det|, so every combination keeps the chain."""
    model = _model(name, prior=prior, flow=flow)
    x = _binary()
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([model.elbo(x) for _ in range(400)])
        iwae5 = torch.stack([model.iwae(x, 5) for _ in range(200)])
        iwae100 = torch.stack([model.iwae(x, 100) for _ in range(40)])
    means = [b.mean().item() for b in (elbo, iwae5, iwae100)]
    ses = [b.mean(1).std().item() / math.sqrt(b.shape[0]) for b in (elbo, iwae5, iwae100)]
    assert means[0] < means[1] + 3 * math.hypot(ses[0], ses[1]), (means, ses)
    assert means[1] < means[2] + 3 * math.hypot(ses[1], ses[2]), (means, ses)
    assert all(math.isfinite(m) and m < 0 for m in means)  # log-probabilities of binary pixels


@pytest.mark.parametrize("flow", FLOWS[1:])
def test_monte_carlo_kl_uses_the_flow_density(flow):
    """With a flow the ELBO's KL is E_q[log q(z_K|x) - log p(z_K)] with log q(z_K|x) = log q(z_0|x) - log det:
    the same value computed here from the flow and the prior directly, with the same noise."""
    model = _model(flow=flow)
    x = _binary()
    with torch.no_grad():
        torch.manual_seed(1)
        log_px_z, kl = model.elbo_terms(x, n_samples=7)
        torch.manual_seed(1)
        q, h = model.encoded(x)
        z0 = q.rsample((7,))
        zk, log_det = model.flow(z0, h)
        expected = (q.log_prob(z0).sum(-1) - log_det - D.Normal(0.0, 1.0).log_prob(zk).sum(-1)).mean(0)
        assert torch.allclose(kl, expected, atol=1e-10)
        assert torch.allclose(log_px_z, model.log_px_z(zk, x).mean(0), atol=1e-10)


def test_standard_prior_without_flow_keeps_the_closed_form_kl():
    """The plain VAE is unchanged: its KL is 1/2 (mu^2 + sigma^2 - 1 - log sigma^2), and the MC estimate
    that the other priors use agrees with it in expectation."""
    model = _model()
    mog = _model(prior="mog")
    assert model.closed_form_kl and not mog.closed_form_kl and not _model(flow="planar").closed_form_kl
    x = _binary()
    with torch.no_grad():
        _, kl = model.elbo_terms(x)
        q = model.posterior(x)
        z = q.sample((200_000,))
        mc = (q.log_prob(z) - D.Normal(0.0, 1.0).log_prob(z)).sum(-1).mean(0)
    assert torch.allclose(kl, mc, atol=0.02)


def test_hierarchical_vae_log_joint_is_the_sum_of_its_factors():
    """log w = log p(x|z1,z2) + log p(z1|z2) + log p(z2) - log q(z1|x,z2) - log q(z2|x), computed factor by
    factor with the same noise."""
    model = _model("hvae", prior="mog")
    x = _binary()
    with torch.no_grad():
        torch.manual_seed(2)
        w = model.log_weights(x, 5)
        torch.manual_seed(2)
        q2 = model.posterior(x)
        z2 = q2.rsample((5,))
        q1 = model.posterior1(x, z2)
        z1 = q1.rsample()
        p1 = D.Normal(*[t for t in model.prior1(z2).chunk(2, -1)])
        p1 = D.Normal(p1.loc, torch.exp(0.5 * p1.scale))  # [mu, log sigma^2]
        expected = (model.log_px_z(torch.cat([z1, z2], -1), x) + p1.log_prob(z1).sum(-1)
                    + model.prior.log_prob(z2) - q1.log_prob(z1).sum(-1) - q2.log_prob(z2).sum(-1))
        assert torch.allclose(w, expected, atol=1e-10)
        # one example at a time: q(z1|x,z2) reads the x of its own example
        torch.manual_seed(2)
        z = model.draw(x, 5)[0]
        one = model.posterior1(x[2:3], z[:, 2:3, 3:]).loc
        assert torch.allclose(model.posterior1(x, z[..., 3:]).loc[:, 2:3], one, atol=1e-12)
        assert model.encode(x).shape == (6, 6) and model.sample_latent(4).shape == (4, 6)


def test_hvae_refuses_a_flow():
    with pytest.raises(DgmError, match="flow=none"):
        create_model("hvae", {**SMALL, "flow": "iaf"})


def _linear_gaussian_vae(estimator, n_samples):
    """VAE with p(x|z) = N(Wz + b, 0.5^2 I) on continuous data and a standard prior: E_q[log p(x|z)] and the
    KL have closed forms, so grad ELBO with respect to the encoder is known exactly."""
    torch.manual_seed(0)
    return create_model("vae", {"data_shape": (1, 1, 3), "levels": 0, "latent_dim": 2, "hidden_dims": (),
                                "likelihood": "gaussian", "scale": 0.5, "estimator": estimator,
                                "n_samples": n_samples}).double()


def _exact_elbo(model, x):
    """E_q ||x - Wz - b||^2 = ||x - W mu - b||^2 + sum_j ||W_j||^2 sigma_j^2: the ELBO in closed form."""
    q = model.posterior(x)
    dec = model.decoder[0][0]
    mean = q.loc @ dec.weight.T + dec.bias
    sq = (x.flatten(1) - mean).pow(2).sum(-1) + (q.scale.pow(2) @ dec.weight.pow(2).sum(0))
    d = x[0].numel()
    log_px_z = -0.5 * sq / 0.25 - d * math.log(0.5 * math.sqrt(2 * math.pi))
    var = q.scale.pow(2)
    return log_px_z - 0.5 * (q.loc.pow(2) + var - 1 - var.log()).sum(-1)


@pytest.mark.parametrize("estimator", ["reparameterization", "score_function", "score_function_baseline"])
def test_every_estimator_is_unbiased_for_the_encoder_gradient(estimator):
    """The loss's gradient with respect to the encoder, averaged over many draws, equals the exact gradient of
    the closed-form ELBO (within 4 standard errors), for each estimator."""
    model = _linear_gaussian_vae(estimator, n_samples=4000)
    x = torch.tensor([[[[0.3, -1.2, 2.0]]], [[[1.5, 0.2, -0.4]]]], dtype=torch.float64)
    enc = model.encoder[1][0]
    exact = torch.autograd.grad(-_exact_elbo(model, x).mean(), enc.weight)[0]
    draws = []
    torch.manual_seed(1)
    for _ in range(25):
        draws.append(torch.autograd.grad(model.loss((x, None))["loss"], enc.weight)[0])
    draws = torch.stack(draws)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert torch.all((mean - exact).abs() < 4 * se + 1e-3), (mean, exact, se)


def test_score_function_loss_reads_minus_the_elbo_and_the_baseline_lowers_variance():
    x = torch.tensor([[[[0.3, -1.2, 2.0]]]], dtype=torch.float64)
    spread = {}
    for estimator in ("reparameterization", "score_function", "score_function_baseline"):
        model = _linear_gaussian_vae(estimator, n_samples=8)
        enc = model.encoder[1][0]
        torch.manual_seed(4)
        out = [model.loss((x, None)) for _ in range(300)]
        values = torch.stack([o["loss"] for o in out]).detach()
        se = values.std().item() / math.sqrt(len(values))
        assert abs(values.mean().item() + _exact_elbo(model, x).item()) < 4 * se  # -ELBO, not a surrogate
        grads = torch.stack([torch.autograd.grad(o["loss"], enc.weight)[0] for o in out])
        spread[estimator] = grads.var(0).sum().item()
    assert spread["reparameterization"] < spread["score_function_baseline"] < spread["score_function"], spread


def test_estimator_options_are_checked():
    with pytest.raises(DgmError, match="n_samples=2 or more"):
        create_model("vae", {**SMALL, "estimator": "score_function_baseline"})
    with pytest.raises(DgmError, match="objective=elbo"):
        create_model("vae", {**SMALL, "estimator": "score_function", "objective": "iwae"})
    with pytest.raises(DgmError, match="pseudo-inputs have no labels"):
        create_model("cvae", {**SMALL, "num_classes": 3, "prior": "vampprior"})


def test_vampprior_starts_from_training_images_and_resumes_bitwise(tmp_path):
    """dgm.train calls the prior's initialise on a new run only: the pseudo-inputs are training images at
    step 0, and a resumed run ends bitwise equal to an uninterrupted one."""
    from dgm.io import load_tensors

    opts = dict(data="digits", quiet=True, hidden_dims=(16,), latent_dim=3, prior="vampprior", n_pseudo=6,
                flow="iaf", flow_hidden=8, flow_context=4, batch_size=64)
    full = dgm.train("vae", out=tmp_path / "full", steps=1, lr=1e-12, **opts)  # weights as initialised, to 1e-11
    u = load_tensors(full.path / "model.safetensors")[0]["prior.raw_pseudo_inputs"]
    from dgm.data import load_dataset

    train = load_dataset("digits").train.x.double() / 16
    pseudo = torch.nn.functional.hardtanh(u.double(), 0.0, 1.0).flatten(1)
    distances = torch.cdist(pseudo, train.flatten(1))
    assert torch.all(distances.min(1).values < 8 * 1e-3)  # every pseudo-input is a training image (to the margin)
    a = dgm.train("vae", out=tmp_path / "a", steps=6, **opts)
    b = dgm.train("vae", out=tmp_path / "b", steps=3, **opts)
    dgm.resume(b, steps=6, quiet=True)
    wa, wb = (load_tensors(r.path / "model.safetensors")[0] for r in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("name,options", [("vae", {"prior": "flow", "flow": "householder"}),
                                          ("hvae", {"prior": "vampprior"}),
                                          ("vae", {"estimator": "score_function_baseline", "n_samples": 3})])
def test_trains_and_evaluates_from_the_api(tmp_path, name, options):
    run = dgm.train(name, data="digits", out=tmp_path / "run", steps=4, quiet=True, hidden_dims=(16,),
                    latent_dim=3, n_pseudo=5, flow_hidden=8, flow_context=4, **options)
    scores = dgm.evaluate(run, metrics=["likelihood"], k=20)
    assert scores["elbo"] <= 0 and scores["log_likelihood"] <= 0
    assert dgm.sample(run, n=4).shape == (4, 1, 8, 8)
