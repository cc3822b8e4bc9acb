"""Training throughput of dgm's models against pythae's with the same networks and batch, side by side.

VampPrior, IAF and planar-flow VAEs against pythae's VAMP, VAE_IAF and VAE_LinNF; VAE-GAN and AAE against
pythae's VAEGAN and Adversarial_AE. Each measurement runs in its own process, alternating dgm and pythae,
pythae in its own virtual environment (never a dgm dependency); images/s of the steps after 20 of warm-up.

    python3 -m venv /work/pythae-venv && /work/pythae-venv/bin/pip install torch pythae
    python bench/pythae_throughput.py --pythae-python /work/pythae-venv/bin/python --data-dir ../shared/data
    python bench/pythae_throughput.py --variants vae-gan aae --steps 150 --repeats 3
    python bench/pythae_throughput.py --worker dgm --variant aae --steps 40 --profile 10  # profile one side

vampprior, iaf, planar, both sides: MLP 784-300-300-40 (ReLU) and back, Bernoulli/BCE on static binarized
MNIST, batch 100, Adam 1e-3 (each library's own: dgm's trainer builds a fused Adam, pythae's trainer torch's
default), one training step = forward, backward, optimizer step on the same preloaded batches (no data loader
on either side, so the models' own cost is what is timed). VampPrior: 500 pseudo-inputs. IAF: 2 MADE blocks, one
hidden layer of 128 (dgm's MADEs also read the encoder's context h, 300 values: a little more work for dgm).
Planar: 10 planar flows (pythae's are global parameters; dgm's are amortised from h, as Rezende & Mohamed
do: more work for dgm).

vae-gan and aae (`--variants vae-gan aae`): dgm's `vae-gan` and `aae` against pythae's VAEGAN and
Adversarial_AE, on grey MNIST 28x28 in [0, 1] (the IDX files under MNIST/raw), batch 64, the same preloaded
batches. dgm side: `create_model(variant, {data_shape: (1, 28, 28), levels: 256, latent_dim: 64,
base_channels: 32})`, `model.optimizers(TrainConfig())`, and one step = `model.train_step((x, None), optimizers,
step)`, what dgm's trainer calls. pythae side: the same networks, written layer for layer with plain torch.nn in
the pythae worker (that venv has no dgm) from dgm's DCGANGenerator / DCGANDiscriminator (dcgan_plan,
_dcgan_widths, Radford et al.'s init) and the base's make_encoder / make_discriminator /
make_code_discriminator, wrapped in pythae's BaseEncoder / BaseDecoder / BaseDiscriminator; each worker
returns every network's parameter count and layer list and the main process refuses to report unless they
match. Networks (data 1x28x28, base 32): E = Conv(1,32,4,s2,p1) LReLU(0.2) Conv(32,64,4,s2,p1, no bias)
BN(64) LReLU(0.2) Conv(64,out,7) (out = 2x64 for vae-gan's mean and log-variance, 64 for aae); G =
ConvT(64,64,7, no bias) BN ReLU ConvT(64,32,4,s2,p1, no bias) BN ReLU ConvT(32,1,4,s2,p1) Sigmoid; vae-gan's
D = E with one output (pythae's levels: [Conv LReLU], [Conv BN LReLU], [Conv], reconstruction_layer 2 = dgm's
similarity layer, the last LeakyReLU); aae's D_z = Linear(64,256) LReLU(0.2) Linear(256,256) LReLU(0.2)
Linear(256,1). Adam with dgm's defaults on both sides: vae-gan 3e-4 for E, G and D; aae 1e-4 for the
autoencoder and 5e-5 for D_z; betas (0.5, 0.999) everywhere (passed to pythae's trainer as optimizer params;
the workers report their optimizers and the main process checks them). One pythae step = `model(inputs)` then
the trainer's own `_optimizers_step(model_output)`: the workers instantiate pythae's
CoupledOptimizerAdversarialTrainer (VAEGAN) and AdversarialTrainer (Adversarial_AE), build the optimizers with
the trainer's set_*_optimizer methods and call that method, as the trainer's train_step does (its four
`.item()` calls for the epoch's running losses are left out, as dgm's trainer's bookkeeping is). Besides
images/s these two report images per CPU-second (the worker's process time, all threads), which other jobs
on a shared machine disturb less than the wall clock (though not a throttled virtual CPU), and the GFLOPs of
convolutions and matmuls per step (forward and backward, counted on 5 untimed steps after the timed ones):
the work each library asks of the same kernels, independent of the machine's load.

Remaining differences, vae-gan (pythae 0.1.2's VAEGAN as shipped):
- passes: dgm runs D once on [x, x~, x_p] (192 images, batch norm over the three alike) and G once on [z, z_p]
  (128); pythae runs G twice (64 each) and D four times on 64 images: x and x~ up to the reconstruction layer
  (2 of 3 levels), x and x_p to the output.
- L_GAN: pythae's D never scores reconstructions (its x~ term is commented out): L_D = BCE(D(x), 1) +
  BCE(D(x_p), 0); dgm's has the x~ term in D's and G's losses.
- the decoder's adversarial term: dgm's non-saturating -log D(x~) - log D(x_p); pythae's is minimax, decoder
  loss = (1 - s) L_llike - s L_D; s = adversarial_loss_scale is set to 1 / (1 + gamma), so the weight of
  L_llike relative to the adversarial term is dgm's gamma = 1e-5 (the whole loss is scaled by s ~ 0.99999).
- pythae's margin / equilibrium tricks (its defaults 0.68 and 0.4, kept): in a step where a BCE term of D is
  below 0.28 D is not updated, above 1.08 the decoder is not (pythae saves that backward and optimizer step);
  dgm always updates all three. The pythae worker counts the skipped updates and the script prints them;
  `--pythae-margin 1e9` turns the trick off (pythae then does every update, as dgm does).
- pythae's D outputs probabilities (a sigmoid after dgm's logit; F.binary_cross_entropy, batch means, logs
  clamped at -100); dgm works on logits with logsigmoid.
- gradients: pythae's trainer backpropagates each of the three losses into every network (no `inputs=`),
  each optimizer stepping on whatever its parameters hold: the encoder steps with the gradient of L_E plus the
  decoder's loss (which reaches it through x~), the decoder with its loss plus L_D; dgm differentiates each
  loss with respect to its own network only (`backward(inputs=...)`), so computes fewer weight gradients.
- the same: KL(q || N(0, I)), L_llike = 1/2 ||Dis_l(x) - Dis_l(x~)||^2 summed per example (pythae's
  F.mse_loss(reduction="none").sum(-1) / 2), batch means, the reparameterised z.
Remaining differences, aae (pythae's Adversarial_AE):
- phases: dgm runs three updates per step, each with its own Adam (the autoencoder on L_rec, 1e-4; D_z on
  the codes of the just updated encoder, 5e-5; E's regularisation -log D_z(E(x)) against the updated D_z,
  5e-5), so E runs twice and D_z three times (prior draws, codes, codes again after D_z's update); pythae runs
  one forward (E, G, D_z on z, z_p and z.detach()) and two Adams: E and G (1e-4) on L_rec + s BCE(D_z(z), 1)
  and D_z (5e-5) on BCE(D_z(z_p), 1) + BCE(D_z(z.detach()), 0). pythae has no separate regularisation step:
  E's adversarial gradient goes through the autoencoder's Adam at 1e-4 (dgm: 5e-5) and is scored by D_z
  before its update.
- adversarial_loss_scale s = 1 and reconstruction_loss_scale = 1 (pythae's defaults 0.5 and 1), so E
  minimises L_rec - log D_z(E(x)) as dgm's two phases together do; reconstruction_loss = "bce" on both sides
  (summed over pixels, logs clamped at -100).
- pythae's Adversarial_AE is a VAE: deterministic_posterior=True gives z = mu + 0 * eps (the encoder returns
  log_covariance = 0, no parameters), so it still draws eps; dgm's encoder is deterministic.
- D_z outputs probabilities (sigmoid + F.binary_cross_entropy) in pythae, logits in dgm; pythae's autoencoder
  backward also computes D_z's weight gradients (zeroed before D_z's own backward).
Both: dgm's Adams are fused (one kernel), pythae's trainer builds torch's default Adam (a loop over the
parameters on CPU); the same initialisation scheme (Radford et al.'s for the conv nets, torch's default for
D_z), not the same numbers; the D's batch norm in training mode on every pass on both sides.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("vampprior", "iaf", "planar", "vae-gan", "aae")
ADVERSARIAL = ("vae-gan", "aae")  # grey MNIST, batch 64, the networks' sizes checked against each other
BATCH = {"vampprior": 100, "iaf": 100, "planar": 100, "vae-gan": 64, "aae": 64}
DIMS = {"data_shape": (1, 28, 28), "latent_dim": 64, "base_channels": 32, "code_hidden": (256, 256)}
RATES = {"vae-gan": {"encoder": 3e-4, "decoder": 3e-4, "discriminator": 3e-4},  # dgm's defaults, checked
         "aae": {"autoencoder": 1e-4, "discriminator": 5e-5}}
BETAS = (0.5, 0.999)
VAEGAN_GAMMA = 1e-5  # dgm's vae-gan default


def batches(data_dir: Path, n: int, batch: int, grey: bool = False):
    """n batches of MNIST [n, batch, 1, 28, 28]: static binarized, or grey in [0, 1] from the IDX files."""
    import gzip

    import numpy as np
    import torch

    if grey:
        with gzip.open(data_dir / "MNIST" / "raw" / "train-images-idx3-ubyte.gz") as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[: n * batch] / 255.0
    else:
        x = np.load(data_dir / "binarized_mnist" / "binarized_mnist.npz")["train"][: n * batch]
    x = torch.from_numpy(x.astype(np.float32))
    return x.reshape(n, batch, 1, 28, 28)


def describe(nets: dict) -> dict:
    """Each network's parameter count and layer list (conv, linear, norm and activation layers in order)."""
    from torch import nn

    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d, nn.LeakyReLU, nn.ReLU, nn.Sigmoid)
    return {"parameters": {k: sum(p.numel() for p in net.parameters()) for k, net in nets.items()},
            "layers": {k: [repr(m) for m in net.modules() if isinstance(m, kinds)] for k, net in nets.items()}}


