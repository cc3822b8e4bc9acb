"""PixelVAE's mathematics: the decoder p(x|z) is causal in x (gradients and perturbations), a distribution over
all images for every z, conditioned on z at every pixel; its sampler draws from p(x|z) (exact frequencies on
2x2 images), sample() from p(x); ELBO <= IWAE_5 <= IWAE_50 <= log p(x) against quadrature over a 1-D z; and
the pixelvae through dgm.train, dgm.evaluate and dgm.sample."""
import copy
import json
import math

import pytest
import torch
from scipy import stats

import dgm
from dgm.cli import main
from dgm.errors import DgmError
from dgm.models import create_model

SMALL = {"latent_dim": 2, "hidden_dims": (8,), "latent_maps": 3, "pixel_layers": 2, "first_kernel": 3, "kernel": 3}


def tiny(shape=(1, 2, 2), levels=2, seed=0, **options):
    torch.manual_seed(seed)
    cfg = {"data_shape": shape, "levels": levels, "pixel_channels": 6 if shape[0] == 3 else 4, **SMALL, **options}
    return create_model("pixelvae", cfg).double()


def all_images(shape, levels):
    """Every image of `shape` with `levels` values per channel: [L^(C H W), C, H, W] in [0, 1], float64."""
    n = math.prod(shape)
    grid = torch.cartesian_prod(*[torch.arange(levels)] * n).reshape(-1, n)
    return (grid.double() / (levels - 1)).reshape(-1, *shape)


def raster_order(shape):
    """The position of every (c, i, j) in the sampling order: raster over pixels, then channels: [C, H, W]."""
    c, h, w = shape
    return torch.arange(c * h * w).reshape(h, w, c).permute(2, 0, 1)


