"""Annealed importance sampling (Neal 2001) with HMC transitions, and bidirectional Monte Carlo (Grosse et al.
2015, 2016), to estimate log p(x) = log int p(z) p(x|z) dz of a latent-variable model (Wu, Burda, Salakhutdinov
and Grosse 2017, "On the quantitative analysis of decoder-based generative models").

AIS anneals from the prior to the posterior along the geometric path

    f_t(z) = p(z) p(x|z)^beta_t,   0 = beta_0 < beta_1 < ... < beta_T = 1,   Z_0 = 1,   Z_T = p(x).

A chain draws z_0 ~ p(z) and for t = 1 .. T adds the log-ratio of consecutive unnormalised densities at its
current state, then moves it with a transition that leaves f_t / Z_t invariant (HMC):

    log w = sum_{t=1..T} log f_t(z_{t-1}) - log f_{t-1}(z_{t-1}) = sum_t (beta_t - beta_{t-1}) log p(x|z_{t-1})

E[w] = p(x), so log 1/S sum_s w_s over S chains is a stochastic lower bound: E[log p^] <= log p(x) (Jensen).
With T = 1 (beta goes from 0 to 1 at once) this is importance sampling from the prior, log 1/S sum_s p(x|z_s).

The schedule is Grosse et al.'s sigmoid (Wu et al. section 6.2): gamma_t = sigmoid(delta (2t/T - 1)), delta = 4,
beta_t = (gamma_t - gamma_0) / (gamma_T - gamma_0), denser near 0 and 1, where the distributions change fastest.

HMC (Neal 2011): momentum v ~ N(0, I), `leapfrog` (L = 10, as Wu et al.) steps of size eps on
H(z, v) = -log f_t(z) + |v|^2 / 2 with gradients from torch.autograd, then Metropolis: accept with probability
min(1, exp(H(z, v) - H(z', v'))), per chain. Every chain of every example is one row of a tensor [S, B, D], so a
transition is L batched gradient evaluations. eps is adapted per example (all S chains of an example share it), as
Wu et al.'s code does globally: an exponential moving average of the example's acceptance rate (weight 0.9 on
the past) above `target_accept` (0.65) multiplies eps by 1.02, else by 0.98, kept in [1e-4, 0.5].

Validity of the adaptation. AIS needs each transition to leave f_t invariant; a step size chosen from the chains'
own past acceptances makes the kernel depend on the history, which AIS's proof does not cover (Wu et al. adapt
anyway, in both directions). The effect is small and only on the forward estimate; `bdmc` removes it from the upper
bound: its reverse run has no adaptation of its own and replays, backwards, the step sizes the forward run used,
fixed before the reverse chains start, so each reverse kernel is a fixed HMC kernel that leaves its f_t invariant.

BDMC. Reverse AIS starts from an exact posterior sample z_T ~ p(z|x) and runs the schedule backwards:

    log w_rev = sum_{t=T..1} (beta_{t-1} - beta_t) log p(x|z_t),   E[w_rev] = Z_0 / Z_T = 1 / p(x),

so -log 1/S sum_s w_rev,s is a stochastic upper bound of log p(x). An exact posterior sample exists for simulated
data: z ~ p(z), x ~ p(x|z); the z that generated x is a draw of p(z|x). The gap upper - lower bounds the error of
both (Grosse et al. 2016 use it to validate the forward AIS estimate they then run on real data).

Models (`ais_metrics`, by the methods they have; nothing here compares model names):

- the prior: `sample_latent(n, generator)` and `log_prior(z)` (the VAE family), or a fitted code density (an
  autoencoder with `code_density`), or, for a model with `generate(z)` and no `sample_latent` (the GANs),
  N(0, I_latent_dim), the prior `GAN.sample` draws from;
- p(x|z): the model's own `log_px_z(z, x)` when it has one (VAEs, autoencoders with a code density): on data with
  L levels every normalised likelihood of `dgm.distributions` is a probability of the stored values, so the result
  is `log_likelihood_ais`, comparable with `likelihood_metrics`' log_likelihood (`log_density_ais` on continuous
  data). A model without one (a GAN's deterministic G(z)) gets a Gaussian observation model of scale sigma,
  chosen from a grid on the validation split by the AIS estimate itself, as Wu et al. choose theirs (their released
  code's MNIST settings are variances 0.005 - 0.03, sigma 0.07 - 0.17, on [0, 1]). On pixel data it is the
  discretized Gaussian of `dgm.distributions` (each value's bin, open edge bins), a probability of the stored pixels
  (`log_likelihood_ais_gaussian`); on continuous data the density N(x; G(z), sigma^2 I) (`log_density_ais_gaussian`).
  Either is the likelihood of "G plus noise of scale sigma", a model the GAN did not train, not of the GAN itself.
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import distributions as D
from torch import nn

from dgm.data import Dataset
from dgm.errors import DgmError
from dgm.evaluation.likelihood import CONDITIONAL_NOTE, strided_subset
from dgm.models import batch_fields, given

SCHEDULES = ("sigmoid", "linear")
STEP_MIN, STEP_MAX = 1e-4, 0.5  # Wu et al.'s bounds on the adapted step size
ADAPT_SLOWNESS = 0.9  # weight of the past in the moving average of the acceptance rate
STEP_UP, STEP_DOWN = 1.02, 0.98
SIGMA_GRID = (0.025, 0.05, 0.1, 0.2)  # Gaussian observation scales tried on the validation split
PAIRS = 2048  # (chain x example) pairs per batch in ais_metrics

LogDensity = Callable[[torch.Tensor], torch.Tensor]
LogLik = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- the schedule ---------------------------------------------------------------------------------------------
def sigmoid_schedule(steps: int, delta: float = 4.0) -> torch.Tensor:
    """beta_0 .. beta_T [T + 1] (float64): sigmoid(delta (2t/T - 1)) rescaled to [0, 1]; [0, 1] for T = 1."""
    if steps < 1:
        raise DgmError(f"AIS needs at least 1 step, got {steps}")
    if steps == 1:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    gamma = torch.sigmoid(torch.linspace(-delta, delta, steps + 1, dtype=torch.float64))
    return (gamma - gamma[0]) / (gamma[-1] - gamma[0])


def annealing_schedule(schedule: str | torch.Tensor, steps: int) -> torch.Tensor:
    """The betas [T + 1] of a named schedule (sigmoid | linear) with T = steps, or a given increasing sequence."""
    if isinstance(schedule, str):
        if schedule == "sigmoid":
            return sigmoid_schedule(steps)
        if schedule == "linear":
            if steps < 1:
                raise DgmError(f"AIS needs at least 1 step, got {steps}")
            return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
        raise DgmError(f"unknown AIS schedule '{schedule}'; choose {' or '.join(SCHEDULES)}")
    betas = torch.as_tensor(schedule, dtype=torch.float64).flatten()
    if len(betas) < 2 or betas[0] != 0 or betas[-1] != 1 or (betas[1:] < betas[:-1]).any():
        raise DgmError("an AIS schedule must rise from beta = 0 to beta = 1 without going down")
    return betas


# --- HMC on f_beta(z) = p(z) p(x|z)^beta ------------------------------------------------------------------------
@dataclass
class _State:
    """Chains z [S, B, D] with log p(z), log p(x|z) [S, B] and their gradients [S, B, D]."""

    z: torch.Tensor
    log_pz: torch.Tensor
    log_px_z: torch.Tensor
    grad_pz: torch.Tensor
    grad_px_z: torch.Tensor

    def where(self, accept: torch.Tensor, other: "_State") -> "_State":
        """Each chain's state from `other` where accept [S, B] holds, else its own."""
        a = accept[..., None]
        return _State(torch.where(a, other.z, self.z), torch.where(accept, other.log_pz, self.log_pz),
                      torch.where(accept, other.log_px_z, self.log_px_z), torch.where(a, other.grad_pz, self.grad_pz),
                      torch.where(a, other.grad_px_z, self.grad_px_z))