def optimizer_settings(opts: dict) -> dict:
    return {k: {"lr": o.param_groups[0]["lr"], "betas": list(o.param_groups[0]["betas"])} for k, o in opts.items()}


def ours(variant: str, xs, steps: int) -> list[float]:
    import torch

    from dgm.models import create_model
    from dgm.training import TrainConfig
    from dgm.training.trainer import make_optimizer

    options = {"vampprior": {"prior": "vampprior", "n_pseudo": 500},
               "iaf": {"flow": "iaf", "flow_length": 2, "flow_hidden": 128, "flow_context": 300},
               "planar": {"flow": "planar", "flow_length": 10, "flow_context": 300}}[variant]
    torch.manual_seed(0)
    model = create_model("vae", {"data_shape": (1, 28, 28), "levels": 2, "hidden_dims": (300, 300),
                                 "latent_dim": 40, "likelihood": "bernoulli", **options})
    if model.fit_before_training is not None:
        model.fit_before_training(xs[0].repeat(5, 1, 1, 1))
    opt = make_optimizer(model.parameters(), TrainConfig(lr=1e-3))  # the optimizer dgm's trainer builds
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.loss((xs[i % len(xs)], None))["loss"].backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def peer(variant: str, xs, steps: int) -> list[float]:
    import torch
    from torch import nn
    from pythae.models import VAE_IAF, VAE_IAF_Config, VAE_LinNF, VAE_LinNF_Config, VAMP, VAMPConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU())
            self.mu, self.log_var = nn.Linear(300, 40), nn.Linear(300, 40)

        def forward(self, x):
            h = self.net(x)
            return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(40, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU(),
                                     nn.Linear(300, 784), nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).reshape(-1, 1, 28, 28))

    common = {"input_dim": (1, 28, 28), "latent_dim": 40, "reconstruction_loss": "bce"}
    torch.manual_seed(0)
    if variant == "vampprior":
        model = VAMP(VAMPConfig(**common, number_components=500), encoder=Encoder(), decoder=Decoder())
    elif variant == "iaf":
        model = VAE_IAF(VAE_IAF_Config(**common, n_made_blocks=2, n_hidden_in_made=1, hidden_size=128),
                        encoder=Encoder(), decoder=Decoder())
    else:
        model = VAE_LinNF(VAE_LinNF_Config(**common, flows=["Planar"] * 10), encoder=Encoder(), decoder=Decoder())
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model({"data": xs[i % len(xs)]}, epoch=100).loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def timed_steps(step, steps: int, profile: int = 0) -> dict[str, list[float]]:
    """Wall-clock and CPU seconds (the process's, all threads) of each call step(i), i < steps: the CPU time is
    less sensitive to other jobs on a shared machine. With profile > 0 the last `profile` steps also run under
    torch.profiler, whose operator tables go to stderr (those steps' times then include its overhead)."""
    import torch

    if not 0 <= profile <= steps:
        raise SystemExit("--profile must be between 0 and --steps")
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
    times, cpu = [], []
    for i in range(steps):
        if profile and i == steps - profile:
            prof.__enter__()
        t0, c0 = time.perf_counter(), time.process_time()
        step(i)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if profile:
        prof.__exit__(None, None, None)
        averages = prof.key_averages()
        by_shape = prof.key_averages(group_by_input_shape=True)
        print(f"{profile} steps profiled\n{averages.table(sort_by='self_cpu_time_total', row_limit=30)}\n"
              f"{by_shape.table(sort_by='self_cpu_time_total', row_limit=30, max_shapes_column_width=100)}",
              file=sys.stderr)
    return {"step_seconds": times, "step_cpu_seconds": cpu}


