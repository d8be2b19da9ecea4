"""Under torchrun: train DLB on synthetic data and record every rank's batches; rank 0 writes them as JSON.

``python -m torch.distributed.run --nproc_per_node=2 tests/ddp_probe.py OUT.json``. Used by test_distributed.py.
"""
import json
import sys

import torch
import torch.distributed as dist

from dlb_edu.cli import init_distributed
from dlb_edu.train import TrainConfig, Trainer

init_distributed()
trainer = Trainer(TrainConfig(dataset="synthetic", epochs=2, batch_size=32, test_subset=64, device="cpu"),
                  progress=False)
batches = []
real_step = trainer.train_step


def recording_step(batch, epoch, step):
    batches.append({"epoch": epoch, "repeated": batch.repeated, "fresh": batch.fresh})
    return real_step(batch, epoch, step)


trainer.train_step = recording_step
trainer.run()
weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
gathered = [None] * dist.get_world_size()
dist.all_gather_object(gathered, {"batches": batches, "weights_sum": weights.double().sum().item(),
                                  "weights_first": weights[:20].tolist()})
if dist.get_rank() == 0:
    with open(sys.argv[1], "w") as f:
        json.dump(gathered, f)
dist.destroy_process_group()
