"""Under torchrun: train DLB on synthetic data and record every rank's batches; rank 0 writes them as JSON.

``python -m torch.distributed.run --nproc_per_node=2 tests/ddp_probe.py OUT.json``. Used by test_distributed.py.
"""
import json
import sys

import torch

from dlb_edu import distributed
from dlb_edu.config import TrainConfig
from dlb_edu.train import Trainer


def probe() -> dict:
    trainer = Trainer(TrainConfig(dataset="synthetic", epochs=2, batch_size=32, test_subset=64, device="cpu"),
                      progress=False)
    batches, real_step = [], trainer.train_step

    def recording_step(batch, epoch, step):
        batches.append({"epoch": epoch, "repeated": batch.repeated, "fresh": batch.fresh})
        return real_step(batch, epoch, step)

    trainer.train_step = recording_step
    trainer.run()
    del trainer.train_step  # no reference cycle keeps the trainer (and its process group) alive
    weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    return {"batches": batches, "weights_sum": weights.double().sum().item(), "weights_first": weights[:20].tolist()}


distributed.init_distributed()
ranks = distributed.gather(probe())  # the trainer (and its DDP wrapper) is gone once probe() returns
if distributed.rank_and_world_size()[0] == 0:
    with open(sys.argv[1], "w") as f:
        json.dump(ranks, f)
distributed.shutdown()  # every rank here, then the process group ends before the interpreter does
