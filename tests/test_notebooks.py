"""Every notebook runs top to bottom headless in smoke mode (DLB_EDU_SMOKE=1), every exercise's solution passes
its check cell, and what a reader of the executed notebook sees is checked: each notebook that trains says in its
output that it is a smoke run and shows the committed reference results (their marker line and a figure), and each
widget is followed by a plain image of its view.

Each notebook runs in its own ``python3`` kernel with ``notebooks/`` as the working folder. After the last cell, the
code of each ``solution`` cell (a collapsed markdown block) runs in the same kernel and every ``check`` cell runs
again: it must print "Correct". Notebook 05 writes into a temporary folder (``DLB_EDU_OUT``), never into the repo,
and a second run there must resume every run instead of training it again. Every kernel gets its own temporary
folder (``TMPDIR``), so what a notebook puts in ``tempfile``'s folder is removed with the test's.

A cell that reaches its timeout fails the test. nbclient's stand-in for a browser's Output widget sends each of the
widget's outputs back to the kernel on the shell channel while it waits for the cell's reply on that same channel,
and the reply can then sit unread until the cell's timeout (jupyter/nbclient#312): notebook 01's widget cell took
exactly ``CELL_TIMEOUT_S`` and passed. The stand-in here records the outputs as nbclient's does but sends nothing
back (no notebook reads ``Output.outputs`` in the kernel).
"""
import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError
from nbclient.output_widget import OutputWidget

from dlb_edu import reference, smoke

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
SOLUTION = re.compile(r"```python\n(.*?)```", re.S)
# The notebooks that train: each shows the reference results beside its own run and announces its smoke run.
TRAINING = ("00_quickstart", "04_training_stability", "05_full_cifar_experiment", "06_beyond_dlb")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class RecordingOutputWidget(OutputWidget):
    """nbclient's Output widget stand-in, minus the shell-channel echo of its outputs to the kernel."""

    def sync_state(self) -> None:
        pass


def notebook_client(nb, timeout_s: float = CELL_TIMEOUT_S) -> NotebookClient:
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout_s,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.widget_registry = {**client.widget_registry,
                              "@jupyter-widgets/output": {"OutputModel": RecordingOutputWidget}}
    return client


def execute_cells(client: NotebookClient, cells, first_index: int = 0) -> list[float]:
    """Run ``cells`` (already in ``client.nb`` from ``first_index`` on); raise on an error or a timeout.

    nbclient can deliver a reply that waited unread at the timeout as if it were on time, so a cell that ran
    to its timeout fails here even then. Returns each cell's seconds."""
    seconds = []
    for index, cell in enumerate(cells, first_index):
        start = time.perf_counter()
        client.execute_cell(cell, index)  # raises CellExecutionError on an error, CellTimeoutError on a timeout
        seconds.append(time.perf_counter() - start)
        assert seconds[-1] < client.timeout, f"cell {index} ran to its timeout ({client.timeout} s)"
    return seconds


