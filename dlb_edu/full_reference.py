"""The full-size reference results: the ``cpu`` preset on all of the CIFAR-10 JPEG copy, committed under
``results/full/`` by ``benchmarks/full_reference_runs.py`` (commands, machine, load, revision in ``manifest.json``).

Three groups of runs, several seeds each: ``clean`` (baseline and DLB), ``alpha0`` (DLB with alpha = 0: the
compute-matched control, which makes DLB's 2B forwards per step and sees each image under two augmentations, but has
no consistency term) and ``noise40`` (baseline and DLB with 40% symmetric label noise). This module reads them.
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_DIR = Path("results") / "full"
FIGURE_NAME = "full_cifar10_jpeg.png"

# group -> the methods its compare trains and the options beyond the preset
GROUPS = {
    "clean": {"methods": ["baseline", "dlb"], "args": []},
    "alpha0": {"methods": ["dlb"], "args": ["--alpha", "0"]},
    "noise40": {"methods": ["baseline", "dlb"], "args": ["--label-noise", "0.4"]},
}
