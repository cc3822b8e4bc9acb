"""The trainer: one loop for every model family (see trainer.py)."""
from dgm.training.trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer"]
