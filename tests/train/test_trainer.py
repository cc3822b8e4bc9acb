"""The trainer: exact resume, data-parallel equivalence, divergence guard, early stopping."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import LinearAutoencoder, tiny_dataset

from dgm.errors import DgmError, DivergenceError, Interrupted
from dgm.io import load_tensors
from dgm.models import create_model
from dgm.training import TrainConfig, Trainer
from dgm.training.trainer import CHECKPOINT, METRICS, WEIGHTS

HERE = Path(__file__).parent


def _vae():
    torch.manual_seed(0)
    return create_model("vae", {"data_shape": (1, 4, 4), "levels": 17, "hidden_dims": (32,), "latent_dim": 4})


def _run(tmp, resume_from=None, **cfg):
    model = _vae()
    trainer = Trainer(model, tiny_dataset(), TrainConfig(batch_size=16, progress=False, device="cpu", **cfg),
                      out_dir=tmp)
    trainer.fit(resume_from=resume_from)
    return model, trainer


def _metrics(path):
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in open(path / METRICS)]


@pytest.mark.parametrize("first,total", [({"epochs": 2}, {"epochs": 4}),  # stop at an epoch end
                                         ({"steps": 9, "checkpoint_every": 3}, {"steps": 20, "checkpoint_every": 3})])  # mid-epoch
def test_stop_and_resume_is_bitwise_identical(tmp_path, first, total):
    straight, _ = _run(tmp_path / "straight", **total)
    _run(tmp_path / "stopped", **first)
    resumed, trainer = _run(tmp_path / "stopped", resume_from=tmp_path / "stopped" / CHECKPOINT, **total)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    ckpt_a, _ = load_tensors(tmp_path / "straight" / CHECKPOINT)
    ckpt_b, _ = load_tensors(tmp_path / "stopped" / CHECKPOINT)
    assert ckpt_a.keys() == ckpt_b.keys() and all(torch.equal(ckpt_a[k], ckpt_b[k]) for k in ckpt_a)  # Adam too
    assert _metrics(tmp_path / "straight") == _metrics(tmp_path / "stopped")


@pytest.mark.parametrize("name,options", [
    ("factor-analysis", {"latent_dim": 3}),                 # dequantization noise from the step's seed
    ("density-network", {"hidden_dims": (8,), "latent_dim": 2, "n_samples": 4}),  # prior samples likewise
    ("hvae", {"hidden_dims": (8,), "latent_dim": 2, "prior": "mog"}),
    ("vae", {"hidden_dims": (8,), "latent_dim": 2, "prior": "flow", "flow": "iaf", "flow_hidden": 8,
             "flow_context": 4}),
])
def test_stop_and_resume_is_bitwise_for_the_vae_family(tmp_path, name, options):
    """Every random draw of these models' losses comes from the trainer's per-step seeds, so a run stopped
    mid-way and resumed ends with the same weights as one never stopped."""
    def run(out, steps, resume=False):
        torch.manual_seed(0)
        model = create_model(name, {"data_shape": (1, 4, 4), "levels": 17, **options})
        Trainer(model, tiny_dataset(), TrainConfig(steps=steps, batch_size=16, checkpoint_every=3, progress=False,
                                                   device="cpu"), out_dir=out).fit(
            resume_from=out / CHECKPOINT if resume else None)
        return model

    straight = run(tmp_path / "a", 8)
    run(tmp_path / "b", 3)
    resumed = run(tmp_path / "b", 8, resume=True)
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key


def _torchrun(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    """torchrun --standalone --nproc_per_node 2 (it picks a free port itself): no retry, a non-zero exit fails."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=timeout)


