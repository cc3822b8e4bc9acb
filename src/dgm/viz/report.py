"""One HTML page per run (`dgm report`) and a leaderboard across runs (`dgm compare`).

The page asks the model what it can do: every model gets a sample grid; models with
`encode`/`decode` get reconstructions and interpolations between test images; models with
`generate` get interpolations between random codes; image models get nearest training
neighbours. Pictures go to RUN/report/ and are referenced relatively, so the run folder
is self-contained.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import torch

from dgm import viz
from dgm.models import batch_fields

# (key in eval.json, column title, format, lower is better)
COLUMNS = [
    ("elbo", "ELBO", "{:.2f}", False),
    ("log_likelihood", "log p(x)", "{:.2f}", False),
    ("bits_per_dim", "bits/dim", "{:.4f}", True),
    ("log_density", "log density", "{:.2f}", False),
    ("conditional_elbo", "ELBO(x|y)", "{:.2f}", False),
    ("conditional_log_likelihood", "log p(x|y)", "{:.2f}", False),
    ("conditional_bits_per_dim", "bits/dim given y", "{:.4f}", True),
    ("sse_per_image", "SSE/image", "{:.2f}", True),
    ("probe_accuracy", "linear probe", "{:.3f}", False),
    ("knn_accuracy", "5-NN", "{:.3f}", False),
    ("classification_error", "class. error", "{:.4f}", True),
    ("modes_covered", "modes", "{}", False),
    ("high_quality_fraction", "high quality", "{:.3f}", False),
    ("fid", "FID", "{:.2f}", True),
    ("kid", "KID", "{:.2f}", True),
    ("inception_score", "IS", "{:.2f}", False),
    ("precision", "precision", "{:.3f}", False),
    ("recall", "recall", "{:.3f}", False),
    ("diversity", "diversity", "{:.3f}", False),
    ("nn_distance", "NN distance", "{:.3f}", False),
    ("close_copies", "close copies", "{:.3f}", True),
    ("critic_w", "critic W", "{:.3f}", True),
]
DESCRIPTIONS = {
    "elbo": "evidence lower bound, mean nats per example",
    "log_likelihood": "log p(x) (IWAE estimate or exact), mean nats per example",
    "bits_per_dim": "-log p(x) / (D ln 2)",
    "log_density": "log-density of continuous data (IWAE estimate or exact), mean nats per example",
    "bce_kl": "training loss of a Bernoulli on grey levels (BCE + KL), not a likelihood",
    "likelihood_note": "why no likelihood is reported, or that the scores are conditional",
    "conditional_elbo": "evidence lower bound on log p(x | y), each image given its label, mean nats per example",
    "conditional_log_likelihood": "log p(x | y) (IWAE estimate), each image given its label, mean nats per example",
    "conditional_bits_per_dim": "-log p(x | y) / (D ln 2)",
    "sse_per_image": "reconstruction error: sum of squared pixel errors per image, pixels in [0, 1]",
    "recon_nll": "-log p(x | decode(encode(x))), mean nats per image",
    "recon_bce": "binary cross-entropy of the reconstruction (a Bernoulli's -log p), mean nats per image",
    "probe_accuracy": "test accuracy of logistic regression on the codes (fitted on training codes)",
    "knn_accuracy": "test accuracy of 5-nearest neighbours among training codes",
    "probe_train_codes": "training codes the two classifiers are fitted on",
    "classification_error": "test error of the model's own classifier (argmax of classify(x), M2's q(y|x))",
    "mean_activation": "mean activation of the sigmoid code units",
    "active_fraction": "fraction of (image, unit) pairs with activation above 0.5",
    "fid": "Frechet distance of feature Gaussians to the training set",
    "kid": "unbiased kernel MMD^2 of features to the training set (mean over subsets)",
    "kid_std": "standard deviation of KID over subsets",
    "inception_score": "exp E KL(p(y|x) || p(y)) from the feature network's classifier",
    "precision": "fraction of samples inside the real data's 3-NN feature manifold",
    "recall": "fraction of real images inside the samples' 3-NN feature manifold",
    "diversity": "1 - mean pairwise MS-SSIM",
    "nn_distance": "median pixel distance to the nearest training image",
    "close_copies": "fraction nearer to the training set than 95 % of real test images",
    "critic_w": "Wasserstein estimate of a fresh WGAN-GP critic on held-out halves",
}


def fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    spec = "{:.2f}" if key == "kid_std" else next((c[2] for c in COLUMNS if c[0] == key),
                                                  "{:.4f}" if isinstance(value, float) else "{}")
    return spec.format(value)


SETTINGS = ("run", "split", "n_examples", "k", "n_samples", "feature_net", "weights_sha256", "weights_mtime_ns",
            "reference")


def metrics_rows(metrics: dict) -> list[tuple[str, str, str, str]]:
    """(metric, model value, real-test floor, meaning) for every score in an eval.json."""
    reference = metrics.get("reference", {})
    rows = []
    for key, value in metrics.items():
        if key in SETTINGS or isinstance(value, (dict, list)):
            continue
        rows.append((key, fmt(key, value), fmt(key, reference.get(key)) if key in reference else "",
                     DESCRIPTIONS.get(key, "")))
    return rows


def leaderboard(entries: list[tuple[str, dict, dict]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows from (run name, config, eval.json) triples: runs sorted by dataset then by FID
    (else bits/dim), then per dataset the real test set against its training set (the floor)."""
    present = [c for c in COLUMNS if any(c[0] in m for _, _, m in entries)]
    sort_key = next((c[0] for c in present if c[0] in ("fid", "bits_per_dim")), None)

    def order(entry):
        value = entry[2].get(sort_key) if sort_key else None
        return entry[1]["data"]["name"], value is None, value if value is not None else 0.0

    header = ["run", "model", "data", *[c[1] for c in present]]
    rows = [[name, config["model"]["name"], config["data"]["name"], *[fmt(c[0], m.get(c[0])) for c in present]]
            for name, config, m in sorted(entries, key=order)]
    floors: dict[str, dict] = {}
    for _, config, m in entries:
        if m.get("reference"):
            floors.setdefault(config["data"]["name"], {}).update(m["reference"])
    for data, ref in floors.items():
        rows.append(["real test vs train", "-", data, *[fmt(c[0], ref.get(c[0])) for c in present]])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