def random_z(model, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(n, model.cfg.latent_dim, generator=g, dtype=torch.float64)


def frequencies(samples, images):
    """How often each of `images` [K, ...] occurs among `samples` [N, ...]: [K] counts (every sample is one)."""
    match = (samples.flatten(1)[:, None, :] == images.flatten(1)[None]).all(-1)  # [N, K]
    assert torch.all(match.sum(1) == 1)
    return match.sum(0).double()


def chi_square(counts, probs):
    """(Pearson's statistic, its 0.999 quantile under the model): counts [K] against probabilities [K]."""
    expected = counts.sum() * probs
    return ((counts - expected) ** 2 / expected).sum().item(), stats.chi2.ppf(0.999, len(probs) - 1)


# --- the decoder is an autoregressive distribution over images, given z ----------------------------------
CAUSAL = [((1, 4, 4), 2), ((3, 3, 3), 3)]


@pytest.mark.parametrize("shape,levels", CAUSAL, ids=["binary", "rgb-3levels"])
def test_no_conditional_sees_its_own_or_later_pixels_and_every_one_sees_z(shape, levels):
    """d out(c, i, j) / d x = 0 at (c, i, j) and after in the sampling order; d out(c, i, j) / d z != 0; and the
    per-pixel log-probabilities log p(x_ij | x_<ij, z) do not depend on any later pixel."""
    model = tiny(shape, levels)
    n, h, w = shape
    z = random_z(model, 1).requires_grad_(True)
    x = (torch.randint(0, levels, (1, *shape)).double() / (levels - 1)).requires_grad_(True)
    out = model.decoder(z, x)
    order = raster_order(shape)
    for i in range(h):
        for j in range(w):
            for c in range(n):
                params = [k for k in range(out.shape[1]) if k % n == c]  # the outputs of channel c
                gx, gz = torch.autograd.grad(out[0, params, i, j].sum(), [x, z], retain_graph=True)
                assert torch.all(gx[0][order >= order[c, i, j]] == 0), (c, i, j)
                assert torch.all(gz != 0), (c, i, j)
    pixel_lp = model.pixel_log_px_z(z, x)
    for i in range(h):
        for j in range(w):
            (gx,) = torch.autograd.grad(pixel_lp[0, i, j], x, retain_graph=True)
            later = order.amin(0) > order[:, i, j].max()  # pixels after (i, j), [H, W]
            assert torch.all(gx[0][:, later] == 0), (i, j)


@pytest.mark.parametrize("shape,levels", CAUSAL, ids=["binary", "rgb-3levels"])
def test_outputs_do_not_change_with_later_pixels_and_log_p_is_the_sum_of_conditionals(shape, levels):
    """Replacing every pixel from (i, j) on by noise leaves the outputs at (i, j) of channel 0 (all channels of
    the pixels before) unchanged; log p(x|z) = sum_i log p(x_i | x_<i, z), each term from such an image."""
    model = tiny(shape, levels)
    n, h, w = shape
    z = random_z(model, 3)
    x = torch.randint(0, levels, (3, *shape)).double() / (levels - 1)
    with torch.no_grad():
        out = model.decoder(z, x)
        total = torch.zeros(3, dtype=torch.float64)
        for i in range(h):
            for j in range(w):
                noisy = x.clone().reshape(3, n, h * w)
                noisy[:, :, i * w + j :] = torch.rand_like(noisy[:, :, i * w + j :])
                noisy = noisy.reshape(x.shape)
                changed = model.decoder(z, noisy)
                torch.testing.assert_close(changed[:, ::n, i, j], out[:, ::n, i, j], rtol=0, atol=1e-12)
                noisy[:, :, i, j] = x[:, :, i, j]  # pixel (i, j) itself as in x: its whole conditional
                total += model.pixel_log_px_z(z, noisy)[:, i, j]
        torch.testing.assert_close(model.log_px_z(z, x), total, rtol=0, atol=1e-10)
        assert torch.all(total < 0)


def test_every_earlier_pixel_reaches_the_last_one():
    """The gated stacks have no blind spot: with layers enough, pixel (3, 3) depends on every pixel before it."""
    model = tiny((1, 4, 4), 2, pixel_layers=4)
    z = random_z(model, 1)
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(model.decoder(z, x)[0, :, 3, 3].sum(), x)
    assert torch.all(g[0, 0].flatten()[:15] != 0) and g[0, 0, 3, 3] == 0


@pytest.mark.parametrize("shape,levels,likelihood", [((1, 2, 2), 2, "auto"), ((1, 2, 2), 3, "auto"),
                                                     ((1, 1, 3), 3, "auto"), ((3, 1, 2), 2, "auto"),
                                                     ((1, 2, 2), 2, "categorical")])
def test_p_x_given_z_sums_to_one_over_all_images(shape, levels, likelihood):
    model = tiny(shape, levels, likelihood=likelihood)
    images = all_images(shape, levels)
    z = random_z(model, 3)  # three codes, each against every image
    with torch.no_grad():
        log_p = model.log_px_z(z[:, None, :].expand(3, len(images), -1), images)  # [3, K]
    assert torch.allclose(torch.logsumexp(log_p, 1), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert len(images) == levels ** math.prod(shape) and torch.all(log_p < 0)


def test_p_x_given_z_changes_with_z():
    model = tiny((1, 3, 3), 2)
    x = torch.randint(0, 2, (4, 1, 3, 3)).double()
    z = random_z(model, 2)
    with torch.no_grad():
        a, b = (model.log_px_z(zi.expand(4, -1), x) for zi in z)
    assert torch.all((a - b).abs() > 1e-3), (a, b)


def test_several_samples_of_z_are_flattened_into_the_batch():
    model = tiny((1, 3, 3), 3)
    x = torch.randint(0, 3, (4, 1, 3, 3)).double() / 2
    z = torch.randn(5, 4, 2, dtype=torch.float64)
    with torch.no_grad():
        together = model.log_px_z(z, x)
        apart = torch.stack([model.log_px_z(zs, x) for zs in z])
    assert together.shape == (5, 4)
    torch.testing.assert_close(together, apart, rtol=0, atol=1e-12)


# --- sampling ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,levels", [((1, 2, 2), 2), ((3, 1, 1), 3)], ids=["2x2-binary", "rgb-pixel"])
def test_the_sampler_draws_from_p_x_given_z(shape, levels):
    """For one fixed z, the frequencies of all images among 20,000 draws match exp(log p(x|z)): Pearson's
    chi-square below its 0.999 quantile, and every frequency within 5 standard errors."""
    model = tiny(shape, levels, seed=2)
    images = all_images(shape, levels)
    z = random_z(model, 1, seed=3)
    n = 20_000
    with torch.no_grad():
        probs = model.log_px_z(z.expand(len(images), -1), images).exp()
        u = torch.rand(n, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        samples = model.decoder.draw(model.decoder.maps(z).expand(n, -1, -1, -1), u)
    counts = frequencies(samples, images)
    statistic, quantile = chi_square(counts, probs)
    assert statistic < quantile, (statistic, quantile)
    assert torch.all((counts / n - probs).abs() < 5 * (probs * (1 - probs) / n).sqrt() + 1e-4)


def test_cached_and_naive_samplers_give_the_pixel_models_generate_images():
    """sample() = z ~ p(z) then the pixel models' `generate` given z's maps, with the same generator; cached
    and naive samplers give identical images; decode is a deterministic function of z."""
    model = tiny((3, 3, 3), 4, pixel_layers=3)

    def seeded():
        return torch.Generator().manual_seed(7)

    cached = model.sample(6, generator=seeded())
    assert torch.equal(model.sample(6, generator=seeded(), method="naive"), cached)
    for method in ("cached", "naive"):
        g = seeded()
        z = model.sample_latent(6, g)
        with torch.no_grad():
            x = model.decoder.generate(torch.zeros_like(cached), 0, model.decoder.maps(z), g, method)
        assert torch.equal(x, cached)
    assert len(cached.unique()) > 1 and torch.equal(torch.round(cached * 3) / 3, cached)
    with pytest.raises(DgmError, match="unknown sampler"):
        model.sample(1, method="fast")
    # decode: the same image for the same z, wherever it stands in the batch
    z = random_z(model, 4)
    pictures = model.decode(z)
    assert torch.equal(model.decode(z.flip(0)), pictures.flip(0))
    assert torch.equal(model.decode(z[2:3].expand(3, -1))[1], pictures[2])
    assert pictures.shape == (4, 3, 3, 3) and torch.equal(torch.round(pictures * 3) / 3, pictures)


# --- the bounds against log p(x) by quadrature ---------------------------------------------------------------
def _tiny_exact_pixelvae():
    """A pixelvae over 2x2 binary images with a 1-D latent and a linear maps network, so that log p(x) is an
    integral over one line; its decoder made to care about z and its encoder to miss the posterior."""
    model = tiny((1, 2, 2), 2, seed=3, latent_dim=1, hidden_dims=())
    with torch.no_grad():  # larger weights from z to the maps, to the gates and in the head: p(x|z) varies with z
        model.decoder.maps[0][0].weight.mul_(4)  # Linear(1 -> maps)
        for layer in model.decoder.layers:
            layer.map_bias.weight.mul_(3)
        model.decoder.head[1].weight.mul_(2)
        model.decoder.head[3].weight.mul_(6)
        model.encoder[1][0].bias[0] += 1.0  # q(z|x)'s mean shifted: gaps to see
    return model


def _quadrature_log_p(model, x):
    """log p(x) = log int N(z; 0, 1) p(x|z) dz on a fine grid: [B]."""
    z = torch.linspace(-10, 10, 4001, dtype=torch.float64)
    with torch.no_grad():
        log_px_z = model.log_px_z(z[:, None, None].expand(-1, len(x), 1), x)  # [G, B]
    log_pz = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(log_px_z + log_pz[:, None], 0) + torch.log(z[1] - z[0])


def test_elbo_below_iwae_5_below_iwae_50_below_log_p_x_by_quadrature():
    model = _tiny_exact_pixelvae()
    x = all_images((1, 2, 2), 2)
    exact = _quadrature_log_p(model, x)
    assert abs(torch.logsumexp(exact, 0).item()) < 1e-9  # p(x) is a distribution over the 16 images
    with torch.no_grad():  # p(x|z) depends on z: some image's probability changes tenfold over z in [-3, 3]
        p = model.log_px_z(torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None, None].expand(-1, 16, 1), x).exp()
    assert (p.amax(0) / p.amin(0)).max() > 10
    fast = copy.deepcopy(model).float()  # the Monte Carlo bounds in float32: half the time, noise far above its error
    reps = 300
    xr = x.float().repeat(reps, 1, 1, 1)
    with torch.no_grad():
        draws = {"elbo": fast.elbo(xr, n_samples=4)} | {k: fast.iwae(xr, k, chunk_size=16_384) for k in (1, 5, 50)}
        large = fast.iwae(x.float(), 20_000, chunk_size=16_384).double()
    draws = {key: d.double().reshape(reps, -1) for key, d in draws.items()}  # [draw, image]
    gap = {key: exact - d.mean(0) for key, d in draws.items()}  # log p(x) - bound, [16]
    se = {key: d.std(0) / math.sqrt(reps) for key, d in draws.items()}
    assert torch.all(gap["elbo"] > 3 * se["elbo"])  # every image: the ELBO below log p(x)
    assert all(torch.all(gap[k] > -3 * se[k]) for k in (5, 50))  # no IWAE_k above it beyond its noise
    assert torch.all((gap[1] - gap["elbo"]).abs() < 4 * (se[1] + se["elbo"]))  # IWAE_1 is the ELBO
    mean = {key: g.mean() for key, g in gap.items()}
    pooled = {key: s.pow(2).sum().sqrt() / len(s) for key, s in se.items()}
    assert mean["elbo"] - mean[5] > 3 * (pooled["elbo"] + pooled[5])
    assert mean[5] - mean[50] > 3 * (pooled[5] + pooled[50])
    assert mean[50] > 3 * pooled[50]
    error = (large - exact).abs()  # IWAE_20000: log p(x) up to its noise (a few 0.01 nats on the rarest images)
    assert error.max() < 0.05 and error.mean() < 0.01, error


def test_sample_draws_from_the_marginal_p_x():
    """sample(): z ~ p(z), x ~ p(x|z); the images' frequencies match p(x) by quadrature."""
    model = _tiny_exact_pixelvae()
    images = all_images((1, 2, 2), 2)
    probs = _quadrature_log_p(model, images).exp()
    samples = model.sample(20_000, generator=torch.Generator().manual_seed(9))
    statistic, quantile = chi_square(frequencies(samples, images), probs)
    assert statistic < quantile, (statistic, quantile)


# --- options, errors and the library around it ---------------------------------------------------------
@pytest.mark.parametrize("options", [{"architecture": "conv", "conv_channels": (4, 6)},
                                     {"objective": "iwae", "n_samples": 3},
                                     {"prior": "mog", "flow": "planar", "flow_context": 8, "n_samples": 2},
                                     {"beta": 0.5, "kl_warmup_steps": 4, "sampler": "naive"}])
def test_the_vae_options_still_work(options):
    model = create_model("pixelvae", {"data_shape": (1, 8, 8), "levels": 17, **SMALL, "pixel_channels": 8,
                                      **options})
    x = torch.randint(0, 17, (5, 1, 8, 8)).float() / 16
    out = model.loss((x, None), step=0)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    assert all(p.grad is not None for p in model.decoder.layers.parameters())
    assert model.reconstruct(x).shape == x.shape and model.sample(2).shape == (2, 1, 8, 8)
    with torch.no_grad():
        assert model.iwae(x, 5, chunk_size=6).shape == (5,)


@pytest.mark.parametrize("values,message", [
    ({"data_shape": (2,)}, "models images"),
    ({"levels": 0}, "at least 2 pixel levels"),
    ({"data_shape": (3, 4, 4), "pixel_channels": 8}, "pixel_channels=8 must be a positive multiple of the 3"),
    ({"likelihood": "gaussian"}, "invalid value 'gaussian' for likelihood"),
    ({"scale": 0.5}, "scale belongs to the VAE's continuous likelihoods"),
    ({"kernel": 1}, "kernel"),
])
def test_bad_configs_say_what_to_change(values, message):
    with pytest.raises(DgmError, match=message):
        create_model("pixelvae", {"data_shape": (1, 4, 4), "levels": 2, **values})


def test_trains_evaluates_samples_and_is_in_the_zoo(tmp_path, capsys):
    run = dgm.train("pixelvae", data="digits", steps=4, out=tmp_path / "run", quiet=True, progress=False,
                    **{**SMALL, "hidden_dims": (16,), "pixel_channels": 8})
    assert {"samples.png", "reconstructions.png"} <= {p.name for p in run.pictures}
    assert run.metrics[-1]["train/elbo"] < 0
    scores = dgm.evaluate(run, metrics=["likelihood", "representation"], k=10, n_examples=24, progress=False)
    assert scores["elbo"] < 0 and scores["log_likelihood"] < 0 and scores["bits_per_dim"] > 0
    assert scores["log_likelihood"] > scores["elbo"] - 1.0  # IWAE_10 over 24 images: not far below the ELBO
    assert scores["sse_per_image"] >= 0 and scores["recon_nll"] > 0
    x = dgm.sample(run, 5, seed=3)
    assert x.shape == (5, 1, 8, 8) and torch.equal(torch.round(x * 16) / 16, x)
    assert torch.equal(dgm.sample(run, 5, seed=3), x)
    assert main(["zoo", "--json"]) == 0
    zoo = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert zoo["pixelvae"]["seeds"] == "004" and zoo["pixelvae"]["family"] == "vae"
    assert {"loss", "sample", "encode", "decode", "elbo", "iwae"} <= set(zoo["pixelvae"]["capabilities"].split())
