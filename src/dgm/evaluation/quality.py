"""Sample quality: FID, KID, Inception-style score, precision/recall, MS-SSIM diversity,
memorisation and an independent Wasserstein critic.

Features f(x) and class probabilities p(y|x) come from a fixed network (features.py).
With r real and g generated feature sets:

    FID        = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))
    KID        = MMD_u^2(r, g) with k(a, b) = (a.b / d + 1)^3, unbiased, mean and std over subsets
               of at most half of each set
    IS         = exp(E_x KL(p(y|x) || p(y)))                       (one split)
    precision  = 1/|g| sum_j 1[exists i: ||g_j - r_i|| <= ||r_i - NN_k(r_i)||]   (k = 3)
    recall     = the same with r and g swapped                       (Kynkaanniemi et al. 2019)
    diversity  = 1 - mean MS-SSIM(x_i, x_j) over random pairs i != j  (seed 003)
    memorisation: d(x) = min_t ||x - t||_2 over training images t, in pixel space;
               `nn_distance` is its median over samples, `close_copies` the fraction of samples
               nearer to the training set than 95 % of real test images are
    critic_w   = E_real f(x) - E_gen f(x) on held-out halves, f a fresh critic trained with the
               WGAN-GP objective on the other halves (seed 003, after Danihelka et al.)

`sample_quality` scores a model's samples against the training set and, as the reference
floor, the real test images against the same training set.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dgm.errors import DgmError

METRICS = ("fid", "kid", "inception_score", "precision_recall", "diversity", "memorisation", "critic")
NEED_FEATURES = {"fid", "kid", "inception_score", "precision_recall"}
MSSSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first


class _Precomputed(nn.Module):
    """Hands features computed beforehand to torchmetrics, which calls its extractor on its input."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@torch.no_grad()
def extract(net: nn.Module, x: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, d], logits [N, K]) of images x [N, C, H, W] in [0, 1], in float64 on the CPU."""
    device = next(net.parameters()).device
    feats, logits = [], []
    for i in range(0, len(x), batch_size):
        f = net.features(x[i : i + batch_size].to(device).float())
        feats.append(f.double().cpu())
        logits.append(net.head(f).double().cpu())
    return torch.cat(feats), torch.cat(logits)


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, d] (torchmetrics' arithmetic)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), normalize=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return max(0.0, metric.compute().item())  # the matrix square root can leave -1e-12


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 50, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Unbiased KID (mean, std over `subsets` random subsets) between feature sets (torchmetrics' arithmetic).

    A subset holds at most half of the smaller set, so subsets differ on both sides and the std
    measures the spread of the estimate over both the real and the generated images (a subset as
    large as a set would repeat that whole set every time)."""
    import warnings

    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real) // 2, len(fake) // 2)
    if size < 2:
        raise DgmError("KID needs at least 4 images in each set")
    with warnings.catch_warnings():  # "will save all extracted features": these are small
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size,
                                         normalize=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws its subsets from the global generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return mean.item(), std.item()


