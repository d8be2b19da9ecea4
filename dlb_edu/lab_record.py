"""The live lab's record, beside the two runs' own folders: the knob changes, a stability point every K steps, and
the values of every step; kept in ``lab.json`` so that a resumed lab continues it with its changes re-applied.

The trainers' checkpoints are the truth about where each run is: a resumed record keeps what lies up to there and
drops the rest (the part that is trained again), and the changes in force at DLB's checkpoint are applied again.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError
from .run_dir import write_json

RUNS = ("baseline", "dlb")  # the two runs the lab trains side by side (config.METHODS names every method)
KNOBS = ("temperature", "alpha")  # DLB's knobs that may change mid-run, through DLB.set (config's rules)
POINT_KEYS = ("step", "loss", "ce", "step_kl", "flip_rate", "probe_kl")   # every K steps
STEP_KEYS = ("step", "loss", "ce", "consistency", "temperature", "alpha")  # every step
RECORD_FILE = "lab.json"


@dataclass(frozen=True)
class Change:
    """A knob moved mid-run: from ``step`` on (the first DLB step that used it) ``name`` is ``new``, was ``old``."""
    step: int
    name: str
    old: float
    new: float


class LabRecord:
    """The changes and, per run, the points (columns :data:`POINT_KEYS`) and steps (:data:`STEP_KEYS`). ``lock``
    (the lab's) guards every read and write, for the worker threads and the callers."""

    def __init__(self, every: int, lock):
        self.every, self.lock = every, lock
        self.changes: list[Change] = []
        self.points = {m: {k: [] for k in POINT_KEYS} for m in RUNS}
        self.steps = {m: {k: [] for k in STEP_KEYS} for m in RUNS}

    def add_steps(self, name: str, rows: list[tuple]) -> None:
        """Append rows of :data:`STEP_KEYS` values to ``name``'s steps."""
        with self.lock:
            for row in rows:
                for key, value in zip(STEP_KEYS, row):
                    self.steps[name][key].append(value)

    def add_point(self, name: str, step: int, step_kl: float, flip_rate: float, probe_kl: float) -> None:
        """The stability point after ``step``; its loss and ce are the means over the last K steps (fewer after a
        resume)."""
        with self.lock:
            steps = self.steps[name]
            start = len(steps["step"])
            while start > 0 and steps["step"][start - 1] > step - self.every:
                start -= 1
            n = len(steps["step"]) - start
            point = {"step": step, "loss": sum(steps["loss"][start:]) / n, "ce": sum(steps["ce"][start:]) / n,
                     "step_kl": step_kl, "flip_rate": flip_rate, "probe_kl": probe_kl}
            for key in POINT_KEYS:
                self.points[name][key].append(point[key])

    def as_dict(self) -> dict:
        """The record as plain data (copies): every, changes, points, steps."""
        with self.lock:
            return {"every": self.every, "changes": [asdict(c) for c in self.changes],
                    "points": {m: {k: list(v) for k, v in p.items()} for m, p in self.points.items()},
                    "steps": {m: {k: list(v) for k, v in s.items()} for m, s in self.steps.items()}}

    def write(self, path: Path, config: dict) -> None:
        write_json(path, {"config": config, **self.as_dict()})

    def restore(self, saved: tuple[list[Change], dict], steps_done: dict[str, int]) -> list[Change]:
        """Continue a saved record (:func:`read`) up to where each run resumed; return the changes in force.

        A change recorded at step s was made before step s; DLB's checkpoint holds n steps, so the changes up to
        step n + 1 were in force when the run stopped, and later ones belong to the part that is trained again.
        """
        changes, tables = saved
        with self.lock:
            self.changes = [c for c in changes if c.step <= steps_done["dlb"] + 1]
            for (table, m), columns in tables.items():
                keep = [i for i, step in enumerate(columns["step"]) if step <= steps_done[m]]
                (self.points if table == "points" else self.steps)[m] = {k: [v[i] for i in keep]
                                                                          for k, v in columns.items()}
            return list(self.changes)


def read(path: Path) -> tuple[list[Change], dict] | None:
    """A saved record, checked, as ``(changes, {(table, run): columns})``, or None if there is none; ConfigError
    naming the file if it is unreadable or of the wrong shape."""
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{path} is unreadable: delete it (the runs resume with the config's T and alpha)") \
            from None
    try:
        changes = [Change(**c) for c in saved["changes"]]
        if not all(isinstance(c.step, int) and c.name in KNOBS
                   and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (c.old, c.new))
                   for c in changes):
            raise ValueError
        tables = {}
        for table, keys in (("points", POINT_KEYS), ("steps", STEP_KEYS)):
            for m in RUNS:
                rows = saved.get(table, {}).get(m, {})
                columns = {k: list(rows.get(k, [])) for k in keys}
                if rows and (set(rows) != set(keys) or len({len(v) for v in columns.values()}) != 1):
                    raise ValueError
                tables[table, m] = columns
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ConfigError(f"{path} is damaged (not the record of a lab): delete it (the runs resume with the "
                          f"config's T and alpha)") from None
    return changes, tables
