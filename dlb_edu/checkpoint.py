"""A trainer's checkpoint: everything of a run that changes as it trains, so that a resumed run ends bit for bit where
an uninterrupted run ends; and the check that nothing kept or saved is non-finite.

A checkpoint holds the model, the optimizer, the sampler's position, the method's state (DLB's cache, PS-KD's table),
the epoch's running statistics, the probe predictions, the history, the RNG and the fp16 scaler; with several
processes, every rank's own part. The learning rate is a function of the epoch and every random stream is seeded by
its coordinates (:mod:`~dlb_edu.seeds`), so nothing else is needed. Where and when the file is written (atomically,
one owner at a time, replacing an old run only at the new run's first checkpoint) is the run folder's business:
:mod:`~dlb_edu.run_dir`. These functions take a :class:`~dlb_edu.train.Trainer`.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from . import distributed
from .errors import ConfigError, TrainingDiverged
from .run_dir import atomic_write, position


def open_folder(trainer, resume: bool, force: bool) -> None:
    """Take ``trainer.run_dir`` (the run folder's rules decide whether it may, and what to resume), restore the
    checkpoint to resume, then start the folder; a refused trainer gives the folder up unchanged."""
    cfg = trainer.config.to_dict()
    state = trainer.run_dir.open(cfg, resume, force)  # the trainer now owns the folder
    try:
        if state is not None:
            restore(trainer, state)  # may refuse: nothing in the folder is written before this
        trainer.run_dir.start(cfg)
        if state is not None:
            trainer.run_dir.write_outputs(trainer.history, trainer.summary())  # replace any stale ones
    except BaseException:
        trainer.run_dir.close()  # a refused trainer does not keep the folder (a notebook keeps the traceback)
        raise


def state_of(trainer) -> dict:
    """Everything a resumed run needs to continue bit for bit (on a CPU; on CUDA with ``deterministic``); with
    several processes, every rank's part."""
    ranks = distributed.gather({"sampler": trainer.sampler.state_dict(), "method": trainer.method.state_dict(),
                                "stats": trainer.stats.state_dict()})
    return {
        "config": trainer.config.to_dict(),
        "classes": list(trainer.data.classes),
        "world_size": trainer.world_size,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "ranks": ranks,
        "prev_probe_probs": None if trainer.prev_probe_probs is None else trainer.prev_probe_probs.cpu(),
        "history": trainer.history,
        "torch_rng": torch.get_rng_state(),
        "scaler": trainer.scaler.state_dict(),  # empty unless fp16
    }


def restore(trainer, state: dict) -> None:
    """Continue ``trainer`` from ``state``; ConfigError in one line if the checkpoint does not fit this run."""
    if list(state["classes"]) != list(trainer.data.classes):
        raise ConfigError(f"the data set's classes changed since the checkpoint was written: it had "
                          f"{_classes_text(state['classes'])}, it now has {_classes_text(trainer.data.classes)}; "
                          f"restore them or pass --force to start a new run")
    if state["world_size"] != trainer.world_size:
        raise ConfigError(f"the checkpoint was written by {state['world_size']} processes, this run has "
                          f"{trainer.world_size}")
    mine = state["ranks"][trainer.rank]
    if mine["sampler"]["epoch"] > trainer.config.epochs:
        raise ConfigError(f"the checkpoint is at epoch {mine['sampler']['epoch']}, past --epochs "
                          f"{trainer.config.epochs}")
    try:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.sampler.load_state_dict(mine["sampler"])
        trainer.method.load_state_dict(mine["method"], trainer.device)
        trainer.stats.load_state_dict(mine["stats"], trainer.device)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"the checkpoint does not fit this run ({type(e).__name__}): delete it or pass "
                          f"--force") from None
    probs = state["prev_probe_probs"]
    trainer.prev_probe_probs = None if probs is None else probs.to(trainer.device)
    trainer.history = list(state["history"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("scaler"):  # absent from checkpoints written before fp16 existed
        trainer.scaler.load_state_dict(state["scaler"])


def save(trainer, path: str | Path | None = None, checked: bool = False) -> None:
    """Write the checkpoint atomically, never one with non-finite weights (TrainingDiverged then; ``checked``: the
    caller has just checked). Collective when several processes train; ``path`` (optional) writes a copy elsewhere,
    outside the run folder's bookkeeping."""
    if not checked:
        stop_if_diverged(trainer)
    state = state_of(trainer)
    if path is not None:
        if trainer.rank == 0:
            atomic_write(Path(path), lambda p: torch.save(state, p))
    elif trainer.run_dir is None:
        raise ConfigError("save_checkpoint needs an output folder (out_dir) or a path")
    else:
        trainer.run_dir.save_checkpoint(state)


def stop_if_diverged(trainer, row: dict | None = None) -> None:
    """Raise TrainingDiverged if a loss, a weight or the epoch's evaluation (``row``) is not finite, on every
    process; the trainer is closed then, and the error says where the last finite checkpoint is."""
    stats = trainer.stats
    bad_step = stats.first_non_finite_step()
    weights = [t for t in trainer.model.state_dict().values() if t.is_floating_point()]
    weights_finite = bool(torch.stack([torch.isfinite(t).all() for t in weights]).all())
    bad_eval = [k for k in ("test_loss", "ece") if row is not None and not math.isfinite(row[k])]
    if not distributed.any_process(bad_step is not None or not weights_finite or bool(bad_eval), trainer.device):
        return
    where = position(trainer.sampler.state_dict())
    if bad_step is not None:
        what = f"the loss became {stats.step_losses[bad_step].item()} at epoch {stats.epoch + 1}, step {bad_step + 1}"
    elif not weights_finite:
        what = f"the weights are no longer finite ({where})"
    else:
        what = f"the evaluation is not finite ({', '.join(bad_eval)}, {where})"
    kept = "" if trainer.run_dir is None else "; " + trainer.run_dir.where_the_last_checkpoint_is()
    trainer.close()  # the run cannot go on: a new Trainer (resume=True) continues from the last finite checkpoint
    raise TrainingDiverged(f"{what}: lower --lr or --alpha{kept}")


def _classes_text(classes) -> str:
    classes = list(classes)
    return f"{len(classes)} ({', '.join(map(str, classes[:8]))}{', ...' if len(classes) > 8 else ''})"