def gflop_per_step(step, start: int, n: int = 5) -> float:
    """Convolution and matmul GFLOPs (forward and backward, torch.utils.flop_counter) per call step(i), averaged
    over n untimed steps from `start`: the work a step asks of the kernels, which a busy machine cannot blur."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        for i in range(start, start + n):
            step(i)
    return counter.get_total_flops() / n / 1e9


def ours_adversarial(variant: str, xs, steps: int, profile: int = 0) -> dict:
    """dgm's vae-gan / aae: the model's optimizers and its train_step, as dgm's trainer runs them."""
    import torch

    from dgm.models import create_model
    from dgm.training import TrainConfig

    torch.manual_seed(0)
    model = create_model(variant, {"data_shape": DIMS["data_shape"], "levels": 256, "latent_dim": DIMS["latent_dim"],
                                   "base_channels": DIMS["base_channels"]})
    model.train()
    optimizers = model.optimizers(TrainConfig())
    def step(i):
        model.train_step((xs[i % len(xs)], None), optimizers, i)

    times = timed_steps(step, steps, profile)
    times["gflop_per_step"] = gflop_per_step(step, steps)
    if variant == "vae-gan":
        nets = {"encoder": model.encoder, "decoder": model.generator, "discriminator": model.discriminator}
        opts = {"encoder": optimizers["encoder"], "decoder": optimizers["generator"],
                "discriminator": optimizers["discriminator"]}
    else:
        nets = {"encoder": model.encoder, "decoder": model.generator, "discriminator": model.code_discriminator}
        opts = {"autoencoder": optimizers["autoencoder"], "discriminator": optimizers["code_discriminator"],
                "encoder_regularization": optimizers["encoder_regularization"]}
    return {**times, **describe(nets), "optimizers": optimizer_settings(opts)}


