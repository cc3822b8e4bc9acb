"""M2's mathematics (U(x) as the sum over labels, the cvae as its one-class case, L <= log p(x, y) and
U <= IWAE_k <= log p(x) against quadrature), its labels (balanced, deterministic, never leaking), and m2 through
the trainer, `dgm eval` (classification_error), `dgm sample --label` and `dgm plot RUN analogies`."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

import dgm
from dgm.cli import main
from dgm.data import Dataset, Split, load_dataset
from dgm.errors import DgmError
from dgm.evaluation.likelihood import bounds_take_labels
from dgm.models import create_model
from dgm.models.vae import gaussian_kl
from dgm.training import TrainConfig, Trainer
from dgm.training.trainer import CHECKPOINT
from dgm.viz.analogies import analogies

from test_cvae import DIGITS, _digits, _one_sentence  # noqa: E402  (tests/models is on the path)


# --- the bounds ------------------------------------------------------------------------------
def test_unlabelled_bound_is_the_sum_over_labels_of_q_y_times_the_labelled_bound_plus_the_entropy():
    torch.manual_seed(0)
    m2 = create_model("m2", {**DIGITS, "hidden_dims": (16,), "latent_dim": 3}).double()
    x = _digits(5)[0].double()
    b, k, n = len(x), 10, 2
    with torch.no_grad():
        torch.manual_seed(1)
        u = m2.elbo(x, n_samples=n)
        torch.manual_seed(1)  # the same noise: one draw for the K copies of the batch, copy y in rows y B ..
        xk, ck = m2.every_class(x)
        z = m2.posterior(xk, ck).rsample((n,))  # [n, K B, D]
        q = m2.classify(x)  # [B, K]
        loop = torch.zeros(b, dtype=torch.float64)
        for y in range(k):
            labels = torch.full((b,), y)
            bound = (m2.log_px_z(z[:, y * b:(y + 1) * b], x, labels).mean(0) - gaussian_kl(m2.posterior(x, labels))
                     - math.log(k))  # L(x, y) = E log p(x|y,z) - KL + log p(y)
            loop += q[:, y] * bound
        loop -= (q * q.log()).sum(1)  # + H(q(y|x))
    assert torch.allclose(u, loop, rtol=0, atol=1e-10), (u - loop).abs().max()
    assert torch.allclose(q.sum(1), torch.ones(b, dtype=torch.float64))


@pytest.mark.parametrize("options", [{"hidden_dims": (12,)},
                                     {"architecture": "conv", "conv_channels": (4, 6)}])
def test_with_one_class_m2_is_the_cvae(options):
    """K = 1: q(y|x) = 1, H = 0 and log p(y) = 0, so U(x) = L(x, 0) = the cvae's ELBO(x|0) with the same networks
    and noise, and so are the IWAE bounds and the loss (labelled or not)."""
    opts = {"data_shape": (1, 8, 8), "levels": 17, "latent_dim": 3, "num_classes": 1, **options}
    torch.manual_seed(0)
    m2 = create_model("m2", opts).double()
    cvae = create_model("cvae", opts).double()
    missing, unexpected = m2.load_state_dict(cvae.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("classifier.") or key == "label_ratio" for key in missing)
    x = _digits(5)[0].double()
    zero, hidden = torch.zeros(5, dtype=torch.long), torch.full((5,), -1)
    pairs = {"elbo": (lambda: m2.elbo(x, n_samples=3), lambda: cvae.elbo(x, n_samples=3, y=zero)),
             "iwae": (lambda: m2.iwae(x, 7), lambda: cvae.iwae(x, 7, y=zero)),
             "unlabelled loss": (lambda: m2.loss((x, hidden))["loss"], lambda: cvae.loss((x, zero))["loss"]),
             "labelled loss": (lambda: m2.loss((x, zero))["loss"], lambda: cvae.loss((x, zero))["loss"])}
    with torch.no_grad():
        for name, (of_m2, of_cvae) in pairs.items():
            torch.manual_seed(1)
            ours = of_m2()
            torch.manual_seed(1)
            theirs = of_cvae()
            assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-10), (name, ours, theirs)


def _tiny_exact_m2():
    """An m2 over 2x2 binary images with K = 3 classes, a 1-D latent and linear networks: p(x|y,z) = prod_i
    Bernoulli(x_i | sigmoid(a_i z + V_iy + b_i)), so log p(x) = log 1/3 sum_y int p(x|y,z) N(z; 0, 1) dz."""
    torch.manual_seed(3)
    m2 = create_model("m2", {"data_shape": (1, 2, 2), "levels": 2, "num_classes": 3, "hidden_dims": (),
                             "latent_dim": 1}).double()
    with torch.no_grad():
        m2.decoder[0][0].weight.mul_(4)  # a decoder that cares about z and y: the posterior is not the prior
        m2.encoder[1][0].bias[0] += 1.0  # and an encoder whose q(z|x,y) misses it: gaps to see
    return m2


def _quadrature_log_p_given_y(m2, x: torch.Tensor) -> torch.Tensor:
    """log p(x|y) for every class y on a fine grid of z, the logits from the decoder's weights: [K, B]."""
    lin = m2.decoder[0][0]
    w, b = lin.weight.double(), lin.bias.double()  # [4, 1 + K]: z's column, then the one-hot label's
    z = torch.linspace(-12, 12, 24_001, dtype=torch.float64)
    log_pz = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    xf = x.flatten(1).double()
    out = []
    for y in range(3):
        logits = z[:, None, None] * w[:, 0] + (w[:, 1 + y] + b)  # [G, 1, 4]
        log_px_z = -(xf * F.softplus(-logits) + (1 - xf) * F.softplus(logits)).sum(-1)  # [G, B]
        out.append(torch.logsumexp(log_px_z + log_pz[:, None], 0) + torch.log(z[1] - z[0]))
    return torch.stack(out)


