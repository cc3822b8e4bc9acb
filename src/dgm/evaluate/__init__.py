"""Evaluation: likelihoods and bounds (likelihood.py); sample quality comes later."""
from dgm.evaluate.likelihood import likelihood_metrics, strided_subset

__all__ = ["likelihood_metrics", "strided_subset"]
