"""Under torchrun: train one method uninterrupted in OUT/full, and stopped mid-epoch then resumed in OUT/part.

``python -m torch.distributed.run --nproc_per_node=2 tests/ddp_resume_probe.py METHOD OUT``. Every rank stops after
the same number of steps (an exception from ``on_step``, as a kill would leave the folder: nothing saved after the
last ``checkpoint_every`` checkpoint), then a new trainer resumes from the folder. The test compares the two
folders' checkpoints. Used by test_distributed.py.
"""
import sys
from pathlib import Path

from dlb_edu import distributed
from dlb_edu.config import TrainConfig
from dlb_edu.train import Trainer
from resume_checks import interrupted_then_resumed


def run(method: str, out: Path) -> None:
    # 512 synthetic images, 256 per rank in steps of 32: 8 steps per epoch; stopped at 13, resumed from step 12.
    config = TrainConfig(method=method, dataset="synthetic", epochs=2, batch_size=32, test_subset=64, probe_size=32,
                         device="cpu", checkpoint_every=4)
    Trainer(config, out_dir=out / "full", progress=False).run()
    interrupted_then_resumed(config, None, out / "part", stop_after_steps=8 + 5)


distributed.init_distributed()
run(sys.argv[1], Path(sys.argv[2]))  # the trainers (and their DDP wrappers) are gone once run() returns
distributed.shutdown()