def test_two_process_gloo_step_equals_single_process_step_on_the_global_batch(tmp_path):
    for steps in (1, 3):
        out = tmp_path / f"ddp{steps}.safetensors"
        result = _torchrun([str(HERE / "ddp_worker.py"), str(out), str(steps)], timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        torch.manual_seed(0)
        single = LinearAutoencoder()
        Trainer(single, tiny_dataset(), TrainConfig(steps=steps, batch_size=16, lr=0.05, progress=False,
                                                    device="cpu")).fit()
        ddp_weights, _ = load_tensors(out)
        before = LinearAutoencoder()
        moved = False
        for name, w in single.state_dict().items():
            assert torch.allclose(ddp_weights[name], w, atol=1e-6), name
            moved |= not torch.allclose(w, before.state_dict()[name])
        assert moved


def test_repeated_two_process_runs_all_exit_0(tmp_path):
    """Each run ends with exit 0. Before dgm.training.distributed.init imported torch._dynamo ahead of the
    process group, about 1 run in 15 under load aborted at interpreter exit (SIGABRT, "terminate called
    without an active exception") after its work was done; a sequential repeat makes such a teardown
    race visible."""
    for i in range(4):
        result = _torchrun([str(HERE / "ddp_worker.py"), str(tmp_path / f"w{i}.safetensors"), "2"], timeout=120)
        assert result.returncode == 0, f"run {i}: exit {result.returncode}\n{result.stderr[-3000:]}"
        assert "terminate called" not in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc/self/task")
def test_the_process_group_is_gone_after_shutdown(tmp_path):
    """The cause of that abort, checked directly: after a Trainer (whose optimizer imports torch._dynamo)
    and shutdown(), no gloo worker thread is left to outlive the interpreter."""
    script = tmp_path / "threads.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from helpers import LinearAutoencoder, tiny_dataset\n"
        "from dgm.training import TrainConfig, Trainer\n"
        "from dgm.training.distributed import shutdown\n"
        "Trainer(LinearAutoencoder(), tiny_dataset(), TrainConfig(steps=1, batch_size=8, progress=False, device='cpu'))"
        ".fit()\n"
        "shutdown()\n"
        "names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]\n"
        f"open(os.path.join({str(tmp_path)!r}, 'rank' + os.environ['RANK']), 'w')"
        ".write(str(sum('gloo' in n for n in names)))\n")  # a file per rank: their prints would interleave
    result = _torchrun([str(script)], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["0", "0"]


def test_torchrun_cli_writes_one_run_folder(tmp_path):
    out = tmp_path / "run"
    result = _torchrun(["-m", "dgm", "train", "vae", "--epochs", "2", "--out", str(out), "--no-progress",
                        "hidden_dims=32"], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in open(out / METRICS)]
    assert [r["epoch"] for r in records] == [1.0, 2.0]  # written once, by rank 0
    assert (out / "samples.png").is_file() and (out / WEIGHTS).is_file()


class _Diverging(LinearAutoencoder):
    def loss(self, batch, step=None):
        out = super().loss(batch, step)
        if step is not None and step >= 8:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    model = _Diverging()
    trainer = Trainer(model, tiny_dataset(n=96), TrainConfig(epochs=5, batch_size=16, progress=False),
                      out_dir=tmp_path)  # 6 steps per epoch: NaN in epoch 2
    with pytest.raises(DivergenceError, match="last good checkpoint \\(step 6\\)"):
        trainer.fit()
    _, meta = load_tensors(tmp_path / CHECKPOINT)
    assert json.loads(meta["trainer"])["step"] == 6
    weights, _ = load_tensors(tmp_path / WEIGHTS)
    assert all(torch.isfinite(w).all() for w in weights.values())


class _Overfitting(LinearAutoencoder):
    """Validation loss that gets worse every epoch after the first."""

    def __init__(self):
        super().__init__()
        self.validations = 0

    def loss(self, batch, step=None):
        out = super().loss(batch, step)
        if not self.training:
            out["loss"] = torch.tensor(float(self.validations // 2))  # 2 valid batches per validation
            self.validations += 1
        return out


def test_early_stopping_keeps_the_best_weights(tmp_path):
    model = _Overfitting()
    trainer = Trainer(model, tiny_dataset(n=96), TrainConfig(epochs=50, batch_size=8, early_stopping=3,
                                                             progress=False), out_dir=tmp_path)
    summary = trainer.fit()
    assert summary["stop_reason"] == "early_stopping" and summary["epochs"] == 4 and summary["best_step"] == 12
    best, _ = load_tensors(tmp_path / WEIGHTS)
    assert not torch.equal(best["enc.weight"], model.enc.weight)  # the epoch-1 weights, not the last ones


def test_lr_schedule_and_gradient_clipping():
    model = LinearAutoencoder()
    trainer = Trainer(model, tiny_dataset(), TrainConfig(epochs=2, batch_size=16, lr_schedule="cosine",
                                                         grad_clip=1e-3, lr=1.0, optimizer="adamax", progress=False))
    assert trainer._lr_factor(0) == 1.0 and trainer._lr_factor(trainer.total_steps) == pytest.approx(0.0)
    w0 = model.enc.weight.detach().clone()
    trainer.train_step(0)
    grad_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
    assert grad_norm <= 1e-3 + 1e-7
    assert not torch.equal(w0, model.enc.weight)


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    trainer = Trainer(LinearAutoencoder(), tiny_dataset(), TrainConfig(epochs=1, tensorboard=True, progress=False),
                      out_dir=tmp_path)
    with pytest.raises(DgmError, match="pip install tensorboard"):
        trainer.fit()


@pytest.mark.parametrize("name,options", [("vae", {"architecture": "conv", "conv_channels": (8, 8)}),
                                          ("dcgan", {"base_channels": 8})])
def test_bf16_precision_runs_forward_passes_in_bfloat16_and_keeps_float32_weights_and_losses(name, options):
    ds = tiny_dataset(n=64, shape=(1, 8, 8))
    model = create_model(name, {"data_shape": (1, 8, 8), "levels": 17, "num_classes": 10, **options})
    seen = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer = Trainer(model, ds, TrainConfig(steps=2, batch_size=32, precision="bf16", progress=False))
    out = trainer.train_step(0)
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(DgmError, match="invalid value 'fp8' for precision; it takes one of fp32, bf16"):
        TrainConfig(precision="fp8")


def test_time_limit_stops_inside_a_long_epoch_with_a_checkpoint(tmp_path):
    model = _vae()
    trainer = Trainer(model, tiny_dataset(n=2000), TrainConfig(batch_size=8, progress=False, time_limit=1e-9),
                      out_dir=tmp_path)
    summary = trainer.fit()
    assert summary["stop_reason"] == "time_limit" and summary["steps"] == 25 < trainer.steps_per_epoch
    tensors, meta = load_tensors(tmp_path / CHECKPOINT)
    assert json.loads(meta["trainer"])["step"] == 25
    assert [json.loads(line)["step"] for line in open(tmp_path / METRICS)] == [25]


class _CtrlCAtStep3(LinearAutoencoder):
    """Presses Ctrl-C (SIGINT to itself) in the middle of step 3's loss."""

    def loss(self, batch, step=None):
        if step == 3:
            import signal
            os.kill(os.getpid(), signal.SIGINT)
        return super().loss(batch, step)


def test_ctrl_c_stops_at_the_next_step_boundary(tmp_path):
    """The interrupt is acted on after the step it lands in, never inside it (where a library could swallow it):
    the step indexed 3 completes, so the run stops at step 4 with the checkpoint of step 3 kept."""
    import signal

    trainer = Trainer(_CtrlCAtStep3(), tiny_dataset(n=96), TrainConfig(epochs=5, batch_size=16, checkpoint_every=3,
                                                                        progress=False), out_dir=tmp_path)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)
    try:
        with pytest.raises(Interrupted, match="interrupted at step 4; the checkpoint of step 3 is kept"):
            trainer.fit()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    finally:
        signal.signal(signal.SIGINT, outer)
    _, meta = load_tensors(tmp_path / CHECKPOINT)
    assert json.loads(meta["trainer"])["step"] == 3
