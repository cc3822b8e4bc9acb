"""One training loop for every model family.

The trainer knows a model only through its protocol:
- `loss(batch, step) -> {"loss": ..., other scalars}`: one optimizer, built here; or
- `optimizers(train_cfg) -> {name: optimizer}` and `train_step(batch, optimizers, step) -> dict`:
  the model runs its own alternating updates (GANs: critic steps, clipping, penalties) or phases;
- optionally `training_labels(train_y)`, the labels batches carry (-1 for one the model must not see);
  with `labelled_batch_size` n > 0 and some labels hidden, each batch (x, y) gets n labelled examples
  (x_l, y_l) drawn from the kept ones appended: (x, y, x_l, y_l) (the semi-supervised M2);
- optionally `plan_training(steps_per_epoch, total_steps)`, told before the first step, for a
  model whose phases are counted in epochs (the stacked autoencoder's greedy pretraining);
- optionally `batch_fields(dataset, split)`, what batches carry after the images instead of the labels
  (attribute vectors, masks, colour targets), and `batch_source(dataset)`, a model's own batches
  (DC-IGN's, rendered with one factor varying); see dgm.models.

Everything random in a step is seeded from (seed, rank, step), and each epoch's order from
(seed, epoch), so a run stopped at any checkpoint and resumed ends bitwise identical on CPU
to one never stopped, and the checkpoint needs no RNG state. Under torchrun each rank takes
every world_size-th example of the global batch and gradients are averaged across ranks
before every optimizer step (the same arithmetic as DistributedDataParallel, for any number
of optimizers); only rank 0 writes.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from dgm import io
from dgm.config import Checked, choice, number, numbers, parse_minutes, text
from dgm.data import Dataset
from dgm.errors import DgmError, DivergenceError, Interrupted
from dgm.models import batch_fields
from dgm.training import distributed as ddp

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"


@dataclass
class TrainConfig(Checked):
    epochs: int = number(100, min=0)
    steps: int = number(0, min=0)  # total optimizer steps; overrides epochs when > 0
    batch_size: int = number(128, min=1)  # per process
    optimizer: str = choice("adam", "adam", "adamax")
    lr: float = number(1e-3, above=0)
    betas: tuple[float, float] = numbers((0.9, 0.999), min=0, below=1, length=2)
    weight_decay: float = number(0.0, min=0)
    lr_schedule: str = choice("constant", "constant", "cosine", "exponential")
    lr_decay: float = number(1.0, above=0, max=1)  # exponential schedule: factor per epoch
    grad_clip: float = number(0.0, min=0)  # max global gradient norm; 0 disables
    precision: str = choice("fp32", "fp32", "bf16")  # bf16: forward passes under bfloat16 autocast (weights,
    # optimizer and validation stay float32); about twice as fast for convolutions on CPUs with AVX-512 BF16 or AMX
    # minutes of training, summed over resumes, checked every 25 steps; 0 = none ('90s', '25m', '1.5h' from the CLI)
    time_limit: float = number(0.0, min=0, parse=parse_minutes,
                               described="a duration >= 0: minutes, or with a unit (90s, 25m, 1.5h)")
    early_stopping: int = number(0, min=0)  # patience in validations without improvement of `monitor`; 0: off
    monitor: str = text("auto", r"[A-Za-z0-9_/]+", "auto or the name of a validation term, e.g. loss or fid")
    # the validation term minimised for the best weights and early stopping; auto: the validation loss, or for a
    # model without one that samples images (GANs) the FID of monitor_samples samples against the validation split
    monitor_samples: int = number(500, min=10)  # samples per validation FID (monitor=fid)
    eval_every: int = number(0, min=0)  # also validate every this many steps; 0 = at epoch ends only
    checkpoint_every: int = number(0, min=0)  # also checkpoint every this many steps; 0 = at epoch ends only
    log_every: int = number(0, min=0)  # also log train averages every this many steps; 0 = per epoch
    seed: int = number(0, min=0)
    device: str = text("auto", r"auto|cpu|cuda(:[0-9]+)?|mps", "auto, cpu, cuda or cuda:N")  # auto: CUDA, then CPU
    tensorboard: bool = False
    progress: bool = True


def select_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DgmError(f"device '{name}' was asked for but CUDA is not available; use device=auto or device=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DgmError(f"unknown device '{name}'; use auto, cpu or cuda") from None


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    kinds = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}  # TrainConfig's choices
    kwargs = {"lr": cfg.lr, "betas": tuple(cfg.betas), "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "adam":
        kwargs["fused"] = True  # one kernel for all parameters: 3x faster than the loop on CPU
    return kinds[cfg.optimizer](params, **kwargs)


def _ctrl_c_between_steps(trainer: "Trainer") -> Callable[[], None]:
    """Make Ctrl-C stop training at the next step boundary (trainer._ctrl_c), not wherever it lands: an
    interrupt raised inside a library call (a checkpoint being written, a picture being drawn) would leave
    that call half done, or meet code that catches BaseException. A second Ctrl-C interrupts at once. Returns the function
    that puts the previous handler back. Only in the main thread and over Python's default handler: a
    process that ignores SIGINT, or a caller with a handler of its own, keeps it."""
    import signal
    import threading

    trainer._ctrl_c = False
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):  # ignored (nohup) or the caller's
        return lambda: None

    def handler(signum, frame):
        if trainer._ctrl_c:
            raise KeyboardInterrupt
        trainer._ctrl_c = True

    previous = signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


@dataclass
class TrainerState:
    step: int = 0
    best_metric: float = math.inf
    best_step: int = -1
    bad_epochs: int = 0
    stop_reason: str = ""  # "early_stopping" or "time_limit" when training ended before its last step
    elapsed: float = 0.0  # seconds of training, summed over resumes


@dataclass
class Trainer:
    model: nn.Module
    dataset: Dataset
    cfg: TrainConfig
    out_dir: Path | None = None
    callbacks: list[Callable[["Trainer"], None]] = field(default_factory=list)  # at epoch ends and the last step
    on_checkpoint: list[Callable[["Trainer"], None]] = field(default_factory=list)  # before each checkpoint write

    def __post_init__(self):
        torch.set_flush_denormal(True)  # border pixels' sigmoids underflow into slow denormals otherwise
        self.rank, self.world_size, local_rank = ddp.world()
        self.device = select_device(self.cfg.device, local_rank)
        ddp.init(self.device)
        self.model.to(self.device)
        if ddp.is_distributed():
            ddp.broadcast_module(self.model)
        self.out_dir = Path(self.out_dir) if self.out_dir else None
        self.is_writer = self.rank == 0 and self.out_dir is not None
        if self.is_writer:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.state = TrainerState()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self._perm: tuple[int, torch.Tensor] | None = None
        if callable(getattr(self.model, "train_step", None)):
            self.optimizers = self.model.optimizers(self.cfg)
        elif callable(getattr(self.model, "loss", None)):
            self.optimizers = {"model": make_optimizer(self.model.parameters(), self.cfg)}
        else:
            raise DgmError(f"{type(self.model).__name__} has neither loss() nor train_step(); it cannot be trained")
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
            opt.register_step_pre_hook(self._before_optimizer_step)
        split = self.dataset.train
        self.train_x = split.x.to(self.device)
        fields = [None if f is None else f.to(self.device) for f in batch_fields(self.model, self.dataset, split)]
        if fields[0] is not None and callable(getattr(self.model, "training_labels", None)):
            fields[0] = self.model.training_labels(fields[0])  # -1 where a label is hidden (M2)
        self.train_fields, self.train_y = fields, fields[0]
        source = getattr(self.model, "batch_source", None)
        self.batch_source = source(self.dataset) if callable(source) else None  # the model's own batches
        # a model that learns from few labels gets a batch of labelled examples beside each batch (M2)
        self.labelled = None
        if self.train_y is not None and getattr(self.model, "labelled_batch_size", 0):
            kept = (self.train_y >= 0).nonzero().squeeze(1)
            self.labelled = kept if 0 < len(kept) < len(self.train_y) else None
        global_batch = self.cfg.batch_size * self.world_size
        n = len(split)
        if n < global_batch and self.world_size > 1:
            raise DgmError(f"the training set has {n} examples, fewer than one global batch of {global_batch}")
        # one process keeps the last short batch; several drop it so every rank has the same count
        self.steps_per_epoch = math.ceil(n / global_batch) if self.world_size == 1 else n // global_batch
        self.total_steps = self.cfg.steps if self.cfg.steps > 0 else self.cfg.epochs * self.steps_per_epoch
        if callable(getattr(self.model, "plan_training", None)):  # phases counted in epochs (stacked autoencoder)
            self.model.plan_training(self.steps_per_epoch, self.total_steps)
        self.monitor = self._resolve_monitor()
        self._fid = None  # the ValidationFID, built at the first validation that needs it

    def _resolve_monitor(self) -> str | None:
        """The validation term to minimise: the configured one, or for `auto` the loss, else the samples'
        FID for image generators without a loss; None when there is nothing to select on."""
        from dgm.evaluation.quality import ValidationFID

        has_loss = callable(getattr(self.model, "loss", None))
        can_fid = not has_loss and ValidationFID.available(self.model, self.dataset)
        if self.cfg.monitor == "auto":
            return "loss" if has_loss else ("fid" if can_fid else None)
        if self.cfg.monitor == "fid" and not has_loss and not can_fid:
            raise DgmError("monitor=fid needs a model that samples images of a dataset with a validation split "
                           "and a feature network (digits, MNIST, or Inception-v3 weights on disk)")
        return self.cfg.monitor

    # --- one optimizer step ------------------------------------------------------------------
    def _before_optimizer_step(self, opt, args, kwargs) -> None:
        params = [p for g in opt.param_groups for p in g["params"]]
        if ddp.is_distributed():
            ddp.average_gradients(params)
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        factor = self._lr_factor(self.state.step)
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * factor

    def _lr_factor(self, step: int) -> float:
        if self.cfg.lr_schedule == "constant":
            return 1.0
        if self.cfg.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, self.total_steps) / max(1, self.total_steps)))
        return self.cfg.lr_decay ** (step / self.steps_per_epoch)  # exponential, the last of its choices

    def _seed_epoch(self, epoch: int) -> None:
        """Each epoch's noise stream starts from (seed, epoch, rank); checkpoints store where it got to."""
        torch.manual_seed((self.cfg.seed * 1_000_003 + epoch) * 1_021 + self.rank)

    def batch_indices(self, step: int) -> torch.Tensor:
        """This rank's share of the global batch for `step`: a fixed function of (seed, step)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.cfg.seed * 7_919 + epoch)
            self._perm = (epoch, torch.randperm(len(self.train_x), generator=g).to(self.device))
        g = self.cfg.batch_size * self.world_size
        return self._perm[1][i * g : (i + 1) * g][self.rank :: self.world_size]

    def train_step(self, step: int) -> dict[str, torch.Tensor]:
        if step % self.steps_per_epoch == 0:
            self._seed_epoch(step // self.steps_per_epoch)
        if self.batch_source is not None:  # a fixed function of (seed, step, rank), like the noise
            g = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + step) * 1_021 + self.rank)
            batch = tuple(None if t is None else t.to(self.device)
                          for t in self.batch_source(step, self.cfg.batch_size, g))
        else:
            idx = self.batch_indices(step)
            fields = (None if f is None else f[idx] for f in self.train_fields)
            batch = (self.dataset.to_float(self.train_x[idx]), *fields)
        if self.labelled is not None:  # drawn with replacement, a fixed function of (seed, step, rank)
            g = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + step) * 1_021 + self.rank)
            pick = self.labelled[torch.randint(len(self.labelled), (self.model.labelled_batch_size,), generator=g)
                                 .to(self.device)]
            batch = (*batch, self.dataset.to_float(self.train_x[pick]), self.train_y[pick])
        if not self.model.training:
            self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
            if callable(getattr(self.model, "train_step", None)):
                return self.model.train_step(batch, self.optimizers, step)
            opt = self.optimizers["model"]
            out = self.model.loss(batch, step)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            return out

    # --- validation -----------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean of the model's loss terms on the validation split (full objective, fixed noise); for a
        model without a loss and monitor fid, the FID of its samples (fixed noise) against that split."""
        if len(self.dataset.valid) == 0:
            return {}
        if not callable(getattr(self.model, "loss", None)):
            if self.monitor != "fid":
                return {}
            from dgm.evaluation.quality import ValidationFID

            if self._fid is None:
                self._fid = ValidationFID(self.dataset, n=self.cfg.monitor_samples, seed=self.cfg.seed)
            self.model.eval()
            return {"fid": self._fid(self.model)}
        self.model.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed + 12_345)
            return self._validate()

    def _validate(self) -> dict[str, float]:
        sums: dict[str, float] = {}
        valid = self.dataset.valid
        fields = batch_fields(self.model, self.dataset, valid)
        n = len(valid)
        bs = 4 * self.cfg.batch_size
        for start in range(0, n, bs):
            x = self.dataset.to_float(valid.x[start : start + bs].to(self.device))
            out = self.model.loss((x, *(None if f is None else f[start : start + bs].to(self.device)
                                        for f in fields)), None)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v) * x.shape[0]
        return {k: v / n for k, v in sums.items()}

    # --- checkpoints ----------------------------------------------------------------------------
    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def save_checkpoint(self) -> None:
        """Weights, optimizer states and counters in one safetensors file, written atomically."""
        rng = self._rng_states()  # a collective: every rank takes part
        if not self.is_writer:
            return
        for hook in self.on_checkpoint:
            hook(self)
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        tensors.update(rng)
        if self.best_weights is not None:
            tensors.update({f"best/{k}": v for k, v in self.best_weights.items()})
        skeletons = {name: io.pack_state(opt.state_dict(), tensors, f"opt/{name}")
                     for name, opt in self.optimizers.items()}
        meta = {"trainer": json.dumps(asdict(self.state)), "optimizers": json.dumps(skeletons)}
        # model.safetensors holds the best weights on the validation monitor (the latest without one)
        io.save_tensors(self.out_dir / WEIGHTS, self.best_weights or self.model.state_dict())
        io.save_tensors(self.out_dir / CHECKPOINT, tensors, metadata=meta)

    def load_checkpoint(self, path: Path) -> None:
        tensors, meta = io.load_tensors(path)
        try:
            skeletons = json.loads(meta["optimizers"])
            state = TrainerState(**json.loads(meta["trainer"]))
            self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
            best = {k[5:]: v.to(self.device) for k, v in tensors.items() if k.startswith("best/")}
            for name, opt in self.optimizers.items():
                opt.load_state_dict(io.unpack_state(skeletons[name], tensors))
        except (KeyError, TypeError, RuntimeError, ValueError, json.JSONDecodeError) as e:
            raise DgmError(f"{path} does not match this model ({type(e).__name__}: {str(e)[:200]}); "
                           "it may come from another model or dgm version") from None
        self.state = state
        self.best_weights = best or None
        if f"rng/cpu/{self.rank}" in tensors:
            torch.set_rng_state(tensors[f"rng/cpu/{self.rank}"])
        if f"rng/cuda/{self.rank}" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors[f"rng/cuda/{self.rank}"], self.device)

    def _rng_states(self) -> dict[str, torch.Tensor]:
        """Every rank's generator state, so a resume mid-epoch continues each noise stream exactly."""
        states = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        out = {}
        for kind, state in states.items():
            gathered = [state]
            if ddp.is_distributed():
                gathered = ddp.all_gather(state, self.device)
            out.update({f"rng/{kind}/{r}": t for r, t in enumerate(gathered)})
        return out

    # --- logging --------------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        if not self.is_writer:
            return
        with open(self.out_dir / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(k, v, record["step"])

    def _truncate_metrics(self) -> None:
        """Drop metric lines written after the checkpoint we resume from (they will be redone)."""
        path = self.out_dir / METRICS if self.out_dir else None
        if not self.is_writer or not path.exists():
            return
        keep = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= self.state.step]
        io.atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())

    def _open_tensorboard(self):
        if not (self.cfg.tensorboard and self.is_writer):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise DgmError("tensorboard=true needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    # --- the loop -------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.state.step // self.steps_per_epoch

    def fit(self, resume_from: Path | None = None) -> dict[str, Any]:
        """Train until `total_steps` (or early stopping); returns a summary."""
        from tqdm.auto import tqdm

        if resume_from is not None:
            self.load_checkpoint(resume_from)
            used = self.state.elapsed / 60
            if 0 < self.cfg.time_limit <= used:
                raise DgmError(f"this run has trained {used:.1f} minutes, already past its time_limit of "
                               f"{self.cfg.time_limit:g} minutes, so it would stop at once; resume with a larger "
                               f"time_limit (e.g. time_limit={math.ceil(used) + 30}m) or time_limit=0 for none")
            self._truncate_metrics()
            self.state.stop_reason = ""  # resuming means: go on (to the new epochs or time limit)
        elif self.is_writer and (self.out_dir / METRICS).exists():
            (self.out_dir / METRICS).unlink()  # a fresh run in a folder whose training never reached a checkpoint
        self.tb = self._open_tensorboard()
        bar = tqdm(total=self.total_steps, initial=self.state.step, disable=not (self.cfg.progress and self.rank == 0),
                   unit="step", dynamic_ncols=True, mininterval=0.5)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        last_good = self.state.step if resume_from is not None else None  # the step of the last checkpoint
        t0 = time.perf_counter()
        restore_ctrl_c = _ctrl_c_between_steps(self)
        try:
            while self.state.step < self.total_steps and not self.state.stop_reason:
                if self._ctrl_c:
                    raise KeyboardInterrupt
                step = self.state.step
                out = self.train_step(step)
                for k, v in out.items():
                    v = v.detach()
                    sums[k] = sums[k] + v if k in sums else v.clone()
                count += 1
                self.state.step = step + 1
                bar.update(1)
                # validation and best-weight tracking happen at epoch ends (and every eval_every steps)
                # only, so where a run stops (its last step, a checkpoint) never changes what a longer run does
                at_epoch_end = self.state.step % self.steps_per_epoch == 0
                at_valid = at_epoch_end or self.cfg.eval_every > 0 and self.state.step % self.cfg.eval_every == 0
                at_log = self.cfg.log_every > 0 and self.state.step % self.cfg.log_every == 0
                at_ckpt = (self.cfg.checkpoint_every > 0 and self.state.step % self.cfg.checkpoint_every == 0
                           or self.state.step == self.total_steps or at_valid)
                # the time limit is looked at every 25 steps and at epoch ends (rank 0's clock decides), so
                # a long epoch cannot overrun it; a stop mid-epoch logs and checkpoints where it stops
                over_time = False
                if self.cfg.time_limit > 0 and (count % 25 == 0 or at_epoch_end):
                    over_time = ddp.rank0_says(
                        self.cfg.time_limit <= (self.state.elapsed + time.perf_counter() - t0) / 60, self.device)
                    at_ckpt = at_ckpt or over_time
                if count % 25 == 0 or at_epoch_end or at_log or at_ckpt:
                    means = {k: float(v) / count for k, v in sums.items()}
                    if not all(math.isfinite(v) for v in means.values()):
                        bad = ", ".join(k for k, v in means.items() if not math.isfinite(v))
                        raise DivergenceError(
                            f"training diverged: {bad} became NaN or infinite before step {self.state.step}; "
                            + (f"the last good checkpoint (step {last_good}) is kept — " if last_good is not None
                               else "no checkpoint had been written yet — ")
                            + "lower lr or set grad_clip=1.0 and start again or resume")
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(means.items())[:4]}, refresh=False)
                if not (at_epoch_end or at_log or at_ckpt):
                    continue
                self.state.elapsed += time.perf_counter() - t0
                t0 = time.perf_counter()
                record = {"step": self.state.step, "epoch": self.state.step / self.steps_per_epoch,
                          "time": round(self.state.elapsed, 3)}
                record.update({f"lr/{name}": opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()})
                record.update({f"train/{k}": v for k, v in means.items()})
                sums, count = {}, 0
                if at_valid:
                    record.update({f"valid/{k}": v for k, v in self.validate().items()})
                    self._track_best(record)
                if over_time:
                    self.state.stop_reason = "time_limit"
                self.log(record)
                if at_ckpt:
                    self.save_checkpoint()
                    last_good = self.state.step
                if at_epoch_end or self.state.step == self.total_steps:
                    for callback in self.callbacks:
                        callback(self)
                t0 = time.perf_counter()
        except KeyboardInterrupt:
            if last_good is None:
                raise Interrupted(f"interrupted at step {self.state.step}, before the first checkpoint, so there "
                                  "is nothing to resume") from None
            where = f"`dgm resume {self.out_dir}`" if self.out_dir else "Trainer.fit(resume_from=...)"
            raise Interrupted(f"interrupted at step {self.state.step}; the checkpoint of step {last_good} is kept — "
                              f"continue with {where}") from None
        finally:
            restore_ctrl_c()
            bar.close()
            if self.tb is not None:
                self.tb.close()
        return {"steps": self.state.step, "epochs": self.state.step / self.steps_per_epoch,
                "seconds": self.state.elapsed, "best_metric": self.state.best_metric,
                "best_step": self.state.best_step, "stop_reason": self.state.stop_reason, "monitor": self.monitor}

    def _track_best(self, record: dict[str, Any]) -> None:
        key = f"valid/{self.monitor}"
        if key not in record:
            terms = sorted(k[6:] for k in record if k.startswith("valid/"))
            if terms:
                raise DgmError(f"monitor={self.monitor} is not a validation term of this model; "
                               f"choose one of {', '.join(terms)}")
            return
        value = record[key]
        if value < self.state.best_metric:
            self.state.best_metric, self.state.best_step, self.state.bad_epochs = value, self.state.step, 0
            self.best_weights = self._weights()
        else:
            self.state.bad_epochs += 1
            if 0 < self.cfg.early_stopping <= self.state.bad_epochs:
                self.state.stop_reason = "early_stopping"
