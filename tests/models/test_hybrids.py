"""What seed 003's five auto-encoding GANs share: the zoo lists them with their capabilities, a stopped run resumes
bitwise (every optimizer's state too), a NaN stops training, they train in step across two processes, they run
from the command line with their pictures, and asking one for what it cannot do gets one sentence."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dgm.cli import main
from dgm.data import Dataset, Split, load_dataset
from dgm.errors import DivergenceError
from dgm.io import load_tensors
from dgm.models import capabilities, create_model, get_entry
from dgm.training import TrainConfig, Trainer
from dgm.training.trainer import CHECKPOINT

HYBRIDS = ("alpha-gan", "vae-gan", "aae", "bigan", "age")
WORKER = Path(__file__).parents[1] / "train" / "ddp_models_worker.py"
CONV = {"base_channels": 4, "latent_dim": 4, "code_hidden": (8,)}
MLP = {"architecture": "mlp", "hidden_dims": (16,), "latent_dim": 2, "code_hidden": (8,)}
# (model, options, data): conv nets with batch norm on 8x8 images, MLPs on 2-D points, and each model's
# options that draw more random numbers (a Gaussian encoder, the label prior, a swiss roll)
CASES = [
    ("alpha-gan", CONV, "images"),
    ("vae-gan", CONV, "images"),
    ("vae-gan", MLP, "points"),
    ("aae", {**CONV, "prior": "mog", "latent_dim": 2, "n_components": 10, "label_prior": True}, "images"),
    ("aae", {**MLP, "prior": "swiss_roll"}, "points"),
    ("bigan", {**CONV, "encoder": "gaussian"}, "images"),
    ("bigan", MLP, "points"),
    ("age", CONV, "images"),
]


def _data(kind: str) -> Dataset:
    g = torch.Generator().manual_seed(0)
    if kind == "points":
        make = lambda m: Split(torch.randn(m, 2, generator=g))  # noqa: E731
        return Dataset("points", make(48), make(16), make(16), levels=0)
    make = lambda m: Split(torch.randint(0, 17, (m, 1, 8, 8), generator=g, dtype=torch.uint8),  # noqa: E731
                           torch.randint(0, 10, (m,), generator=g))
    return Dataset("tiny", make(48), make(16), make(16), levels=17, num_classes=10)


def _run(out, name, options, data, steps, resume=False):
    torch.manual_seed(0)
    model = create_model(name, {"data_shape": data.shape, "levels": data.levels, "num_classes": data.num_classes,
                                **options})
    Trainer(model, data, TrainConfig(steps=steps, batch_size=16, checkpoint_every=3, progress=False, device="cpu"),
            out_dir=out).fit(resume_from=out / CHECKPOINT if resume else None)
    return model


@pytest.mark.parametrize("name,options,kind", CASES)
def test_stop_and_resume_is_bitwise_identical(tmp_path, name, options, kind):
    """Every random draw of a step comes from the trainer's per-step seed, and every optimizer is checkpointed:
    a run stopped mid-epoch (3 steps per epoch) and resumed ends as one never stopped."""
    data = _data(kind)
    straight = _run(tmp_path / "a", name, options, data, 8)
    _run(tmp_path / "b", name, options, data, 5)
    resumed = _run(tmp_path / "b", name, options, data, 8, resume=True)
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key  # batch-norm running statistics included
    ckpt_a, _ = load_tensors(tmp_path / "a" / CHECKPOINT)
    ckpt_b, _ = load_tensors(tmp_path / "b" / CHECKPOINT)
    assert {k.split("#")[0] for k in ckpt_a if k.startswith("opt/")} == {f"opt/{n}" for n in straight.networks}
    assert ckpt_a.keys() == ckpt_b.keys() and all(torch.equal(ckpt_a[k], ckpt_b[k]) for k in ckpt_a)


@pytest.mark.parametrize("name", HYBRIDS)
def test_a_nan_in_the_data_stops_training_with_the_divergence_error(name):
    d = load_dataset("digits")
    x = d.train.x.float()
    x[5] = float("nan")
    data = Dataset("digits", Split(x, d.train.y), d.valid, d.test, levels=17, num_classes=10)
    model = create_model(name, {"data_shape": (1, 8, 8), "levels": 17, **CONV})
    with pytest.raises(DivergenceError, match="NaN"):
        Trainer(model, data, TrainConfig(epochs=1, batch_size=256, progress=False, device="cpu")).fit()


@pytest.mark.parametrize("name", HYBRIDS)
def test_the_command_line_trains_each_hybrid_and_draws_samples_reconstructions_and_interpolations(tmp_path, name):
    out = tmp_path / "run"
    assert main(["train", name, "--data", "digits", "--steps", "3", "--out", str(out), "--no-progress",
                 "base_channels=4", "latent_dim=4"]) == 0
    for picture in ("samples.png", "reconstructions.png"):
        assert (out / picture).read_bytes()[:4] == b"\x89PNG", picture
    assert main(["plot", str(out), "interpolate"]) == 0  # between two encoded test images
    assert (out / "interpolate.png").read_bytes()[:4] == b"\x89PNG"


def test_the_zoo_lists_every_hybrid_with_seed_003_and_what_it_can_do(capsys):
    for name in HYBRIDS:
        entry = get_entry(name)
        assert "003" in entry.seeds and entry.family == "hybrid"
        assert {"train_step", "sample", "encode", "decode"} <= set(capabilities(entry.model_cls)), name
    assert main(["zoo"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in HYBRIDS)


@pytest.mark.parametrize("name", HYBRIDS)
def test_encode_decode_and_sample_have_the_data_shapes_and_leave_batch_norm_alone(name):
    torch.manual_seed(0)
    model = create_model(name, {"data_shape": (1, 8, 8), "latent_dim": 4, "base_channels": 4, "code_hidden": (8,)})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(5, 1, 8, 8)
    z = model.encode(x)
    assert z.shape == (5, 4)
    assert model.decode(z).shape == x.shape and model.reconstruct(x).shape == x.shape
    g = torch.Generator().manual_seed(1)
    a = model.sample(3, generator=g)
    assert a.shape == (3, 1, 8, 8) and ((a >= 0) & (a <= 1)).all()
    assert torch.equal(a, model.sample(3, generator=torch.Generator().manual_seed(1)))  # seeded
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running statistics untouched
    assert model.training  # modes restored


def test_two_processes_keep_every_hybrid_in_step(tmp_path):
    """Under torchrun (gloo, 2 processes) the trainer averages each optimizer's gradients across the ranks
    before its step, so both ranks hold bitwise the same weights after training, and they moved."""
    options = {"architecture": "mlp", "latent_dim": 2, "hidden_dims": [8], "code_hidden": [8]}
    models = {name: options for name in HYBRIDS}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(WORKER), str(tmp_path / "w"), "3", json.dumps(models)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in HYBRIDS:
        ranks = [load_tensors(tmp_path / f"w.{name}.rank{r}.safetensors")[0] for r in (0, 1)]
        torch.manual_seed(0)
        start = create_model(name, {"data_shape": (2,), "levels": 0, **options}).state_dict()
        assert ranks[0].keys() == ranks[1].keys() == start.keys()
        for key in ranks[0]:
            assert torch.equal(ranks[0][key], ranks[1][key]), (name, key)
        assert any(not torch.equal(ranks[0][k], start[k]) for k in start), name


def test_a_metric_a_hybrid_cannot_have_or_an_ignored_option_is_refused_in_one_sentence(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "bigan", "--data", "digits", "--out", str(out), "--steps", "2", "--no-progress",
                 "base_channels=4", "latent_dim=4"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--metrics", "likelihood"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "likelihood" in err
    assert main(["train", "alpha-gan", "--data", "digits", "--out", str(tmp_path / "bad"), "--steps", "3",
                 "--no-progress", "lr=0.1"]) == 1  # the trainer's lr would be ignored
    err = capsys.readouterr().err
    assert "g_lr" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()  # no half-made run folder blocks a retry