def test_bounds_against_log_p_by_quadrature():
    m2 = _tiny_exact_m2()
    x = torch.tensor([[int(b) for b in f"{i:04b}"] for i in range(16)], dtype=torch.float64).reshape(16, 1, 2, 2)
    with torch.no_grad():
        log_p_given_y = _quadrature_log_p_given_y(m2, x)  # [3, 16]
        log_p_joint = log_p_given_y - math.log(3)
        exact = torch.logsumexp(log_p_joint, 0)  # log p(x)
    assert torch.allclose(torch.logsumexp(exact, 0), torch.zeros((), dtype=torch.float64), atol=1e-9)  # sums to 1
    reps = 300
    xr = x.repeat(reps, 1, 1, 1)
    with torch.no_grad():
        joint = m2.class_bounds(xr, n_samples=10).reshape(3, reps, 16)  # L(x, y) for every y
        draws = {"u": m2.elbo(xr, n_samples=10)} | {k: m2.iwae(xr, k) for k in (1, 5, 50)}
        large = m2.iwae(x, 20_000)
    # L(x, y) < log p(x, y) for every pair, beyond its noise
    assert torch.all(log_p_joint - joint.mean(1) > 3 * joint.std(1) / math.sqrt(reps))
    gap = {key: exact - d.reshape(reps, 16).mean(0) for key, d in draws.items()}  # log p(x) - bound, [16]
    se = {key: d.reshape(reps, 16).std(0) / math.sqrt(reps) for key, d in draws.items()}
    assert torch.all(gap["u"] > 3 * se["u"]) and all(torch.all(gap[k] > -3 * se[k]) for k in (1, 5, 50))
    # over the 16 images: U < IWAE_1 < IWAE_5 < IWAE_50 < log p(x) in expectation
    mean = {key: g.mean() for key, g in gap.items()}
    pooled = {key: s.pow(2).sum().sqrt() / len(s) for key, s in se.items()}
    for lo, hi in (("u", 1), (1, 5), (5, 50)):
        assert mean[lo] - mean[hi] > 3 * (pooled[lo] + pooled[hi]), (lo, hi, mean)
    assert mean[50] > -3 * pooled[50]  # (by then within a few thousandths of a nat)
    assert torch.allclose(large, exact, atol=0.03), (large - exact).abs().max()


