"""dgm: deep generative models in PyTorch, from the lecture notes to the command line.

    import dgm
    run = dgm.train("vae", data="digits", epochs=20, latent_dim=2)   # a run folder, as `dgm train`
    dgm.evaluate(run, metrics=["likelihood"]); dgm.sample(run, 16); dgm.resume(run, epochs=40)
    model = dgm.load("runs/vae-digits")
"""
__version__ = "0.1.0"

_API = ("train", "resume", "evaluate", "sample", "Run")  # dgm.api, imported on first use (torch is slow to load)


def load(run_dir, device="cpu", checkpoint=False):
    """A ready model from a run folder (see dgm.runs.load)."""
    from dgm.runs import load as _load

    return _load(run_dir, device=device, checkpoint=checkpoint)


def __getattr__(name):
    if name in _API:
        from dgm import api

        return getattr(api, name)
    raise AttributeError(f"module 'dgm' has no attribute '{name}'")


__all__ = ["load", *_API]
