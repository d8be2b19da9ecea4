"""Execute the notebooks in learner mode and write readable executed copies (notebooks/executed/).

The notebooks are committed without outputs, so a reader on the web sees no figure and no number. This script runs
each notebook top to bottom on this machine, as a learner would (not in smoke mode), and writes beside the clean
sources a Markdown page with its figures as PNG files (GitHub shows it as it is), headed by a note that says when,
on what machine, with which command and git revision it was executed, how long it took, and which parameters were
changed from the notebook's own. ``--ipynb`` and ``--html`` also write the executed notebook and an HTML page, which
are not committed: the project commits notebooks without outputs. The clean notebooks stay the source; regenerate the copies when results change:

    python benchmarks/execute_notebooks.py                 # every notebook, learner mode, into notebooks/executed/
    python benchmarks/execute_notebooks.py --only 00 03    # the notebooks whose names start with 00 or 03
    python benchmarks/execute_notebooks.py --smoke --out /tmp/x   # smoke mode (DLB_EDU_SMOKE=1): a fast self-check

Notebook 05 in learner mode trains a full experiment for about an hour; its copy is made with the overrides in
``OVERRIDES`` (a short run on the bundled mini set), injected after its ``parameters`` cell as papermill does, and
its header says so. Each kernel starts in ``notebooks/``; notebook 05 writes its runs into a temporary folder
(``out_dir``, injected too), so a copy never resumes the runs of an earlier one.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
DEFAULT_OUT = NOTEBOOK_DIR / "executed"
CELL_TIMEOUT_S = 1800
# Learner-mode overrides, injected after a notebook's `parameters` cell, with the reason the header gives.
OVERRIDES = {
    "05_full_cifar_experiment": (
        {"preset": "quick", "dataset": "cifar10-mini", "download": False, "seeds": [0], "epochs": 3,
         "budget_minutes": 10},
        "in learner mode this notebook trains the full CIFAR-10 experiment (2 seeds of the cpu preset: 20 minutes on "
        "a quiet 2-core CPU, more on a busy one); this "
        "copy trains one seed of the `quick` preset on the bundled mini set for 3 epochs instead, so its numbers "
        "show the notebook working, not the full-size results (the README's full-size section has those)"),
}


def select(names: list[str] | None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks to run: all of ``notebook_dir``, or those whose file name starts with one of ``names``."""
    notebooks = sorted(notebook_dir.glob("*.ipynb"))
    if not names:
        return notebooks
    chosen = [p for p in notebooks if any(p.name.startswith(n) for n in names)]
    unknown = [n for n in names if not any(p.name.startswith(n) for p in notebooks)]
    if unknown:
        raise SystemExit(f"no notebook starts with {', '.join(unknown)} in {notebook_dir}")
    return chosen


