"""The autoencoders of seed 002: plain, denoising, sparse, contractive and stacked.

An encoder f maps an image x to a code h = f(x) and a decoder g maps a code to the parameters of
the likelihood p(x | g(h)) of `dgm.distributions`, chosen as the VAE chooses it (`likelihood=auto`:
a Bernoulli, whose -log p is the binary cross-entropy, on binary data; categorical or discretized
logistic on grey levels; or as named). Each model minimises, averaged over the batch,

    ae       -log p(x | g(f(x)))
    dae      -log p(x | g(f(x~))),   x~ ~ C(x~ | x) a corruption of x (Vincent et al. 2008), s = noise_level:
               gaussian     x~ = x + s eps, eps ~ N(0, I)
               masking      x~_i = 0 with probability s, else x_i
               salt_pepper  x~_i = 0 or 1 (equally likely) with probability s, else x_i
    sae      -log p(x | g(h)) + beta sum_j KL(rho || rho^_j),   h = sigmoid codes, rho^_j = mean over the batch of h_j,
               KL(rho || rho^) = rho log(rho / rho^) + (1 - rho) log((1 - rho) / (1 - rho^));
             with sparsity=l1: -log p(x | g(h)) + beta sum_j |h_j|
    cae      -log p(x | g(h)) + lambda ||J_f(x)||_F^2,   h = sigmoid codes, J_f = dh/dx (Rifai et al. 2011);
               for a one-layer encoder h = sigmoid(Wx + b) in closed form,
               ||J_f(x)||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2,
               for a deeper one the exact Jacobian (torch.func: vmap of jacrev)
    stacked  the ae loss, after greedy layer-wise pretraining: layer l's encoder and decoder layers are
             trained first as an autoencoder of the codes h_l-1 of the (frozen) layers below, h_0 = x, with
             -log p(x | .) for l = 0 and the squared error ||h_l-1 - h^_l-1||^2 above (Bengio et al. 2007;
             Hinton & Salakhutdinov 2006 pretrained with RBMs)

An autoencoder has no prior over its codes, so it cannot sample. With `code_density=gaussian|gmm` a
density p(h) is fitted to the training codes once training ends (ex-post density estimation, Ghosh
et al. 2020) and samples are g(h), h ~ p(h); the density lives in buffers, saved with the weights.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from dgm.config import choice, number
from dgm.errors import DgmError
from dgm.models import ModelConfig, register_model
from dgm.models.vae import CodecConfig, MLPCodecConfig, codec_likelihood, codec_networks
from dgm.nn import GatedLinear, activation

REG_COVAR = 1e-6  # added to the code density's covariance diagonals, as scikit-learn's reg_covar does
BATCH = 1000  # images per encoder call when encoding a whole split


@dataclass
class CodeDensityConfig(ModelConfig):
    code_density: str = choice("none", "none", "gaussian", "gmm")  # fitted to the training codes after training,
    # so the model can sample (Ghosh et al. 2020); none: the model cannot sample
    code_components: int = number(10, min=1)  # gmm: mixture components, full covariances


@dataclass
class AEConfig(CodeDensityConfig, CodecConfig):
    """An MLP or convolutional encoder and decoder (as the VAE's), and an optional code density."""


@dataclass
class DAEConfig(AEConfig):
    noise: str = choice("masking", "gaussian", "masking", "salt_pepper")
    noise_level: float = number(0.25, min=0, max=1)  # gaussian: the noise's sd; masking, salt_pepper: the
    # probability that a pixel is corrupted


@dataclass
class SAEConfig(AEConfig):
    sparsity: str = choice("kl", "kl", "l1")
    sparsity_target: float = number(0.05, above=0, below=1)  # rho, the wanted mean activation of each code unit
    sparsity_weight: float = number(1.0, min=0)  # beta


@dataclass
class CAEConfig(AEConfig):
    hidden_dims: tuple[int, ...] = ()  # Rifai et al.'s one-layer sigmoid encoder (closed-form penalty)
    contraction_weight: float = number(0.1, min=0)  # lambda


@dataclass
class StackedConfig(CodeDensityConfig, MLPCodecConfig):
    hidden_dims: tuple[int, ...] = (1000, 500, 250)  # Hinton & Salakhutdinov's 784-1000-500-250-30 on MNIST
    latent_dim: int = 30
    pretrain_epochs: int = number(10, min=0)  # greedy pretraining epochs per layer, before fine-tuning the stack


class CodeDensity(nn.Module):
    """p(h) = sum_k pi_k N(h | mu_k, L_k L_k^T) over codes (one component for `gaussian`), held in buffers
    and fitted once, after training."""

    def __init__(self, kind: str, components: int, dim: int):
        super().__init__()
        self.kind = kind
        k = 1 if kind == "gaussian" else components
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.register_buffer("means", torch.zeros(k, dim))
        self.register_buffer("scale_tril", torch.eye(dim).repeat(k, 1, 1))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, codes: torch.Tensor) -> None:
        """gaussian: the maximum-likelihood Gaussian (the codes' mean and covariance with 1/N); gmm:
        scikit-learn's GaussianMixture (EM from a fixed seed, full covariances). Both add REG_COVAR to the
        covariance's diagonal, so a code unit that never varies still has a density."""
        c = codes.detach().double().cpu()
        k = len(self.weights)
        if self.kind == "gaussian":
            mean = c.mean(0)
            centred = c - mean
            weights, means = torch.ones(1, dtype=torch.float64), mean[None]
            covs = (centred.T @ centred / len(c) + REG_COVAR * torch.eye(c.shape[1], dtype=torch.float64))[None]
        else:
            if len(c) < k:
                raise DgmError(f"a mixture of code_components={k} needs at least {k} training images, "
                               f"there are {len(c)}")
            from sklearn.mixture import GaussianMixture

            gmm = GaussianMixture(k, covariance_type="full", reg_covar=REG_COVAR, random_state=0).fit(c.numpy())
            weights, means, covs = (torch.from_numpy(a) for a in (gmm.weights_, gmm.means_, gmm.covariances_))
        self.weights.copy_(weights)
        self.means.copy_(means)
        self.scale_tril.copy_(torch.linalg.cholesky(covs))
        self.fitted.fill_(True)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes: a component k ~ pi, then h = mu_k + L_k eps, eps ~ N(0, I): [n, D]."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], 1, generator=generator, device=self.means.device)
        return self.means[k] + (self.scale_tril[k] @ eps)[..., 0]


