"""The live lab's turn-taking: two runs in two worker threads, one optimizer step each in turn, and a gate before
the leading run's every step where the lab pauses, stops or changes a knob.

The run with fewer steps goes; on a tie the leader (DLB) goes first, and a run alone once the other has ended goes
on alone. So the two runs' curves grow together and each run is the same whatever the threads' timing: the runs
share no state, and the one place where anything outside a run changes it is the gate, between two of its steps,
in its own thread. Callers in any thread ask for a pause, a stop or a change; the gate carries it out.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from .errors import ConfigError

STATES = ("ready", "running", "paused", "stopped", "finished", "failed")
ENDED = ("stopped", "finished", "failed")


class Stop(Exception):
    """Raised in a worker thread at a step boundary to end its run (the trainer leaves the run consistent)."""


class TurnTaking:
    """Turns, gate and state of the runs ``names`` (the leader, which passes the gate, is ``names[-1]``), each at
    ``steps[name]`` steps so far.

    ``cond`` guards everything here and may guard the caller's own shared data too (it is re-entrant); ``version``
    is bumped whenever the state changes (a view redraws only then; :meth:`changed` bumps it for the caller).
    """

    def __init__(self, names: tuple[str, str], steps: dict[str, int]):
        self.names, self.leader = names, names[-1]
        self.cond = threading.Condition()
        self.steps = dict(steps)
        self.active: set[str] = set()
        self.state, self.paused_at, self.error, self.version = "ready", None, None, 0
        self._stop, self._pause_now, self._pause_at = False, False, None
        self._pending: dict[str, float] = {}               # applied before the leader's next step
        self._scheduled: dict[int, dict[str, float]] = {}  # step -> changes to apply before that step
        self.threads: list[threading.Thread] = []

    # Asked from any thread ----------------------------------------------------------------------------------------

    def start(self, target: Callable[[str], None], refused: str) -> None:
        """Run ``target(name)`` for each run in a daemon thread of its own; ConfigError ``refused`` if not ready."""
        with self.cond:
            if self.state != "ready":
                raise ConfigError(refused)
            self.state, self.active = "running", set(self.names)
            self.version += 1
        self.threads = [threading.Thread(target=target, args=(n,), name=f"dlb-edu-lab-{n}", daemon=True)
                        for n in self.names]
        for thread in self.threads:
            thread.start()

    def ask(self, name: str, value: float, at_step: int | None = None) -> None:
        """Change knob ``name`` to ``value`` (already checked) at the gate before the leader's next step, or before
        step ``at_step``. Several asks before one step: the last value."""
        with self.cond:
            if self.state in ENDED:
                raise ConfigError(f"the run has {self.state}: start a new lab to change {name}")
            if at_step is None:
                self._pending[name] = value
            else:
                done = self.steps[self.leader]
                if not isinstance(at_step, int) or at_step <= done:
                    raise ConfigError(f"at_step must be an integer after the current step {done}, got {at_step!r}")
                self._scheduled.setdefault(at_step, {})[name] = value

    def pause(self, at_step: int | None = None) -> None:
        """Pause both runs before the leader's next step (or once both have taken ``at_step`` steps)."""
        with self.cond:
            if at_step is None:
                self._pause_now = True
            else:
                done = self.steps[self.leader]
                if not isinstance(at_step, int) or at_step < done:
                    raise ConfigError(f"at_step must be an integer >= the current step {done}, got {at_step!r}")
                self._pause_at = at_step
            self.cond.notify_all()

    def resume(self) -> None:
        with self.cond:
            self._pause_now = False
            if self.state == "paused":
                self.state, self.paused_at = "running", None
                self.version += 1
            self.cond.notify_all()

    def stop(self) -> bool:
        """End both runs at the next step boundary (a paused run at once); False if they never started."""
        with self.cond:
            if self.state == "ready":
                self.state = "stopped"
                self.version += 1
                return False
            self._stop = True
            self.cond.notify_all()
            return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until both threads have ended (or ``timeout`` seconds); True when they have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self.threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def wait_paused(self, timeout: float | None = None) -> int | None:
        """Block until paused; return the step it paused after (None if it ended or timed out first)."""
        with self.cond:
            self.cond.wait_for(lambda: self.state == "paused" or self.state in ENDED, timeout)
            return self.paused_at if self.state == "paused" else None

    def changed(self) -> None:
        with self.cond:
            self.version += 1

    # Called by the worker threads ---------------------------------------------------------------------------------

    def take_turn(self, name: str, step: int, apply: Callable[[int, dict[str, float]], bool]) -> bool:
        """Record that ``name`` has taken ``step`` steps, then wait for its turn. The leader then passes the gate:
        pause if asked, :class:`Stop` if asked, and ``apply(next_step, changes)`` (under the lock) with the
        changes due; the other raises :class:`Stop` once level with the leader after a stop. Returns whether
        ``apply`` applied a change."""
        other = self.names[0] if name == self.leader else self.leader
        with self.cond:
            self.steps[name] = step
            self.cond.notify_all()  # this step may make it the other's turn
            self.cond.wait_for(lambda: other not in self.active or self.steps[name] < self.steps[other]
                               or (self.steps[name] == self.steps[other] and name == self.leader))
            if name != self.leader:
                if self._stop and (other not in self.active or self.steps[name] >= self.steps[other]):
                    raise Stop
                return False
            return self._gate(apply)

    def _gate(self, apply) -> bool:
        step = self.steps[self.leader]
        if self._pause_now or self._pause_at == step:
            self._pause_now, self._pause_at = False, None
            self.state, self.paused_at = "paused", step
            self.version += 1
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.state != "paused" or self._stop)
        if self._stop:
            raise Stop
        changes = {**self._pending, **self._scheduled.pop(step + 1, {})}
        self._pending = {}
        applied = bool(changes) and apply(step + 1, changes)
        if applied:
            self.version += 1
        return applied

    def ended(self, name: str, error: BaseException | None, last_words: Callable[[], None]) -> bool:
        """``name``'s thread is ending (``error``: why, if it failed: the other run stops too). Returns whether it
        is the last one; then ``last_words()`` runs under the lock, and the state becomes stopped, finished or
        failed."""
        with self.cond:
            if error is not None:
                self.error = self.error or error
                self._stop = True
            self.active.discard(name)
            last = not self.active
            if last:
                last_words()
                self.state = "failed" if self.error else "stopped" if self._stop else "finished"
                self.version += 1
            self.cond.notify_all()
            return last
