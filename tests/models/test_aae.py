"""The adversarial autoencoder's mathematics: the priors' geometry, the label-conditioned mixture, the
code discriminator's density ratio, the two phases in order and what each updates, codes moving towards
the prior; exact resume, the divergence guard, clear refusals and the command line."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dgm.cli import main
from dgm.errors import DgmError
from dgm.models import create_model
from dgm.training import TrainConfig

POINTS = {"data_shape": (2,), "levels": 0, "hidden_dims": (16,), "code_hidden": (16,)}
MOG = {**POINTS, "prior": "mog", "latent_dim": 2}
LABELLED = {"data_shape": (1, 8, 8), "levels": 17, "num_classes": 10, "base_channels": 4, "code_hidden": (16,),
            "prior": "mog", "latent_dim": 2, "label_prior": True}


def _angles(k: int) -> torch.Tensor:
    return 2 * math.pi * torch.arange(k) / k


def _circular(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| on the circle."""
    return torch.remainder(a - b + math.pi, 2 * math.pi).sub(math.pi).abs()


# --- the priors ------------------------------------------------------------------------------
def test_the_gaussian_prior_is_standard_normal_in_any_dimension():
    model = create_model("aae", {**POINTS, "latent_dim": 3})
    z = model.sample_latent(40_000, torch.Generator().manual_seed(0))
    assert z.shape == (40_000, 3)
    assert z.mean(0).abs().max() < 0.03 and (torch.cov(z.T) - torch.eye(3)).abs().max() < 0.03


def test_each_mixture_component_has_its_mean_on_the_circle_and_its_stated_spread():
    k = 7
    model = create_model("aae", {**MOG, "n_components": k})
    g = torch.Generator().manual_seed(0)
    for c, angle in enumerate(_angles(k)):
        z = model.mixture_draws(torch.full((20_000,), c), g)
        u = torch.stack([angle.cos(), angle.sin()])  # along the radius
        v = torch.stack([-angle.sin(), angle.cos()])  # across it
        assert (z.mean(0) - 4 * u).abs().max() < 0.02
        assert abs((z @ u).std() - 0.5) < 0.01 and abs((z @ v).std() - 0.1) < 0.003
        assert abs(torch.corrcoef(torch.stack([z @ u, z @ v]))[0, 1]) < 0.03
    # the prior: every component equally often, the means' angles evenly spaced
    z = model.sample_latent(70_000, g)
    nearest = _circular(torch.atan2(z[:, 1], z[:, 0])[:, None], _angles(k)[None]).argmin(1)
    counts = torch.bincount(nearest, minlength=k).float()
    assert (counts / 10_000 - 1).abs().max() < 0.05
    means = torch.stack([z[nearest == c].mean(0) for c in range(k)])
    assert torch.allclose(torch.atan2(means[:, 1], means[:, 0]) % (2 * math.pi), _angles(k), atol=0.01)


def test_swiss_roll_points_lie_on_the_spiral_whose_radius_grows_with_the_angle():
    model = create_model("aae", {**POINTS, "prior": "swiss_roll", "latent_dim": 2})
    z = model.sample_latent(5_000, torch.Generator().manual_seed(0))
    t = torch.linspace(0, 1, 20_001)
    curve = 3 * t[:, None] * torch.stack([(4 * math.pi * t).cos(), (4 * math.pi * t).sin()], 1)  # r = 3 t, 2 turns
    distance, nearest = torch.cdist(z, curve).min(1)
    t_star = t[nearest]
    assert distance.median() < 0.06 and distance.quantile(0.99) < 0.2  # noise sd 0.05 about the curve
    assert torch.corrcoef(torch.stack([z.norm(dim=1), t_star]))[0, 1] > 0.99  # radius grows with the angle 4 pi t
    assert abs(t_star.mean() - 2 / 3) < 0.02  # t = sqrt(u): density 2t, about even along the curve
    assert z.norm(dim=1).max() < 3.3


@pytest.mark.parametrize("options", [{"latent_dim": 3}, MOG, {**POINTS, "prior": "swiss_roll", "latent_dim": 2},
                                     LABELLED])
def test_sampling_is_reproducible_from_a_seed(options):
    model = create_model("aae", {**POINTS, **options})
    a = model.sample(6, generator=torch.Generator().manual_seed(3))
    b = model.sample(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, model.sample(6, generator=torch.Generator().manual_seed(4)))


