"""Progress bars that leave one line of plain text when they close.

A tqdm bar is drawn live: a text bar on a terminal, a widget in Jupyter. What an exported or static notebook keeps
of a widget is its first text form, ``0%| 0/63``, as if nothing ran. So every bar of the package, when it closes,
prints one plain line to stdout that says what ran and how long it took (``baseline epoch 1/4: 63/63 steps in
12 s``), or where it stopped. A disabled bar draws nothing and prints nothing.
"""
from __future__ import annotations

import sys
import time

from .projection import duration


class Progress:
    """A tqdm bar (``tqdm.auto``) over ``total`` units; :meth:`close` prints the bar's final line.

    ``unit="B"`` counts bytes and prints them in binary units (KiB, MiB). Use it as a context manager or call
    :meth:`close`; closing twice prints once.
    """

    def __init__(self, total: int | None, desc: str = "", unit: str = "step", initial: int = 0,
                 leave: bool = False, disable: bool = False, file=None):
        from tqdm.auto import tqdm  # imported here: the package's import does not wait for tqdm's notebook check

        self.desc, self.unit, self.total, self.initial, self.n = desc, unit, total, initial, initial
        self.disabled, self.file, self.closed = disable, file, False
        self.began = time.perf_counter()
        byte_units = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, disable=disable,
                        **byte_units)

    def update(self, n: int = 1) -> None:
        self.n += n
        self.bar.update(n)

    def final_line(self) -> str:
        """``desc: done/total units in time``; ``stopped at`` when the bar closed before its total."""
        seconds = time.perf_counter() - self.began
        count = self._count(self.n)
        name = f"{self.desc}: " if self.desc else ""
        if self.total is None:
            return f"{name}{count} in {duration(seconds)}"
        if self.n >= self.total:
            return f"{name}{self._count(self.n, self.total)} in {duration(seconds)}"
        return f"{name}stopped at {self._count(self.n, self.total)} after {duration(seconds)}"

    def _count(self, n: int, total: int | None = None) -> str:
        if self.unit == "B":
            done = format_bytes(n)
            return done if total is None else f"{done} of {format_bytes(total)}"
        plural = f"{self.unit}s" if self.unit and not self.unit.endswith("s") else self.unit
        return f"{n} {plural}" if total is None else f"{n}/{total} {plural}"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.bar.close()
        if not self.disabled:
            print(self.final_line(), file=self.file or sys.stdout, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_bytes(n: float) -> str:
    """Bytes in binary units, the one convention of the notebooks: 1 KiB = 1024 B, 1 MiB = 1024 KiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
