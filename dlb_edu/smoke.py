"""Smoke mode: the same code on a few hundred images for an epoch or two, so that CI can execute every notebook.

It is one switch, the environment variable ``DLB_EDU_SMOKE=1``, read here and nowhere else. Numbers from a smoke run
mean nothing (a few hundred images, near-chance accuracy); notebooks that train say so in one line when it is on.
It has nothing to do with the GPU speed-ups (``TrainConfig.gpu_speedups``).
"""
from __future__ import annotations

import os

ENV_VAR = "DLB_EDU_SMOKE"

# What a smoke run trains on: TrainConfig overrides.
SMOKE_CONFIG = dict(train_subset=256, test_subset=128, probe_size=64, epochs=2)


def smoke_mode() -> bool:
    """True when ``DLB_EDU_SMOKE`` is set to anything but '' or '0'."""
    return os.environ.get(ENV_VAR, "") not in ("", "0")


def smoke_overrides() -> dict:
    """``SMOKE_CONFIG`` in smoke mode, else ``{}``: ``TrainConfig(..., **smoke_overrides())``."""
    return dict(SMOKE_CONFIG) if smoke_mode() else {}