def test_eval_scores_m2s_bounds_as_bounds_of_log_p_x():
    assert not bounds_take_labels(create_model("m2", DIGITS))  # elbo(x), iwae(x, k): y summed out
    assert bounds_take_labels(create_model("cvae", DIGITS))  # elbo(x, y=...): log p(x | y)
    assert not bounds_take_labels(create_model("vae", DIGITS))


# --- labels ----------------------------------------------------------------------------------
def test_training_labels_are_balanced_deterministic_and_hidden_elsewhere():
    y = load_dataset("digits").train.y
    m2 = create_model("m2", {**DIGITS, "labels": 50, "hidden_dims": (8,)})
    kept = m2.training_labels(y)
    shown = kept >= 0
    assert shown.sum() == 50 and torch.all(kept[~shown] == -1) and torch.equal(kept[shown], y[shown])
    assert torch.equal(kept[shown].bincount(minlength=10), torch.full((10,), 5))
    assert m2.label_ratio.item() == pytest.approx(len(y) / 50)
    assert torch.equal(create_model("m2", {**DIGITS, "labels": 50}).training_labels(y), kept)  # a resume's
    other = create_model("m2", {**DIGITS, "labels": 50, "label_seed": 1}).training_labels(y)
    assert not torch.equal(other, kept) and (other >= 0).sum() == 50
    assert torch.all(create_model("m2", {**DIGITS, "labels": 0}).training_labels(y) == -1)
    for every in (-1, len(y), 10 ** 6):
        assert torch.equal(create_model("m2", {**DIGITS, "labels": every}).training_labels(y), y)
    with pytest.raises(DgmError, match="labels=15 cannot be split evenly over the 10 classes; choose a multiple "
                                       "of 10 such as 10 or 20"):
        create_model("m2", {**DIGITS, "labels": 15}).training_labels(y)
    with pytest.raises(DgmError, match=r"keeps 140 labels of each class but class \d has only 13\d"):
        create_model("m2", {**DIGITS, "labels": 1400}).training_labels(y)


def test_hidden_labels_never_reach_the_loss():
    """Two training sets that differ only in labels m2 hides train bitwise alike."""
    data = load_dataset("digits")
    m2 = create_model("m2", {**DIGITS, "labels": 20, "hidden_dims": (16,), "latent_dim": 2})
    kept = m2.training_labels(data.train.y)
    changed = data.train.y.clone()
    for i in (kept < 0).nonzero().squeeze(1)[:40].tolist():  # relabel hidden examples (where the draw allows)
        changed[i] = (changed[i] + 1) % 10
        if not torch.equal(m2.training_labels(changed), kept):
            changed[i] = data.train.y[i]
    assert (changed != data.train.y).sum() >= 20
    outs = []
    for labels in (data.train.y, changed):
        dataset = Dataset("digits", Split(data.train.x, labels), data.valid, data.test, levels=17, num_classes=10)
        trainer = Trainer(copy.deepcopy(m2), dataset, TrainConfig(steps=2, batch_size=128, progress=False,
                                                                  device="cpu"))
        assert torch.equal(trainer.train_y, kept)
        outs.append([{k: v.detach() for k, v in trainer.train_step(s).items()} for s in range(2)]
                    + [trainer.model.state_dict()])
    for a, b in zip(*outs):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # within a batch, what a hidden label holds does not matter either
    x = data.to_float(data.train.x[:6])
    y = torch.tensor([3, -1, 5, -1, -1, 0])
    torch.manual_seed(2)
    loss = m2.loss((x, y))["loss"]
    torch.manual_seed(2)
    assert torch.equal(m2.loss((x, torch.tensor([3, -7, 5, -2, -1, 0])))["loss"], loss)


