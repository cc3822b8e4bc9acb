"""Evaluation: likelihoods and bounds (likelihood.py), mode coverage on toy mixtures (modes.py),
sample quality (quality.py) with fixed feature networks (features.py)."""
from dgm.evaluation.likelihood import likelihood_metrics, strided_subset
from dgm.evaluation.modes import mode_coverage, mode_metrics
from dgm.evaluation.quality import (fid, independent_critic, inception_score, kid, ms_ssim_diversity,
                                  nearest_distances, precision_recall, sample_quality)

__all__ = ["fid", "independent_critic", "inception_score", "kid", "likelihood_metrics", "mode_coverage",
           "mode_metrics", "ms_ssim_diversity", "nearest_distances", "precision_recall", "sample_quality",
           "strided_subset"]