def _evaluate(log_prior: LogDensity, log_lik: LogLik | None, x, z: torch.Tensor) -> _State:
    """log p(z), log p(x|z) and their gradients in z at z [S, B, D] (log p(x|z) = 0 without log_lik)."""
    with torch.enable_grad():
        z_prior = z.detach().requires_grad_(True)
        log_pz = log_prior(z_prior)
        if log_lik is None:
            (grad_pz,) = torch.autograd.grad(log_pz.sum(), z_prior)
            log_px_z, grad_px_z = torch.zeros_like(log_pz), torch.zeros_like(z_prior)
        else:  # a second leaf keeps the two gradients apart in one backward pass
            z_lik = z.detach().requires_grad_(True)
            log_px_z = log_lik(z_lik, x)
            grad_pz, grad_px_z = torch.autograd.grad([log_pz.sum(), log_px_z.sum()], [z_prior, z_lik])
    return _State(z.detach(), log_pz.detach(), log_px_z.detach(), grad_pz, grad_px_z)


def _hmc_step(log_prior: LogDensity, log_lik: LogLik | None, x, state: _State, beta: float, step_size: torch.Tensor,
              leapfrog: int, generator: torch.Generator | None) -> tuple[_State, torch.Tensor]:
    """One HMC transition leaving f_beta invariant, per chain: (the new state, accepted [S, B]).

    step_size [B] is each example's eps, shared by its chains."""
    eps = step_size.to(state.z.dtype)[None, :, None]
    v0 = torch.randn(state.z.shape, generator=generator, device=state.z.device, dtype=state.z.dtype)
    v = v0 + 0.5 * eps * (state.grad_pz + beta * state.grad_px_z)
    new = state
    for i in range(leapfrog):
        new = _evaluate(log_prior, log_lik, x, new.z + eps * v)
        v = v + (eps if i < leapfrog - 1 else 0.5 * eps) * (new.grad_pz + beta * new.grad_px_z)
    h_old = -(state.log_pz + beta * state.log_px_z) + 0.5 * v0.pow(2).sum(-1)
    h_new = -(new.log_pz + beta * new.log_px_z) + 0.5 * v.pow(2).sum(-1)
    log_u = torch.rand(h_old.shape, generator=generator, device=h_old.device, dtype=h_old.dtype).log()
    accept = log_u < h_old - h_new  # NaN (a proposal off the density) is rejected
    return state.where(accept, new), accept


