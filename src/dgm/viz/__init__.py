"""Pictures: sample grids, reconstructions, interpolations, traversals, the 2-D manifold, embeddings,
attribute progressions.

Each function asks the model for the capability it needs (`sample`, `encode`/`decode`)
and writes one PNG. A conditional model (the conditional VAE) is given the images' labels `y`
(`dgm.models.given`); its decoder also takes mixed condition vectors (`condition`), which the
progression and the interpolations between images of two labels decode.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dgm.errors import DgmError
from dgm.models import given


def save_grid(images: torch.Tensor, path: Path, nrow: int, min_size: int = 48, row_labels: list[str] | None = None,
              col_labels: list[str] | None = None, title: str | None = None) -> Path:
    """Write images [N, C, H, W] in [0, 1] as a grid, nrow per row; small images are enlarged (nearest
    neighbour, a whole factor) to at least min_size pixels so digits stay visible. With labels or a
    title the grid is drawn with them beside it (rows on the left, columns on top)."""
    from torchvision.utils import make_grid, save_image

    images = images.detach().float().cpu().clamp(0, 1)
    scale = max(1, -(-min_size // images.shape[-1]))
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (row_labels or col_labels or title):
        save_image(images, str(path), nrow=nrow, padding=2, pad_value=0.5)
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = make_grid(images, nrow=nrow, padding=2, pad_value=0.5).permute(1, 2, 0).numpy()
    cell_h, cell_w = images.shape[-2] + 2, images.shape[-1] + 2
    dpi = 100
    left = 1.6 if row_labels else 0.1
    top = (0.35 if col_labels else 0.0) + (0.35 if title else 0.0) + 0.05
    fig = plt.figure(figsize=(grid.shape[1] / dpi + left + 0.1, grid.shape[0] / dpi + top + 0.1), dpi=dpi)
    ax = fig.add_axes((left / fig.get_figwidth(), 0.1 / fig.get_figheight(), grid.shape[1] / dpi / fig.get_figwidth(),
                       grid.shape[0] / dpi / fig.get_figheight()))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([cell_w * (i + 0.5) for i in range(len(col_labels or []))], col_labels or [], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([cell_h * (i + 0.5) for i in range(len(row_labels or []))], row_labels or [], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.05 / fig.get_figheight(), va="top")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def require(model: nn.Module, *methods: str) -> None:
    from dgm.models import require as require_methods

    require_methods(model, *methods, purpose="make this picture")


@torch.no_grad()
def samples(model: nn.Module, path: Path, n: int = 64, seed: int = 0, centres: torch.Tensor | None = None,
            y: int | None = None) -> Path:
    """A grid of samples from fixed noise (the same seed gives the same z every epoch);
    for 2-D points a scatter over the mixture's `centres`; `y` picks the class of a conditional model."""
    from dgm.api import draw

    x = draw(model, n, seed=seed, label=y)
    if x.dim() == 2:  # points [N, 2] (toy mixtures): a scatter, not an image grid
        from dgm.viz.points import scatter_points

        return scatter_points(x, path, centres=centres)
    what = f"label {y}" if y is not None else f"seed {seed}"
    return save_grid(x, path, nrow=int(n ** 0.5), title=f"{n} samples of {model.cfg.name} ({what})")


@torch.no_grad()
def latent_interpolations(model: nn.Module, path: Path, rows: int = 8, steps: int = 10, mode: str = "slerp",
                          seed: int = 0) -> Path:
    """Each row decodes the path between two random codes z ~ N(0, I) (for models without an encoder)."""
    require(model, "generate")
    if mode not in ("lerp", "slerp"):
        raise DgmError(f"unknown interpolation '{mode}'; choose lerp or slerp")
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    za, zb = (torch.randn(rows, model.cfg.latent_dim, generator=g, device=device) for _ in range(2))
    t = torch.linspace(0, 1, steps, device=device)
    z = torch.cat([slerp(a, b, t) if mode == "slerp" else a + t[:, None] * (b - a) for a, b in zip(za, zb)])
    return save_grid(model.generate(z), path, nrow=steps)


