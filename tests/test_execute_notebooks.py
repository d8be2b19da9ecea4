"""benchmarks/execute_notebooks.py: the header of an executed copy says when, where, how and how long; overrides go
after the parameters cell; --only picks notebooks; one tiny notebook executed in smoke mode gets its copy and page."""
import datetime
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import execute_notebooks as ex  # noqa: E402


def test_header_says_when_where_how_long_and_what_was_changed():
    text = ex.header("05_full_cifar_experiment", datetime.datetime(2026, 12, 3, 14, 5), 312.0,
                     "python benchmarks/execute_notebooks.py --only 05", "abc1234", "2-core CPU (X), no GPU",
                     smoke=False, overrides={"epochs": 3, "dataset": "cifar10-mini"}, reason="a short run",
                     slowest=[(7, 95.0), (3, 12.0)])
    for fact in ("notebooks/05_full_cifar_experiment.ipynb", "2026-12-03 14:05 UTC", "learner mode", "5 min 12 s",
                 "2-core CPU (X), no GPU", "`python benchmarks/execute_notebooks.py --only 05`", "abc1234",
                 "`epochs = 3`", "`dataset = 'cifar10-mini'`", "a short run", "code cell 7 1 min 35 s"):
        assert fact in text, fact
    smoke = ex.header("00_quickstart", datetime.datetime(2026, 12, 3), 8.0, "cmd", "abc1234", "m", smoke=True)
    assert "smoke mode" in smoke and "in 8.0 s" in smoke and "parameters changed" not in smoke


def test_overrides_go_right_after_the_parameters_cell():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("epochs = 16", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("print(epochs)")])
    ex.inject(nb, {"epochs": 3, "seeds": [0]})
    assert nb.cells[1].metadata["tags"] == ["injected-parameters"]
    assert "epochs = 3\nseeds = [0]" in nb.cells[1].source and nb.cells[2].source == "print(epochs)"
    with pytest.raises(SystemExit, match="parameters"):
        ex.inject(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), {"x": 2})


def test_only_selects_by_prefix_and_refuses_an_unknown_one():
    names = [p.name for p in ex.select(["00", "03"])]
    assert names == ["00_quickstart.ipynb", "03_consistency_loss.ipynb"]
    assert len(ex.select(None)) == len(list(ex.NOTEBOOK_DIR.glob("*.ipynb")))
    with pytest.raises(SystemExit, match="99"):
        ex.select(["99"])


def test_every_override_names_a_notebook_with_a_parameters_cell():
    for stem in ex.OVERRIDES:
        nb = nbformat.read(ex.NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)
        ex.inject(nb, ex.OVERRIDES[stem][0])  # refuses a notebook without one


@pytest.mark.slow
def test_a_small_notebook_executed_in_smoke_mode_gets_a_headed_copy_and_a_page(tmp_path):
    source = tmp_path / "src" / "99_tiny.ipynb"
    source.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os\nprint('smoke', os.environ.get('DLB_EDU_SMOKE'))")]), source)
    done = ex.execute(source, tmp_path / "out", smoke=True, command="python benchmarks/execute_notebooks.py --smoke",
                      html=True, ipynb=True)
    page = (tmp_path / "out" / "99_tiny.md").read_text()
    assert page.startswith("> **Executed copy of") and "smoke 1" in page and done["out"].endswith("99_tiny.md")
    copy = nbformat.read(tmp_path / "out" / "99_tiny.ipynb", as_version=4)
    assert copy.cells[0].cell_type == "markdown" and "smoke mode" in copy.cells[0].source
    assert "--smoke" in copy.cells[0].source and "git revision" in copy.cells[0].source
    assert copy.cells[1].outputs[0]["text"] == "smoke 1\n"
    assert (tmp_path / "out" / "99_tiny.html").read_text().count("smoke 1") >= 1
    assert [k for k, _ in done["cells"]] == [1]
    assert nbformat.read(source, as_version=4).cells[0].get("outputs") == []  # the source stays clean
