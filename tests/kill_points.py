"""Run the CLI and SIGKILL (or pause) the process at a chosen point: ``python kill_points.py MODE N -- CLI ARGS``.

MODE ``step``: killed as the N-th training step starts. ``save``: killed in the middle of writing the N-th
checkpoint (half a file is on disk). ``after_save``: killed right after the N-th checkpoint is in place, before the
history is written. ``after_write``: killed right after the N-th file of the run folder is in place (checkpoint,
config.json, history.csv and summary.json are each one write). ``pause``: at the N-th step, print "paused" and
sleep until killed (a process that holds its run folder). Used by test_interruption.py; not a test itself.
"""
import os
import signal
import sys
import time

import torch

import dlb_edu.run_dir as run_dir
import dlb_edu.train as train

mode, n = sys.argv[1], int(sys.argv[2])
calls = 0


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def nth_call() -> bool:
    global calls
    calls += 1
    return calls == n


if mode in ("step", "pause"):
    real_step = train.Trainer.train_step

    def train_step(self, *args):
        # Only a run's own steps count: compare's projection times a few steps on throwaway trainers (no folder) first.
        if self.run_dir is not None and nth_call():
            if mode == "step":
                die()
            print("paused", flush=True)
            while True:
                time.sleep(1)
        return real_step(self, *args)

    train.Trainer.train_step = train_step
elif mode == "save":
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if nth_call():
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 half of a checkpoint")
                fh.flush()
            die()
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
elif mode == "after_save":
    real_checkpoint = train.Trainer.save_checkpoint

    def save_checkpoint(self, *args):
        real_checkpoint(self, *args)
        if nth_call():
            die()

    train.Trainer.save_checkpoint = save_checkpoint
elif mode == "after_write":
    real_write = run_dir.atomic_write

    def atomic_write(path, write):
        real_write(path, write)
        if nth_call():
            die()

    run_dir.atomic_write = atomic_write
else:
    raise SystemExit(f"unknown mode {mode}")

from dlb_edu.cli import main  # noqa: E402

sys.exit(main(sys.argv[sys.argv.index("--") + 1:]))
