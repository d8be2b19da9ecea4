"""Seconds per code cell of notebooks executed in learner mode (no DLB_EDU_SMOKE), and of notebook 04's app run
with its defaults (the Run button pressed from code), for issue 23's rule: a learner-mode cell finishes within 90 s.

    python benchmarks/learner_times.py notebooks/04_training_stability.ipynb notebooks/06_beyond_dlb.ipynb \
        --out results/learner_cell_times.json

Each notebook runs in its own kernel with notebooks/ as its folder. The JSON holds, per notebook, every code
cell's index, its first line and its seconds, then the app run's seconds, the command, git_rev and torch.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

from dlb_edu.train import git_revision


def cell_times(path: Path) -> list[dict]:
    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "DLB_EDU_SMOKE"}
    os.environ.pop("DLB_EDU_SMOKE", None)
    client = NotebookClient(nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(path.parent)}})
    out = []
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            start = time.perf_counter()
            client.execute_cell(cell, index)
            out.append({"cell": index, "first_line": cell.source.split("\n")[0][:80],
                        "seconds": round(time.perf_counter() - start, 2)})
    return out


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