def test_the_label_prior_draws_each_label_from_its_own_component():
    model = create_model("aae", LABELLED)
    model.generator = nn.Identity()  # sample then returns the prior draws themselves
    angle_of = lambda z: torch.atan2(z[:, 1], z[:, 0])  # noqa: E731
    z = model.sample(200, y=3)
    assert _circular(angle_of(z), _angles(10)[3]).max() < 0.2
    y = torch.randint(0, 10, (200,))
    assert _circular(angle_of(model.sample(200, y=y)), _angles(10)[y]).max() < 0.2
    assert _circular(angle_of(model.sample(20)), _angles(10)[torch.arange(20) % 10]).max() < 0.2  # cycles
    with pytest.raises(DgmError, match="labels must lie"):
        model.sample(2, y=10)
    # in training: labelled examples carry one_hot(y) and draw from component y; hidden ones (-1) the extra slot
    y = torch.tensor([2, -1, 7, -1] * 500)
    z, c = model.prior_for(y, len(y), "cpu")
    assert torch.equal(c, F.one_hot(torch.where(y < 0, 10, y), 11).float())
    labelled = y >= 0
    assert _circular(angle_of(z[labelled]), _angles(10)[y[labelled]]).max() < 0.2
    hidden = _circular(angle_of(z[~labelled])[:, None], _angles(10)[None]).argmin(1)
    assert len(hidden.unique()) == 10  # any component


@pytest.mark.parametrize("options,match", [
    ({**POINTS, "prior": "swiss_roll", "latent_dim": 3}, "latent_dim=2"),
    ({**POINTS, "prior": "mog", "latent_dim": 5}, "latent_dim=2"),
    ({**MOG, "label_prior": True}, "class labels"),
    ({**MOG, "label_prior": True, "num_classes": 4}, "n_components=4"),
    ({**POINTS, "latent_dim": 2, "label_prior": True, "num_classes": 10}, "prior=mog"),
    ({**POINTS, "reconstruction": "bce"}, "squared_error"),
])
def test_bad_option_combinations_are_refused_in_one_sentence(options, match):
    with pytest.raises(DgmError, match=match) as err:
        create_model("aae", options)
    assert "\n" not in str(err.value) and str(err.value).count(". ") == 0


def test_the_command_line_refuses_a_3d_swiss_roll(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "aae", "--data", "digits", "--steps", "1", "--out", str(out), "--no-progress",
                 "prior=swiss_roll", "latent_dim=3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dgm: error: ") and err.count("\n") == 1 and "latent_dim=2" in err and not out.exists()


def test_the_reconstruction_error_is_bce_for_images_and_the_squared_error_for_points():
    x, x_rec = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    for options, expected in (({}, F.binary_cross_entropy(x_rec, x, reduction="none").flatten(1).sum(1)),
                              ({"reconstruction": "squared_error"}, (x - x_rec).pow(2).flatten(1).sum(1))):
        model = create_model("aae", {"data_shape": (1, 8, 8), "levels": 17, **options})
        assert torch.allclose(model.reconstruction_error(x, x_rec), expected, rtol=1e-5)
    points = create_model("aae", POINTS)
    assert torch.allclose(points.reconstruction_error(x[:, 0, 0], x_rec[:, 0, 0]),
                          (x[:, 0, 0] - x_rec[:, 0, 0]).pow(2).sum(1))


# --- training ------------------------------------------------------------------------------------
class Shift(nn.Module):
    """A fixed encoder E(x) = x + mu: with x ~ N(0, 1), q(z) = N(mu, 1)."""

    def __init__(self, mu: float):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor([mu]))

    def forward(self, x):
        return x + self.mu


def test_the_code_discriminator_trained_to_optimality_estimates_log_p_over_q():
    """D_z* = p / (p + q), so its logit is log p(z)/q(z): with p = N(0, 1) and q = N(1, 1) that is 1/2 - z.
    Everything but D_z is frozen (learning rates 0); 300 steps of 2,048 fresh draws bring the logit within
    0.25 of it on [-2, 3] (within 0.15 in every seed tried) and the probability within 0.03."""
    model = create_model("aae", {"data_shape": (1,), "levels": 0, "latent_dim": 1, "hidden_dims": (8,),
                                 "code_hidden": (32, 32), "g_lr": 0.0, "reg_lr": 0.0, "d_lr": 3e-3,
                                 "betas": (0.9, 0.999)})
    model.encoder = Shift(1.0)
    frozen = copy.deepcopy(model.generator)
    optimizers = model.optimizers(TrainConfig())
    for step in range(300):
        model.train_step((torch.randn(2048, 1), None), optimizers, step)  # the data: N(0, 1)
    grid = torch.linspace(-2, 3, 51)[:, None]
    with torch.no_grad():
        logit = model.judge(grid, None)
    ratio = 0.5 - grid[:, 0]
    assert (logit - ratio).abs().max() < 0.25 and (logit - ratio).abs().mean() < 0.08
    assert (torch.sigmoid(logit) - torch.sigmoid(ratio)).abs().max() < 0.03
    assert model.encoder.mu.item() == 1.0
    assert all(torch.equal(a, b) for a, b in zip(frozen.parameters(), model.generator.parameters()))


