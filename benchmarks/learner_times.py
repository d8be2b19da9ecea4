"""Seconds per code cell of notebooks executed in learner mode (no DLB_EDU_SMOKE), and of notebook 04's app run
with its defaults (the Run button pressed from code), for issue 23's rule: a learner-mode cell finishes within 90 s.

    python benchmarks/learner_times.py notebooks/04_training_stability.ipynb notebooks/06_beyond_dlb.ipynb \
        --out results/learner_cell_times.json

Each notebook runs as ``benchmarks/execute_notebooks.py`` runs it (its own kernel, notebooks/ as its folder). The
JSON holds, per notebook, every code cell's number (from 1), its first line and its seconds, then the app run's
seconds, the command, git_rev and torch. (Records made before this used the cell's index among all cells.)
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from execute_notebooks import execute  # noqa: E402  (the one way the project executes a notebook in learner mode)

from dlb_edu.train import git_revision  # noqa: E402


def cell_times(path: Path) -> list[dict]:
    """Every code cell's number (counted from 1), first line and seconds, from one learner-mode execution."""
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    with tempfile.TemporaryDirectory() as tmp:
        done = execute(path, Path(tmp), smoke=False, command="python benchmarks/learner_times.py")
    return [{"cell": k, "first_line": code[k - 1].source.split("\n")[0][:80], "seconds": round(seconds, 2)}
            for k, seconds in done["cells"]]


def app_run() -> float:
    from dlb_edu.widgets import StabilityApp
    app = StabilityApp(smoke=False)
    start = time.perf_counter()
    app.run_button.click()
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    record = {"notebooks": {}, "command": "python " + shlex.join(sys.argv), "git_rev": git_revision(),
              "torch": torch.__version__, "cpu_cores": os.cpu_count()}
    for path in args.notebooks:
        record["notebooks"][path.name] = cell_times(path)
        for c in record["notebooks"][path.name]:
            print(f"{path.name} cell {c['cell']:>2} {c['seconds']:7.1f} s  {c['first_line']}")
    record["stability_app_default_run_s"] = app_run()
    print(f"04's StabilityApp, default run (Run pressed): {record['stability_app_default_run_s']:.1f} s")
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
