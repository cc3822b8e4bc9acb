"""Pictures of 2-D point samples (the toy mixtures): a scatter over the true mode centres."""
from __future__ import annotations

from pathlib import Path

import torch


def scatter_points(points: torch.Tensor, path: Path, centres: torch.Tensor | None = None,
                   title: str | None = None) -> Path:
    """Write samples [N, 2] as a scatter plot, with the mixture's centres [K, 2] as crosses when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = points.detach().float().cpu()
    if points.dim() != 2 or points.shape[1] != 2:
        from dgm.errors import DgmError

        raise DgmError(f"a scatter plot needs 2-D points [N, 2], got shape {tuple(points.shape)}")
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(points[:, 0].numpy(), points[:, 1].numpy(), s=3, alpha=0.5, color="tab:blue", linewidths=0,
               label="samples")
    if centres is not None:
        centres = centres.detach().float().cpu()
        ax.scatter(centres[:, 0].numpy(), centres[:, 1].numpy(), s=40, marker="x", color="tab:red",
                   label="modes")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title or f"{len(points)} samples")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