@pytest.mark.parametrize("options", [MOG, LABELLED])
def test_the_phases_run_in_order_and_each_updates_only_its_networks(options):
    model = create_model("aae", options)
    optimizers = model.optimizers(TrainConfig())
    x = torch.rand(16, *options["data_shape"])
    y = torch.tensor([3, -1] * 8) if options.get("label_prior") else None
    nets = {"encoder": model.encoder, "generator": model.generator, "code_discriminator": model.code_discriminator}
    params = lambda: {k: [p.detach().clone() for p in n.parameters()] for k, n in nets.items()}  # noqa: E731
    states, inputs, grads = [("start", params())], [], []
    for name, opt in optimizers.items():
        opt.register_step_post_hook(lambda o, a, k, name=name: states.append((name, params())))
    optimizers["encoder_regularization"].register_step_pre_hook(
        lambda o, a, k: grads.extend(p.grad.clone() for p in model.encoder.parameters()))
    model.code_discriminator.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
    model.train_step((x, y), optimizers, 0)
    assert [s[0] for s in states] == ["start", "autoencoder", "code_discriminator", "encoder_regularization"]
    changed = [{k for k in nets if not all(torch.equal(a, b) for a, b in zip(before[k], after[k]))}
               for (_, before), (_, after) in zip(states[:-1], states[1:])]
    assert changed == [{"encoder", "generator"}, {"code_discriminator"}, {"encoder"}]
    # D_z judged the prior draws, then twice the codes of the encoder as the reconstruction phase left it
    assert len(inputs) == 3 and torch.equal(inputs[1], inputs[2])
    if options is MOG:  # no batch norm: the codes and E's gradient can be recomputed from the saved weights
        def saved(net, i, key):
            net = copy.deepcopy(net)
            for p, value in zip(net.parameters(), states[i][1][key]):
                p.data.copy_(value)
            return net

        encoder = saved(model.encoder, 1, "encoder")
        with torch.no_grad():
            assert torch.allclose(inputs[1], encoder(x), atol=1e-6)
        # E's regularisation gradient is that of -log D_z(E(x)) under D_z after its own step, not before it
        new_d, old_d = saved(model.code_discriminator, 2, "code_discriminator"), saved(model.code_discriminator, 1,
                                                                                        "code_discriminator")
        for d, same in ((new_d, True), (old_d, False)):
            expected = torch.autograd.grad(-F.logsigmoid(d(encoder(x))[:, 0]).mean(), list(encoder.parameters()))
            assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grads, expected)) == same
    else:  # [z, one_hot(y)] with the extra slot for the hidden labels, for the prior draws and the codes alike
        labels = F.one_hot(torch.where(y < 0, 10, y), 11).float()
        assert torch.equal(inputs[0][:, 2:], labels) and torch.equal(inputs[1][:, 2:], labels)


def test_training_moves_the_codes_towards_the_mixture_prior():
    """On 2-D Gaussian points the codes can take any shape: 300 steps take the MMD between the encoded test
    points and the prior from about 1 to about 0.04 (seeds 0-2)."""
    def mmd(a, b):
        k = lambda u, v: torch.exp(-torch.cdist(u, v).pow(2) / 2)  # noqa: E731
        return (k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()).item()

    model = create_model("aae", {**MOG, "hidden_dims": (32, 32), "code_hidden": (32, 32), "g_lr": 1e-3,
                                 "d_lr": 1e-3})
    g = torch.Generator().manual_seed(0)
    data, test = 2 * torch.randn(2000, 2, generator=g), 2 * torch.randn(500, 2, generator=g)
    prior = model.sample_latent(500, torch.Generator().manual_seed(1))
    before = mmd(model.encode(test), prior)
    optimizers = model.optimizers(TrainConfig())
    for step in range(300):
        out = model.train_step((data[torch.randint(2000, (128,), generator=g)], None), optimizers, step)
    codes = model.encode(test)
    assert mmd(codes, prior) < 0.2 * before
    assert abs(codes.norm(dim=1).mean() - 4) < 0.5 and out["rec"] < 0.5  # on the circle, and still an autoencoder


def test_train_and_plot_the_codes_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "aae", "--data", "digits", "--steps", "3", "--out", str(out), "--no-progress",
                 "prior=mog", "latent_dim=2"]) == 0
    assert (out / "samples.png").is_file() and (out / "reconstructions.png").is_file()
    assert main(["plot", str(out), "embedding", "--method", "code", "--n", "100"]) == 0
    assert (out / "embedding-code.png").is_file()


def test_the_label_prior_samples_the_label_asked_for_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "labelled"
    assert main(["train", "aae", "--data", "digits", "--steps", "3", "--out", str(out), "--no-progress",
                 "prior=mog", "latent_dim=2", "label_prior=true", "base_channels=4"]) == 0
    assert main(["sample", str(out), "--n", "4", "--label", "3", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    plain = tmp_path / "plain"
    assert main(["train", "aae", "--data", "digits", "--steps", "3", "--out", str(plain), "--no-progress",
                 "base_channels=4"]) == 0
    capsys.readouterr()
    assert main(["sample", str(plain), "--label", "3"]) == 1  # a prior without labels: one sentence
    assert "cannot sample a given label" in capsys.readouterr().err
