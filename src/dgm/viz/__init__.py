"""Pictures: sample grids, reconstructions, interpolations, traversals, the 2-D manifold, embeddings.

Each function asks the model for the capability it needs (`sample`, `encode`/`decode`)
and writes one PNG.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dgm.errors import DgmError


def save_grid(images: torch.Tensor, path: Path, nrow: int, min_size: int = 28) -> Path:
    """Write images [N, C, H, W] in [0, 1] as a grid; tiny images are enlarged (nearest) to stay visible."""
    from torchvision.utils import save_image

    images = images.detach().float().cpu().clamp(0, 1)
    scale = max(1, -(-min_size // images.shape[-1]))
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path), nrow=nrow, padding=2, pad_value=0.5)
    return path


def require(model: nn.Module, *methods: str) -> None:
    missing = [m for m in methods if not callable(getattr(model, m, None))]
    if missing:
        raise DgmError(f"{type(model).__name__} has no {' or '.join(m + '()' for m in missing)}, "
                       "so it cannot make this picture")


@torch.no_grad()
def samples(model: nn.Module, path: Path, n: int = 64, seed: int = 0, centres: torch.Tensor | None = None,
            y: int | None = None) -> Path:
    """A grid of samples from fixed noise (the same seed gives the same z every epoch);
    for 2-D points a scatter over the mixture's `centres`; `y` picks the class of a conditional model."""
    require(model, "sample")
    if y is not None and not getattr(model, "conditional", False):
        raise DgmError(f"{type(model).__name__} is not class-conditional, so it cannot sample a given label")
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    x = model.sample(n, generator=generator) if y is None else model.sample(n, y=y, generator=generator)
    if x.dim() == 2:  # points [N, 2] (toy mixtures): a scatter, not an image grid
        from dgm.viz.points import scatter_points

        return scatter_points(x, path, centres=centres)
    return save_grid(x, path, nrow=int(n ** 0.5))


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
    from dgm.evaluate.quality import nearest_distances

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
def reconstructions(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    """Rows of originals, each followed by a row of their reconstructions."""
    require(model, "encode", "decode")
    recon = model.decode(model.encode(x))
    nrow = 8
    rows = []
    for start in range(0, x.shape[0], nrow):
        rows += [x[start : start + nrow], recon[start : start + nrow]]
    return save_grid(torch.cat(rows), path, nrow=nrow)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between codes a and b [D] at fractions t [T] -> [T, D]."""
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.arccos((a_n * b_n).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@torch.no_grad()
def interpolations(model: nn.Module, x_a: torch.Tensor, x_b: torch.Tensor, path: Path, steps: int = 10,
                   mode: str = "slerp") -> Path:
    """Each row decodes codes on the path from encode(x_a[i]) to encode(x_b[i])."""
    require(model, "encode", "decode")
    if mode not in ("lerp", "slerp"):
        raise DgmError(f"unknown interpolation '{mode}'; choose lerp or slerp")
    za, zb = model.encode(x_a), model.encode(x_b)
    t = torch.linspace(0, 1, steps, device=za.device)
    rows = []
    for a, b in zip(za, zb):
        z = slerp(a, b, t) if mode == "slerp" else a + t[:, None] * (b - a)
        rows.append(model.decode(z))
    return save_grid(torch.cat(rows), path, nrow=steps)


@torch.no_grad()
def traversal(model: nn.Module, x: torch.Tensor, path: Path, steps: int = 9, span: float = 3.0,
              max_dims: int = 16) -> Path:
    """Row d varies latent dimension d of encode(x) from -span to +span, the others fixed."""
    require(model, "encode", "decode")
    z0 = model.encode(x[:1])[0]
    dims = min(z0.shape[0], max_dims)
    values = torch.linspace(-span, span, steps, device=z0.device)
    z = z0.repeat(dims, steps, 1)
    for d in range(dims):
        z[d, :, d] = values
    return save_grid(model.decode(z.reshape(dims * steps, -1)), path, nrow=steps)


@torch.no_grad()
def manifold(model: nn.Module, path: Path, n: int = 20) -> Path:
    """Decode a grid of 2-D codes at evenly spaced quantiles of N(0, 1) (seed 001's data manifold)."""
    from scipy.stats import norm

    require(model, "decode")
    latent_dim = getattr(model.cfg, "latent_dim", None)
    if latent_dim != 2:
        raise DgmError(f"the manifold picture needs latent_dim=2, this model has {latent_dim}; "
                       "train with latent_dim=2")
    q = torch.tensor(norm.ppf(torch.linspace(0.05, 0.95, n).numpy()), dtype=torch.float32)
    device = next(model.parameters()).device
    z = torch.stack(torch.meshgrid(q.flip(0), q, indexing="ij")[::-1], -1).reshape(-1, 2).to(device)
    return save_grid(model.decode(z), path, nrow=n, min_size=16)


@torch.no_grad()
def embedding(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, path: Path, seed: int = 0) -> Path:
    """Test codes in 2-D (the codes themselves when latent_dim=2, else t-SNE), coloured by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    require(model, "encode")
    z = model.encode(x).cpu().numpy()
    method = "latent code"
    if z.shape[1] > 2:
        from sklearn.manifold import TSNE

        z = TSNE(n_components=2, random_state=seed, init="pca", perplexity=min(30, len(z) - 1)).fit_transform(z)
        method = "t-SNE of latent codes"
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    colours = None if y is None else y.cpu().numpy()
    sc = ax.scatter(z[:, 0], z[:, 1], c=colours, cmap="tab10", s=4)
    if y is not None:
        fig.colorbar(sc, ax=ax, ticks=range(int(y.max()) + 1))
    ax.set_title(f"{method}, {len(z)} test images")
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
