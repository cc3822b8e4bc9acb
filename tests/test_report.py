"""dgm eval (sample quality, --metrics), dgm report and dgm compare on tiny trained runs."""
import json
import re

import pytest

from dgm.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    assert main(["train", "vae", "--epochs", "2", "--out", str(base / "vae"), "--no-progress", "hidden_dims=32",
                 "latent_dim=4"]) == 0
    assert main(["train", "gan", "--steps", "30", "--out", str(base / "gan"), "--no-progress"]) == 0
    return base / "vae", base / "gan"


def test_eval_chosen_metrics_with_the_reference_floor(runs, capsys):
    vae, _ = runs
    code, out, _ = run(capsys, "eval", str(vae), "--metrics", "fid,precision_recall,diversity", "--n-samples", "100",
                       "--json")
    assert code == 0
    result = json.loads(out)
    assert {"fid", "precision", "recall", "diversity"} <= result.keys() and "elbo" not in result
    assert "critic_w" not in result and result["n_samples"] == 100 and result["feature_net"] == "dgm-digits"
    assert result["reference"].keys() == {"fid", "precision", "recall", "diversity"}
    assert result["reference"]["fid"] < result["fid"]  # two epochs of a tiny VAE are far from the real digits
    assert json.loads((vae / "eval.json").read_text())["fid"] == result["fid"]  # cached for report and compare


def test_eval_rejects_a_bad_metric_and_one_the_model_cannot_have(runs, capsys):
    vae, gan = runs
    code, _, err = run(capsys, "eval", str(vae), "--metrics", "fid,sharpness")
    assert code == 1 and "unknown metric 'sharpness'" in err and "precision_recall" in err
    code, _, err = run(capsys, "eval", str(gan), "--metrics", "likelihood")
    assert code == 1 and "has no likelihood" in err


def test_report_writes_html_whose_every_image_exists(runs, capsys):
    vae, gan = runs
    assert run(capsys, "eval", str(gan), "--metrics", "fid,kid,critic", "--n-samples", "100")[0] == 0
    for folder in (vae, gan):
        code, out, _ = run(capsys, "report", str(folder))
        assert code == 0 and out.strip() == str(folder / "report.html")
        page = (folder / "report.html").read_text()
        images = re.findall(r"<img src='([^']+)'", page)
        assert images and all((folder / src).is_file() for src in images)
        assert "real test vs train (floor)" in page and "<td class='num'>" in page
    vae_page = (vae / "report.html").read_text()
    assert "report/reconstructions.png" in vae_page and "report/nearest.png" in vae_page
    assert "report/reconstructions.png" not in (gan / "report.html").read_text()  # a GAN cannot encode


def test_compare_prints_a_leaderboard_with_the_floor(runs, capsys):
    vae, gan = runs
    code, out, _ = run(capsys, "compare", str(vae), str(gan))
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["run", "model", "data"] and "FID" in lines[0]
    assert {"vae", "gan"} <= {line.split()[0] for line in lines[1:]} and "real test vs train" in out
    code, out, _ = run(capsys, "compare", str(vae), str(gan), "--markdown")
    rows = out.strip().splitlines()
    assert code == 0 and rows[1].startswith("|---") and len({r.count("|") for r in rows}) == 1


def test_compare_needs_eval_first(tmp_path, capsys):
    out = tmp_path / "fresh"
    assert main(["train", "vae", "--steps", "5", "--out", str(out), "--no-progress", "hidden_dims=16"]) == 0
    code, _, err = run(capsys, "compare", str(out))
    assert code == 1 and "dgm eval" in err


def test_scores_of_replaced_weights_are_marked_stale(tmp_path, capsys):
    """A run scored, then trained further: `dgm compare` marks its row, `dgm report` rescores and saves."""
    from dgm.cli import main

    run = tmp_path / "vae"
    assert main(["train", "vae", "--steps", "12", "--out", str(run), "--no-progress", "hidden_dims=8",
                 "latent_dim=2"]) == 0
    assert main(["eval", str(run), "--metrics", "likelihood", "--k", "5", "--json"]) == 0
    capsys.readouterr()
    assert main(["compare", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "stale" not in out + err
    assert main(["resume", str(run), "--steps", "24", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["compare", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "vae (stale)" in out and "rescore with `dgm eval" in err
    assert main(["report", str(run)]) == 0
    capsys.readouterr()
    assert main(["compare", str(run)]) == 0  # the report's fresh scores were saved
    out, err = capsys.readouterr()
    assert "stale" not in out + err and "log p(x)" in out
