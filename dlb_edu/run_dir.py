"""A run's folder: what it holds, when it may be reused, and how it is written so that no kill loses a run.

A run folder (``--out``) holds ``config.json`` (the run's settings, for people), ``checkpoint.pt`` (everything a
resumed run needs, its settings included), ``history.csv`` (one row per epoch) and ``summary.json``. The checkpoint
is the truth about which run the folder holds: ``config.json`` mirrors it and may be missing or stale.

The rules, checked before anything is written:

* a folder whose checkpoint is another run's (other settings) is refused, unless ``force``;
* a folder whose checkpoint is this run's is refused unless ``resume`` (continue it) or ``force`` (start over);
* a folder with a run's outputs but no checkpoint, or an unreadable ``config.json``, is refused unless ``force``;
* a folder with only this run's ``config.json`` was stopped before its first checkpoint: nothing is lost by starting
  again, so it starts again, with or without ``resume``;
* one process at a time: the folder is locked while a trainer uses it (``.lock``, released when the process ends,
  however it ends); a second process is refused.

``force`` replaces a run without ever leaving the folder unresumable: the old run's files stay as they are until the
new run's first checkpoint is in place (one atomic rename); only then are ``config.json``, ``history.csv`` and
``summary.json`` replaced. Killed before that rename, the folder still holds the old run, which ``resume`` continues;
killed after it, the folder holds the new run, which ``resume`` continues. Every file is written to a temporary file
with a unique name beside it, flushed to disk, then renamed over the old one, so a kill mid-write leaves the old file
whole.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
import weakref
from pathlib import Path
from typing import Callable

import torch

from . import distributed
from .config import field_defaults, resumable_fields
from .errors import ConfigError, DataError

CONFIG, CHECKPOINT, HISTORY, SUMMARY, LOCK = "config.json", "checkpoint.pt", "history.csv", "summary.json", ".lock"

HISTORY_COLUMNS = ("epoch", "train_loss", "train_ce", "train_consistency", "train_acc", "step_loss_std",
                   "test_loss", "test_acc", "ece", "probe_flip_rate", "probe_kl", "lr", "epoch_time_s")

# What a checkpoint holds; one without any of these is refused (damaged, or written by another version).
CHECKPOINT_KEYS = ("config", "classes", "world_size", "model", "optimizer", "ranks", "prev_probe_probs", "history",
                   "torch_rng")


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------

def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` to a uniquely named temporary file beside ``path``, flush it to disk, and
    rename it over ``path``: a kill at any moment leaves either the old file or the new one, whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself reaches the disk


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def write_history_csv(path: Path, rows: list[dict]) -> None:
    def write(p: Path):
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
            w.writeheader()
            w.writerows(rows)
    atomic_write(path, write)


def read_history_csv(path: str | Path) -> list[dict]:
    """The rows of a ``history.csv`` (the columns of ``HISTORY_COLUMNS``) as numbers, ``epoch`` an int: the one reader
    of histories (the reference results read theirs through it). A value that is no number is a DataError."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return [{k: (float(v) if k != "epoch" else int(v)) for k, v in row.items()} for row in rows]
    except (TypeError, ValueError):
        raise DataError(f"{path} holds a value that is not a number: is it a dlb_edu history.csv?") from None


def config_diff(saved: dict, current: dict) -> str:
    """The fields (other than those a resume may change) in which two configs differ, as 'name: a -> b'. A field absent
    from either (a config from an older version) counts as its default."""
    defaults = field_defaults()
    saved, current = {**defaults, **saved}, {**defaults, **current}
    keys = sorted((set(saved) | set(current)) - set(resumable_fields()))
    return ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, checked to hold every key; ConfigError (one line) if it cannot be used."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise ConfigError(f"checkpoint {path} is corrupt or not a dlb_edu checkpoint ({type(e).__name__}): delete "
                          f"it or pass --force") from None
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {path} is not a dlb_edu checkpoint: delete it or pass --force")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ConfigError(f"checkpoint {path} lacks {', '.join(missing)} (damaged, or written by another version of "
                          f"dlb_edu): delete it or pass --force")
    if not isinstance(state["config"], dict) or not isinstance(state["ranks"], list):
        raise ConfigError(f"checkpoint {path} is damaged: delete it or pass --force")
    return state


def position(sampler_state: dict) -> str:
    """Where a checkpoint stands, for messages: 'after epoch 2' or 'epoch 3, step 40'."""
    epoch, step = sampler_state["epoch"], sampler_state["step"]
    return f"after epoch {epoch}" if step == 0 else f"epoch {epoch + 1}, step {step}"


# ---------------------------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------------------------

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; a run folder is then not protected from a second process
    fcntl = None

_HELD: dict[str, weakref.ref] = {}  # folder -> its lock, shared by the trainers of one process


