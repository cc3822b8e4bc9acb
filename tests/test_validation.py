"""Every bad value of every field of every model's config and of the training config ends in one
sentence and exit status 1, with no traceback and no folder left behind; a failed `dgm resume`
leaves the run's config.json byte for byte as it was."""
import dataclasses
import typing

import pytest

from dgm.api import RESERVED
from dgm.cli import main
from dgm.config import rule_of
from dgm.models import model_entries
from dgm.training import TrainConfig


def bad_values(config_cls: type, name: str) -> list[str]:
    """Command-line texts that field `name` must refuse: out of its range, NaN, infinite, of the wrong
    type, an unknown choice, a tuple of the wrong length."""
    hint = typing.get_type_hints(config_cls)[name]
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (
        typing.Union, __import__("types").UnionType) else [hint]
    kind = kinds[0]
    rule = rule_of(config_cls, name)
    if kind is bool:
        return ["maybe", "2"]
    if kind is str:
        if rule and rule.choices:
            return ["nonsense", ""]
        return ["???"] if rule and rule.pattern else []
    out = ["abc", "nan", "inf", "-inf"]
    elem = kind
    if typing.get_origin(kind) is tuple:
        (elem,) = set(typing.get_args(kind)) - {Ellipsis}
        if elem is str:  # a tuple of names (dcign's factors): a name its pattern refuses
            return ["???"] if rule and rule.pattern else []
        if rule and rule.length:
            out.append(",".join(["0.5"] * (rule.length + 1)))
        if rule and rule.nonempty:
            out.append(",")
    if rule is not None:
        for bound, step in ((rule.min, -1), (rule.max, 1)):
            if bound is not None:
                out.append(str(bound + step if elem is int else bound + step * 0.5))
        for bound in (rule.above, rule.below):
            if bound is not None:
                out.append(str(int(bound) if elem is int and bound == int(bound) else bound))
    if elem is int:
        out.append("1.5")
    return out


def _fields(config_cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls) if f.name not in RESERVED]


CASES = [(entry.name, field, text) for entry in model_entries() for field in _fields(entry.config_cls)
         for text in bad_values(entry.config_cls, field)]
TRAIN_CASES = [(field, text) for field in _fields(TrainConfig) for text in bad_values(TrainConfig, field)]


def test_every_field_has_values_it_refuses():
    """A field whose rule refuses nothing would make the tests below vacuous for it."""
    for entry in model_entries():
        for field in _fields(entry.config_cls):
            assert bad_values(entry.config_cls, field), f"{entry.name}.{field} declares nothing it refuses"
    for field in _fields(TrainConfig):
        assert field in ("tensorboard", "progress") or len(bad_values(TrainConfig, field)) >= 1, field


def _refused(capsys, argv, field, text) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, (argv, err)
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("dgm: error: "), err
    assert field in err, err
    return err


@pytest.mark.parametrize("model,field,text", CASES)
def test_train_refuses_a_bad_model_option(model, field, text, tmp_path, capsys):
    out = tmp_path / "run"
    _refused(capsys, ["train", model, f"{field}={text}", "--steps", "1", "--out", str(out), "--no-progress"],
             field, text)
    assert not out.exists()


@pytest.mark.parametrize("field,text", TRAIN_CASES)
def test_train_and_resume_refuse_a_bad_training_option(field, text, resumable, tmp_path, capsys):
    out = tmp_path / "run"
    _refused(capsys, ["train", "vae", f"{field}={text}", "--steps", "1", "--out", str(out), "--no-progress"],
             field, text)
    assert not out.exists()
    before = {p.name: p.read_bytes() for p in resumable.iterdir() if p.is_file()}
    _refused(capsys, ["resume", str(resumable), f"{field}={text}", "--no-progress"], field, text)
    after = {p.name: p.read_bytes() for p in resumable.iterdir() if p.is_file()}
    assert after == before  # config.json, weights, checkpoint and metrics untouched


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", "--steps", "3", "--out", str(out), "--no-progress", "hidden_dims=8",
                 "latent_dim=2"]) == 0
    return out


@pytest.mark.parametrize("flag,value", [("--steps", "-5"), ("--epochs", "-1"), ("--batch-size", "0"),
                                        ("--seed", "-3")])
def test_train_flags_are_checked_like_options(flag, value, tmp_path, capsys):
    out = tmp_path / "run"
    _refused(capsys, ["train", "vae", flag, value, "--out", str(out)], flag[2:].replace("-", "_"), value)
    assert not out.exists()


@pytest.mark.parametrize("argv,field", [(["sample", "RUN", "--n", "0"], "--n"), (["eval", "RUN", "--k", "0"], "--k"),
                                        (["eval", "RUN", "--n-samples", "1"], "--n-samples"),
                                        (["eval", "RUN", "--n-examples", "-2"], "--n-examples")])
def test_count_flags_are_checked(argv, field, resumable, capsys):
    argv = [str(resumable) if a == "RUN" else a for a in argv]
    _refused(capsys, argv, field, argv[-1])


def test_python_api_refuses_bad_values_too():
    from dgm.errors import DgmError
    from dgm.models import create_model

    with pytest.raises(DgmError, match="invalid value '-1' for latent_dim"):
        create_model("vae", {"latent_dim": -1})
    with pytest.raises(DgmError, match="for lr"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(DgmError, match="for hidden_dims"):
        create_model("gan", {"hidden_dims": (16, 0)})
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)