def dcgan_layers(kind: str, shape=DIMS["data_shape"], base=DIMS["base_channels"], dim=1) -> list:
    """dgm's DCGANGenerator (kind "generator", dim = latent size) or DCGANDiscriminator with batch norm (kind
    "discriminator", dim = outputs), rewritten with plain torch.nn for the peer worker: the same layers in the
    same order, and dgm's _dcgan_init (Radford et al.) applied to them."""
    from torch import nn

    c, h, w = shape
    smallest = 4 if min(h, w) >= 16 else 2  # dgm's dcgan_plan
    n_up = 0
    while h % 2 == 0 and w % 2 == 0 and h > smallest and w > smallest:
        h, w, n_up = h // 2, w // 2, n_up + 1
    widths = [base * min(8, 2 ** i) for i in reversed(range(max(1, n_up)))]  # dgm's _dcgan_widths
    if kind == "generator":
        layers = [nn.Unflatten(1, (dim, 1, 1)), nn.ConvTranspose2d(dim, widths[0], (h, w), bias=False),
                  nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for c_in, c_out in itertools.pairwise(widths):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], c, 4, stride=2, padding=1) if n_up else
                   nn.Conv2d(widths[-1], c, 3, padding=1), nn.Sigmoid()]
    else:
        widths = widths[::-1]
        layers = [nn.Conv2d(c, widths[0], 4, stride=2, padding=1) if n_up else nn.Conv2d(c, widths[0], 3, padding=1),
                  nn.LeakyReLU(0.2)]
        for c_in, c_out in itertools.pairwise(widths):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(widths[-1], dim, (h, w)), nn.Flatten(1)]
    for m in layers:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return layers


