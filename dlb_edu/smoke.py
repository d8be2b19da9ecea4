"""Smoke mode: the same code on a few hundred images for an epoch or two, so that CI can execute every notebook.

It is one switch, the environment variable ``DLB_EDU_SMOKE=1``, read here and nowhere else. Numbers from a smoke run
mean nothing (a few hundred images, near-chance accuracy); notebooks that train say so in one line when it is on.
It has nothing to do with the GPU speed-ups (``TrainConfig.gpu_speedups``).
"""
from __future__ import annotations

import os

from .errors import ConfigError

ENV_VAR = "DLB_EDU_SMOKE"

# What a smoke run trains on: TrainConfig overrides.
SMOKE_CONFIG = dict(train_subset=256, test_subset=128, probe_size=64, epochs=2)


ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def smoke_mode() -> bool:
    """Whether ``DLB_EDU_SMOKE`` is on: 1, true, yes or on (any case); 0, false, no, off, empty or unset is off,
    and any other value is refused (ConfigError), so that a typo never decides silently."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value not in ON + OFF:
        raise ConfigError(f"{ENV_VAR}={os.environ[ENV_VAR]!r} is neither on (1, true, yes, on) nor off (0, false, no, "
                          f"off, empty): set one of those")
    return value in ON


def smoke_overrides() -> dict:
    """``SMOKE_CONFIG`` in smoke mode, else ``{}``: ``TrainConfig(..., **smoke_overrides())``."""
    return dict(SMOKE_CONFIG) if smoke_mode() else {}