@register_model("ae", AEConfig, family="autoencoder", seeds=("002",),
                description="Deterministic autoencoder, MLP or conv; samples only with code_density=gaussian|gmm")
class Autoencoder(nn.Module):
    """The deterministic autoencoder; the variants change `corrupt`, `activate` or `penalty` (and the
    stacked one its networks and training schedule)."""

    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.cfg = cfg
        self.likelihood = codec_likelihood(cfg)
        self.encoder, self.decoder = self.networks(self.likelihood.out_channels)
        self.density = (CodeDensity(cfg.code_density, cfg.code_components, cfg.latent_dim)
                        if cfg.code_density != "none" else None)

    def networks(self, out_channels: int) -> tuple[nn.Module, nn.Module]:
        """(encoder x -> pre-activation codes [*, latent_dim], decoder codes -> the likelihood's maps)."""
        return codec_networks(self.cfg, self.cfg.latent_dim, out_channels)

    # --- what the variants change -------------------------------------------------------
    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input in training: x itself, but for the denoising autoencoder."""
        return x

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The code units' activation: linear, but sigmoid for the sparse and contractive autoencoders."""
        return pre

    def penalty(self, x: torch.Tensor, h: torch.Tensor) -> tuple[str, torch.Tensor, float] | None:
        """(name, value, weight) of a regulariser added to the loss as weight * value, for input x and codes h."""
        return None

    # --- capabilities ------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """h = f(x): [*, latent_dim]."""
        return self.activate(self.encoder(x).to(x.dtype))  # the data's precision also under bf16 autocast

    def log_px_z(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | g(z)) for codes z [B, D] and images x [B, C, H, W]: [B] nats."""
        return self.likelihood.log_prob(self.decoder(z).to(x.dtype), x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean image of p(x | g(z)), in [0, 1]."""
        return self.likelihood.mean(self.decoder(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @property
    def sample(self) -> Callable[..., torch.Tensor] | None:
        """`draw` once a code density has been fitted, else None: without a prior over its codes an
        autoencoder cannot sample (`missing_reason` says so), and every capability check sees that."""
        return self.draw if self.density is not None and bool(self.density.fitted) else None

    def draw(self, n: int, y=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images of p(x | g(h)) for codes h drawn from the fitted code density."""
        return self.decode(self.density.sample(n, generator))

    def missing_reason(self, capability: str) -> str | None:
        """Why this model lacks `capability`, in one sentence; None when it has it or the reason is generic."""
        if capability != "sample" or self.sample is not None:
            return None
        if self.density is None:
            return (f"an autoencoder has no prior over its codes, so this {self.cfg.name} cannot sample; retrain "
                    "it with code_density=gmm (a density fitted to its training codes) or train a vae")
        return (f"this {self.cfg.name}'s code density is fitted when its training ends, and its training has not "
                "ended; finish it with `dgm resume RUN`")

    @property
    def fit_after_training(self) -> Callable[[torch.Tensor], None] | None:
        """`fit_code_density` when the config asks for a code density, else None (nothing to fit)."""
        return self.fit_code_density if self.density is not None else None

    @torch.no_grad()
    def fit_code_density(self, train_x: torch.Tensor) -> None:
        """Fit the code density to the codes of the training images train_x [N, C, H, W]."""
        self.eval()
        self.density.fit(torch.cat([self.encode(x) for x in train_x.split(BATCH)]))

    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """Reconstruction loss -log p(x | g(f(corrupt(x)))) plus the variant's penalty, averaged over the batch;
        the terms are reported unweighted, the reconstruction under the likelihood's loss name (nll, bce)."""
        x = batch[0]
        h = self.encode(self.corrupt(x))
        recon = -self.log_px_z(h, x).mean()
        out = {self.likelihood.loss_name: recon.detach()}
        loss = recon
        extra = self.penalty(x, h)
        if extra is not None:
            name, value, weight = extra
            loss = loss + weight * value
            out[name] = value.detach()
        return {"loss": loss, **out}


@register_model("dae", DAEConfig, family="autoencoder", seeds=("002",),
                description="Denoising autoencoder: reconstructs x from a corrupted x (gaussian, masking, salt_pepper)")
class DenoisingAE(Autoencoder):
    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """x~ ~ C(x~ | x) with the global generator (seeded per step by the trainer); see the module docstring."""
        s = self.cfg.noise_level
        if self.cfg.noise == "gaussian":
            return x + s * torch.randn_like(x)
        hit = torch.rand_like(x) < s
        if self.cfg.noise == "masking":
            return x.masked_fill(hit, 0.0)
        return torch.where(hit, (torch.rand_like(x) < 0.5).to(x.dtype), x)


def bernoulli_kl(rho: float, rho_hat: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(rho) || Bernoulli(rho^)) elementwise, rho^ kept inside (0, 1) so its logs stay finite."""
    rho_hat = rho_hat.clamp(1e-6, 1 - 1e-6)
    return rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))


@register_model("sae", SAEConfig, family="autoencoder", seeds=("002",),
                description="Sparse autoencoder: sigmoid codes, KL(rho || mean activation) or L1 sparsity")
class SparseAE(Autoencoder):
    ACTIVE = 0.5  # a sigmoid unit is "on" for an image when its activation exceeds this (pre-activation > 0)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(pre)

    def sparsity(self, h: torch.Tensor) -> torch.Tensor:
        """sum_j KL(rho || rho^_j) with rho^_j the batch's mean activation of unit j, or mean_x sum_j |h_j| (l1)."""
        if self.cfg.sparsity == "kl":
            return bernoulli_kl(self.cfg.sparsity_target, h.mean(0)).sum()
        return h.abs().sum(-1).mean()

    def penalty(self, x, h):
        return "sparsity", self.sparsity(h), self.cfg.sparsity_weight

    def code_statistics(self, codes: torch.Tensor) -> dict[str, float]:
        """`mean_activation` over images and units (the KL drives each unit's towards rho) and
        `active_fraction`, the fraction of (image, unit) pairs whose activation exceeds ACTIVE: how many
        units an image switches on, which a mean of rho reached by every unit idling at rho would not show."""
        return {"mean_activation": codes.mean().item(), "active_fraction": (codes > self.ACTIVE).float().mean().item()}


@register_model("cae", CAEConfig, family="autoencoder", seeds=("002",),
                description="Contractive autoencoder: sigmoid codes, lambda ||J_f(x)||_F^2 (closed form or torch.func)")
class ContractiveAE(Autoencoder):
    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(pre)

    @property
    def one_layer(self) -> bool:
        """Whether the encoder is h = sigmoid(Wx + b), where the penalty has its closed form."""
        return self.cfg.architecture == "mlp" and not self.cfg.hidden_dims

    def contraction_closed_form(self, h: torch.Tensor) -> torch.Tensor:
        """||J_f(x)||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2 of a one-layer sigmoid encoder, from its codes: [B]."""
        w = self.encoder[1][0].weight  # Flatten, then the MLP's only Linear
        return (h * (1 - h)).pow(2) @ w.pow(2).sum(1)

    def contraction_exact(self, x: torch.Tensor) -> torch.Tensor:
        """||J_f(x)||_F^2 from the exact Jacobian of every example, differentiable in the weights: [B]."""
        jacobians = torch.func.vmap(torch.func.jacrev(self.encode))(x)  # [B, D, C, H, W]
        return jacobians.pow(2).flatten(1).sum(1)

    def penalty(self, x, h):
        value = self.contraction_closed_form(h) if self.one_layer else self.contraction_exact(x)
        return "contraction", value.mean(), self.cfg.contraction_weight


def _dense(a: int, b: int, act: str | None) -> nn.Module:
    """a -> b, then the activation (None: linear; gated: a GatedLinear, as MLP's hidden layers are)."""
    if act is None:
        return nn.Linear(a, b)
    return GatedLinear(a, b) if act == "gated" else nn.Sequential(nn.Linear(a, b), activation(act))


@register_model("stacked", StackedConfig, family="autoencoder", seeds=("002",),
                description="Deep MLP autoencoder (784-1000-500-250-30): greedy layer-wise pretraining, fine-tuning")
class StackedAE(Autoencoder):
    """encoder = [layer 0, ..., layer L-1], decoder = [layer L-1, ..., layer 0]: encoder layer l and decoder
    layer l make the autoencoder of the codes h_l (h_0 = x) that pretraining step l trains.

    The trainer tells the model the length of an epoch and of the run (`plan_training`); from the step
    counter alone, steps [l P E, (l + 1) P E) pretrain layer l (P = pretrain_epochs, E steps per epoch)
    and the rest fine-tune the stack, each phase with an optimizer of its own, so checkpoints, resume
    and time limits work as for any model. Validation scores the whole stack throughout, so the best
    weights are the fine-tuned ones; early stopping's patience should outlast the pretraining."""

    def __init__(self, cfg: StackedConfig):
        super().__init__(cfg)
        self.n_layers = len(self.encoder)
        self.steps_per_phase: int | None = None  # set by plan_training

    def networks(self, out_channels: int) -> tuple[nn.Module, nn.Module]:
        c, h, w = self.cfg.data_shape
        dims = [c * h * w, *self.cfg.hidden_dims, self.cfg.latent_dim]
        top = len(dims) - 2
        act = self.cfg.activation
        encoder = [_dense(a, b, None if i == top else act) for i, (a, b) in enumerate(zip(dims, dims[1:]))]
        decoder = [_dense(b, a, act) for a, b in zip(dims[1:], dims[2:])]
        encoder[0] = nn.Sequential(nn.Flatten(-3), encoder[0])
        decoder.insert(0, nn.Sequential(nn.Linear(dims[1], out_channels * h * w),
                                        nn.Unflatten(-1, (out_channels, h, w))))
        return nn.Sequential(*encoder), nn.Sequential(*decoder[::-1])

    def layer(self, l: int) -> tuple[nn.Module, nn.Module]:
        """(encoder layer l: h_l -> h_l+1, decoder layer l: h_l+1 -> h_l)."""
        return self.encoder[l], self.decoder[self.n_layers - 1 - l]

    def plan_training(self, steps_per_epoch: int, total_steps: int) -> None:
        self.steps_per_phase = self.cfg.pretrain_epochs * steps_per_epoch
        pretraining = self.n_layers * self.steps_per_phase
        if total_steps <= pretraining:
            raise DgmError(f"stacked pretrains {self.n_layers} layers for pretrain_epochs={self.cfg.pretrain_epochs} "
                           f"epochs each ({pretraining} steps), so {total_steps} steps would never fine-tune the "
                           "stack; train for more epochs or lower pretrain_epochs")

    def pretraining_layer(self, step: int) -> int | None:
        """The layer that step pretrains, None once the stack is fine-tuned."""
        if self.steps_per_phase is None:
            raise RuntimeError("plan_training() must be called before training (the Trainer does)")
        if self.steps_per_phase == 0:
            return None
        layer = step // self.steps_per_phase
        return layer if layer < self.n_layers else None

    def pretrain_loss(self, x: torch.Tensor, layer: int) -> dict[str, torch.Tensor]:
        """The reconstruction loss of layer `layer`'s autoencoder on the codes of the frozen layers below."""
        enc, dec = self.layer(layer)
        with torch.no_grad():
            below = self.encoder[:layer](x)
        out = dec(enc(below)).to(x.dtype)
        err = -self.likelihood.log_prob(out, x) if layer == 0 else (out - below).pow(2).sum(-1)
        return {"loss": err.mean(), "pretrain_layer": torch.tensor(float(layer), device=x.device)}

    def optimizers(self, train_cfg) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per pretrained layer (its encoder and decoder layer) and one for the whole stack, each
        fresh when its phase starts: Adam's moments of one phase would mislead the next."""
        from dgm.training.trainer import make_optimizer

        layers = range(self.n_layers) if self.cfg.pretrain_epochs > 0 else range(0)
        opts = {f"layer{l}": make_optimizer(itertools.chain(*(m.parameters() for m in self.layer(l))), train_cfg)
                for l in layers}
        return {**opts, "stack": make_optimizer(self.parameters(), train_cfg)}

    def train_step(self, batch, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, torch.Tensor]:
        layer = self.pretraining_layer(step)
        out = self.loss(batch, step) if layer is None else self.pretrain_loss(batch[0], layer)
        opt = optimizers["stack" if layer is None else f"layer{layer}"]
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return out