def _adapt(step_size: torch.Tensor, mean_accept: torch.Tensor, accept: torch.Tensor,
           target_accept: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps [B], moving-average acceptance [B]) after a transition with acceptances accept [S, B]."""
    mean_accept = ADAPT_SLOWNESS * mean_accept + (1 - ADAPT_SLOWNESS) * accept.to(mean_accept.dtype).mean(0)
    factor = torch.where(mean_accept > target_accept, STEP_UP, STEP_DOWN)
    return (step_size * factor).clamp(STEP_MIN, STEP_MAX), mean_accept


def hmc_sample(log_density: LogDensity, z: torch.Tensor, n_steps: int, step_size: float = 0.05, leapfrog: int = 10,
               target_accept: float = 0.65, adapt: bool = True,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n_steps HMC transitions of chains z [S, B, D] targeting log_density(z [S, B, D]) -> [S, B]: (the final z,
    each example's step size [B]); with adapt, eps follows the acceptance rate as in AIS (module docstring)."""
    state = _evaluate(log_density, None, None, z)
    eps = torch.full((z.shape[1],), float(step_size), device=z.device, dtype=torch.float32)
    mean_accept = torch.full_like(eps, target_accept)
    for _ in range(n_steps):
        state, accept = _hmc_step(log_density, None, None, state, 0.0, eps, leapfrog, generator)
        if adapt:
            eps, mean_accept = _adapt(eps, mean_accept, accept, target_accept)
    return state.z, eps


# --- AIS ----------------------------------------------------------------------------------------------------------
@dataclass
class Annealing:
    """One AIS run: log w [S, B] of every chain, the step sizes its T - 1 transitions used [T - 1, B] and their
    mean acceptance rate."""

    log_weights: torch.Tensor
    step_sizes: torch.Tensor
    acceptance: float

    def log_mean_weight(self) -> torch.Tensor:
        """log 1/S sum_s w_s: [B]."""
        return torch.logsumexp(self.log_weights, 0) - math.log(self.log_weights.shape[0])