def test_the_trainer_draws_a_labelled_batch_from_the_kept_labels_and_the_loss_is_j():
    """With labelled_batch=n the trainer appends n kept examples to each batch (a fixed draw per step), and the
    loss is -[(1 - N_l/N) mean_u U + N_l/N mean_l L + alpha mean_l log q(y_l|x_l)], checked term by term with
    the same noise."""
    data = load_dataset("digits")
    m2 = create_model("m2", {**DIGITS, "labels": 20, "labelled_batch": 7, "hidden_dims": (16,), "latent_dim": 2,
                             "alpha": 0.5}).double()
    trainer = Trainer(m2, data, TrainConfig(steps=2, batch_size=32, progress=False, device="cpu"))
    kept = (trainer.train_y >= 0).nonzero().squeeze(1)
    seen = []
    m2.loss = lambda batch, step=None: seen.append(batch) or {"loss": 0 * sum(p.sum() for p in m2.parameters())}
    for step in (0, 1, 0):
        trainer.train_step(step)
    (x, y, x_l, y_l), again = seen[0][:4], seen[2]
    x, x_l = x.double(), x_l.double()
    assert len(seen[0]) == 4 and x_l.shape == (7, 1, 8, 8) and torch.all(y_l >= 0)
    train = data.to_float(data.train.x)
    picked = [int((train[kept] - xi).flatten(1).abs().sum(1).argmin()) for xi in x_l]
    assert torch.equal(y_l, trainer.train_y[kept[picked]])  # kept examples with their own labels
    assert torch.equal(again[2].double(), x_l) and not torch.equal(seen[1][2], x_l)  # a function of the step
    del m2.loss
    ratio = m2.label_ratio.item()
    assert ratio == len(data.train.y) / 20
    torch.manual_seed(5)
    out = m2.loss((x, y, x_l, y_l))
    torch.manual_seed(5)
    log_q_l = m2.log_q_y(x_l)
    labelled = m2.labelled_bound(x_l, y_l)
    unl = y < 0
    unlabelled = m2.elbo(x[unl])
    expected = ((1 - 1 / ratio) * unlabelled.mean() + labelled.mean() / ratio
                + 0.5 * log_q_l.gather(1, y_l[:, None]).mean())
    assert torch.allclose(out["loss"], -expected, atol=1e-10)
    assert torch.allclose(out["bound"], (1 - 1 / ratio) * unlabelled.mean() + labelled.mean() / ratio, atol=1e-10)


def test_resume_sees_the_same_labels_and_is_bitwise(tmp_path):
    data = load_dataset("digits")
    torch.manual_seed(0)
    m2 = create_model("m2", {**DIGITS, "labels": 30, "hidden_dims": (16,), "latent_dim": 2})

    def fit(steps: int, out, resume: bool = False) -> Trainer:
        trainer = Trainer(copy.deepcopy(m2), data, TrainConfig(steps=steps, batch_size=128, checkpoint_every=2,
                                                               progress=False, device="cpu"), out_dir=out)
        trainer.fit(resume_from=out / CHECKPOINT if resume else None)
        return trainer

    whole = fit(4, tmp_path / "whole")
    fit(2, tmp_path / "part")
    resumed = fit(4, tmp_path / "part", resume=True)
    assert torch.equal(resumed.train_y, whole.train_y) and (whole.train_y >= 0).sum() == 30
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_the_classifier_term_moves_q_y_towards_the_labels(alpha):
    """On labelled examples only, L(x, y) does not depend on q(y|x): the classifier learns from alpha's term
    alone."""
    torch.manual_seed(0)
    m2 = create_model("m2", {**DIGITS, "hidden_dims": (16,), "latent_dim": 2, "alpha": alpha})
    x, y = _digits(32)
    opt = torch.optim.SGD(m2.classifier.parameters(), lr=0.5)
    with torch.no_grad():
        before = m2.classify(x).gather(1, y[:, None]).log().mean()
    for _ in range(5):
        opt.zero_grad()
        m2.loss((x, y))["loss"].backward()
        grads = [p.grad for p in m2.classifier.parameters()]
        if alpha == 0:
            assert all(g is None or torch.all(g == 0) for g in grads)
        opt.step()
    with torch.no_grad():
        after = m2.classify(x).gather(1, y[:, None]).log().mean()
    assert after > before + 0.1 if alpha > 0 else torch.equal(after, before)


