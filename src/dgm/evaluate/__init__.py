"""Evaluation: likelihoods and bounds (likelihood.py), mode coverage on toy mixtures (modes.py)."""
from dgm.evaluate.likelihood import likelihood_metrics, strided_subset
from dgm.evaluate.modes import mode_coverage, mode_metrics

__all__ = ["likelihood_metrics", "mode_coverage", "mode_metrics", "strided_subset"]
