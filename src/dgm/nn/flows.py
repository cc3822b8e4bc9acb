"""Normalizing flows for the VAE's posterior (seed 004), and the masked autoencoder they and the flow prior share.

A flow turns the encoder's Gaussian sample z_0 ~ q(z_0|x) = N(mu(x), diag sigma^2(x)) into

    z_K = f_K o ... o f_1(z_0),    log q(z_K|x) = log q(z_0|x) - sum_t log|det df_t/dz_{t-1}|

Each step's parameters are computed from a context vector h(x) that the encoder outputs next to
[mu, log sigma^2] (amortized flows), so every x gets its own flow:

    planar       f(z) = z + u_hat tanh(w^T z + b),  [u, w, b] = L_t h           (Rezende & Mohamed 2015)
                 u_hat = u + (m(w^T u) - w^T u) w / ||w||^2,  m(a) = -1 + softplus(a), so w^T u_hat > -1
                 and f is invertible for any raw u, w, b
                 log|det| = log(1 + u_hat^T psi(z)),  psi(z) = (1 - tanh^2(w^T z + b)) w,
                 computed as log(a^2 + (1 - a^2) softplus(w^T u)), a = tanh(w^T z + b): the same number,
                 as 1 + w^T u_hat = softplus(w^T u), with no cancellation when w^T u_hat is near -1
    householder  f(z) = (I - 2 v_t v_t^T / ||v_t||^2) z,  v_1 = L_1 h,  v_t = L_t v_{t-1}
                 log|det| = 0 (a reflection: volume preserving)                  (Tomczak & Welling 2016)
    iaf          [m, s] = MADE_t(z, h),  sigma = sigmoid(s + forget_bias)
                 f(z) = sigma * z + (1 - sigma) * m,  log|det| = sum_d log sigma_d  (Kingma et al. 2016)

(L_t are linear layers.) An IAF step's m_d and s_d depend only on the z that come before d in its MADE's
order, so its Jacobian is triangular in that order with diagonal sigma; the order is reversed from one
step to the next, so the composition is not triangular in any one order.

MADE (Germain et al. 2015) makes a dense network autoregressive by masking its weights: input i gets
degree rank(i) + 1 in 1..D, hidden unit k degree k mod D in 0..D-1; a hidden unit sees the units below it
of degree <= its own, and output d (degree rank(d) + 1) sees the hidden units of degree < its own. Output
d then depends only on the inputs before d in the order. Degree-0 hidden units see no input at all, only
the context, so even the first dimension's outputs depend on h.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dgm.errors import DgmError

FLOWS = ("planar", "householder", "iaf")

Step = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class MaskedLinear(nn.Linear):
    """y = (W * M) x + b with a fixed 0/1 mask M [out, in]."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder (Germain et al. 2015) over D inputs in a given order, optionally reading a context
    vector h (unmasked, added to the first hidden layer): n_out values per input dimension, output d
    depending only on inputs that come before d in the order.

    `order` lists the input dimensions first to last (default 0, 1, ..., D-1); ELU between layers.
    forward(z [..., D], h [..., context_dim] broadcastable against z's leading dims) -> [..., n_out, D]:
    out[..., j, d] is the j-th value for dimension d, so `a, b = made(z, h).unbind(-2)` splits them."""

    def __init__(self, dim: int, hidden: int, n_out: int, context_dim: int = 0, order: torch.Tensor | None = None,
                 n_hidden_layers: int = 1):
        super().__init__()
        order = torch.arange(dim) if order is None else torch.as_tensor(order, dtype=torch.long)
        if sorted(order.tolist()) != list(range(dim)):
            raise DgmError(f"a MADE's order must list each of the {dim} dimensions once, not {order.tolist()}")
        if n_hidden_layers < 1:
            raise DgmError(f"a MADE needs at least one hidden layer, not {n_hidden_layers}")
        self.dim, self.n_out = dim, n_out
        self.register_buffer("order", order, persistent=False)
        rank = torch.empty(dim, dtype=torch.long)
        rank[order] = torch.arange(dim)
        degree_in, degree_hidden = rank + 1, torch.arange(hidden) % dim
        layers, below = [], degree_in
        for _ in range(n_hidden_layers):
            layers.append(MaskedLinear(len(below), hidden, degree_hidden[:, None] >= below[None, :]))
            below = degree_hidden
        self.hidden = nn.ModuleList(layers)
        self.context = nn.Linear(context_dim, hidden, bias=False) if context_dim else None
        self.out = MaskedLinear(hidden, n_out * dim, degree_in.repeat(n_out)[:, None] > degree_hidden[None, :])
        self.act = nn.ELU()

    def forward(self, z: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if (h is None) != (self.context is None):
            raise DgmError("a MADE reads a context h exactly when it was built with context_dim > 0")
        x = self.hidden[0](z)
        if self.context is not None:
            x = x + self.context(h)
        for layer in self.hidden[1:]:
            x = layer(self.act(x))
        return self.out(self.act(x)).unflatten(-1, (self.n_out, self.dim))


def planar_u_hat(u: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(u_hat, c) over the last dimension: u_hat = u + (m(w^T u) - w^T u) w / ||w||^2 with m(a) = -1 + softplus(a),
    so that c = 1 + w^T u_hat = softplus(w^T u) > 0."""
    wu = (w * u).sum(-1, keepdim=True)
    c = F.softplus(wu)
    return u + (c - 1 - wu) * w / w.pow(2).sum(-1, keepdim=True), c.squeeze(-1)


class PosteriorFlow(nn.Module):
    """z_K = f_K o ... o f_1(z_0), each step's parameters computed from the encoder's context h, and
    sum_t log|det df_t/dz_{t-1}|, so that log q(z_K|x) = log q(z_0|x) - sum_t log|det df_t/dz_{t-1}|.

    kind is one of FLOWS (equations in the module docstring), length K >= 1 steps, context_dim the size of
    h; hidden_dim is the width of the IAF's MADEs (one hidden layer each) and unused by the other kinds."""

    forget_bias = 1.5  # IAF: sigma = sigmoid(s + 1.5) ~ 0.82 at s = 0, so each step starts close to the identity

    def __init__(self, kind: str, latent_dim: int, length: int, context_dim: int, hidden_dim: int = 320):
        super().__init__()
        if kind not in FLOWS:
            raise DgmError(f"unknown posterior flow '{kind}'; choose {', '.join(FLOWS)}")
        if length < 1 or context_dim < 1:
            raise DgmError(f"a posterior flow needs length >= 1 and context_dim >= 1, not {length} and {context_dim}")
        self.kind, self.latent_dim, self.length, self.context_dim = kind, latent_dim, length, context_dim
        d = latent_dim
        if kind == "planar":  # one layer for all steps: [u, w, b] of step t in its t-th block of 2D + 1 outputs
            self.params = nn.Linear(context_dim, length * (2 * d + 1))
        elif kind == "householder":
            self.vectors = nn.ModuleList([nn.Linear(context_dim, d)] + [nn.Linear(d, d) for _ in range(length - 1)])
        else:
            forward, backward = torch.arange(d), torch.arange(d).flip(0)
            self.mades = nn.ModuleList([MADE(d, hidden_dim, 2, context_dim, backward if t % 2 else forward)
                                        for t in range(length)])

    def steps(self, h: torch.Tensor) -> list[Step]:
        """The K maps z_{t-1} -> (z_t, log|det dz_t/dz_{t-1}|) with their parameters computed from h [..., C];
        each takes z [..., D] broadcastable against h's leading dims."""
        if self.kind == "planar":
            return [self._planar(p) for p in self.params(h).unflatten(-1, (self.length, -1)).unbind(-2)]
        if self.kind == "householder":
            vs, v = [], h
            for layer in self.vectors:
                v = layer(v)
                vs.append(v)
            return [self._householder(v) for v in vs]
        return [self._iaf(made, h) for made in self.mades]

    def _planar(self, params: torch.Tensor) -> Step:
        d = self.latent_dim
        u, w, b = params[..., :d], params[..., d : 2 * d], params[..., 2 * d :]
        u_hat, c = planar_u_hat(u, w)

        def step(z):
            a = torch.tanh((w * z).sum(-1, keepdim=True) + b)
            a2 = a.squeeze(-1).pow(2)
            return z + u_hat * a, torch.log(a2 + (1 - a2) * c)
        return step

    @staticmethod
    def _householder(v: torch.Tensor) -> Step:
        def step(z):
            z = z - 2 * v * (v * z).sum(-1, keepdim=True) / v.pow(2).sum(-1, keepdim=True)
            return z, z.new_zeros(z.shape[:-1])
        return step

    def _iaf(self, made: MADE, h: torch.Tensor) -> Step:
        def step(z):
            m, s = made(z, h).unbind(-2)
            log_sigma = F.logsigmoid(s + self.forget_bias)
            sigma = log_sigma.exp()
            return sigma * z + (1 - sigma) * m, log_sigma.sum(-1)
        return step

    def forward(self, z0: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_K, sum_t log|det df_t/dz_{t-1}|) for z0 [S, B, D] or [B, D] and h [B, C] (shared by the S samples):
        z_K has z0's shape, the log-determinant z0's shape without D."""
        z, log_det = z0, 0
        for step in self.steps(h):
            z, ld = step(z)
            log_det = log_det + ld
        return z, log_det
