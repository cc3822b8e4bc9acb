"""Semi-supervised VAE M2 (seed 004, "semi-supervised learning with VAE"; Kingma, Rezende, Mohamed & Welling 2014).

The generative model is the conditional VAE's (cvae.py) with the label a latent variable when it is missing:

    p(x, y, z) = p(x | y, z) p(y) p(z),   p(y) = 1/K (uniform),   p(z) = N(0, I) (or the vae's `prior`)
    q(y, z | x) = q(y | x) q(z | x, y),   q(y | x) a classifier,  q(z | x, y) = N(mu(x, y), diag sigma^2(x, y))
                                          (or the vae's `flow` on it)

Two bounds (nats per example):

    L(x, y) = E_q(z|x,y)[log p(x|y,z) + log p(y) + log p(z) - log q(z|x,y)]       <= log p(x, y)
            = ELBO(x|y) - log K, the cvae's ELBO of log p(x | y) plus log p(y)
    U(x)    = sum_y q(y|x) L(x, y) + H(q(y|x))                                       <= log p(x)

U sums over all K labels exactly (one batched pass over the K copies of the batch), so q(y|x) gets its gradient
from the generative model without a score-function estimator. The training objective (to maximise, the paper's
eq. 9 divided by the N training examples) is

    J = 1/N [sum_labelled L(x, y) + sum_unlabelled U(x)] + alpha * mean_labelled log q(y|x),

i.e. the paper's alpha_paper = alpha * N; its MNIST choice alpha_paper = 0.1 N is the default alpha = 0.1. Each
step estimates J without bias from the trainer's batch as it comes, a uniform draw of the training set holding
labelled (y >= 0) and unlabelled (y == -1) examples together:

    loss = -1/B sum_batch [L(x, y) + alpha (N / N_l) log q(y|x) if labelled, else U(x)],

the labelled examples' classifier term weighted by N / N_l (N_l labels kept) because a batch holds a fraction
N_l / N of them. `label_ratio` (a buffer, so a loaded model's loss is the trained one's) holds N / N_l, set by
`training_labels`. That estimate does not oversample the labelled examples: with 100 labels of 50,000 a batch of
100 holds 0.2 on average, and the rare batch that holds one weights its classifier term 500 alpha, so it is right
in expectation but noisy. So by default (`labelled_batch=100`) the trainer draws a batch of labelled examples
beside each batch, as the paper's implementations do, and the loss is `labelled_batch_loss`'s estimate of the
same J; `labelled_batch=0` keeps the plain estimate above. The trainer's validation passes every label of the
validation split, so the validation loss is the fully labelled objective there, classifier term included (labels=0 ignores every
label, the validation's too).

In the training objective (only), objective=iwae makes L(x, y) the cvae's IWAE_n_samples(x|y) + log p(y), still a
bound of log p(x, y), and beta and kl_warmup_steps weight the KL as in the vae.

`labels` (training labels kept, `training_labels`): -1, or any count >= the training set's size, keeps every
label; 0 keeps none (unsupervised M2: q(y|x) then clusters, its classes in no fixed order); otherwise a multiple of
K, labels/K of each class, drawn by a generator seeded with `label_seed`, the same on every resume.

What the library sees:

- `conditional` is true: `sample(n, y)` and `decode(z, y)` take labels (or the cvae's condition vectors), so
  `dgm sample --label`, the progression and every picture that passes the images' labels work as for the cvae;
  `encode(x, y=None)` and `reconstruct(x, y=None)` read a given label and otherwise use y_hat = argmax q(y|x), so
  codes exist for unlabelled images too.
- `elbo(x)` = U(x) and `iwae(x, k)` bound log p(x) itself: they take no labels, which is how `dgm eval` tells
  them from the cvae's bounds of log p(x | y) (dgm.evaluation.likelihood.bounds_take_labels).
  iwae(x, k) = log sum_y p(y) 1/k sum_s p(x|z_s,y) p(z_s) / q(z_s|x,y), z_s ~ q(z|x,y) drawn for every y: the sum
  over y is exact and the inner mean an unbiased estimate of p(x|y), so its expectation is a lower bound of
  log p(x) that grows with k to it (the IWAE argument), and by Jensen over y it is above U(x) in expectation.
  It does not use q(y|x), so a poor classifier cannot loosen it.
- `classify(x)` = q(y|x) [B, K]: `dgm eval` reports its `classification_error`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgm.config import number
from dgm.errors import DgmError
from dgm.models import register_model
from dgm.models.cvae import CVAE, CVAEConfig
from dgm.models.vae import codec_encoder, iwae_bound


@dataclass
class M2Config(CVAEConfig):
    """The cvae's options (hidden_dims or conv_channels shape the classifier q(y|x) too) and the labels'."""

    labels: int = number(100, min=-1, described="-1 (every label), 0 (none) or a number of training labels kept, "
                                                "a multiple of the classes (a number >= the training set keeps every "
                                                "label)")
    label_seed: int = number(0, min=0)  # seed of the draw of the labelled examples
    alpha: float = number(0.1, min=0)  # weight of the classifier term, per training example: the paper's alpha / N
    labelled_batch: int = number(100, min=0)  # labelled examples drawn beside every batch when some labels are
    # hidden (the paper's scheme); 0: none, the batch's own labelled examples carry the labels (unbiased, noisy)


@register_model("m2", M2Config, family="vae", seeds=("004",),
                description="Semi-supervised VAE (M2): q(y|x), q(z|x,y), p(x|y,z); labels=N of the training labels")
class M2(CVAE):
    conditional = True  # sample and decode take labels; elbo and iwae do not (they bound log p(x))

    def __init__(self, cfg: M2Config):
        if cfg.estimator != "reparameterization":
            raise DgmError(f"m2 trains with the reparameterization trick only; estimator={cfg.estimator} is the "
                           "vae's")
        if cfg.condition != "label":
            raise DgmError("m2 learns the class labels it conditions on; condition=attributes is the cvae's")
        super().__init__(cfg)
        self.classifier = self.classifier_network()
        self.register_buffer("label_ratio", torch.tensor(1.0))  # N / N_l of the training labels

    def classifier_network(self) -> nn.Module:
        """x [B, C, H, W] -> logits of q(y|x) [B, K]: the vae's encoder network (MLP or conv, without y)."""
        return codec_encoder(self.cfg, self.cfg.num_classes)

    # --- labels ------------------------------------------------------------------------
    def training_labels(self, train_y: torch.Tensor) -> torch.Tensor:
        """train_y with every label but the kept ones set to -1 (see `labels` in the module docstring); sets
        label_ratio = N / N_l."""
        n, k, labels = len(train_y), self.cfg.num_classes, self.cfg.labels
        self.label_ratio.fill_(1.0)
        if labels == 0:
            return torch.full_like(train_y, -1)
        if labels < 0 or labels >= n:
            return train_y
        per_class, rest = divmod(labels, k)
        if rest:
            lower, upper = labels - rest, labels - rest + k
            raise DgmError(f"labels={labels} cannot be split evenly over the {k} classes; choose a multiple of {k} "
                           f"such as {lower or upper} or {upper}, or -1 for every label")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.label_seed))
        shuffled = train_y.cpu()[order]
        keep = []
        for c in range(k):
            found = order[shuffled == c][:per_class]
            if len(found) < per_class:
                raise DgmError(f"labels={labels} keeps {per_class} labels of each class but class {c} has only "
                               f"{len(found)} training examples; choose labels <= {len(found) * k} or -1 for every "
                               "label")
            keep.append(found)
        keep = torch.cat(keep).to(train_y.device)
        out = torch.full_like(train_y, -1)
        out[keep] = train_y[keep]
        self.label_ratio.fill_(n / labels)
        return out

    # --- the model's parts -------------------------------------------------------------
    def log_q_y(self, x: torch.Tensor) -> torch.Tensor:
        """log q(y|x) for every class: [B, K]."""
        return F.log_softmax(self.classifier(x).to(x.dtype), dim=-1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """q(y|x), the class probabilities of images x: [B, K]."""
        return self.log_q_y(x).exp()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """y_hat = argmax_y q(y|x): [B]."""
        return self.log_q_y(x).argmax(-1)

    def every_class(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the K copies of x [K B, C, H, W], their condition vectors [K B, K]), class-major: copy k of example b
        is row k B + b and has label k."""
        k, b = self.cfg.num_classes, x.shape[0]
        labels = torch.arange(k, device=x.device).repeat_interleave(b)
        return x.expand(k, *x.shape).reshape(k * b, *x.shape[1:]), self.condition(labels)

    def _joint_bounds(self, x: torch.Tensor, c: torch.Tensor, kl_weight: float, n_samples: int,
                      objective: str = "elbo") -> tuple[torch.Tensor, torch.Tensor]:
        """(the training objective's form, the bound itself) of log p(x, y) for images x [N] with condition vectors
        c [N, K]: the ELBO over n_samples with the KL weighted by kl_weight (the cvae's beta and warm-up), or for
        objective iwae IWAE_n_samples(x|y); plus log p(y). Each [N]."""
        log_py = -math.log(self.cfg.num_classes)
        if objective == "iwae":
            bound = iwae_bound(lambda j: self.log_weights(x, j, y=c), n_samples, x.shape[0], self.cfg.chunk_size)
            return bound + log_py, bound + log_py
        log_px_z, kl = self.elbo_terms(x, n_samples, y=c)
        return log_px_z - kl_weight * kl + log_py, log_px_z - kl + log_py

    @staticmethod
    def unlabelled_bound(log_q: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
        """U = sum_y q(y|x) L(x, y) + H(q(y|x)) = sum_y q(y|x) (L(x, y) - log q(y|x)) from log q [B, K] and the
        bounds L [K, B]: [B]."""
        return (log_q.exp() * (bounds.T - log_q)).sum(-1)

    # --- bounds ------------------------------------------------------------------------
    def labelled_bound(self, x: torch.Tensor, y, n_samples: int = 1) -> torch.Tensor:
        """L(x, y) = ELBO(x|y) + log p(y) <= log p(x, y), nats per example (whatever the training objective): [B]."""
        return self._joint_bounds(x, self.condition(y, x.shape[0]), 1.0, n_samples)[1]

    def class_bounds(self, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """L(x, y) for every class y, in one pass over the K copies of x: [K, B]."""
        xk, ck = self.every_class(x)
        return self._joint_bounds(xk, ck, 1.0, n_samples)[1].reshape(self.cfg.num_classes, x.shape[0])

    def elbo(self, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)) <= log p(x), nats per example: [B]."""
        return self.unlabelled_bound(self.log_q_y(x), self.class_bounds(x, n_samples))

    def iwae(self, x: torch.Tensor, k: int, chunk_size: int | None = None) -> torch.Tensor:
        """log sum_y p(y) 1/k sum_s w_s(y), w_s(y) = p(x|z_s,y) p(z_s) / q(z_s|x,y), <= log p(x) in expectation and
        tending to it as k grows (module docstring); in chunks of at most chunk_size (sample x example x class)
        triples: [B]."""
        num, b = self.cfg.num_classes, x.shape[0]
        xk, ck = self.every_class(x)

        def log_weights(j: int) -> torch.Tensor:  # log sum_y p(y) w_s(y) for j samples s: [j, B]
            return torch.logsumexp(self.log_weights(xk, j, y=ck).reshape(j, num, b), dim=1) - math.log(num)

        return iwae_bound(log_weights, k, num * b, chunk_size or self.cfg.chunk_size)

    # --- capabilities ------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """The cvae's code of x given the labels y (the mean of q(z|x,y)), or when None given y_hat = argmax q(y|x)."""
        return super().encode(x, self.predict(x) if y is None else y)

    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return super().reconstruct(x, self.predict(x) if y is None else y)

    @property
    def labelled_batch_size(self) -> int:
        """Labelled examples the trainer draws beside each batch (batches then come as (x, y, x_l, y_l))."""
        return self.cfg.labelled_batch

    def _unlabelled_bounds(self, x: torch.Tensor, log_q: torch.Tensor, kl_weight: float, n: int,
                           objective: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(U(x) in the training objective's form, U(x) itself) from log q(y|x) [B, K]: each [B]."""
        xk, ck = self.every_class(x)
        obj, full = (t.reshape(self.cfg.num_classes, x.shape[0])
                     for t in self._joint_bounds(xk, ck, kl_weight, n, objective))
        return self.unlabelled_bound(log_q, obj), self.unlabelled_bound(log_q, full)

    def labelled_batch_loss(self, x: torch.Tensor, y: torch.Tensor, x_l: torch.Tensor, y_l: torch.Tensor,
                            step: int | None) -> dict[str, torch.Tensor]:
        """-J from a batch x whose unlabelled examples (y == -1) estimate the mean of U over the N - N_l unlabelled
        examples and a labelled batch (x_l, y_l) drawn from the N_l kept ones:
            J = (1 - N_l/N) mean_u U(x) + N_l/N mean_l L(x_l, y_l) + alpha mean_l log q(y_l|x_l),
        the module docstring's J estimated without bias, the classifier term from B_l labels every step."""
        kl_weight, n, objective_name = self.kl_weight(step), self.cfg.n_samples, self.cfg.objective
        fraction = 1 / self.label_ratio.to(x.dtype)  # N_l / N
        log_q_l = self.log_q_y(x_l)
        obj_l, full_l = self._joint_bounds(x_l, self.condition(y_l, len(y_l)), kl_weight, n, objective_name)
        chosen = log_q_l.gather(1, y_l[:, None]).squeeze(1)
        objective = fraction * obj_l.mean() + self.cfg.alpha * chosen.mean()
        bound = fraction * full_l.mean()
        unl = (y < 0).nonzero().squeeze(1)
        if len(unl):
            u_obj, u_full = self._unlabelled_bounds(x[unl], self.log_q_y(x[unl]), kl_weight, n, objective_name)
            objective = objective + (1 - fraction) * u_obj.mean()
            bound = bound + (1 - fraction) * u_full.mean()
        out = {"loss": -objective}
        if self.likelihood.normalised:
            out["bound"] = bound.detach()
        return {**out, "nll_y": -chosen.mean().detach(),
                "error_y": (log_q_l.argmax(-1) != y_l).to(x.dtype).mean().detach()}

    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """-J on the batch (module docstring): labelled examples (y >= 0) give L(x, y) + alpha (N / N_l) log q(y|x),
        the others (y == -1, or every one without labels or with labels=0) U(x); summed and divided by the batch
        size. Terms: `bound` the mean of those L and U (full KL weight; left out for a likelihood that is no
        probability), `nll_y` and `error_y` the classifier's loss and error on the batch's labelled examples (0
        when it has none)."""
        x = batch[0]
        y = batch[1] if len(batch) > 1 and self.cfg.labels != 0 else None
        if len(batch) == 4 and y is not None:  # the trainer drew a labelled batch beside this one
            return self.labelled_batch_loss(x, y, batch[2], batch[3], step)
        b = x.shape[0]
        labelled = torch.zeros(b, dtype=torch.bool, device=x.device) if y is None else y >= 0
        lab, unl = labelled.nonzero().squeeze(1), (~labelled).nonzero().squeeze(1)
        log_q = self.log_q_y(x)
        kl_weight, n, objective_name = self.kl_weight(step), self.cfg.n_samples, self.cfg.objective
        objective = bound = nll_y = error_y = x.new_zeros(())
        if len(lab):
            y_lab = y[lab]
            obj, full = self._joint_bounds(x[lab], self.condition(y_lab, len(lab)), kl_weight, n, objective_name)
            log_q_lab = log_q[lab].gather(1, y_lab[:, None]).squeeze(1)
            weight = self.cfg.alpha * self.label_ratio.to(x.dtype)
            objective = objective + (obj + weight * log_q_lab).sum()
            bound = bound + full.sum()
            nll_y = -log_q_lab.mean().detach()
            error_y = (log_q[lab].argmax(-1) != y_lab).to(x.dtype).mean()
        if len(unl):
            u_obj, u_full = self._unlabelled_bounds(x[unl], log_q[unl], kl_weight, n, objective_name)
            objective = objective + u_obj.sum()
            bound = bound + u_full.sum().detach()
        out = {"loss": -objective / b}
        if self.likelihood.normalised:
            out["bound"] = (bound / b).detach()
        return {**out, "nll_y": nll_y, "error_y": error_y}
