"""Run under torchrun: a few training steps of each named model on the ring8 points, batch 8 per rank; every rank
saves its weights (OUT.NAME.rankR.safetensors) so the test can compare the ranks.

    python -m torch.distributed.run --nproc_per_node 2 ddp_models_worker.py OUT STEPS '{"name": {options}}'
"""
import json
import sys
from pathlib import Path

import torch

from dgm.data import load_dataset
from dgm.io import save_tensors
from dgm.models import create_model
from dgm.training import TrainConfig, Trainer
from dgm.training.distributed import shutdown

out, steps, models = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
data = load_dataset("ring8")
for name, options in models.items():
    torch.manual_seed(0)
    model = create_model(name, {"data_shape": data.shape, "levels": 0, **options})
    trainer = Trainer(model, data, TrainConfig(steps=steps, batch_size=16, progress=False, device="cpu"))
    trainer.fit()
    save_tensors(Path(f"{out}.{name}.rank{trainer.rank}.safetensors"), model.state_dict())
shutdown()
