"""Run the CLI and SIGKILL the process at a chosen point: ``python kill_points.py MODE N -- CLI ARGS``.

MODE ``step``: killed as the N-th training step starts. ``save``: killed in the middle of writing the N-th
checkpoint (half a file is on disk). ``after_save``: killed right after the N-th checkpoint is in place, before the
history is written. Used by test_interruption.py; not a test itself.
"""
import os
import signal
import sys

import torch

import dlb_edu.train as train

mode, n = sys.argv[1], int(sys.argv[2])
calls = 0


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if mode == "step":
    real_step = train.Trainer.train_step

    def train_step(self, *args):
        global calls
        calls += 1
        if calls == n:
            die()
        return real_step(self, *args)

    train.Trainer.train_step = train_step
elif mode == "save":
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        global calls
        calls += 1
        if calls == n:
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 half of a checkpoint")
                fh.flush()
            die()
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
elif mode == "after_save":
    real_checkpoint = train.Trainer.save_checkpoint

    def save_checkpoint(self, *args):
        global calls
        real_checkpoint(self, *args)
        calls += 1
        if calls == n:
            die()

    train.Trainer.save_checkpoint = save_checkpoint
else:
    raise SystemExit(f"unknown mode {mode}")

from dlb_edu.cli import main  # noqa: E402

sys.exit(main(sys.argv[sys.argv.index("--") + 1:]))