def peer_adversarial(variant: str, xs, steps: int, profile: int = 0, margin: float | None = None) -> dict:
    """pythae's VAEGAN / Adversarial_AE with dgm's networks, stepped by pythae's own trainers."""
    import torch
    from pythae.data.datasets import BaseDataset, DatasetOutput
    from pythae.models import VAEGAN, Adversarial_AE, Adversarial_AE_Config, VAEGANConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseDiscriminator, BaseEncoder
    from pythae.trainers import (AdversarialTrainer, AdversarialTrainerConfig, CoupledOptimizerAdversarialTrainer,
                                 CoupledOptimizerAdversarialTrainerConfig)
    from torch import nn

    latent = DIMS["latent_dim"]

    class Encoder(BaseEncoder):  # dgm's make_encoder: the DCGAN discriminator body with 2 latent (or latent) outputs
        def __init__(self, gaussian: bool):
            super().__init__()
            self.gaussian = gaussian
            self.net = nn.Sequential(*dcgan_layers("discriminator", dim=2 * latent if gaussian else latent))

        def forward(self, x):
            h = self.net(x)
            if self.gaussian:
                mu, log_var = h.chunk(2, dim=-1)  # dgm's diagonal_normal: [mu, log sigma^2]
                return ModelOutput(embedding=mu, log_covariance=log_var)
            return ModelOutput(embedding=h, log_covariance=torch.zeros_like(h))  # deterministic_posterior ignores it

    class Decoder(BaseDecoder):  # dgm's make_generator: DCGANGenerator
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(*dcgan_layers("generator", dim=latent))

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z))

    class Discriminator(BaseDiscriminator):
        """dgm's layers cut into pythae's levels after each LeakyReLU; pythae wants D's probability, so a sigmoid
        (no parameters) follows dgm's logit."""

        def __init__(self, layers: list):
            super().__init__()
            levels, current = [], []
            for m in layers:
                current.append(m)
                if isinstance(m, nn.LeakyReLU):
                    levels.append(nn.Sequential(*current))
                    current = []
            self.layers = nn.ModuleList([*levels, nn.Sequential(*current)])
            self.depth = len(self.layers)

        def forward(self, x, output_layer_levels=None):  # as pythae's own Discriminator_MLP
            output = ModelOutput()
            depth = self.depth if not output_layer_levels or -1 in output_layer_levels else max(output_layer_levels)
            out = x
            for i in range(depth):
                out = self.layers[i](out)
                if output_layer_levels is not None and i + 1 in output_layer_levels:
                    output[f"embedding_layer_{i + 1}"] = out
                if i + 1 == self.depth:
                    output["embedding"] = torch.sigmoid(out)
            return output

    torch.manual_seed(0)
    data = xs.reshape(-1, *xs.shape[2:])
    dataset = BaseDataset(data, torch.zeros(len(data)))
    optimizer_params = {"betas": BETAS}
    rates = RATES[variant]
    if variant == "vae-gan":
        discriminator = Discriminator(dcgan_layers("discriminator", dim=1))
        config = VAEGANConfig(input_dim=DIMS["data_shape"], latent_dim=latent,
                              reconstruction_layer=discriminator.depth - 1,  # the last LeakyReLU's level
                              adversarial_loss_scale=1 / (1 + VAEGAN_GAMMA),
                              **({} if margin is None else {"margin": margin}))
        model = VAEGAN(config, encoder=Encoder(gaussian=True), decoder=Decoder(), discriminator=discriminator)
        trainer_config = CoupledOptimizerAdversarialTrainerConfig(
            per_device_train_batch_size=xs.shape[1], no_cuda=True,
            encoder_learning_rate=rates["encoder"], decoder_learning_rate=rates["decoder"],
            discriminator_learning_rate=rates["discriminator"], encoder_optimizer_params=optimizer_params,
            decoder_optimizer_params=optimizer_params, discriminator_optimizer_params=optimizer_params)
        trainer = CoupledOptimizerAdversarialTrainer(model, dataset, training_config=trainer_config)
        trainer.set_encoder_optimizer()
        trainer.set_decoder_optimizer()
        trainer.set_discriminator_optimizer()
        opts = {"encoder": trainer.encoder_optimizer, "decoder": trainer.decoder_optimizer,
                "discriminator": trainer.discriminator_optimizer}
    else:
        code_layers = [nn.Linear(latent, DIMS["code_hidden"][0]), nn.LeakyReLU(0.2),
                       nn.Linear(DIMS["code_hidden"][0], DIMS["code_hidden"][1]), nn.LeakyReLU(0.2),
                       nn.Linear(DIMS["code_hidden"][1], 1)]  # dgm's make_code_discriminator (leaky_mlp)
        discriminator = Discriminator(code_layers)
        config = Adversarial_AE_Config(input_dim=DIMS["data_shape"], latent_dim=latent, reconstruction_loss="bce",
                                       adversarial_loss_scale=1.0, reconstruction_loss_scale=1.0,
                                       deterministic_posterior=True)
        model = Adversarial_AE(config, encoder=Encoder(gaussian=False), decoder=Decoder(), discriminator=discriminator)
        trainer = AdversarialTrainer(model, dataset, training_config=AdversarialTrainerConfig(
            per_device_train_batch_size=xs.shape[1], no_cuda=True,
            autoencoder_learning_rate=rates["autoencoder"], discriminator_learning_rate=rates["discriminator"],
            autoencoder_optimizer_params=optimizer_params, discriminator_optimizer_params=optimizer_params))
        trainer.set_autoencoder_optimizer()
        trainer.set_discriminator_optimizer()
        opts = {"autoencoder": trainer.autoencoder_optimizer, "discriminator": trainer.discriminator_optimizer}
    model = trainer.model
    model.train()  # as the trainer's train_step does at each epoch's start
    skipped = {"decoder": 0, "discriminator": 0}

    def step(i):
        out = model(DatasetOutput(data=xs[i % len(xs)]), epoch=1, dataset_size=len(dataset), uses_ddp=False)
        trainer._optimizers_step(out)  # the trainer's own: backward of each loss, then each optimizer's step
        if variant == "vae-gan":
            skipped["decoder"] += not out.update_decoder
            skipped["discriminator"] += not out.update_discriminator

    times = timed_steps(step, steps, profile)
    skipped_while_timed = dict(skipped)
    times["gflop_per_step"] = gflop_per_step(step, steps)  # its steps may skip updates too, as pythae decides
    nets = {"encoder": model.encoder.net, "decoder": model.decoder.net, "discriminator": model.discriminator}
    result = {**times, **describe(nets), "optimizers": optimizer_settings(opts)}
    if variant == "vae-gan":
        result["skipped_updates"] = skipped_while_timed
    return result


