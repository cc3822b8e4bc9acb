"""The command line: the main job end to end, and one clear sentence for every user mistake."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dgm.cli import main
from dgm.io import load_tensors
from conftest import one_sentence

FAST = ["--no-progress", "hidden_dims=32", "latent_dim=4"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", "--epochs", "3", "--out", str(out), *FAST]) == 0
    return out


def test_train_writes_the_run_folder(trained):
    for name in ("config.json", "model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "samples.png",
                 "reconstructions.png"):
        assert (trained / name).is_file(), name
    config = json.loads((trained / "config.json").read_text())
    assert config["model"]["latent_dim"] == 4 and config["model"]["hidden_dims"] == [32]
    assert config["data"]["name"] == "digits" and config["train"]["epochs"] == 3
    assert [json.loads(line)["epoch"] for line in open(trained / "metrics.jsonl")] == [1.0, 2.0, 3.0]


def test_eval_json_reports_bounds_in_order(trained, capsys):
    code, out, _ = run(capsys, "eval", str(trained), "--k", "200", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["n_examples"] == 179 and result["k"] == 200
    assert result["elbo"] < result["log_likelihood"] < 0  # the IWAE bound is tighter than the ELBO
    assert result["bits_per_dim"] == pytest.approx(-result["log_likelihood"] / (64 * np.log(2)))


def test_sample_and_plots(trained, capsys, tmp_path):
    assert run(capsys, "sample", str(trained), "--n", "16", "--out", str(tmp_path / "s.png"))[0] == 0
    assert (tmp_path / "s.png").is_file()
    for kind in ("interpolate", "traverse", "embedding"):
        code, out, _ = run(capsys, "plot", str(trained), kind, "--n", "150")
        assert code == 0 and (trained / f"{kind}.png").is_file()
    code, _, err = run(capsys, "plot", str(trained), "manifold")
    assert code == 1 and "latent_dim=2" in err


def test_manifold_for_a_2d_latent(tmp_path, capsys):
    out = tmp_path / "vae2"
    assert run(capsys, "train", "vae", "--epochs", "1", "--out", str(out), "--no-progress", "latent_dim=2")[0] == 0
    assert run(capsys, "plot", str(out), "manifold")[0] == 0 and (out / "manifold.png").is_file()


def test_cli_resume_matches_an_uninterrupted_run(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(capsys, "train", "vae", "--epochs", "4", "--out", str(a), *FAST)[0] == 0
    assert run(capsys, "train", "vae", "--epochs", "2", "--out", str(b), *FAST)[0] == 0
    assert run(capsys, "resume", str(b), "--epochs", "4", "--no-progress")[0] == 0
    wa, _ = load_tensors(a / "checkpoint.safetensors")
    wb, _ = load_tensors(b / "checkpoint.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_zoo_and_data_list(capsys):
    code, out, _ = run(capsys, "zoo", "--json")
    vae = next(m for m in json.loads(out) if m["name"] == "vae")
    assert vae["seeds"] == "000,001,002,003,004" and {"elbo", "iwae", "encode"} <= set(vae["capabilities"].split())
    code, out, _ = run(capsys, "data", "list")
    assert code == 0 and any(line.split()[:1] == ["digits"] and " yes " in line for line in out.splitlines())



@pytest.mark.parametrize("argv,expected", [
    (["train", "nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["train", "vae", "--data", "nosuchdata"], "unknown dataset 'nosuchdata'"),
    (["train", "vae", "nosuch_option=3"], "unknown option 'nosuch_option'"),
    (["train", "vae", "latent_dim=abc"], "invalid value 'abc' for latent_dim"),
    (["train", "vae", "likelihood=poisson"], "invalid value 'poisson' for likelihood"),
    (["train", "vae", "optimizer=sgd"], "invalid value 'sgd' for optimizer"),
    (["train", "vae", "latent_dim"], "options are written key=value"),
    (["eval", "/nonexistent/run"], "does not exist"),
    (["resume", "/nonexistent/run"], "does not exist"),
    (["sample", "/nonexistent/run"], "does not exist"),
])
def test_user_mistakes_giveone_sentence(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 1 and expected in one_sentence(err)


def test_corrupt_files_are_reported_and_the_checkpoint_is_kept(trained, capsys, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(trained, run_dir)
    ckpt = run_dir / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated
    damaged = ckpt.read_bytes()
    code, _, err = run(capsys, "resume", str(run_dir), "--epochs", "5")
    assert code == 1 and "corrupt" in one_sentence(err)
    assert ckpt.read_bytes() == damaged  # nothing overwritten
    (run_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    code, _, err = run(capsys, "eval", str(run_dir))
    assert code == 1 and "corrupt" in one_sentence(err)
    (run_dir / "config.json").write_text("{ broken")
    code, _, err = run(capsys, "eval", str(run_dir))
    assert code == 1 and "config.json is corrupt" in one_sentence(err)
    code, _, err = run(capsys, "eval", str(tmp_path))
    assert code == 1 and "not a dgm run folder" in one_sentence(err)


def test_existing_run_folder_is_not_overwritten(trained, capsys):
    before = (trained / "model.safetensors").read_bytes()
    code, _, err = run(capsys, "train", "vae", "--out", str(trained))
    assert code == 1 and "already holds a run" in one_sentence(err)
    assert (trained / "model.safetensors").read_bytes() == before


def test_shape_mismatch(trained, capsys, tmp_path):
    path = tmp_path / "big.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
             x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8))
    code, _, err = run(capsys, "eval", str(trained), "--data", f"npz:{path}")
    assert code == 1 and "expects images of shape (1, 8, 8)" in one_sentence(err)


def test_the_installed_command_exits_non_zero_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dgm", "eval", str(tmp_path / "missing")], capture_output=True,
                            text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "does not exist" in result.stderr


def test_resume_changes_training_options_only(trained, capsys):
    code, _, err = run(capsys, "resume", str(trained), "latent_dim=3")
    assert code == 1 and "a resumed run can change only training options" in one_sentence(err)


def test_gan_pictures_and_mode_metrics(tmp_path, capsys):
    out = tmp_path / "gan"
    assert run(capsys, "train", "gan", "--data", "ring8", "--steps", "30", "--out", str(out), "--no-progress")[0] == 0
    assert (out / "samples.png").is_file() and (out / "losses.png").is_file()
    code, stdout, _ = run(capsys, "eval", str(out), "--json")
    result = json.loads(stdout)
    assert code == 0 and 0 <= result["modes_covered"] <= 8 and result["n_samples"] == 2500
    assert 0.0 <= result["high_quality_fraction"] <= 1.0
    img = tmp_path / "dcgan"
    assert run(capsys, "train", "dcgan", "--steps", "3", "--out", str(img), "--no-progress")[0] == 0
    for kind in ("interpolate", "nearest"):
        assert run(capsys, "plot", str(img), kind)[0] == 0 and (img / f"{kind}.png").is_file()
    code, _, err = run(capsys, "plot", str(img), "traverse")
    assert code == 1 and "has no encode() or decode()" in one_sentence(err)


def test_sample_a_label_from_a_conditional_gan(tmp_path, capsys, trained):
    out = tmp_path / "cgan"
    assert run(capsys, "train", "cgan", "--steps", "3", "--out", str(out), "--no-progress")[0] == 0
    assert run(capsys, "sample", str(out), "--label", "7", "--n", "4", "--out", str(tmp_path / "7.png"))[0] == 0
    assert (tmp_path / "7.png").is_file()
    code, _, err = run(capsys, "sample", str(out), "--label", "12")
    assert code == 1 and "labels must lie in 0 .. 9" in one_sentence(err)
    code, _, err = run(capsys, "sample", str(trained), "--label", "3")
    assert code == 1 and "not class-conditional" in one_sentence(err)


def test_bernoulli_on_grey_levels_reports_its_loss_and_no_likelihood(tmp_path, capsys):
    """A Bernoulli over digits' 17 grey levels is a training loss, not a distribution over the pixels:
    metrics.jsonl logs `bce`, and `dgm eval` gives no log_likelihood or bits_per_dim and says why."""
    out = tmp_path / "bce"
    assert run(capsys, "train", "vae", "--epochs", "2", "--out", str(out), *FAST, "likelihood=bernoulli")[0] == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train/bce" in record and "valid/bce" in record
    assert not any("elbo" in key or "log_px_z" in key for key in record)
    code, stdout, _ = run(capsys, "eval", str(out), "--metrics", "likelihood", "--k", "10", "--json")
    result = json.loads(stdout)
    assert code == 0 and "log_likelihood" not in result and "bits_per_dim" not in result and "elbo" not in result
    assert result["bce_kl"] > 0 and "not a distribution over the 17 grey levels" in result["likelihood_note"]
    code, stdout, _ = run(capsys, "eval", str(out), "--metrics", "likelihood", "--k", "10")
    rows = [line.split()[0] for line in stdout.splitlines() if line.strip()]
    assert code == 0 and "bce_kl" in rows and "bits_per_dim" not in rows and "log_likelihood" not in rows
    assert "is not a distribution over the 17 grey levels" in stdout


def test_eval_on_data_with_other_levels_is_refused(trained, capsys, tmp_path):
    """A likelihood over digits' 17 levels is no probability of 8-bit pixels of the same shape."""
    rng = np.random.default_rng(0)
    path = tmp_path / "grey8.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8),
             x_test=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8))
    code, _, err = run(capsys, "eval", str(trained), "--metrics", "likelihood", "--data", f"npz:{path}")
    assert code == 1 and "17 levels" in err and "256" in err and "Traceback" not in err


