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
* one owner at a time, within a process as across processes: the trainer (or live lab) that opens the folder owns
  it until it is closed, its training ends or it is garbage collected; a second owner in the same process is refused
  naming the first, a second process is refused by a lock (``.lock``, released when the process ends, however it
  ends);
* a refusal changes no file: ``config.json`` is written only once the checkpoint to resume was accepted.

``force`` replaces a run without ever leaving the folder unresumable: the old run's files stay as they are until the
new run's first checkpoint is in place (one atomic rename); only then are ``config.json``, ``history.csv`` and
``summary.json`` replaced. Killed before that rename, the folder still holds the old run, which ``resume`` continues;
killed after it, the folder holds the new run, which ``resume`` continues. A comparison (or a live lab) replaces
several runs, one folder each, one after the other: it marks each folder whose run is to be replaced
(``.replace.json``, naming the old checkpoint), so that ``resume`` after a kill continues the methods already
replaced and replaces the others. Every file is written to a temporary file
with a unique name beside it, flushed to disk, then renamed over the old one, so a kill mid-write leaves the old file
whole.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import gc
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
REPLACE = ".replace.json"  # "the run here is to be replaced": see RunDir.mark_for_replacement

HISTORY_COLUMNS = ("epoch", "train_loss", "train_ce", "train_consistency", "train_acc", "step_loss_std",
                   "test_loss", "test_acc", "ece", "probe_flip_rate", "probe_kl", "lr", "epoch_time_s")

# What a checkpoint holds; one without any of these is refused (damaged, or written by another version).
CHECKPOINT_KEYS = ("config", "classes", "world_size", "model", "optimizer", "ranks", "prev_probe_probs", "history",
                   "torch_rng")


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------

class DiskFull(ConfigError):
    """A write failed for want of space (or quota); the old file is whole."""


DISK_FULL = tuple(getattr(errno, name) for name in ("ENOSPC", "EDQUOT") if hasattr(errno, name))