def check_same(variant: str, results: dict) -> dict:
    """The networks' parameter counts and layers, and the optimizers they share, equal on both sides."""
    a, b = results["dgm"], results["peer"]
    if a["parameters"] != b["parameters"] or a["layers"] != b["layers"]:
        raise SystemExit(f"{variant}: the networks differ: dgm {a['parameters']} {a['layers']}, "
                         f"pythae {b['parameters']} {b['layers']}")
    shared = set(a["optimizers"]) & set(b["optimizers"])
    if not shared or any(a["optimizers"][k] != b["optimizers"][k] for k in shared):
        raise SystemExit(f"{variant}: the optimizers differ: dgm {a['optimizers']}, pythae {b['optimizers']}")
    return a["parameters"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--pythae-python", default="/work/pythae-venv/bin/python")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--worker", choices=["peer", "dgm"])
    p.add_argument("--variant", choices=VARIANTS)
    p.add_argument("--profile", type=int, default=0, help="with --worker, vae-gan or aae: profile the last N steps "
                   "(torch.profiler's operator table on stderr)")
    p.add_argument("--pythae-margin", type=float, help="pythae VAEGAN's margin (default: pythae's, 0.4); a large one "
                   "(1e9) turns its skipped updates off, so pythae updates all three networks every step as dgm does")
    args = p.parse_args()
    if args.worker:
        xs = batches(Path(args.data_dir), 20, BATCH[args.variant], grey=args.variant in ADVERSARIAL)
        if args.variant in ADVERSARIAL:
            result = (peer_adversarial(args.variant, xs, args.steps, args.profile, args.pythae_margin)
                      if args.worker == "peer" else ours_adversarial(args.variant, xs, args.steps, args.profile))
            print(json.dumps(result))
        else:
            print(json.dumps({"step_seconds": (peer if args.worker == "peer" else ours)(args.variant, xs, args.steps)}))
        return
    pythons = {"dgm": sys.executable, "peer": args.pythae_python}
    summary = {}
    for variant in args.variants:
        rates: dict[str, list[float]] = {"peer": [], "dgm": []}
        cpu_rates: dict[str, list[float]] = {"peer": [], "dgm": []}
        gflops: dict[str, list[float]] = {"peer": [], "dgm": []}
        extra: dict = {}
        for r in range(args.repeats):
            results = {}
            for who in ("peer", "dgm"):
                margin = ["--pythae-margin", str(args.pythae_margin)] if args.pythae_margin is not None else []
                out = subprocess.run([pythons[who], __file__, "--worker", who, "--variant", variant, "--steps",
                                      str(args.steps), "--data-dir", args.data_dir, *margin],
                                     check=True, capture_output=True, text=True)
                results[who] = json.loads(out.stdout.strip().splitlines()[-1])
                secs = results[who]["step_seconds"][20:]  # after warm-up
                rates[who].append(BATCH[variant] * len(secs) / sum(secs))
                note = ""
                if "step_cpu_seconds" in results[who]:
                    cpu_secs = results[who]["step_cpu_seconds"][20:]
                    cpu_rates[who].append(BATCH[variant] * len(cpu_secs) / sum(cpu_secs))
                    note += f", {cpu_rates[who][-1]:6.0f} images per CPU-second"
                if "gflop_per_step" in results[who]:
                    gflops[who].append(results[who]["gflop_per_step"])
                    note += f", {gflops[who][-1]:.2f} GFLOP/step"
                if "skipped_updates" in results[who]:
                    note += f"  (pythae skipped updates: {results[who]['skipped_updates']} of {args.steps} steps)"
                print(f"{variant} repeat {r}: {who:>4} {rates[who][-1]:8.0f} images/s{note}", flush=True)
            if variant in ADVERSARIAL:
                extra["parameters"] = check_same(variant, results)
                if "skipped_updates" in results["peer"]:
                    extra.setdefault("pythae_skipped_updates", []).append(results["peer"]["skipped_updates"])
        peer_rate, ours_rate = statistics.median(rates["peer"]), statistics.median(rates["dgm"])
        summary[variant] = {"pythae_images_per_s": round(peer_rate), "dgm_images_per_s": round(ours_rate),
                            "ratio": round(ours_rate / peer_rate, 2),
                            "pythae_per_repeat": [round(v) for v in rates["peer"]],
                            "dgm_per_repeat": [round(v) for v in rates["dgm"]], **extra}
        if cpu_rates["dgm"]:
            peer_cpu, ours_cpu = statistics.median(cpu_rates["peer"]), statistics.median(cpu_rates["dgm"])
            summary[variant].update(pythae_images_per_cpu_s=round(peer_cpu), dgm_images_per_cpu_s=round(ours_cpu),
                                    cpu_ratio=round(ours_cpu / peer_cpu, 2))
        if gflops["dgm"]:
            summary[variant].update(pythae_gflop_per_step=round(statistics.median(gflops["peer"]), 2),
                                    dgm_gflop_per_step=round(statistics.median(gflops["dgm"]), 2))
    import torch

    summary["setup"] = {"steps": args.steps, "repeats": args.repeats, "pythae_margin": args.pythae_margin,
                        "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                        "machine": platform.processor() or platform.machine()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
