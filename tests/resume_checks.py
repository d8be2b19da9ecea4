"""Shared checks for stopping a run and resuming it: in-process stops (an exception from ``on_step``, as a kill
would leave the folder) and the comparison of two runs to the bit. Used by test_train.py and test_methods.py."""
import json

import torch

from dlb_edu.train import Trainer

TIME_COLUMNS = {"epoch_time_s"}


class Interrupt(Exception):
    """Raised from ``on_step`` to stop a run the way a kill would: nothing is saved after the last checkpoint."""


def stop_after(trainer: Trainer, steps: int) -> None:
    """Train ``trainer`` until ``steps`` optimizer steps are done (counted in this process), then stop it."""
    done = []

    def on_step(_trainer, _loss):
        done.append(1)
        if len(done) == steps:
            raise Interrupt

    try:
        for _ in trainer.epochs(on_step):
            pass
    except Interrupt:
        return
    raise AssertionError(f"the run ended before {steps} steps")


def interrupted_then_resumed(config, data, out_dir, stop_after_steps: int, mid_epoch: bool = True) -> Trainer:
    """Train with ``config`` in ``out_dir``, stop after ``stop_after_steps`` steps, resume in a new trainer, finish.
    ``mid_epoch``: check that the resume really starts inside an epoch (from a ``checkpoint_every`` checkpoint)."""
    stop_after(Trainer(config, data=data, out_dir=out_dir, progress=False), stop_after_steps)
    resumed = Trainer(config, data=data, out_dir=out_dir, resume=True, progress=False)
    if mid_epoch:
        assert 0 < resumed.sampler.step < len(resumed.sampler)
    resumed.run()
    return resumed


def comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in history]


def assert_same_run(a: Trainer, b: Trainer) -> None:
    """The same weights, bit for bit, and the same history (NaN included, times excepted)."""
    assert_same_weights(a.model.state_dict(), b.model.state_dict())
    assert json.dumps(comparable(a.history)) == json.dumps(comparable(b.history))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