@torch.no_grad()
def pictures(model, dataset, records: list[dict], folder: Path, seed: int = 0) -> list[tuple[str, Path]]:
    """(caption, path) of every picture the model supports, written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    curves = viz.loss_curves(records, folder / "losses.png")
    if curves:
        out.append(("Training curves", curves))
    images = dataset.levels > 0 and len(dataset.shape) == 3
    if callable(getattr(model, "sample", None)):
        centres = dataset.mixture[0] if dataset.mixture is not None else None
        n = 2500 if centres is not None else 64
        out.append(("Samples", viz.samples(model, folder / "samples.png", n=n, seed=seed, centres=centres)))
    has_codec = callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))
    if images and has_codec:
        test = dataset.test
        device = next(model.parameters()).device
        idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:24]
        x = dataset.to_float(test.x[idx]).to(device)
        y = batch_fields(model, dataset, test)[0]  # a conditional model's encoder reads them
        y = None if y is None else y[idx].to(device)
        out.append(("Reconstructions (odd rows: test images; even rows: their reconstructions)",
                    viz.reconstructions(model, x[:16], folder / "reconstructions.png",
                                        y=None if y is None else y[:16])))
        out.append(("Interpolations between test images (slerp in latent space)",
                    viz.interpolations(model, x[16:20], x[20:24], folder / "interpolations.png",
                                       y_a=None if y is None else y[16:20], y_b=None if y is None else y[20:24])))
    elif images and callable(getattr(model, "generate", None)):
        out.append(("Interpolations between random codes (slerp)",
                    viz.latent_interpolations(model, folder / "interpolations.png", rows=4, seed=seed)))
    if images and viz.has_progression(model):
        out.append(("Label progression: each row decodes one z with y_alpha = (1 - alpha) y_from + alpha y_to",
                    viz.progression(model, folder / "progression.png", seed=seed)))
    if images and callable(getattr(model, "sample", None)):
        out.append(("Nearest neighbours: each row is a sample, then its 5 nearest training images (pixel distance)",
                    viz.nearest_neighbours(model, dataset.to_float(dataset.train.x), folder / "nearest.png",
                                           n=6, seed=seed)))
    return out


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; }
.config { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; margin-bottom: 0.3em; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #eee; }
.note { color: #666; font-size: 0.85em; }
"""