def run_notebook(path: Path, tmp_dir: Path, **env) -> nbformat.NotebookNode:
    """Execute ``path`` in smoke mode, then its exercise solutions and checks; return the executed notebook. The
    kernel's temporary files go to ``tmp_dir``."""
    nb = nbformat.read(path, as_version=4)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    kernel_env = {**os.environ, smoke.ENV_VAR: "1", "TMPDIR": str(tmp_dir), **env}
    kernel_env.pop("MPLBACKEND", None)  # the kernel picks its inline backend, as for a reader
    client = notebook_client(nb)
    solutions = [SOLUTION.search(c.source).group(1) for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    checks = [c.source for c in nb.cells if "check" in c.metadata.get("tags", [])]
    assert len(solutions) == len(checks) >= 1, f"{path.name}: each exercise needs a solution and a check cell"
    with client.setup_kernel(env=kernel_env):
        seconds = execute_cells(client, nb.cells)
        extra = [nbformat.v4.new_code_cell(source) for source in solutions + checks]
        nb.cells.extend(extra)
        execute_cells(client, extra, first_index=len(nb.cells) - len(extra))
    for cell in extra[len(solutions):]:
        printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        assert "Correct" in printed, f"{path.name}: the solution does not pass its check: {printed!r}"
    slowest = max(range(len(seconds)), key=seconds.__getitem__)
    print(f"{path.name}: cells {sum(seconds):.1f} s, the slowest is cell {slowest} ({seconds[slowest]:.1f} s)")
    return nb


def printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")


def has_image(cell) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def check_what_a_reader_sees(path: Path, nb) -> None:
    """The executed notebook, read without a kernel: smoke runs announced, reference results shown, widgets drawn."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    if path.stem in TRAINING:
        assert "SMOKE RUN" in printed(nb), f"{path.name}: a smoke run must say so in its output"
        shown = [c for c in code if any(reference.MARKER in o.get("text", "") for o in c.outputs)]
        assert shown, f"{path.name}: the reference results ({reference.MARKER!r}) are not shown"
        assert all(has_image(c) for c in shown), f"{path.name}: the reference table is shown without its figure"
        text = "".join(o.get("text", "") for c in shown for o in c.outputs)
        for fact in ("command: ", "machine: ", "date: ", "final test acc", "best test acc"):
            assert fact in text, f"{path.name}: the reference display lacks {fact!r}"
        assert re.search(r"git revisions?: [0-9a-f]{7}", text), f"{path.name}: the reference display lacks its revision"
    for i, cell in enumerate(code):
        # The apps of dlb_edu.widgets show a VBox of controls; tqdm's progress bars (HBoxes) have a text fallback.
        if any(WIDGET_VIEW in o.get("data", {}) and o["data"].get("text/plain", "").startswith("VBox(")
               for o in cell.outputs):
            assert i + 1 < len(code) and has_image(code[i + 1]), (
                f"{path.name}: the widget of code cell {i} is not followed by a plain image of its view")


def tiny_notebook(*sources: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])


def test_a_cell_that_runs_past_its_timeout_fails_the_harness():
    nb = tiny_notebook("x = 1", "import time\ntime.sleep(60)")
    client = notebook_client(nb, timeout_s=3)
    with client.setup_kernel(), pytest.raises(CellTimeoutError):
        execute_cells(client, nb.cells)
    assert nb.cells[0].execution_count == 1  # the first cell ran; the second is the one that timed out


def test_output_widget_cells_finish_and_keep_their_outputs():
    # As the apps of dlb_edu.widgets do: a large PNG into an Output widget as a cell's last act. Before
    # RecordingOutputWidget most of these cells waited out the whole timeout (jupyter/nbclient#312).
    setup = ("import io\nimport ipywidgets as W\nimport numpy as np\nfrom IPython.display import Image, clear_output\n"
             "from matplotlib.figure import Figure\n"
             "fig = Figure(figsize=(12, 6))\nfig.add_subplot().imshow(np.random.default_rng(0).random((200, 200)))\n"
             "png = io.BytesIO()\nfig.savefig(png, format='png')\nout = W.Output()\ndisplay(out)")
    show = "with out:\n    clear_output(wait=True)\n    display(Image(png.getvalue()))"
    nb = tiny_notebook(setup, *[show] * 4)
    client = notebook_client(nb, timeout_s=10)
    with client.setup_kernel():
        execute_cells(client, nb.cells)  # fails on a cell that reaches the timeout
    outputs, = [state["outputs"] for state in client.widget_state.values() if state.get("_model_name") == "OutputModel"]
    assert [o["output_type"] for o in outputs] == ["display_data"] and "image/png" in outputs[0]["data"]
    assert all(cell.outputs == [] for cell in nb.cells[1:])  # the images went into the widget, not the cells


def test_the_notebooks_are_in_reading_order():
    assert [p.name[:3] for p in NOTEBOOKS] == ["00_", "01_", "02_", "03_", "04_", "04b", "05_", "06_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.cells[0].cell_type == "markdown" and "learn" in nb.cells[0].source  # opens with what you will learn


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if not p.name.startswith("05_")], ids=lambda p: p.stem)
def test_notebook_runs_headless_in_smoke_mode(path, tmp_path):
    start = time.perf_counter()
    nb = run_notebook(path, tmp_path)
    print(f"{path.name}: {time.perf_counter() - start:.1f} s in all")
    check_what_a_reader_sees(path, nb)


def test_full_experiment_notebook_writes_outside_the_repo_and_resumes(tmp_path):
    path = NOTEBOOK_DIR / "05_full_cifar_experiment.ipynb"
    assert any("parameters" in c.metadata.get("tags", []) for c in nbformat.read(path, as_version=4).cells)
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    start = time.perf_counter()
    first = run_notebook(path, tmp_path / "tmp", DLB_EDU_OUT=str(tmp_path))
    print(f"{path.name}: {time.perf_counter() - start:.1f} s in all")
    check_what_a_reader_sees(path, first)
    for name in ("results.csv", "histories.csv", "curves.png"):
        assert (tmp_path / name).is_file()
    assert len(list(tmp_path.glob("seed_*/*/checkpoint.pt"))) == 4  # 2 seeds x 2 methods in smoke mode
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before
    assert printed(first).count("started") == 4
    assert "killed (exit -9)" in printed(first) and "weights equal, bit for bit," in printed(first)
    assert "highest step loss" in printed(first) and "DLB / baseline =" in printed(first)

    second = run_notebook(path, tmp_path / "tmp", DLB_EDU_OUT=str(tmp_path))
    assert printed(second).count(f"resumed at epoch {smoke.SMOKE_CONFIG['epochs']}") == 4
    results = [line for line in printed(first).splitlines() if "over 2 seeds" in line]
    assert results and results == [line for line in printed(second).splitlines() if "over 2 seeds" in line]


def test_full_experiment_notebook_under_papermill_prints_its_projection_and_saves_its_table(tmp_path):
    """papermill is the real client of notebook 05's parameters cell: `-p seeds "[0]"` arrives as text."""
    import subprocess
    import sys
    out_nb = tmp_path / "out.ipynb"
    env = {**os.environ, smoke.ENV_VAR: "1", "DLB_EDU_OUT": str(tmp_path / "runs")}
    env.pop("MPLBACKEND", None)
    subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOK_DIR / "05_full_cifar_experiment.ipynb"),
                    str(out_nb), "-p", "seeds", "[0]", "--cwd", str(NOTEBOOK_DIR), "-k", "python3",
                    "--execution-timeout", str(CELL_TIMEOUT_S)], check=True, env=env, capture_output=True)
    text = printed(nbformat.read(out_nb, as_version=4))
    assert re.search(r"projected: 1 seed x 2 methods x 2 epochs on cpu \(\d+ threads?\): about \d+ s", text), text
    table = (tmp_path / "runs" / "results.csv").read_text()
    assert "baseline" in table and "dlb" in table
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()) == ["kill_demo", "seed_0"]