class _FolderLock:
    """An exclusive advisory lock (flock) on ``folder/.lock``; the kernel releases it when the process ends."""

    def __init__(self, folder: Path):
        lock_file = folder / LOCK
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise ConfigError(f"another process{f' (pid {owner})' if owner.isdigit() else ''} is using {folder}: "
                              f"wait for it to end or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        weakref.finalize(self, os.close, fd)


def lock_folder(folder: Path):
    """Lock ``folder`` for this process. Trainers of one process share the lock (a notebook may build several)."""
    if fcntl is None:
        return None
    key = os.path.realpath(folder)
    held = _HELD.get(key)
    lock = held() if held is not None else None
    if lock is None:
        lock = _FolderLock(folder)
        _HELD[key] = weakref.ref(lock)
    return lock


# ---------------------------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------------------------

class RunDir:
    """The run folder ``path``: :meth:`open` applies the rules, then the trainer saves through it.

    With several processes every rank reads the folder; only rank 0 writes to it.
    """

    def __init__(self, path: str | Path):
        if isinstance(path, str) and not path.strip():  # Path("") would be the current folder
            raise ConfigError(f"--out must name a folder, got {path!r}")
        self.path = Path(path)
        self.rank = distributed.rank_and_world_size()[0]
        self.replacing = False        # force over another run: its files stay until our first checkpoint
        self.last_checkpoint: str | None = None  # where the last checkpoint of this run stands, for messages
        self._lock = None

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def open(self, config: dict, resume: bool, force: bool) -> dict | None:
        """Apply the folder's rules for a run with settings ``config`` (``TrainConfig.to_dict()``); lock it; return
        the checkpoint to resume from, or None to start from scratch."""
        if resume and force:
            raise ConfigError("--resume continues the run in --out and --force starts it over: pass one of them")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file, not a folder")
        if resume and not force and not self.path.exists():
            raise ConfigError(f"nothing to resume: {self.checkpoint} does not exist")
        if self.rank == 0:
            self._create_and_lock()
        distributed.barrier()  # rank 0 has created the folder
        state = self._decide(config, resume, force)
        distributed.barrier()  # every rank has read the folder before rank 0 writes to it
        if self.rank == 0 and not self.replacing:
            write_json(self.path / CONFIG, config)
        return state

    def _create_and_lock(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = lock_folder(self.path)
        except OSError as e:
            raise ConfigError(f"cannot write the run folder {self.path}: {e.strerror or e}") from None
        if not os.access(self.path, os.W_OK):
            raise ConfigError(f"cannot write the run folder {self.path}: permission denied")
        for name in (CONFIG, CHECKPOINT, HISTORY, SUMMARY):  # temporary files of a process killed mid-write
            for stale in self.path.glob(f".{name}.*.tmp"):    # (we hold the lock: no one else is writing)
                stale.unlink(missing_ok=True)

    def _decide(self, config: dict, resume: bool, force: bool) -> dict | None:
        p = self.path
        holds_files = [name for name in (CHECKPOINT, HISTORY, SUMMARY, CONFIG) if (p / name).exists()]
        if force:
            self.replacing = bool(holds_files)
            return None
        if self.checkpoint.exists():
            state = load_checkpoint(self.checkpoint)
            diff = config_diff(state["config"], config)
            if diff:
                raise ConfigError(f"{p} holds a different run ({diff}): choose another --out or pass --force")
            if not resume:
                raise ConfigError(f"{p} already holds this run: pass --resume to continue it or --force to start over")
            self.last_checkpoint = position(state["ranks"][0]["sampler"])
            return state
        outputs = [name for name in (HISTORY, SUMMARY) if name in holds_files]
        if outputs:
            raise ConfigError(f"{p} holds a run's {' and '.join(outputs)} but no {CHECKPOINT}: choose another --out "
                              f"or pass --force to replace them")
        if CONFIG in holds_files:
            try:
                saved = json.loads((p / CONFIG).read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                saved = None
            if not isinstance(saved, dict):
                raise ConfigError(f"{p / CONFIG} is not a run configuration: choose another --out or pass --force")
            diff = config_diff(saved, config)
            if diff:
                raise ConfigError(f"{p} holds a different run ({diff}): choose another --out or pass --force")
            return None  # this run, stopped before its first checkpoint: nothing to lose, start again
        if resume:
            raise ConfigError(f"nothing to resume: {self.checkpoint} does not exist")
        return None

    def save_checkpoint(self, state: dict) -> None:
        """Write the checkpoint (rank 0). The first one of a forced replacement also replaces the old run's files."""
        if self.rank == 0:
            atomic_write(self.checkpoint, lambda p: torch.save(state, p))
            if self.replacing:
                write_json(self.path / CONFIG, state["config"])
                write_history_csv(self.path / HISTORY, state["history"])
                (self.path / SUMMARY).unlink(missing_ok=True)
        self.replacing = False
        self.last_checkpoint = position(state["ranks"][0]["sampler"])

    def write_outputs(self, history: list[dict], summary: dict) -> None:
        if self.rank == 0 and not self.replacing:
            write_history_csv(self.path / HISTORY, history)
            write_json(self.path / SUMMARY, summary)

    def where_the_last_checkpoint_is(self) -> str:
        """For a message after a failure: which checkpoint a resume would continue from."""
        if self.last_checkpoint is None:
            return f"no checkpoint of this run was written in {self.path}"
        return f"the last finite checkpoint is {self.checkpoint} ({self.last_checkpoint})"
