"""TensorBoard scalars for long runs (``--tensorboard``): each epoch's history row, and the step loss every few steps.

Everything is logged against one axis, the optimizer step (epoch rows at the step that ends their epoch), so that a
resumed run can purge what a killed one wrote after its last checkpoint: the writer is opened with
``purge_step = steps at the checkpoint + 1``, and TensorBoard's reader drops the older events from that step on. A
resumed run therefore appends without duplicating steps. Files go to ``<run folder>/tensorboard/``; view them with
``tensorboard --logdir <folder>`` or, in a notebook, ``%load_ext tensorboard`` and ``%tensorboard --logdir <folder>``.
"""
from __future__ import annotations

import math
from pathlib import Path

from .errors import ConfigError

STEP_EVERY = 50  # the step loss is logged every this many optimizer steps (a read of the loss: a GPU sync)
FOLDER = "tensorboard"


class TensorBoardLog:
    def __init__(self, run_folder: Path, steps_done: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(str(Path(run_folder) / FOLDER),
                                    purge_step=steps_done + 1 if steps_done else None)

    def epoch(self, row: dict, step: int) -> None:
        """The epoch's history row, every column but the epoch number, at the step that ended the epoch."""
        for name, value in row.items():
            if name != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{name}", value, step)
        self.writer.flush()

    def step(self, step: int, loss: float) -> None:
        if step % STEP_EVERY == 0:
            self.writer.add_scalar("step/loss", loss, step)

    def close(self) -> None:
        self.writer.close()