# --- through the trainer, eval, sample and plot ----------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return dgm.train("m2", out=tmp_path_factory.mktemp("runs") / "m2", steps=100, batch_size=64, labels=50,
                     alpha=1.0, lr=3e-3, hidden_dims=(32,), latent_dim=4, progress=False, quiet=True).path


def test_a_trained_run_classifies_better_than_chance_and_scores_log_p_x(run, capsys):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"train/bound", "train/nll_y", "train/error_y", "valid/loss", "valid/bound", "valid/error_y"} <= {
        key for record in records for key in record}
    assert main(["eval", str(run), "--metrics", "likelihood,classification", "--k", "20", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0 <= scores["classification_error"] < 0.75  # chance is 0.9
    assert not any(key.startswith("conditional_") for key in scores) and "likelihood_note" not in scores
    assert scores["elbo"] < scores["log_likelihood"] < 0
    model = dgm.load(run)
    data = load_dataset("digits")
    with torch.no_grad():
        error = (model.classify(data.to_float(data.test.x)).argmax(1) != data.test.y).double().mean().item()
    assert scores["classification_error"] == pytest.approx(error)
    assert model.label_ratio.item() == pytest.approx(len(data.train) / 50)  # saved with the weights


def test_a_trained_run_samples_by_label_and_draws_analogies(run, capsys, tmp_path):
    model = dgm.load(run)
    x = dgm.sample(run, 4, seed=2, label=3)
    with torch.no_grad():
        z = torch.randn(4, 4, generator=torch.Generator().manual_seed(2))
        assert torch.equal(x, model.decode(z, 3))
    assert main(["sample", str(run), "--label", "3", "--n", "4", "--out", str(tmp_path / "3.png")]) == 0
    assert main(["plot", str(run), "analogies"]) == 0, capsys.readouterr().err
    assert (run / "analogies.png").is_file()
    capsys.readouterr()
    assert main(["sample", str(run), "--label", "10"]) == 1
    assert "labels must lie in 0 .. 9" in _one_sentence(capsys.readouterr().err)


def test_analogies_of_a_cvae_and_a_model_without_labels(tmp_path):
    x, y = _digits(3)
    torch.manual_seed(0)
    cvae = create_model("cvae", {**DIGITS, "hidden_dims": (8,), "latent_dim": 2})
    assert analogies(cvae, x, tmp_path / "a.png", y=y).is_file()
    m2 = create_model("m2", {**DIGITS, "hidden_dims": (8,), "latent_dim": 2})
    assert analogies(m2, x, tmp_path / "b.png").is_file()  # y predicted by q(y|x)
    with pytest.raises(DgmError, match="not class-conditional, so its decoder takes no label to swap"):
        analogies(create_model("vae", DIGITS), x, tmp_path / "c.png")


def test_labels_that_cannot_be_kept_are_one_clear_error(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "m2", "labels=15", "--steps", "1", "--out", str(out), "--no-progress"]) == 1
    assert "multiple of 10" in _one_sentence(capsys.readouterr().err) and not out.exists()
    assert main(["train", "m2", "labels=-2", "--steps", "1", "--out", str(out), "--no-progress"]) == 1
    assert "labels" in _one_sentence(capsys.readouterr().err) and not out.exists()


def test_zoo_lists_m2_with_seed_004(capsys):
    assert main(["zoo", "--json"]) == 0
    zoo = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert zoo["m2"]["seeds"] == "004" and zoo["m2"]["family"] == "vae"
    assert {"loss", "sample", "encode", "decode", "elbo", "iwae"} <= set(zoo["m2"]["capabilities"].split())