def git_revision(root: Path = ROOT) -> str:
    """The short revision, with ``+ uncommitted changes`` when the work tree differs from it (the executed copies
    themselves, which this script is rewriting, do not count)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        copies = [f":(exclude){DEFAULT_OUT.relative_to(root)}"] if DEFAULT_OUT.is_relative_to(root) else []
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *copies], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + (" + uncommitted changes" if dirty else "")


def machine_line() -> str:
    """CPU model and cores, GPU (or none), torch and Python: where the copy was executed."""
    import torch

    from dlb_edu.project import cpu_name

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = f", load average {os.getloadavg()[0]:.1f} at the start" if hasattr(os, "getloadavg") else ""
    return (f"{os.cpu_count()}-core CPU ({cpu}), {gpu}; torch {torch.__version__}, Python "
            f"{platform.python_version()}{load}")


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


def header(name: str, started: datetime.datetime, seconds: float, command: str, revision: str, machine: str,
           smoke: bool, overrides: dict | None = None, reason: str = "", slowest: list | None = None) -> str:
    """The markdown cell that heads an executed copy: when, where, with what, how long, and what was changed."""
    mode = ("**smoke mode** (`DLB_EDU_SMOKE=1`: a few hundred images, 2 epochs; its numbers test the code and "
            "measure nothing)" if smoke else "learner mode (as a reader runs it, not smoke mode)")
    lines = [f"> **Executed copy of `notebooks/{name}.ipynb`**, not its source: the clean notebook is the source, "
             "this copy shows what one run of it printed and drew.",
             ">",
             f"> - executed {started:%Y-%m-%d %H:%M} UTC, in {mode}, in {_duration(seconds)}",
             f"> - machine: {machine}",
             f"> - command: `{command}`",
             f"> - git revision: {revision}"]
    if overrides:
        shown = ", ".join(f"`{k} = {v!r}`" for k, v in overrides.items())
        lines.append(f"> - parameters changed from the notebook's own (injected after its `parameters` cell): {shown}; "
                     f"{reason}")
    if slowest:
        lines.append("> - slowest cells: " + ", ".join(f"code cell {i} {_duration(s)}" for i, s in slowest))
    return "\n".join(lines)


def cell_seconds(nb) -> list[tuple[int, float]]:
    """(code cell number, counted from 1; seconds) from the timing nbclient records in each cell's metadata."""
    out = []
    for k, cell in enumerate((c for c in nb.cells if c.cell_type == "code"), start=1):
        timing = cell.get("metadata", {}).get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if start and end:
            parse = datetime.datetime.fromisoformat
            out.append((k, (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()))
    return out


def inject(nb, overrides: dict) -> None:
    """Put ``overrides`` in a cell tagged ``injected-parameters`` right after the ``parameters`` cell (papermill's
    convention); a notebook without one is refused."""
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "# Parameters injected by benchmarks/execute_notebooks.py\n" + "\n".join(
                f"{k} = {v!r}" for k, v in overrides.items())
            nb.cells.insert(i + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
            return
    raise SystemExit("the notebook has overrides but no cell tagged 'parameters'")


def _client(nb, timeout_s: float):
    from nbclient import NotebookClient
    from nbclient.output_widget import OutputWidget

    class RecordingOutputWidget(OutputWidget):
        """nbclient's Output-widget stand-in without its echo to the kernel, which can stall a cell until its
        timeout (jupyter/nbclient#312; tests/test_notebooks.py does the same)."""

        def sync_state(self) -> None:
            pass

    client = NotebookClient(nb, kernel_name="python3", timeout=timeout_s, record_timing=True,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.widget_registry = {**client.widget_registry,
                              "@jupyter-widgets/output": {"OutputModel": RecordingOutputWidget}}
    return client


def execute(path: Path, out_dir: Path, smoke: bool, command: str, html: bool = False, ipynb: bool = False,
            timeout_s: float = CELL_TIMEOUT_S) -> dict:
    """Execute one notebook into ``out_dir`` (a ``.md`` page with its figures; also the executed ``.ipynb`` and an
    ``.html`` page if asked); return what it took."""
    nb = nbformat.read(path, as_version=4)
    overrides, reason = OVERRIDES.get(path.stem, (None, ""))
    started = datetime.datetime.now(datetime.timezone.utc)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"dlb_edu_{path.stem}_") as tmp:
        if overrides and not smoke:  # and its runs go to a fresh folder, so the copy never resumes an older run
            inject(nb, {**overrides, "out_dir": str(Path(tmp) / "runs")})
        env = {"DLB_EDU_OUT": str(Path(tmp) / "runs"), "TMPDIR": tmp}
        saved = {k: os.environ.get(k) for k in (*env, "DLB_EDU_SMOKE")}
        os.environ.update(env)
        if smoke:
            os.environ["DLB_EDU_SMOKE"] = "1"
        else:
            os.environ.pop("DLB_EDU_SMOKE", None)
        try:
            _client(nb, timeout_s).execute()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    seconds = time.perf_counter() - began
    cells = cell_seconds(nb)
    slowest = sorted(cells, key=lambda c: -c[1])[:3]
    text = header(path.stem, started, seconds, command, git_revision(), machine_line(), smoke,
                  overrides if not smoke else None, reason, slowest)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(text, metadata={"tags": ["executed-copy-header"]}))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = write_page(nb, out_dir / f"{path.stem}.md")
    if ipynb:
        nbformat.write(nb, out_dir / path.name)
    if html:
        from nbconvert import HTMLExporter
        body, _ = HTMLExporter().from_notebook_node(nb)
        (out_dir / f"{path.stem}.html").write_text(body, encoding="utf-8")
    return {"notebook": path.name, "seconds": seconds, "cells": cells, "out": str(target)}


def write_page(nb, target: Path) -> Path:
    """The executed notebook as a Markdown page (GitHub shows it as it is), its figures as PNG files in
    ``<stem>_files/`` beside it; the folder's old figures go first, so none outlives its page."""
    import shutil

    from nbconvert import MarkdownExporter

    files = f"{target.stem}_files"
    body, resources = MarkdownExporter().from_notebook_node(nb, resources={"output_files_dir": files})
    shutil.rmtree(target.parent / files, ignore_errors=True)
    for name, data in resources.get("outputs", {}).items():
        (target.parent / name).parent.mkdir(parents=True, exist_ok=True)
        (target.parent / name).write_bytes(data)
    target.write_text(body, encoding="utf-8")
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="PREFIX", help="only the notebooks whose names start so (00 03)")
    p.add_argument("--smoke", action="store_true", help="smoke mode (DLB_EDU_SMOKE=1): a fast self-check")
    p.add_argument("--out", type=Path, default=None, help=f"folder of the copies (default {DEFAULT_OUT}; "
                                                          "with --smoke a temporary folder)")
    p.add_argument("--html", action="store_true", help="also write an HTML page per notebook (not committed: each "
                   "page repeats nbconvert's whole stylesheet)")
    p.add_argument("--ipynb", action="store_true", help="also write the executed .ipynb (not committed: the "
                   "project commits notebooks without outputs)")
    p.add_argument("--timeout", type=float, default=CELL_TIMEOUT_S, help="seconds a cell may take")
    args = p.parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="dlb_edu_executed_")) if args.smoke else DEFAULT_OUT)
    command = "python benchmarks/execute_notebooks.py" + (" " + " ".join(map(shlex.quote, argv or sys.argv[1:]))
                                                         if (argv or sys.argv[1:]) else "")
    for path in select(args.only):
        print(f"executing {path.name} ({'smoke' if args.smoke else 'learner'} mode) ...", flush=True)
        done = execute(path, out, args.smoke, command, html=args.html, ipynb=args.ipynb, timeout_s=args.timeout)
        over = [(i, s) for i, s in done["cells"] if s > 90]
        print(f"  {_duration(done['seconds'])}; cells over 90 s: "
              f"{', '.join(f'code cell {i} ({s:.0f} s)' for i, s in over) or 'none'}; "
              f"slowest: {', '.join(f'{i}: {s:.1f} s' for i, s in sorted(done['cells'], key=lambda c: -c[1])[:4])}"
              f" -> {done['out']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