def anneal(log_prior: LogDensity, log_lik: LogLik, x, z: torch.Tensor, betas: torch.Tensor, leapfrog: int = 10,
           step_size: float = 0.05, target_accept: float = 0.65, step_sizes: torch.Tensor | None = None,
           generator: torch.Generator | None = None, progress: Callable[[], None] | None = None) -> Annealing:
    """Chains z [S, B, D] through f_beta for beta = betas[0], betas[1], ... (rising: forward AIS from prior draws;
    falling: reverse AIS from posterior draws): log w = sum_t (beta_t - beta_{t-1}) log p(x|z_{t-1}), with an HMC
    transition at every beta but the first and the last (the last one cannot change w).

    step_sizes [T - 1] or [T - 1, B] fixes eps of every transition (no adaptation); else eps starts at step_size and
    is adapted per example."""
    n_trans = len(betas) - 2
    state = _evaluate(log_prior, log_lik, x, z)
    acc_dtype = torch.float32 if state.z.device.type == "mps" else torch.float64
    log_w = torch.zeros(state.log_px_z.shape, device=state.z.device, dtype=acc_dtype)
    batch = z.shape[1]
    if step_sizes is not None:
        step_sizes = torch.as_tensor(step_sizes, device=z.device, dtype=torch.float32)
        step_sizes = step_sizes[:, None].expand(-1, batch) if step_sizes.dim() == 1 else step_sizes
        if step_sizes.shape != (max(n_trans, 0), batch):
            raise DgmError(f"step_sizes must give {max(n_trans, 0)} transitions for {batch} examples, "
                           f"got shape {tuple(step_sizes.shape)}")
    eps = torch.full((batch,), float(step_size), device=z.device, dtype=torch.float32)
    mean_accept = torch.full_like(eps, target_accept)
    used, accepted = [], []
    for t in range(1, len(betas)):
        log_w += (betas[t] - betas[t - 1]).item() * state.log_px_z.to(acc_dtype)
        if t < len(betas) - 1:
            eps_t = eps if step_sizes is None else step_sizes[t - 1]
            state, accept = _hmc_step(log_prior, log_lik, x, state, betas[t].item(), eps_t, leapfrog, generator)
            used.append(eps_t)
            accepted.append(accept.float().mean())
            if step_sizes is None:
                eps, mean_accept = _adapt(eps, mean_accept, accept, target_accept)
        if progress is not None:
            progress()
    step_record = torch.stack(used) if used else torch.zeros(0, batch, device=z.device)
    acceptance = torch.stack(accepted).mean().item() if accepted else float("nan")
    return Annealing(log_w, step_record, acceptance)


