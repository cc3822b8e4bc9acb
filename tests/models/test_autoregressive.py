"""Autoregressive pixel models: causality (and no blind spot for the gated stacks), the discretized
logistic mixture's normalisation, log p(x) as the sum of one-pixel-at-a-time conditionals, cached
sampling identical to the naive reference, and completion through the CLI."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dgm.cli import main
from dgm.distributions import DiscretizedLogisticMixture
from dgm.errors import DgmError
from dgm.models import create_model

# (model, config) pairs: tiny, one per model and colour mode
MODELS = [
    ("pixelcnn", {"data_shape": (1, 5, 5), "levels": 2, "channels": 8, "n_blocks": 2, "first_kernel": 3}),
    ("pixelcnn", {"data_shape": (3, 4, 4), "levels": 5, "channels": 12, "n_blocks": 2, "first_kernel": 3}),
    ("gated-pixelcnn", {"data_shape": (1, 5, 5), "levels": 2, "channels": 8, "n_layers": 3, "first_kernel": 3}),
    ("gated-pixelcnn", {"data_shape": (3, 4, 4), "levels": 5, "channels": 6, "n_layers": 3, "first_kernel": 3}),
    ("gated-pixelcnn", {"data_shape": (1, 4, 4), "levels": 17, "channels": 8, "n_layers": 2, "conditional": True,
                        "num_classes": 3}),
    ("pixelcnn++", {"data_shape": (1, 8, 8), "levels": 256, "filters": 8, "n_scales": 3, "n_mix": 2}),
    ("pixelcnn++", {"data_shape": (3, 4, 4), "levels": 16, "filters": 8, "n_scales": 2, "n_mix": 2}),
    ("pixelrnn", {"data_shape": (1, 5, 5), "levels": 2, "channels": 8, "variant": "row"}),
    ("pixelrnn", {"data_shape": (3, 4, 4), "levels": 4, "channels": 6, "variant": "diagonal"}),
]
IDS = [f"{name}-{cfg['data_shape'][0]}ch" + ("-cond" if cfg.get("conditional") else "") + f"-{cfg.get('variant', '')}"
       for name, cfg in MODELS]


def tiny(name, cfg):
    return create_model(name, cfg).double()


def raster_order(shape):
    """The position of every (c, i, j) in the sampling order: raster over pixels, then channels: [C, H, W]."""
    c, h, w = shape
    return torch.arange(c * h * w).reshape(h, w, c).permute(2, 0, 1)


def output_channels(model, c):
    """The network outputs that parameterise channel c (all of them where the likelihood couples colours)."""
    p, n = model.likelihood.out_channels, model.cfg.data_shape[0]
    return [k for k in range(p) if k % n == c] if model.channel_masked else list(range(p))


def gradients(model, x):
    """d(sum of the outputs of channel c at (i, j)) / dx for every (c, i, j) the model samples separately."""
    x = x.clone().requires_grad_(True)
    y = model.labels(None, x.shape[0], x.device)
    out = model.net(x, y)
    n, h, w = model.cfg.data_shape
    for i in range(h):
        for j in range(w):
            for c in range(n if model.channel_masked else 1):
                (g,) = torch.autograd.grad(out[0, output_channels(model, c), i, j].sum(), x, retain_graph=True)
                yield (c, i, j), g[0]


@pytest.mark.parametrize("name,cfg", MODELS, ids=IDS)
def test_no_output_sees_its_own_or_later_inputs(name, cfg):
    model = tiny(name, cfg)
    order = raster_order(cfg["data_shape"])
    for (c, i, j), g in gradients(model, torch.rand(1, *cfg["data_shape"], dtype=torch.float64)):
        me = order[c, i, j]
        # channel c of pixel (i, j) may see earlier channels of (i, j) only where the network is colour-masked
        assert torch.all(g[order >= me] == 0), (name, c, i, j)
        if not model.channel_masked:
            assert torch.all(g[:, i, j] == 0)


@pytest.mark.parametrize("shape,channels", [((1, 6, 6), 16), ((3, 4, 4), 24)])
def test_gated_stacks_have_no_blind_spot(shape, channels):
    """With enough layers to reach the corner, every earlier pixel (and earlier colour) influences pixel i."""
    torch.manual_seed(1)
    model = tiny("gated-pixelcnn", {"data_shape": shape, "levels": 2 if shape[0] == 1 else 4, "channels": channels,
                                    "n_layers": 6, "first_kernel": 3})
    order = raster_order(shape)
    for (c, i, j), g in gradients(model, torch.rand(1, *shape, dtype=torch.float64)):
        assert torch.all(g[order < order[c, i, j]] != 0), (c, i, j)


def test_pixelcnn_has_the_blind_spot_the_gated_stacks_remove():
    model = tiny("pixelcnn", {"data_shape": (1, 6, 6), "levels": 2, "channels": 16, "n_blocks": 4, "first_kernel": 3})
    grads = dict(gradients(model, torch.rand(1, 1, 6, 6, dtype=torch.float64)))
    assert torch.all(grads[(0, 3, 1)][0, 2, 3:] == 0)  # up-right of the pixel, within reach, yet unseen


def _random_mixture_params(mix, shape, levels, generator):
    k, c = mix.n_mix, shape[0]
    out = torch.randn(1, mix.out_channels, 1, 1, dtype=torch.float64, generator=generator)
    out[:, k : k + k * c] *= 2  # means beyond [-1, 1] too: the edge bins
    out[:, k + k * c : k + 2 * k * c] = torch.linspace(-8, 1, k * c, dtype=torch.float64)[None, :, None, None]
    return out


@pytest.mark.parametrize("channels,levels", [(1, 256), (1, 2), (3, 8)])
def test_discretized_logistic_mixture_sums_to_one(channels, levels):
    """sum over all L^C values of p(x) = 1, with tiny scales (the underflow branch) and means past the edges."""
    g = torch.Generator().manual_seed(channels + levels)
    mix = DiscretizedLogisticMixture(channels, levels, n_mix=4)
    for _ in range(5):
        out = _random_mixture_params(mix, (channels,), levels, g)
        grid = torch.cartesian_prod(*[torch.arange(levels)] * channels).reshape(-1, channels).double() / (levels - 1)
        x = grid[:, :, None, None]  # every value of one pixel
        p = mix.pixel_log_prob(out.expand(len(x), -1, -1, -1), x).exp().sum()
        assert p.item() == pytest.approx(1.0, abs=2e-3)
        # the per-channel conditionals the sampler uses multiply to the joint
        joint = torch.ones(len(x), dtype=torch.float64)
        for c in range(channels):
            probs = mix.channel_probs(out[:, :, 0, 0].expand(len(x), -1), grid, c)
            joint = joint * probs.gather(1, torch.round(grid[:, c : c + 1] * (levels - 1)).long())[:, 0]
        assert torch.allclose(joint, mix.pixel_log_prob(out.expand(len(x), -1, -1, -1), x).exp()[:, 0, 0], atol=1e-9)


def test_discretized_logistic_edges_take_the_tails():
    """A mean far below -1 puts (almost) all mass on the value 0; far above +1 on the value 255."""
    mix = DiscretizedLogisticMixture(1, 256, n_mix=1)
    for mean, value in ((-5.0, 0.0), (5.0, 1.0)):
        out = torch.tensor([0.0, mean, math.log(0.1)], dtype=torch.float64)[None, :, None, None]
        assert mix.pixel_log_prob(out, torch.full((1, 1, 1, 1), value, dtype=torch.float64)).exp().item() > 0.999


@pytest.mark.parametrize("name,cfg", MODELS, ids=IDS)
def test_log_prob_is_the_sum_of_one_pixel_at_a_time_conditionals(name, cfg):
    """log p(x) = sum_i log p(x_i | x_<i), each term from an image whose later pixels are replaced by noise."""
    model = tiny(name, cfg)
    c, h, w = cfg["data_shape"]
    levels = cfg["levels"]
    x = torch.randint(0, levels, (3, c, h, w)).double() / (levels - 1)
    y = model.labels(None, 3, x.device)
    total = torch.zeros(3, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            noisy = x.clone().reshape(3, c, h * w)
            noisy[:, :, i * w + j + 1 :] = torch.rand_like(noisy[:, :, i * w + j + 1 :])
            total += model.pixel_log_prob(noisy.reshape(x.shape), y)[:, i, j]
    with torch.no_grad():
        assert torch.allclose(model.log_prob(x, y), total, atol=1e-9)
        assert torch.all(total < 0)


def test_conditional_log_prob_without_labels_marginalises_them():
    name, cfg = MODELS[4]
    model = tiny(name, cfg)
    x = torch.randint(0, 17, (2, 1, 4, 4)).double() / 16
    with torch.no_grad():
        per_label = torch.stack([model.log_prob(x, torch.full((2,), k)) for k in range(3)])
        assert torch.allclose(model.log_prob(x), torch.logsumexp(per_label, 0) - math.log(3))


@pytest.mark.parametrize("name,cfg", [m for m in MODELS if m[0] in ("pixelcnn", "gated-pixelcnn")],
                         ids=[i for i, m in zip(IDS, MODELS) if m[0] in ("pixelcnn", "gated-pixelcnn")])
def test_cached_sampler_gives_the_naive_samplers_images(name, cfg):
    model = tiny(name, cfg)
    def draw(method, complete=None):
        g = torch.Generator().manual_seed(5)
        if complete is None:
            return model.sample(6, generator=g, method=method)
        return model.complete(complete, 2, generator=g, method=method)

    naive = draw("naive")
    assert torch.equal(draw("cached"), naive)
    assert len(naive.unique()) > 1
    done = draw("cached", complete=naive.flip(0))
    assert torch.equal(draw("naive", complete=naive.flip(0)), done)
    assert torch.equal(done[:, :, :2], naive.flip(0)[:, :, :2])


def test_samples_take_the_data_levels_and_labels():
    name, cfg = MODELS[4]
    model = create_model(name, cfg)
    x = model.sample(5, y=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 4, 4) and torch.equal(torch.round(x * 16) / 16, x)
    with pytest.raises(DgmError, match="labels must lie"):
        model.sample(2, y=7)


@pytest.mark.parametrize("name,values,message", [
    ("pixelrnn", {"variant": "column"}, "invalid value .column. for variant; it takes one of row, diagonal"),
    ("pixelcnn", {"channels": 10}, "multiple of the 3"),
    ("gated-pixelcnn", {"sampler": "fast"}, "invalid value .fast. for sampler"),
    ("gated-pixelcnn", {"conditional": True}, "class labels"),
    ("pixelcnn++", {"n_scales": 4}, "lower n_scales"),
])
def test_bad_configs_say_what_to_change(name, values, message):
    with pytest.raises(DgmError, match=message):
        create_model(name, {"data_shape": (3, 4, 4), "levels": 4, **values})
    with pytest.raises(DgmError, match="no cached sampler"):
        create_model("pixelrnn", {"data_shape": (1, 3, 3), "levels": 2}).sample(1, method="cached")


def test_cli_trains_evaluates_and_completes(tmp_path, capsys):
    run = tmp_path / "pixelcnn"
    assert main(["train", "pixelcnn", "--steps", "4", "--out", str(run), "--no-progress", "channels=8",
                 "n_blocks=1"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--metrics", "likelihood", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["log_likelihood"] < 0
    assert result["bits_per_dim"] == pytest.approx(-result["log_likelihood"] / (64 * math.log(2)))

    x = np.random.default_rng(0).integers(0, 17, (3, 8, 8)) / 16
    np.savez(tmp_path / "digits.npz", x=x)
    out = tmp_path / "done.png"
    assert main(["sample", str(run), "--complete", str(tmp_path / "digits.npz"), "--rows", "4", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > Image.open(out).size[1] / 3 * 4  # 5 pictures a line: kept, 3 samples, original
    Image.fromarray((x[0] * 255).astype(np.uint8)).save(tmp_path / "one.png")
    assert main(["sample", str(run), "--complete", str(tmp_path / "one.png"), "--rows", "2"]) == 0
    assert (run / "completions.png").is_file()
    capsys.readouterr()

    np.savez(tmp_path / "wrong.npz", x=np.zeros((2, 7, 7)))
    for argv, message in [(["--complete", str(tmp_path / "missing.npz"), "--rows", "2"], "no file"),
                          (["--complete", str(tmp_path / "wrong.npz"), "--rows", "2"], "the model needs"),
                          (["--complete", str(tmp_path / "digits.npz")], "--rows"),
                          (["--complete", str(tmp_path / "digits.npz"), "--rows", "9"], "rows must lie")]:
        assert main(["sample", str(run), *argv]) == 1
        assert message in capsys.readouterr().err


# --- PixelRNN's whole-row / whole-diagonal recurrences against the plain per-slice loops -----------------
def _reference_row_lstm(m, x):
    """The Row LSTM as first written: gates of row i sliced out of the input map, one row per step."""
    from dgm.models.autoregressive import lstm_update
    gates_in = m.input_to_state(x)
    h = c = x.new_zeros(x.shape[0], x.shape[1], x.shape[3])
    rows = []
    for i in range(x.shape[2]):
        h, c = lstm_update(gates_in[:, :, i] + m.state_to_state(h), c)
        rows.append(h)
    return torch.stack(rows, dim=2)


def _reference_diagonal_lstm(m, x):
    """One direction of the Diagonal BiLSTM as first written: skew by a loop over rows, then column k sliced out
    of the skewed map at each step, unskew by a loop."""
    import torch.nn.functional as F

    from dgm.models.autoregressive import lstm_update
    g = m.input_to_state(x)
    b, c4, h, w = g.shape
    skewed = g.new_zeros(b, c4, h, w + h - 1)
    for i in range(h):
        skewed[:, :, i, i : i + w] = g[:, :, i]
    hs = cs = x.new_zeros(b, x.shape[1], h)
    columns = []
    for k in range(skewed.shape[-1]):
        hs, cs = lstm_update(skewed[..., k] + m.state_to_state(F.pad(hs, (1, 0))), cs)
        columns.append(hs)
    out = torch.stack(columns, dim=-1)
    return torch.stack([out[:, :, i, i : i + w] for i in range(h)], dim=2)


@pytest.mark.parametrize("variant", ["row", "diagonal"])
def test_pixelrnn_recurrence_equals_the_per_slice_loop(variant):
    """Values and gradients of every layer equal those of the straightforward loops, on random weights."""
    from dgm.nn.masked import down_shift
    torch.manual_seed(0)
    model = create_model("pixelrnn", {"data_shape": (3, 6, 5), "levels": 4, "channels": 6, "variant": variant}).double()
    for layer in model.lstms:
        x = torch.randn(3, 6, 6, 5, dtype=torch.float64, requires_grad=True)
        if variant == "row":
            want = _reference_row_lstm(layer, x)
        else:
            want = (_reference_diagonal_lstm(layer.forward_lstm, x)
                    + down_shift(_reference_diagonal_lstm(layer.backward_lstm, x.flip(-1)).flip(-1)))
        got = layer(x)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        weights = torch.randn_like(want)
        grads_want = torch.autograd.grad((want * weights).sum(), [x, *layer.parameters()])
        grads_got = torch.autograd.grad((got * weights).sum(), [x, *layer.parameters()])
        for a, b in zip(grads_got, grads_want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
