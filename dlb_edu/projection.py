"""How long an experiment will take, said before it starts, and the budget it must fit.

The numbers come from a measurement, not a guess: :func:`dlb_edu.train.measure_costs` times a few training steps of
each method after a warm-up, and the evaluation of a few hundred images, on the device the runs will use. Here they
are only added up: a run costs ``epochs left x (steps per epoch x seconds per step + evaluation)``, and the
experiment the sum of its runs, trained one after the other.

A budget (``budget_minutes``) is a promise to the learner: a plan projected to take longer is refused in one line that
names the cheapest ways to fit it, and the parameter that runs it anyway. The recipe is never changed silently.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class RunCost:
    """One run's share of an experiment: what is left of it, and what a step and an epoch's evaluation cost."""
    method: str
    seed: int
    epochs_left: int
    steps_per_epoch: int
    step_s: float        # one optimizer step, measured after a warm-up
    eval_s: float        # one epoch's evaluation: the test set and the probe set

    @property
    def epoch_s(self) -> float:
        return self.steps_per_epoch * self.step_s + self.eval_s

    @property
    def seconds(self) -> float:
        return self.epochs_left * self.epoch_s


@dataclass(frozen=True)
class Projection:
    runs: tuple[RunCost, ...]
    epochs: int          # the runs' length (each run's epochs_left may be less: resumed runs)
    where: str           # "cpu (2 threads)", "cuda (NVIDIA H200)"

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    @property
    def steps(self) -> int:
        return sum(r.epochs_left * r.steps_per_epoch for r in self.runs)

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.runs))

    def line(self) -> str:
        """``projected: 2 seeds x 2 methods x 16 epochs on cpu (2 threads): about 31 min``."""
        n_seeds, n_methods = len(self.seeds), len(self.methods)
        left = sum(r.epochs_left for r in self.runs)
        resumed = "" if left == len(self.runs) * self.epochs else f" ({left} of {len(self.runs) * self.epochs} " \
                                                                     f"run-epochs left)"
        return (f"projected: {n_seeds} seed{'s' * (n_seeds != 1)} x {n_methods} method{'s' * (n_methods != 1)} x "
                f"{self.epochs} epochs on {self.where}{resumed}: about {duration(self.seconds)}")

    def check_budget(self, budget_minutes: float | None, cpu_preset_s: float | None = None) -> None:
        """ConfigError if the projection exceeds ``budget_minutes`` (None: no budget), naming the ways to fit."""
        if budget_minutes is None or self.seconds <= 60 * budget_minutes:
            return
        budget_s = 60 * budget_minutes
        ways = []
        per_seed = self.seconds / len(self.seeds)
        if len(self.seeds) > 1 and per_seed <= budget_s:
            n = int(budget_s // per_seed)
            ways.append(f"{n} seed{'s' * (n != 1)} (about {duration(n * per_seed)})")
        per_epoch = sum(r.epoch_s for r in self.runs)
        fits = int(budget_s // per_epoch)
        if 1 <= fits < self.epochs:
            ways.append(f"--epochs {fits} (about {duration(fits * per_epoch)})")
        if cpu_preset_s is not None:
            ways.append(f"the cpu preset (about {duration(cpu_preset_s)})")
        advice = f"to fit, train {', or '.join(ways)}; " if ways else ""
        raise ConfigError(f"{self.line()}, over the budget of {budget_minutes:g} min: {advice}or set budget_minutes "
                          f"(--budget-minutes) higher, or to None (no option) to run it anyway")


def check_budget_minutes(value) -> float | None:
    """The budget as given (None: none), or a ConfigError line."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"budget_minutes must be a positive number of minutes or None, got {value!r}")
    return float(value)


def duration(seconds: float) -> str:
    """'40 s', '31 min', '5.2 h', '3.1 days'."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