def _raise_if_disk_full(e: BaseException, path: Path) -> None:
    # torch.save wraps the OSError of a failed write in a RuntimeError: look along the chain of causes too.
    while e is not None:
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            raise DiskFull(f"the disk is full: cannot write {path} ({os.strerror(e.errno)})") from None
        e = e.__cause__ or e.__context__


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` to a uniquely named temporary file beside ``path``, flush it to disk, and
    rename it over ``path``: a kill at any moment leaves either the old file or the new one, whole. A full disk is
    a :class:`DiskFull` (one line), the old file untouched."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        _raise_if_disk_full(e, path)
        raise
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        _raise_if_disk_full(e, path)
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
    fault = _checkpoint_fault(state)
    if fault:
        raise ConfigError(f"checkpoint {path} is damaged ({fault}): delete it or pass --force")
    return state


def _checkpoint_fault(state: dict) -> str | None:
    """What is wrong with the values under a checkpoint's keys (another version's, or edited by hand), or None."""
    if not isinstance(state["config"], dict):
        return "its config is not a dict"
    if not isinstance(state["classes"], (list, tuple)) or not all(isinstance(c, str) for c in state["classes"]):
        return "its classes are not a list of names"
    ranks, world_size = state["ranks"], state["world_size"]
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        return f"its world_size is {world_size!r}"
    if not isinstance(ranks, list) or len(ranks) != world_size:
        return f"it holds {len(ranks) if isinstance(ranks, list) else 'no list of'} ranks for {world_size} processes"
    for rank in ranks:
        sampler = rank.get("sampler") if isinstance(rank, dict) else None
        if not (isinstance(sampler, dict) and all(isinstance(sampler.get(k), int) and sampler[k] >= 0
                                                  for k in ("epoch", "step"))
                and isinstance(rank.get("method"), dict) and isinstance(rank.get("stats"), dict)):
            return "a rank's sampler, method or statistics are missing"
    if not isinstance(state["model"], dict) or not isinstance(state["optimizer"], dict):
        return "its model or optimizer is not a state dict"
    history = state["history"]
    if not isinstance(history, list) or not all(isinstance(row, dict) and set(row) == set(HISTORY_COLUMNS)
                                                for row in history):
        return f"its history rows do not have the columns {', '.join(HISTORY_COLUMNS)}"
    rng = state["torch_rng"]
    if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.shape == torch.get_rng_state().shape):
        return "its RNG state is not torch's"
    return None


def position(sampler_state: dict) -> str:
    """Where a checkpoint stands, for messages: 'after epoch 2' or 'epoch 3, step 40'."""
    epoch, step = sampler_state["epoch"], sampler_state["step"]
    return f"after epoch {epoch}" if step == 0 else f"epoch {epoch + 1}, step {step}"


def _identity(path: Path) -> list[int] | None:
    """Which file ``path`` is now (inode, size, modification time), or None if there is none: an atomic rename
    always brings a new inode, so a checkpoint written since gives another identity."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def replacement_pending(folder: Path) -> bool:
    """Whether the run in ``folder`` was marked to be replaced (:meth:`RunDir.mark_for_replacement`) and is still
    the run that was marked: no checkpoint of the new run has been written over it since."""
    marker = Path(folder) / REPLACE
    if not marker.exists():
        return False
    try:
        marked = json.loads(marker.read_text())["checkpoint"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"{marker} is damaged: delete it (--resume then continues the run in {folder} as it is) "
                          f"or pass --force") from None
    return marked == _identity(Path(folder) / CHECKPOINT)


# ---------------------------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------------------------

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; a run folder is then not protected from a second process
    fcntl = None

_OWNERS: dict[str, weakref.ref] = {}  # folder (real path) -> the RunDir of this process that owns it


def _lock_file(folder: Path) -> int | None:
    """An exclusive advisory lock (flock) on ``folder/.lock``, as an open file descriptor (None without fcntl);
    the kernel releases it when the descriptor is closed or the process ends, however it ends."""
    if fcntl is None:
        return None
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise ConfigError(f"another process{f' (pid {owner})' if owner.isdigit() else ''} is using {folder}: "
                          f"wait for it to end or choose another --out") from None
    if os.read(fd, 32).decode(errors="replace").strip() != str(os.getpid()):
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _give_up(key: str, owner: weakref.ref, fd: int | None) -> None:
    """End an ownership (called once: by ``RunDir.close`` or when the RunDir is garbage collected)."""
    if _OWNERS.get(key) is owner:
        del _OWNERS[key]
    if fd is not None:
        os.close(fd)


def current_owner(folder: Path):
    """The RunDir of this process that owns ``folder``, or None."""
    ref = _OWNERS.get(os.path.realpath(folder))
    return ref() if ref is not None else None


# ---------------------------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------------------------

class RunDir:
    """The run folder ``path``: :meth:`open` applies the rules and makes this object the folder's owner, then the
    trainer saves through it, and :meth:`close` gives the folder up.

    With several processes every rank reads the folder; only rank 0 locks it and writes to it. ``owner`` names the
    owner in the message a second owner gets ("a Trainer", "a LiveLab").
    """

    def __init__(self, path: str | Path, owner: str = "a Trainer"):
        if isinstance(path, str) and not path.strip():  # Path("") would be the current folder
            raise ConfigError(f"--out must name a folder, got {path!r}")
        self.path = Path(path)
        self.owner = owner
        self.rank = distributed.rank_and_world_size()[0]
        self.replacing = False        # force over another run: its files stay until our first checkpoint
        self.last_checkpoint: str | None = None  # where the last checkpoint of this run stands, for messages
        self.also_replaced: list[Path] = []      # files outside the folder that go with the old run (a lab's record)
        self._release: weakref.finalize | None = None
        self.closed = False

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def open(self, config: dict, resume: bool, force: bool) -> dict | None:
        """Apply the folder's rules for a run with settings ``config`` (``TrainConfig.to_dict()``); own the folder;
        return the checkpoint to resume from, or None to start from scratch. Nothing in the folder is written yet
        (:meth:`start` does that once the checkpoint is accepted); a refusal gives the folder up."""
        if resume and force:
            raise ConfigError("--resume continues the run in --out and --force starts it over: pass one of them")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file, not a folder")
        if resume and not force and not self.path.exists():
            raise ConfigError(f"nothing to resume: {self.checkpoint} does not exist")
        try:
            if self.rank == 0:
                self._create_and_own()
            distributed.barrier()  # rank 0 has created the folder
            state = self._decide(config, resume, force)
        except BaseException:
            self.close()
            raise
        distributed.barrier()  # every rank has read the folder before rank 0 writes to it
        return state

    def start(self, config: dict) -> None:
        """The run is accepted: mirror its settings in config.json (unless the old run's files stay until our first
        checkpoint)."""
        self.check_owned()
        if self.rank == 0 and not self.replacing:
            with self._saying_where_on_disk_full():
                write_json(self.path / CONFIG, config)

    def close(self) -> None:
        """Give the folder up (the lock, and this process's ownership); it may then have a new owner. Idempotent; also
        happens when this object is garbage collected."""
        self.closed = True
        if self._release is not None:
            self._release()

    def check_owned(self) -> None:
        if self.closed:
            raise ConfigError(f"this trainer has given up {self.path} (closed, or its training ended): make a new "
                              f"Trainer (resume=True continues the run)")

    def _create_and_own(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot write the run folder {self.path}: {e.strerror or e}") from None
        key = os.path.realpath(self.path)
        holder = current_owner(self.path)
        if holder is not None and holder is not self:
            gc.collect()  # an owner no one refers to any more, but kept by a reference cycle, is gone after this
            holder = current_owner(self.path)
        if holder is not None and holder is not self:
            raise ConfigError(f"{self.path} is in use by {holder.owner} in this process (pid {os.getpid()}): call its "
                              f"close() or let its training end, or choose another --out")
        try:
            fd = _lock_file(self.path)
        except OSError as e:
            raise ConfigError(f"cannot write the run folder {self.path}: {e.strerror or e}") from None
        me = weakref.ref(self)
        _OWNERS[key] = me
        self._release = weakref.finalize(self, _give_up, key, me, fd)
        if not os.access(self.path, os.W_OK):
            raise ConfigError(f"cannot write the run folder {self.path}: permission denied")
        for name in (CONFIG, CHECKPOINT, HISTORY, SUMMARY):  # temporary files of a process killed mid-write
            for stale in self.path.glob(f".{name}.*.tmp"):    # (we own the folder: no one else is writing)
                stale.unlink(missing_ok=True)

    def _decide(self, config: dict, resume: bool, force: bool) -> dict | None:
        p = self.path
        holds_files = [name for name in (CHECKPOINT, HISTORY, SUMMARY, CONFIG) if (p / name).exists()]
        folders = [name for name in holds_files if (p / name).is_dir()]
        if folders:
            raise ConfigError(f"{p / folders[0]} is a folder, not a file: move it out of the run folder (dlb_edu "
                              f"writes its {folders[0]} there)")
        if force or (resume and replacement_pending(p)):  # a comparison's --force, killed before this method's turn
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

    def mark_for_replacement(self) -> None:
        """Record in the folder that the old run still in it is to be replaced (when this run replaces one), so that
        ``resume`` replaces it too. A comparison forced over an old one trains its methods one after the other: killed
        between them, the later methods' folders still hold their old runs, and ``--resume`` must replace those while
        it continues the methods already replaced. The mark names the old checkpoint, so it is void once a new one
        is in place."""
        if self.rank == 0 and self.replacing:
            write_json(self.path / REPLACE, {"checkpoint": _identity(self.checkpoint)})

    @contextlib.contextmanager
    def _saying_where_on_disk_full(self):
        try:
            yield
        except DiskFull as e:
            kept = (f"the last good checkpoint is {self.checkpoint} ({self.last_checkpoint})"
                    if self.last_checkpoint is not None else f"no checkpoint of this run is in {self.path} yet")
            raise DiskFull(f"{e}; {kept}: free some space, then continue with --resume") from None

    def save_checkpoint(self, state: dict) -> None:
        """Write the checkpoint (rank 0). The first one of a forced replacement also replaces the old run's files."""
        self.check_owned()
        with self._saying_where_on_disk_full():
            self._save_checkpoint(state)
        self.replacing = False
        self.last_checkpoint = position(state["ranks"][0]["sampler"])

    def _save_checkpoint(self, state: dict) -> None:
        if self.rank == 0:
            atomic_write(self.checkpoint, lambda p: torch.save(state, p))
            if self.replacing:
                write_json(self.path / CONFIG, state["config"])
                write_history_csv(self.path / HISTORY, state["history"])
                (self.path / SUMMARY).unlink(missing_ok=True)
                for path in self.also_replaced:
                    path.unlink(missing_ok=True)
            (self.path / REPLACE).unlink(missing_ok=True)  # stale from here on (a new checkpoint), whatever happens

    def write_outputs(self, history: list[dict], summary: dict) -> None:
        self.check_owned()
        if self.rank == 0 and not self.replacing:
            with self._saying_where_on_disk_full():
                write_history_csv(self.path / HISTORY, history)
                write_json(self.path / SUMMARY, summary)

    def where_the_last_checkpoint_is(self) -> str:
        """For a message after a failure: which checkpoint a resume would continue from."""
        if self.last_checkpoint is None:
            return f"no checkpoint of this run was written in {self.path}"
        return f"the last finite checkpoint is {self.checkpoint} ({self.last_checkpoint})"
