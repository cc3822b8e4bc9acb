"""dgm: deep generative models in PyTorch, from the lecture notes to the command line."""
__version__ = "0.1.0"


def load(run_dir, device="cpu", checkpoint=False):
    """A ready model from a run folder (see dgm.runs.load)."""
    from dgm.runs import load as _load

    return _load(run_dir, device=device, checkpoint=checkpoint)
