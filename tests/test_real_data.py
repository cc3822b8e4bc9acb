"""Real data from $DGM_DATA_DIR or ../shared/data (skipped with the reason when absent)."""
import json

import pytest

from dgm.cli import main

pytestmark = pytest.mark.slow


def test_vae_on_static_binarized_mnist_end_to_end(shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "vae", "--data", "binarized-mnist", "--data-dir", str(shared_data), "--out", str(out),
                 "--steps", "300", "--no-progress", "batch_size=100"])
    assert code == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--k", "100", "--n-examples", "200", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # 300 steps is far from converged (~89 nats), but already far better than the 543.4 nats of
    # a pixel-independent coin flip, and the IWAE bound sits above the ELBO
    assert -200 < result["elbo"] < result["log_likelihood"] < -85
    assert result["n_examples"] == 200


def test_dynamic_binarization_of_mnist(shared_data, tmp_path):
    from dgm.data import load_dataset

    ds = load_dataset("mnist", data_dir=shared_data, binarize="dynamic")
    x1, x2 = ds.to_float(ds.train.x[:64]), ds.to_float(ds.train.x[:64])
    assert set(x1.unique().tolist()) == {0.0, 1.0} and not (x1 == x2).all()  # resampled every call
    assert ds.model_levels == 2
    assert abs(x1.mean().item() - ds.train.x[:64].float().mean().item() / 255) < 0.01
