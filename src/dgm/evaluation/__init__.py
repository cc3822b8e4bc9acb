"""Evaluation: likelihoods and bounds (likelihood.py), representation quality of codes (representation.py),
disentanglement of codes on data with known factors (disentanglement.py), the diversity of colorizations
(colorization.py), classification error of models that classify (classification.py),
mode coverage on toy mixtures (modes.py), sample quality (quality.py) with fixed feature networks (features.py)."""
from dgm.evaluation.classification import classification_metrics
from dgm.evaluation.colorization import colorization_metrics
from dgm.evaluation.disentanglement import disentanglement_metrics
from dgm.evaluation.likelihood import likelihood_metrics, strided_subset
from dgm.evaluation.modes import mode_coverage, mode_metrics
from dgm.evaluation.quality import (fid, independent_critic, inception_score, kid, ms_ssim_diversity,
                                  nearest_distances, precision_recall, sample_quality)
from dgm.evaluation.representation import pca_reconstruction_error, representation_metrics

__all__ = ["classification_metrics", "colorization_metrics", "disentanglement_metrics", "fid", "independent_critic",
           "inception_score", "kid", "likelihood_metrics",
           "mode_coverage", "mode_metrics", "ms_ssim_diversity", "nearest_distances", "pca_reconstruction_error",
           "precision_recall", "representation_metrics", "sample_quality", "strided_subset"]