def inception_score(logits: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over the set; 1 <= IS <= number of classes."""
    log_p_yx = logits.double().log_softmax(1)
    log_p_y = log_p_yx.exp().mean(0).log()
    kl = (log_p_yx.exp() * (log_p_yx - log_p_y)).sum(1)
    return kl.mean().exp().item()


def nearest_distances(query: torch.Tensor, reference: torch.Tensor, k: int = 1,
                      chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances [N, k] from each query row to its k nearest reference rows, and their indices.

    Rows are flattened, so images [N, C, H, W] compare in pixel space."""
    query, reference = query.flatten(1).float(), reference.flatten(1).float()
    dist = torch.cat([torch.cdist(query, reference[i : i + chunk]) for i in range(0, len(reference), chunk)], 1)
    out = dist.topk(k, dim=1, largest=False)
    return out.values, out.indices


def _manifold_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point of the same set."""
    return nearest_distances(x, x, k + 1)[0][:, k]  # column 0 is the point itself


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 4096) -> float:
    """Fraction of points inside at least one ball (centre i, radius radii[i])."""
    inside = torch.cat([(torch.cdist(points[i : i + chunk].float(), centres.float()) <= radii[None]).any(1)
                        for i in range(0, len(points), chunk)])
    return inside.double().mean().item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of feature sets [N, d] with k-NN balls."""
    if min(len(real), len(fake)) <= k:
        raise DgmError(f"precision and recall need more than k={k} images in each set")
    precision = _coverage(fake, real, _manifold_radii(real, k))
    recall = _coverage(real, fake, _manifold_radii(fake, k))
    return precision, recall


def ms_ssim_settings(height: int, width: int) -> tuple[tuple[float, ...], float, int]:
    """(betas, sigma, taps) of MS-SSIM for small images.

    Scales s = min(5, floor(log2(min(H, W) / 4)) + 1), so the coarsest scale is at least 4
    pixels wide: 8x8 -> 2 scales (8, 4), 28x28 -> 3 (28, 14, 7), 32x32 -> 4 (.., 4), >= 64 -> 5.
    The betas are the first s of Wang et al.'s five, renormalised to sum to 1. The Gaussian
    window is the widest of sigma 1.5, 1.0, 0.5, 0.3 whose taps fit inside the coarsest scale
    (taps - 1 < its side, the rule torchmetrics enforces), where torchmetrics sizes a Gaussian
    window from sigma as taps = 2 int(3.5 sigma + 0.5) + 1 (11, 9, 5, 3 taps): 3 taps for 8x8,
    32x32 and 64x64 (coarsest 4 pixels), 5 for 28x28 (coarsest 7x7), 11 from 176x176 on. At
    every scale the image is reflection-padded by (taps - 1) / 2 pixels on each side before
    filtering and the statistics are cropped back to the image, so the coarsest 7x7 scale of
    28x28 images is read through 2 mirrored pixels on each side.
    """
    side = min(height, width)
    if side < 8:
        raise DgmError(f"MS-SSIM needs images of at least 8x8 pixels, got {height}x{width}")
    scales = min(5, int(math.log2(side / 4)) + 1)
    betas = torch.tensor(MSSSIM_BETAS[:scales])
    coarsest = side // 2 ** (scales - 1)
    sigma, taps = next((s, t) for s in (1.5, 1.0, 0.5, 0.3) if (t := 2 * int(3.5 * s + 0.5) + 1) - 1 < coarsest)
    return tuple((betas / betas.sum()).tolist()), sigma, taps


def ms_ssim_diversity(x: torch.Tensor, n_pairs: int = 1000, seed: int = 0, batch_size: int = 500) -> float:
    """1 - mean MS-SSIM over n_pairs random pairs (i != j) of images x [N, C, H, W] in [0, 1].

    torchmetrics computes MS-SSIM with the settings of `ms_ssim_settings`; "relu" normalisation
    clips negative contrast terms, which fractional betas would otherwise turn into NaN."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

    if len(x) < 2:
        raise DgmError("diversity needs at least 2 images")
    betas, sigma, taps = ms_ssim_settings(*x.shape[-2:])
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(len(x), (n_pairs,), generator=g)
    j = (i + torch.randint(1, len(x), (n_pairs,), generator=g)) % len(x)  # j != i
    x = x.float().clamp(0, 1).cpu()
    scores = torch.cat([ms_ssim(x[i[s : s + batch_size]], x[j[s : s + batch_size]], data_range=1.0, betas=betas,
                                sigma=sigma, kernel_size=taps, reduction="none", normalize="relu")
                        for s in range(0, n_pairs, batch_size)])
    return 1.0 - scores.mean().item()


def memorisation(x: torch.Tensor, train: torch.Tensor, test_distances: torch.Tensor) -> dict[str, float]:
    """Median pixel distance of x to the nearest training image, and the fraction of x nearer than
    the 5th percentile of the real test images' distances (`test_distances`; about 0.05 for real data)."""
    d = nearest_distances(x, train)[0][:, 0]
    threshold = torch.quantile(test_distances, 0.05)
    return {"nn_distance": d.median().item(), "close_copies": (d < threshold).double().mean().item()}


def _critic_net(dims: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(dims, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                         nn.LeakyReLU(0.2), nn.Linear(hidden, 1))


def independent_critic(real_fit: torch.Tensor, fake_fit: torch.Tensor, real_eval: torch.Tensor,
                       fake_eval: torch.Tensor, steps: int = 400, batch_size: int = 64, hidden: int = 256,
                       gp_weight: float = 10.0, lr: float = 1e-3, seed: int = 0) -> float:
    """Wasserstein-1 estimate E_real f - E_fake f on (real_eval, fake_eval) by a fresh critic f.

    f (an MLP on pixels) is trained on (real_fit, fake_fit) to maximise
    E_real f(x) - E_fake f(x) - gp_weight * E[(||grad f(x_hat)||_2 - 1)^2], x_hat on lines between
    real and fake points (WGAN-GP). Held-out evaluation means a critic that only memorised its
    training images scores near 0; copies of training images are caught because the real data
    here is held out from the model's training set."""
    device = real_fit.device
    dims = real_fit[0].numel()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = _critic_net(dims, hidden).to(device)
    opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    g = torch.Generator(device="cpu").manual_seed(seed)
    for _ in range(steps):
        xr = real_fit[torch.randint(len(real_fit), (batch_size,), generator=g)]
        xf = fake_fit[torch.randint(len(fake_fit), (batch_size,), generator=g)]
        eps = torch.rand(batch_size, *[1] * (xr.dim() - 1), generator=g).to(device)
        x_hat = (eps * xr + (1 - eps) * xf).requires_grad_(True)
        grad = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)[0]
        gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        d_real, d_fake = critic(xr).mean(), critic(xf).mean()
        loss = -(d_real - d_fake) + gp_weight * gp
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (critic(real_eval).mean() - critic(fake_eval).mean()).item()


def _strided(x: torch.Tensor, n: int) -> torch.Tensor:
    from dgm.evaluation.likelihood import strided_subset

    return x[strided_subset(len(x), n)]


def _halves(x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random split in two (sets may be ordered by class, as splits and conditional samples are)."""
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]


def check_metrics(names: list[str]) -> None:
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise DgmError(f"unknown sample metric '{unknown[0]}'; choose from {', '.join(METRICS)}")


def score_images(x: torch.Tensor, real: dict, metrics: list[str], seed: int = 0,
                 progress=None) -> dict[str, float]:
    """Scores of images x [n, C, H, W] in [0, 1] against `real` (from `_real_sets`), for the named metrics.

    The critic fits on random halves of x and of the real valid images and is evaluated on the other
    halves; the valid split is disjoint from both the training set and the test images of the floor."""
    out: dict[str, float] = {}
    feats = logits = None
    if NEED_FEATURES & set(metrics):
        feats, logits = extract(real["net"], x)
    for name in metrics:
        if progress is not None:
            progress.set_postfix_str(name)
        if name == "fid":
            out["fid"] = fid(real["train_features"], feats)
        elif name == "kid":
            out["kid"], out["kid_std"] = kid(real["train_features"], feats, seed=seed)
        elif name == "inception_score":
            out["inception_score"] = inception_score(logits)
        elif name == "precision_recall":
            out["precision"], out["recall"] = precision_recall(_strided(real["train_features"], len(feats)), feats)
        elif name == "diversity":
            out["diversity"] = ms_ssim_diversity(x, seed=seed)
        elif name == "memorisation":
            out.update(memorisation(x, real["train"], real["test_distances"]))
        elif name == "critic":
            (real_fit, real_eval), (fake_fit, fake_eval) = _halves(real["valid"], seed), _halves(x, seed)
            out["critic_w"] = independent_critic(real_fit, fake_fit, real_eval, fake_eval, seed=seed)
        if progress is not None:
            progress.update(1)
    return out


def _real_sets(dataset, metrics: list[str], n: int, max_train: int = 10000) -> dict:
    """Real images and features every score compares against: training images (features of a strided
    subset of at most max_train), n test images, n valid images for the critic."""
    from dgm.evaluation.features import feature_net_for

    real: dict = {"train": dataset.to_float(dataset.train.x), "test": dataset.to_float(_strided(dataset.test.x, n))}
    if NEED_FEATURES & set(metrics):
        real["net"], real["feature_net"] = feature_net_for(dataset.name)
        real["train_features"] = extract(real["net"], _strided(real["train"], max_train))[0]
    if "memorisation" in metrics:
        real["test_distances"] = nearest_distances(real["test"], real["train"])[0][:, 0]
    if "critic" in metrics:
        real["valid"] = dataset.to_float(_strided(dataset.valid.x, n))
    return real


def reference_floor(dataset, metrics: list[str] | None = None, n_samples: int = 1000, seed: int = 0) -> dict:
    """The real test images scored as if they were samples (what `sample_quality` reports as "reference")."""
    metrics = list(METRICS) if metrics is None else list(metrics)
    check_metrics(metrics)
    n = min(n_samples, len(dataset.test))
    real = _real_sets(dataset, metrics, n)
    return {"n_samples": n, "feature_net": real.get("feature_net"), **score_images(real["test"], real, metrics, seed)}


@torch.no_grad()
def _samples(model: nn.Module, n: int, seed: int, progress: bool, batch_size: int = 500) -> torch.Tensor:
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for start in tqdm(range(0, n, batch_size), disable=not progress, desc="samples", unit="batch", mininterval=1.0):
        out.append(model.sample(min(batch_size, n - start), generator=g).float().cpu())
    return torch.cat(out)


def sample_quality(model: nn.Module, dataset, metrics: list[str] | None = None, n_samples: int = 1000,
                   seed: int = 0, progress: bool = True) -> dict:
    """Sample-quality scores of an image model against `dataset`'s training set, with the real test
    images scored the same way under "reference" (the floor a perfect model would reach).

    Uses n = min(n_samples, test size) samples and test images, so both figures carry the same
    small-sample bias. {} when the model has no `sample` or the data are not images."""
    metrics = list(METRICS) if metrics is None else list(metrics)
    check_metrics(metrics)
    if not callable(getattr(model, "sample", None)) or dataset.levels == 0 or len(dataset.shape) != 3 or not metrics:
        return {}
    if n_samples < 8:
        raise DgmError(f"--n-samples must be at least 8, got {n_samples}")
    from tqdm.auto import tqdm

    n = min(n_samples, len(dataset.test))
    model.eval()
    real = _real_sets(dataset, metrics, n)
    x = _samples(model, n, seed, progress)
    with tqdm(total=2 * len(metrics), disable=not progress, desc="sample quality", mininterval=0.5) as bar:
        out = {"n_samples": n, **score_images(x, real, metrics, seed, bar)}
        if "feature_net" in real:
            out["feature_net"] = real["feature_net"]
        out["reference"] = score_images(real["test"], real, metrics, seed, bar)
    return out


class ValidationFID:
    """The model-selection signal for image generators without a validation loss (GANs): FID of n samples
    from fixed noise against the validation split's features, with the dataset's feature network
    (`feature_net_for`). The same noise every call, so two calls differ only by the weights."""

    def __init__(self, dataset, n: int = 500, seed: int = 0, max_real: int = 10000):
        from dgm.evaluation.features import feature_net_for

        self.net, self.feature_net = feature_net_for(dataset.name)
        self.n, self.seed = n, seed
        self.real = extract(self.net, dataset.to_float(_strided(dataset.valid.x, max_real)))[0]

    @staticmethod
    def available(model: nn.Module, dataset) -> bool:
        """Whether the model samples images of a dataset that has a validation split and a feature network."""
        from dgm.evaluation.features import feature_net_for

        if not callable(getattr(model, "sample", None)) or dataset.levels == 0 or len(dataset.shape) != 3:
            return False
        if len(dataset.valid) < 2:
            return False
        try:
            feature_net_for(dataset.name)
        except DgmError:
            return False
        return True

    def __call__(self, model: nn.Module) -> float:
        return fid(self.real, extract(self.net, _samples(model, self.n, self.seed, progress=False))[0])