def _draw_prior(sample_prior: Callable, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """sample_prior(n, generator), or sample_prior(n) for a function that takes no generator."""
    try:
        takes_generator = len(inspect.signature(sample_prior).parameters) >= 2
    except (TypeError, ValueError):
        takes_generator = True
    return sample_prior(n, generator) if takes_generator else sample_prior(n)


def ais_log_likelihood(log_prior: LogDensity, log_lik: LogLik, sample_prior: Callable, x, chains: int = 16,
                       steps: int = 1000, schedule: str | torch.Tensor = "sigmoid", leapfrog: int = 10,
                       step_size: float = 0.05, target_accept: float = 0.65, generator: torch.Generator | None = None,
                       reverse_from: torch.Tensor | None = None,
                       step_sizes: torch.Tensor | None = None) -> torch.Tensor:
    """The AIS estimate of log p(x) of every example: [B] nats.

    log_prior(z [..., D]) -> [...]; log_lik(z [S, B, D], x [B, ...]) -> [S, B]; sample_prior(n[, generator]) ->
    [n, D] (draw s of example b is row s B + b). Forward: log 1/S sum_s w_s over `chains` chains from the prior, a
    stochastic lower bound. reverse_from = exact posterior samples z [S, B, D]: reverse AIS from them,
    -log 1/S sum_s w_rev,s, a stochastic upper bound (it adapts its step size as the forward run does unless
    step_sizes fixes them; `bdmc` runs both directions with the forward run's step sizes replayed)."""
    betas = annealing_schedule(schedule, steps)
    if reverse_from is None:
        batch = len(x)
        z = _draw_prior(sample_prior, chains * batch, generator).reshape(chains, batch, -1)
        return anneal(log_prior, log_lik, x, z, betas, leapfrog, step_size, target_accept, step_sizes,
                      generator).log_mean_weight()
    run = anneal(log_prior, log_lik, x, reverse_from, betas.flip(0), leapfrog, step_size, target_accept, step_sizes,
                 generator)
    return -run.log_mean_weight()


def bdmc(log_prior: LogDensity, log_lik: LogLik, sample_prior: Callable, x, z_exact: torch.Tensor, chains: int = 16,
         steps: int = 1000, schedule: str | torch.Tensor = "sigmoid", leapfrog: int = 10, step_size: float = 0.05,
         target_accept: float = 0.65, generator: torch.Generator | None = None,
         progress: Callable[[], None] | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Bidirectional Monte Carlo on data x [B, ...] whose exact posterior samples are z_exact [S', B, D] (the z
    that generated x, repeated over chains or not): (lower [B], upper [B], the forward run's acceptance rate).

    Forward AIS from `chains` prior draws gives the lower bound; reverse AIS from z_exact, with the forward run's
    step sizes replayed backwards and no adaptation of its own, the upper bound."""
    betas = annealing_schedule(schedule, steps)
    batch = len(x)
    z = _draw_prior(sample_prior, chains * batch, generator).reshape(chains, batch, -1)
    forward = anneal(log_prior, log_lik, x, z, betas, leapfrog, step_size, target_accept, None, generator, progress)
    reverse = anneal(log_prior, log_lik, x, z_exact, betas.flip(0), leapfrog, step_size, target_accept,
                     forward.step_sizes.flip(0), generator, progress)
    return forward.log_mean_weight(), -reverse.log_mean_weight(), forward.acceptance


# --- models -------------------------------------------------------------------------------------------------------
def gaussian_log_px_z(mean: torch.Tensor, x: torch.Tensor, sigma: float, levels: int, data_dims: int) -> torch.Tensor:
    """log p(x | mean) of N(mean, sigma^2 I) summed over the last data_dims dimensions: the density on continuous data
    (levels 0), else the probability of each value's bin (open edge bins), `dgm.distributions`' discretized
    Gaussian."""
    if levels == 0:
        element = D.Normal(mean, sigma).log_prob(x)
    else:
        from dgm.distributions import GaussianLikelihood

        element = GaussianLikelihood(1, levels, False, sigma).element_log_prob(mean, x)
    return element.flatten(element.dim() - data_dims).sum(-1)


def _code_density_prior(model: nn.Module) -> tuple[Callable, LogDensity] | None:
    """(sample, log p) of an autoencoder's fitted code density (a Gaussian mixture in buffers), else None."""
    density = getattr(model, "density", None)
    if density is None or not bool(getattr(density, "fitted", False)):
        return None
    if callable(getattr(density, "log_prob", None)):
        return density.sample, density.log_prob
    mixture = D.MixtureSameFamily(D.Categorical(probs=density.weights),
                                  D.MultivariateNormal(density.means, scale_tril=density.scale_tril))
    return density.sample, mixture.log_prob


def _first_parameter(fn) -> str | None:
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    return names[0] if names else None


@dataclass
class LatentView:
    """What AIS needs of a model: its prior and p(x|z) (its own, or a Gaussian around a generator's output), on
    flattened pairs: log_px_z(z [N, D], x [N, ...], y) -> [N]; simulate(z [N, D], y, generator) -> x [N, ...]
    draws x ~ p(x|z) (None where the model gives no way to)."""

    sample_prior: Callable
    log_prior: LogDensity
    log_px_z: Callable
    simulate: Callable | None
    own: bool  # p(x|z) is the model's own observation model


def _prior(model: nn.Module, device, dtype) -> tuple[Callable, LogDensity] | None:
    """(sample(n, generator), log p(z)) of the model's latent prior, or None if it has no density to anneal from."""
    if callable(getattr(model, "sample_latent", None)) and callable(getattr(model, "log_prior", None)):
        return model.sample_latent, model.log_prior
    found = _code_density_prior(model)
    if found is not None:
        return found
    return None


def _own_simulator(model: nn.Module) -> Callable | None:
    """x ~ p(x|z) from the model's decoder and likelihood, when the decoder reads z alone (not a PixelVAE's, which
    also reads x); the conditions of a conditional model as its decode passes them."""
    hook = getattr(model, "sample_x_given_z", None)
    if callable(hook):
        return lambda z, y, generator: hook(z, **({"y": y} if y is not None else {}), generator=generator)
    decoder, likelihood = getattr(model, "decoder", None), getattr(model, "likelihood", None)
    if decoder is None or not callable(getattr(likelihood, "sample", None)):
        return None
    try:
        required = [p for p in inspect.signature(decoder.forward).parameters.values()
                    if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    except (TypeError, ValueError):
        return None
    if len(required) != 1:
        return None

    def simulate(z, y, generator):
        inputs = z
        if callable(getattr(model, "decoder_input", None)) and callable(getattr(model, "conditions", None)):
            inputs = model.decoder_input(z, model.conditions(y, z.shape[0]))
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device).item())
        devices = [z.device] if z.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the likelihoods draw from the global generator
            torch.manual_seed(seed)
            return likelihood.sample(decoder(inputs))

    return simulate


def latent_view(model: nn.Module, levels: int, data_dims: int, sigma: float | None = None) -> LatentView | None:
    """The model as AIS sees it (module docstring), or None for a model with no latent prior and decoder.

    `sigma` is the Gaussian observation scale for a model without its own p(x|z)."""
    weight = next(model.parameters(), None)
    device = weight.device if weight is not None else torch.device("cpu")
    dtype = weight.dtype if weight is not None and weight.is_floating_point() else torch.float32
    prior = _prior(model, device, dtype)
    if prior is None:
        return None
    sample_prior, log_prior = prior
    conditional = getattr(model, "conditional", False)

    def labels(y):
        return given(model, y) if conditional else {}

    if callable(getattr(model, "log_px_z", None)):
        return LatentView(sample_prior, log_prior, lambda z, x, y: model.log_px_z(z, x, **labels(y)),
                          _own_simulator(model), own=True)
    generator_net = model.generate if callable(getattr(model, "generate", None)) else getattr(model, "decode", None)
    if not callable(generator_net) or _first_parameter(generator_net) != "z":
        return None

    def mean(z, y):
        return generator_net(z, **labels(y)).to(z.dtype)

    def log_px_z(z, x, y):
        return gaussian_log_px_z(mean(z, y), x, sigma, levels, data_dims)

    def simulate(z, y, generator):
        out = mean(z, y)
        x = out + sigma * torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        return x if levels == 0 else torch.round(x.clamp(0, 1) * (levels - 1)) / (levels - 1)

    return LatentView(sample_prior, log_prior, log_px_z, simulate, own=False)


def _repeat(t: torch.Tensor | None, s: int) -> torch.Tensor | None:
    """[B, ...] -> [S B, ...], row s B + b = t[b] (the order of z [S, B, D] flattened)."""
    return None if t is None else t.repeat(s, *[1] * (t.dim() - 1))


def _flat_log_lik(view: LatentView, y) -> LogLik:
    """log_lik(z [S, B, D], x [B, ...]) -> [S, B] of the view's log p(x|z), on the S B pairs at once."""
    def log_lik(z, x):
        s, b = z.shape[:2]
        return view.log_px_z(z.reshape(s * b, -1), _repeat(x, s), _repeat(y, s)).reshape(s, b)

    return log_lik


@dataclass
class _Frozen:
    """The model in eval mode with its parameters out of autograd (HMC differentiates in z only)."""

    model: nn.Module

    def __enter__(self):
        self.flags = [p.requires_grad for p in self.model.parameters()]
        self.model.eval()
        self.model.requires_grad_(False)
        return self.model

    def __exit__(self, *exc):
        for p, flag in zip(self.model.parameters(), self.flags):
            p.requires_grad_(flag)


def _split_data(model, dataset: Dataset, split: str, n: int | None, seed: int, device, conditional: bool):
    """(x [n, ...] floats on device, labels [n] or None) of n examples spread over the split."""
    data = dataset.split(split)
    idx = strided_subset(len(data), n)
    labels = batch_fields(model, dataset, data)[0] if conditional else None
    if conditional:
        given(model, labels)  # data without labels is refused before any work
    g = torch.Generator().manual_seed(seed)  # dynamic binarization draws from it
    x = dataset.to_float(data.x[idx], generator=g).to(device)
    return x, (None if labels is None else labels[idx].to(device))


def _run_batches(view: LatentView, x, y, *, chains: int, steps: int, leapfrog: int, generator, tick, batch: int,
                 simulated: bool = False) -> tuple[torch.Tensor, list[float]]:
    """Forward AIS on x in batches: ([1, B] estimates, the batches' acceptance rates); with simulated, BDMC on as many
    examples drawn from the model (z ~ p(z), x ~ p(x|z), with the labels y): ([2, B] lower and upper bounds, ...)."""
    outs, accepts = [], []
    for start in range(0, len(x), batch):
        xb = x[start : start + batch]
        yb = None if y is None else y[start : start + batch]
        log_lik = _flat_log_lik(view, yb)
        if simulated:
            z_true = _draw_prior(view.sample_prior, len(xb), generator)
            xs = view.simulate(z_true, yb, generator).to(xb.dtype)
            exact = z_true[None].expand(chains, -1, -1)  # the z that drew x: a draw of p(z|x) for every chain
            lower, upper, acc = bdmc(view.log_prior, log_lik, view.sample_prior, xs, exact, chains, steps,
                                     leapfrog=leapfrog, generator=generator, progress=tick)
            outs.append(torch.stack([lower, upper]))
        else:
            z = _draw_prior(view.sample_prior, chains * len(xb), generator).reshape(chains, len(xb), -1)
            run = anneal(view.log_prior, log_lik, xb, z, sigmoid_schedule(steps), leapfrog, generator=generator,
                         progress=tick)
            outs.append(run.log_mean_weight()[None])
            acc = run.acceptance
        accepts.append(acc)
    return torch.cat(outs, dim=1), accepts


def ais_metrics(model: nn.Module, dataset: Dataset, split: str = "test", chains: int = 16, steps: int = 1000,
                n_examples: int | None = 100, bdmc: bool = False, seed: int = 0, progress: bool = True,
                leapfrog: int = 10, sigma: float | None = None,
                sigmas: tuple[float, ...] = SIGMA_GRID) -> dict[str, float | int | str]:
    """AIS estimates of the mean log p(x) over n_examples of `split` (module docstring); {} for a model with no
    latent prior and decoder.

    Keys: `log_likelihood_ais` (and `bits_per_dim_ais`) for a model whose own p(x|z) is a probability of the data
    as stored, `log_density_ais` on continuous data; `log_likelihood_ais_gaussian` / `log_density_ais_gaussian`
    with `ais_sigma` for a generator under a Gaussian observation model (sigma chosen on the validation split from
    `sigmas` by the same AIS estimate, unless given; `ais_sigma_valid` is that estimate at the chosen sigma); a
    `conditional_` prefix for a conditional model (given each image's label); `ais_chains`, `ais_steps`,
    `ais_leapfrog`, `ais_examples`, `ais_acceptance` (of the forward HMC moves), `ais_seconds`; `ais_note` says
    what a number is of where that needs saying. The model is put in eval mode.
    With bdmc: `bdmc_lower`, `bdmc_upper` (means over as many examples simulated from the model) and `bdmc_gap`,
    their difference in nats (`bdmc_note` instead for a model that cannot draw x ~ p(x|z))."""
    if chains < 1 or steps < 1:
        raise DgmError(f"AIS needs at least 1 chain and 1 step, got chains={chains}, steps={steps}")
    levels = dataset.model_levels
    data_dims = len(dataset.shape)
    probe = latent_view(model, levels, data_dims, sigma=1.0)
    if probe is None:
        return {}
    conditional = getattr(model, "conditional", False)
    prefix = "conditional_" if conditional else ""
    if probe.own:
        model_levels = getattr(getattr(model, "cfg", None), "levels", levels)
        if model_levels != levels:
            raise DgmError(f"the model was trained on data with {model_levels} levels per pixel but '{dataset.name}' "
                           f"has {levels}, so its likelihood is not a probability of these pixels")
        improper = getattr(getattr(model, "likelihood", None), "improper", None)
        if improper:
            return {"ais_note": f"no AIS log-likelihood: {improper}. Train with a normalised likelihood "
                                "(likelihood=auto) for one"}
    weight = next(model.parameters(), None)
    device = weight.device if weight is not None else torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(seed)
    batch = max(1, PAIRS // chains)
    started = time.perf_counter()
    from tqdm.auto import tqdm

    with _Frozen(model):
        x, y = _split_data(model, dataset, split, n_examples, seed, device, conditional)
        runs = 0 if probe.own or sigma is not None else len(sigmas)
        n_valid = min(len(x), len(dataset.valid)) if runs else 0
        total = steps * (math.ceil(len(x) / batch) * (1 + (2 if bdmc else 0)) + runs * math.ceil(n_valid / batch))
        with tqdm(total=total, disable=not progress, desc=f"{split} AIS", unit="step", mininterval=1.0) as bar:
            out: dict[str, float | int | str] = {}
            if not probe.own:
                if sigma is None:
                    xv, yv = _split_data(model, dataset, "valid", n_valid, seed, device, conditional)
                    scores = [_run_batches(latent_view(model, levels, data_dims, s), xv, yv, chains=chains,
                                           steps=steps, leapfrog=leapfrog, generator=generator, tick=bar.update,
                                           batch=batch)[0].mean().item() for s in sigmas]
                    sigma = sigmas[max(range(len(sigmas)), key=lambda i: scores[i])]
                    out["ais_sigma_valid"] = max(scores)
                view = latent_view(model, levels, data_dims, sigma)
            else:
                view = probe
            estimates, accepts = _run_batches(view, x, y, chains=chains, steps=steps, leapfrog=leapfrog,
                                              generator=generator, tick=bar.update, batch=batch)
            value = estimates.mean().item()
            name = ("log_likelihood_ais" if levels else "log_density_ais") + ("" if view.own else "_gaussian")
            out[prefix + name] = value
            if view.own and levels:
                out[prefix + "bits_per_dim_ais"] = -value / (math.prod(dataset.shape) * math.log(2))
            if not view.own:
                out["ais_sigma"] = float(sigma)
            if bdmc:
                if view.simulate is None:
                    out["bdmc_note"] = (f"no BDMC: {type(model).__name__} has no way to draw x ~ p(x|z) "
                                        "(a decoder of z alone with a likelihood that samples)")
                else:
                    bounds, _ = _run_batches(view, x, y, chains=chains, steps=steps, leapfrog=leapfrog,
                                             generator=generator, tick=bar.update, batch=batch, simulated=True)
                    lower, upper = bounds[0], bounds[1]
                    out.update(bdmc_lower=lower.mean().item(), bdmc_upper=upper.mean().item(),
                               bdmc_gap=(upper - lower).mean().item())
    notes = []
    if not view.own:
        chosen = "given" if "ais_sigma_valid" not in out else (
            "chosen on the validation split" + (", at the edge of the grid tried" if sigma in (min(sigmas), max(sigmas))
                                                else ""))
        notes.append(f"{prefix + name} is of the generator plus Gaussian noise of scale sigma={sigma:g} ({chosen}), "
                     "a model the generator was not trained as; "
                     + ("a probability of the stored pixel values" if levels else "a density"))
    if conditional:
        notes.append(CONDITIONAL_NOTE)
    if bdmc and "bdmc_gap" in out:
        notes.append("the bdmc bounds are of data simulated from the model, not of the split")
    if notes:
        out["ais_note"] = "; ".join(notes)
    out.update(ais_chains=chains, ais_steps=steps, ais_leapfrog=leapfrog, ais_examples=len(x),
               ais_acceptance=float(sum(accepts) / len(accepts)), ais_seconds=time.perf_counter() - started)
    return out
