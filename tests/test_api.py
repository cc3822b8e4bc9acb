"""The Python API does what the command line does: the same run folder, bitwise, from the same seed."""
import json

import pytest
import torch

import dgm
from dgm.cli import main
from dgm.errors import DgmError
from dgm.io import load_tensors

OPTIONS = {"hidden_dims": (32,), "latent_dim": 4, "progress": False}
CLI_OPTIONS = ["--no-progress", "hidden_dims=32", "latent_dim=4"]


def _same_tensors(a, b) -> bool:
    ta, tb = load_tensors(a)[0], load_tensors(b)[0]
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_train_writes_the_run_folder_the_cli_writes(tmp_path, capsys):
    run = dgm.train("vae", out=tmp_path / "api", epochs=3, quiet=True, **OPTIONS)
    assert main(["train", "vae", "--epochs", "3", "--out", str(tmp_path / "cli"), *CLI_OPTIONS]) == 0
    capsys.readouterr()
    api, cli = tmp_path / "api", tmp_path / "cli"
    assert sorted(p.name for p in api.iterdir()) == sorted(p.name for p in cli.iterdir())
    assert _same_tensors(api / "model.safetensors", cli / "model.safetensors")
    assert _same_tensors(api / "checkpoint.safetensors", cli / "checkpoint.safetensors")
    assert json.loads((api / "config.json").read_text()) == json.loads((cli / "config.json").read_text())
    assert isinstance(run, dgm.Run) and run.path == api
    assert [r["epoch"] for r in run.metrics] == [1.0, 2.0, 3.0] and "valid/elbo" in run.metrics[-1]
    assert run.config["model"]["hidden_dims"] == [32] and {p.name for p in run.pictures} >= {"samples.png"}


def test_resume_continues_bitwise_and_train_resume_true_reruns_a_cell(tmp_path):
    whole = dgm.train("vae", out=tmp_path / "whole", epochs=4, quiet=True, **OPTIONS)
    part = dgm.train("vae", out=tmp_path / "part", epochs=2, quiet=True, **OPTIONS)
    dgm.resume(part, epochs=4, quiet=True)
    assert _same_tensors(whole.path / "checkpoint.safetensors", part.path / "checkpoint.safetensors")
    # the same notebook cell run again with resume=True continues instead of refusing
    again = dgm.train("vae", out=tmp_path / "part", epochs=5, resume=True, quiet=True, **OPTIONS)
    assert again.metrics[-1]["epoch"] == 5.0
    with pytest.raises(DgmError, match="trained with latent_dim=4, not 8"):
        dgm.train("vae", out=tmp_path / "part", epochs=6, resume=True, quiet=True, **{**OPTIONS, "latent_dim": 8})
    with pytest.raises(DgmError, match="already holds a run"):
        dgm.train("vae", out=tmp_path / "part", epochs=6, quiet=True, **OPTIONS)


def test_bad_options_raise_the_cli_sentence(tmp_path, capsys):
    for options, text in (({"lr": -1}, "lr=-1"), ({"latent_dim": 0}, "latent_dim=0"),
                          ({"optimizer": "sgdd"}, "optimizer=sgdd"), ({"nonsense": 1}, "nonsense=1")):
        with pytest.raises(DgmError) as e:
            dgm.train("vae", out=tmp_path / "bad", epochs=1, **options)
        assert main(["train", "vae", text, "--epochs", "1", "--out", str(tmp_path / "bad")]) == 1
        assert capsys.readouterr().err.strip() == f"dgm: error: {e.value}"
        assert not (tmp_path / "bad").exists()


def test_evaluate_and_sample_as_the_cli(tmp_path, capsys):
    run = dgm.train("vae", out=tmp_path / "run", epochs=2, quiet=True, **OPTIONS)
    scores = dgm.evaluate(run, metrics=["likelihood"], k=20, progress=False)
    assert main(["eval", str(run.path), "--metrics", "likelihood", "--k", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == scores
    assert run.scores["log_likelihood"] == scores["log_likelihood"] < 0
    x = dgm.sample(run, 5, seed=3)
    assert x.shape == (5, 1, 8, 8) and torch.equal(x, dgm.sample(run.path, 5, seed=3))
    with pytest.raises(DgmError, match="not class-conditional"):
        dgm.sample(run, 2, label=1)
    with pytest.raises(DgmError, match="unknown metric 'fidd'"):
        dgm.evaluate(run, metrics=["fidd"])
