"""Run under torchrun: one training step of the linear autoencoder, batch 8 per rank; rank 0 saves weights."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import LinearAutoencoder, tiny_dataset  # noqa: E402

from dgm.io import save_tensors  # noqa: E402
from dgm.training import TrainConfig, Trainer  # noqa: E402
from dgm.training.distributed import shutdown  # noqa: E402

torch.manual_seed(0)
model = LinearAutoencoder()
trainer = Trainer(model, tiny_dataset(), TrainConfig(steps=int(sys.argv[2]), batch_size=8, lr=0.05, progress=False,
                                                     device="cpu"))
trainer.fit()
if trainer.rank == 0:
    save_tensors(Path(sys.argv[1]), model.state_dict())
shutdown()