def _kv_table(title: str, values: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in values.items())
    return f"<div><h3>{html.escape(title)}</h3><table>{rows}</table></div>"


def _settings_note(metrics: dict) -> str:
    notes = []
    if "n_examples" in metrics:
        k = f", k = {metrics['k']} importance samples" if "k" in metrics else ""
        notes.append(f"likelihoods on {metrics['n_examples']} {metrics.get('split', 'test')} images{k}")
    if "feature_net" in metrics or "reference" in metrics:
        notes.append(f"sample quality from {metrics.get('n_samples')} samples against the training set, features "
                     f"{metrics.get('feature_net', 'none')}; the floor scores as many real test images the same way")
    return f"<p class='note'>{html.escape('; '.join(notes))}</p>" if notes else ""


def _display_width(path: Path, target: int = 400) -> str:
    """A width attribute that enlarges small pixel grids to at least `target` pixels (whole multiples, so
    pixels stay square)."""
    from PIL import Image

    with Image.open(path) as im:
        width = im.width
    scale = max(1, min(4, -(-target // width)))
    return f" width='{width * scale}'" if scale > 1 else ""


def render(run_dir: Path, config: dict, metrics: dict | None, figures: list[tuple[str, Path]]) -> str:
    """The report page as HTML; figure paths are written relative to run_dir."""
    name = html.escape(Path(run_dir).resolve().name)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dgm report: {name}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{name}</h1><p class='note'>model <b>{html.escape(config['model']['name'])}</b> on "
             f"<b>{html.escape(str(config['data']['name']))}</b>, dgm {html.escape(str(config.get('dgm_version')))}"
             "</p>"]
    if metrics:
        body = "".join(f"<tr><th>{html.escape(k)}</th><td class='num'>{html.escape(v)}</td>"
                       f"<td class='num'>{html.escape(r)}</td><td>{html.escape(d)}</td></tr>"
                       for k, v, r, d in metrics_rows(metrics))
        parts.append("<h2>Metrics</h2><table><tr><th>metric</th><th>model</th><th>real test vs train (floor)</th>"
                     f"<th>meaning</th></tr>{body}</table>{_settings_note(metrics)}")
    else:
        parts.append("<h2>Metrics</h2><p class='note'>none yet: run <code>dgm eval RUN</code></p>")
    for caption, path in figures:
        rel = Path(path).resolve().relative_to(Path(run_dir).resolve()).as_posix()
        title = caption.split(" (")[0].split(":")[0]
        note = f"<figcaption>{html.escape(caption)}</figcaption>" if caption != title else ""
        parts.append(f"<h2>{html.escape(title)}</h2><figure>{note}"
                     f"<img src='{html.escape(rel)}' alt='{html.escape(caption)}'{_display_width(path)}></figure>")
    parts.append("<h2>Configuration</h2><div class='config'>"
                 + "".join(_kv_table(k, config[k]) for k in ("model", "data", "train") if isinstance(config.get(k), dict))
                 + "</div></body></html>")
    return "\n".join(parts)


def write_report(run_dir: Path, model, dataset, config: dict, records: list[dict], metrics: dict | None,
                 seed: int = 0) -> Path:
    """RUN/report.html with its pictures in RUN/report/."""
    from dgm.io import atomic_write_bytes

    run_dir = Path(run_dir)
    model.eval()
    figures = pictures(model, dataset, records, run_dir / "report", seed=seed)
    path = run_dir / "report.html"
    atomic_write_bytes(path, render(run_dir, config, metrics, figures).encode())
    return path