def _interrupt(argv, tmp_path, when) -> subprocess.CompletedProcess:
    """Run `python -m dgm ARGV`, send Ctrl-C (SIGINT) once when(tmp_path) holds, and wait for it."""
    import signal
    import time

    # SIGINT as in a terminal: a test run started in the background inherits it ignored
    proc = subprocess.Popen([sys.executable, "-m", "dgm", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not when() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_ctrl_c_exits_130_keeps_the_checkpoint_and_resumes_bitwise(tmp_path, capsys):
    import time

    options = ["--no-progress", "hidden_dims=32", "latent_dim=4", "checkpoint_every=6"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["train", "vae", "--epochs", "30", "--out", str(whole), *options]) == 0
    # at start-up, before anything is written: nothing is left
    early = _interrupt(["train", "vae", "--epochs", "30", "--out", str(cut), *options], tmp_path,
                       lambda: time.sleep(0.3) or True)
    assert early.returncode == 130 and "Traceback" not in early.stderr and early.stderr.count("\n") == 1
    assert not cut.exists()
    # mid-training, after a checkpoint: it is kept, the message names the folder to resume
    mid = _interrupt(["train", "vae", "--epochs", "30", "--out", str(cut), *options], tmp_path,
                     lambda: (cut / "checkpoint.safetensors").exists())
    assert mid.returncode == 130 and "Traceback" not in mid.stderr, mid.stderr
    assert f"dgm resume {cut}" in mid.stderr and mid.stderr.count("\n") == 1
    assert run(capsys, "resume", str(cut), "--no-progress")[0] == 0
    a, b = load_tensors(whole / "checkpoint.safetensors")[0], load_tensors(cut / "checkpoint.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_used_up_time_limit_is_said_on_resume_and_units_are_read(tmp_path, capsys):
    out = tmp_path / "timed"
    code, stdout, _ = run(capsys, "train", "vae", "--epochs", "5", "--out", str(out), *FAST, "time_limit=0.01s")
    assert code == 0 and "stopped by time limit" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["time_limit"] == pytest.approx(0.01 / 60)
    before = (out / "config.json").read_bytes()
    code, _, err = run(capsys, "resume", str(out), "--epochs", "3", "--no-progress")
    assert code == 1 and "past its time_limit" in err and "time_limit=0" in err
    assert (out / "config.json").read_bytes() == before
    assert run(capsys, "resume", str(out), "--epochs", "3", "--no-progress", "time_limit=0")[0] == 0
    assert json.loads((out / "config.json").read_text())["train"]["time_limit"] == 0


def test_a_folder_whose_training_never_checkpointed_is_reused(tmp_path, capsys):
    out = tmp_path / "never"
    out.mkdir()
    (out / "config.json").write_text("{}")  # as a killed `dgm train` leaves it
    (out / "metrics.jsonl").write_text('{"step": 99}\n')
    assert run(capsys, "train", "vae", "--epochs", "1", "--out", str(out), *FAST)[0] == 0
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [12]


def test_version_and_help_for_every_flag(capsys):
    from dgm import __version__
    from dgm.cli import make_parser

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"dgm {__version__}"
    parser = make_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"dgm {name} {action.option_strings or action.dest} has no help text"