@torch.no_grad()
def nearest_neighbours(model: nn.Module, train_x: torch.Tensor, path: Path, n: int = 8, k: int = 5,
                       seed: int = 0) -> Path:
    """Each row: a sample, then its k nearest training images in pixel space (the memorisation check)."""
    require(model, "sample")
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    s = model.sample(n, generator=g).cpu()
    if s.dim() != 4:
        raise DgmError("nearest neighbours are drawn for image samples only")
    from dgm.evaluation.quality import nearest_distances

    idx = nearest_distances(s, train_x, k)[1]  # [n, k]
    rows = torch.cat([torch.cat([s[i : i + 1], train_x[idx[i]]]) for i in range(n)])
    return save_grid(rows, path, nrow=k + 1)


def loss_curves(records: list[dict], path: Path) -> Path | None:
    """Training (and validation) curves of every logged term against the step, one panel per term."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k.split("/", 1)[1] for r in records for k in r if k.startswith(("train/", "valid/"))})
    if not keys:
        return None
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), dpi=100, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for split in ("train", "valid"):
            pts = [(r["step"], r[f"{split}/{key}"]) for r in records if f"{split}/{key}" in r]
            if pts:
                ax.plot(*zip(*pts), label=split)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


@torch.no_grad()
def reconstructions(model: nn.Module, x: torch.Tensor, path: Path, y: torch.Tensor | None = None) -> Path:
    """Rows of originals, each followed by a row of their reconstructions (given their labels y [N] when the
    model is conditional)."""
    require(model, "encode", "decode")
    labels = given(model, y)
    recon = model.decode(model.encode(x, **labels), **labels)
    nrow = 8
    rows = []
    for start in range(0, x.shape[0], nrow):
        rows += [x[start : start + nrow], recon[start : start + nrow]]
    return save_grid(torch.cat(rows), path, nrow=nrow, row_labels=["original", "reconstruction"] * (len(rows) // 2),
                     title="test images and their reconstructions")


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between codes a and b [D] at fractions t [T] -> [T, D]."""
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.arccos((a_n * b_n).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@torch.no_grad()
def interpolations(model: nn.Module, x_a: torch.Tensor, x_b: torch.Tensor, path: Path, steps: int = 10,
                   mode: str = "slerp", y_a: torch.Tensor | None = None, y_b: torch.Tensor | None = None) -> Path:
    """Each row decodes codes on the path from encode(x_a[i]) to encode(x_b[i]); a conditional model encodes
    each image with its label (y_a, y_b) and decodes with the condition moving linearly between the two."""
    require(model, "encode", "decode")
    if mode not in ("lerp", "slerp"):
        raise DgmError(f"unknown interpolation '{mode}'; choose lerp or slerp")
    labels_a, labels_b = given(model, y_a), given(model, y_b)
    za, zb = model.encode(x_a, **labels_a), model.encode(x_b, **labels_b)
    t = torch.linspace(0, 1, steps, device=za.device)
    rows = []
    for i, (a, b) in enumerate(zip(za, zb)):
        z = slerp(a, b, t) if mode == "slerp" else a + t[:, None] * (b - a)
        labels = given(model, label_mix(model, y_a[i : i + 1], y_b[i : i + 1], t)[0]) if labels_a else {}
        rows.append(model.decode(z, **labels))
    return save_grid(torch.cat(rows), path, nrow=steps)


def require_condition(model: nn.Module) -> None:
    """DgmError unless the model is conditional and takes condition vectors (`condition`)."""
    if not getattr(model, "conditional", False):
        raise DgmError(f"{type(model).__name__} is not conditional, so it has no labels to move between; "
                       "train a cvae")
    if not callable(getattr(model, "condition", None)):
        raise DgmError(f"{type(model).__name__} takes class labels only, not the mixed condition vectors "
                       "y_alpha this picture decodes")


def label_mix(model: nn.Module, y_from, y_to, alphas: torch.Tensor) -> torch.Tensor:
    """y_alpha = (1 - alpha) y_from + alpha y_to of the model's condition vectors (one-hot for labels), for
    labels y_from, y_to [n] (or one int each, n = 1) and fractions alphas [T]: [n, T, d]. Exact at the ends:
    alpha = 0 gives y_from's vectors and alpha = 1 y_to's, bit for bit."""
    require_condition(model)
    n = 1 if isinstance(y_from, int) else len(y_from)
    c_from, c_to = model.condition(y_from, n), model.condition(y_to, n)
    a = alphas.to(c_from)[None, :, None]
    return (1 - a) * c_from[:, None] + a * c_to[:, None]


def has_progression(model: nn.Module) -> bool:
    """Whether the model can draw `progression`: conditional, taking condition vectors, with a decoder."""
    try:
        require_condition(model)
        _decoder(model)
    except DgmError:
        return False
    return True


def _decoder(model: nn.Module):
    """decode(z, y) or, for a model without an encoder, generate(z, y)."""
    fn = getattr(model, "decode", None)
    fn = fn if callable(fn) else getattr(model, "generate", None)
    if not callable(fn):
        raise DgmError(f"{type(model).__name__} has no decode() or generate(), so it cannot make this picture")
    return fn


@torch.no_grad()
def progression_images(model: nn.Module, z: torch.Tensor, pairs: list[tuple],
                       alphas: torch.Tensor) -> torch.Tensor:
    """Decodes of the codes z [S, D], each with y_alpha for every pair (from, to) and every alpha: [len(pairs), S,
    len(alphas), C, H, W]. A pair holds two labels (ints) or two condition vectors [d] (an attribute model's)."""
    decode = _decoder(model)
    s, t = z.shape[0], alphas.shape[0]
    y_from = torch.stack([torch.as_tensor(p[0]) for p in pairs]).repeat_interleave(s, dim=0)
    y_to = torch.stack([torch.as_tensor(p[1]) for p in pairs]).repeat_interleave(s, dim=0)
    c = label_mix(model, y_from, y_to, alphas)  # [P S, T, d]
    zs = z.repeat(len(pairs), 1)[:, None].expand(-1, t, -1)  # [P S, T, D]
    x = decode(zs.reshape(-1, z.shape[1]), y=c.reshape(-1, c.shape[-1]))
    return x.reshape(len(pairs), s, t, *x.shape[1:])


@torch.no_grad()
def progression(model: nn.Module, path: Path, pairs: list[tuple[int, int]] | None = None, steps: int = 8,
                styles: int = 1, seed: int = 0, factors: tuple | None = None) -> Path:
    """Attribute progression (seeds 000 and 002, after Yan et al. 2016's Attribute2Image): rows decode fixed codes
    z ~ N(0, I) with y_alpha = (1 - alpha) y_from + alpha y_to, alpha from 0 to 1 in `steps` columns, for each
    pair (from, to) of labels (default 0 -> 1, 1 -> 2, ..., K-2 -> K-1) and `styles` codes z per pair (the
    same codes for every pair).

    A model conditioned on attribute vectors (its `attribute_ends`: the cvae with condition=attributes, the
    discvae) has one row per factor instead, y = [y_alpha, y_rest]: y_alpha moves that factor's entries from
    y_min to y_max (a continuous factor from 0 to 1, a discrete one from its first value's one-hot to its
    last's), y_rest is one attribute vector drawn after the codes and kept, and z ~ p(z) is the same along the
    row and for every factor. `factors` (the dataset's `Factor`s) name the rows."""
    require_condition(model)
    _decoder(model)
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    alphas = torch.linspace(0, 1, steps, device=device)
    cols = [f"\u03b1={a:.2f}" for a in alphas.tolist()]
    ends = getattr(model, "attribute_ends", None)
    if ends is not None:
        if pairs is not None:
            raise DgmError(f"{model.cfg.name} conditions on attribute vectors, so its progression has one row per "
                           "factor and no labels to choose; drop --from-label and --to-label")
        z = model.sample_latent(styles, g)
        y_min, y_max = ends(model.random_attributes(1, g)[0])
        x = progression_images(model, z, list(zip(y_min, y_max)), alphas)
        sizes = tuple(model.cfg.factor_sizes)
        if factors is not None and len(factors) == len(sizes):
            names = [f"{f.name}: {f.values[0]} \u2192 {f.values[-1]}" if f.discrete else
                     f"{f.name}: {f.low:.3g} \u2192 {f.high:.3g}" for f in factors]
        else:
            names = [f"factor {i + 1}: " + (f"value 1 \u2192 {k}" if k > 1 else "0 \u2192 1")
                     for i, k in enumerate(sizes)]
        rows = [name + (f", z{i + 1}" if styles > 1 else "") for name in names for i in range(styles)]
        return save_grid(x.flatten(0, 2), path, nrow=steps, row_labels=rows, col_labels=cols,
                         title="y = [y\u03b1, y_rest], y\u03b1 = (1 - \u03b1) y_min + \u03b1 y_max on one factor, "
                               "y_rest and z fixed")
    num_classes = getattr(model.cfg, "num_classes", None) or 0
    if pairs is None:
        pairs = [(k, k + 1) for k in range(num_classes - 1)] or [(0, 0)]
    z = torch.randn(styles, model.cfg.latent_dim, generator=g, device=device)
    x = progression_images(model, z, pairs, alphas)
    rows = [f"{a} \u2192 {b}" + (f", z{i + 1}" if styles > 1 else "") for a, b in pairs for i in range(styles)]
    return save_grid(x.flatten(0, 2), path, nrow=steps, row_labels=rows, col_labels=cols,
                     title="y\u03b1 = (1 - \u03b1) y_from + \u03b1 y_to at fixed z")


def latent_activity(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
    """How much each latent dimension is used on images x (labels y for a conditional model): the mean
    KL(q(z_d|x) || N(0, 1)) per dimension for a model with a Gaussian `posterior` over its codes, else the
    variance of its codes over x; and the measure's name."""
    labels = given(model, y)
    codes = model.encode(x, **labels)
    if callable(getattr(model, "posterior", None)):
        q = model.posterior(x, **labels)
        if q.loc.shape == codes.shape:  # a posterior over the whole code (not one layer of a hierarchical VAE)
            var = q.scale.pow(2)
            return (0.5 * (q.loc.pow(2) + var - 1 - var.log())).mean(0), "KL"
    return codes.var(0), "var"


@torch.no_grad()
def traversal(model: nn.Module, x: torch.Tensor, path: Path, steps: int = 9, span: float = 3.0,
              max_dims: int = 16, y: torch.Tensor | None = None) -> Path:
    """One row per latent dimension, the most used first (by its KL to the prior on x, see
    `latent_activity`): the code of x[0] with that dimension set from -span to +span, the others fixed
    (and x[0]'s label y[0] for a conditional model). A unit a model names (`unit_names`, DC-IGN's factors)
    is labelled with its name."""
    require(model, "encode", "decode")
    names = getattr(model, "unit_names", None) or {}
    z0 = model.encode(x[:1], **given(model, None if y is None else y[:1]))[0]
    activity, measure = latent_activity(model, x, y)
    order = activity.argsort(descending=True)[:max_dims]
    values = torch.linspace(-span, span, steps, device=z0.device)
    z = z0.repeat(len(order), steps, 1)
    for row, d in enumerate(order):
        z[row, :, d] = values
    labels = given(model, None if y is None else y[:1].expand(len(order) * steps, *y.shape[1:]))
    return save_grid(model.decode(z.reshape(len(order) * steps, -1), **labels), path, nrow=steps,
                     row_labels=[f"z{d}{' ' + names[d] if d in names else ''} ({measure} {activity[d]:.2f})"
                                 for d in order.tolist()],
                     col_labels=[f"{v:+.1f}" for v in values.tolist()],
                     title=f"latent traversal, the {len(order)} most used of {z0.shape[0]} dimensions first")


@torch.no_grad()
def manifold(model: nn.Module, path: Path, n: int = 20, y: int | None = None) -> Path:
    """Decode a grid of 2-D codes at evenly spaced quantiles of N(0, 1) (seed 001's data manifold); a
    conditional model decodes them all with the label y."""
    from scipy.stats import norm

    require(model, "decode")
    latent_dim = getattr(model.cfg, "latent_dim", None)
    if latent_dim != 2:
        raise DgmError(f"the manifold picture needs latent_dim=2, this model has {latent_dim}; "
                       "train with latent_dim=2")
    conditional = getattr(model, "conditional", False)
    if conditional and y is None:
        raise DgmError(f"{model.cfg.name} is conditional, so its manifold is drawn for one label; give it with "
                       "--label")
    if y is not None and not conditional:
        raise DgmError(f"{type(model).__name__} is not class-conditional, so it has no manifold of a given label")
    q = torch.tensor(norm.ppf(torch.linspace(0.05, 0.95, n).numpy()), dtype=torch.float32)
    device = next(model.parameters()).device
    z = torch.stack(torch.meshgrid(q.flip(0), q, indexing="ij")[::-1], -1).reshape(-1, 2).to(device)
    return save_grid(model.decode(z, **given(model, y)), path, nrow=n, min_size=16)


@torch.no_grad()
def embedding(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, path: Path, seed: int = 0,
              method: str = "auto", condition: torch.Tensor | None = None) -> Path:
    """Test images in 2-D, coloured by label: `pca` the two leading principal components of their pixels,
    `tsne` t-SNE of their codes, `code` the codes themselves (latent_dim=2); `auto` the codes when they are
    2-D, else t-SNE (seed 002's picture: PCA of the pixels beside an autoencoder's 2-D codes). A conditional
    model encodes x given `condition` (default y; attribute vectors for one conditioned on attributes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if method not in ("auto", "pca", "tsne", "code"):
        raise DgmError(f"unknown embedding method '{method}'; choose auto, pca, tsne or code")
    if method == "pca":
        from dgm.evaluation.representation import principal_axes

        mean, axes = principal_axes(x.cpu(), 2)
        z = ((x.cpu().flatten(1).double() - mean) @ axes).numpy()
        title, raw_codes = "PCA of the pixels", False
    else:
        require(model, "encode")
        z = model.encode(x, **given(model, y if condition is None else condition)).cpu().numpy()
        if method == "code" and z.shape[1] != 2:
            raise DgmError(f"--method code plots 2-D codes and this model's have {z.shape[1]} dimensions; use "
                           "--method tsne or pca, or train with latent_dim=2")
        codes = "codes of q(z | x, y)" if getattr(model, "conditional", False) else "latent codes"
        title, raw_codes = codes, True
        if method == "tsne" or method == "auto" and z.shape[1] > 2:
            from sklearn.manifold import TSNE

            z = TSNE(n_components=2, random_state=seed, init="pca", perplexity=min(30, len(z) - 1)).fit_transform(z)
            title, raw_codes = f"t-SNE of {codes}", False
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    prior = getattr(model, "sample_latent", None)
    if raw_codes and callable(prior):  # the 2-D codes over draws of the prior p(z), which an adversarial
        p = prior(len(z), torch.Generator(device=x.device).manual_seed(seed)).cpu().numpy()  # autoencoder's fill
        if p.shape[1] == 2:
            ax.scatter(p[:, 0], p[:, 1], color="0.8", s=4, label="prior p(z)")
            ax.legend(loc="upper right", fontsize=7)
    colours = None if y is None else y.cpu().numpy()
    sc = ax.scatter(z[:, 0], z[:, 1], c=colours, cmap="tab10", s=4)
    if y is not None:
        fig.colorbar(sc, ax=ax, ticks=range(int(y.max()) + 1))
    ax.set_title(f"{title}, {len(z)} test images")
    path = Path(path)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


@torch.no_grad()
def completions(model: nn.Module, x: torch.Tensor, rows: int, path: Path, seed: int = 0, y: int | None = None,
                n_per_image: int = 3) -> Path:
    """One line per image: its first `rows` rows (the rest grey), n_per_image completions, the original."""
    require(model, "complete")
    if y is not None and not getattr(model, "conditional", False):
        raise DgmError(f"{type(model).__name__} is not class-conditional, so it cannot complete with a given label")
    x = x.to(next(model.parameters()).device)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    done = [model.complete(x, rows, y=y, generator=generator) for _ in range(n_per_image)]
    kept = x.clone()
    kept[:, :, rows:] = 0.5
    return save_grid(torch.stack([kept, *done, x], dim=1).flatten(0, 1), path, nrow=n_per_image + 2)
