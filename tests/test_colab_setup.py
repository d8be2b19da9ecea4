"""The notebooks' setup cell: one address, a clear stop while it is a placeholder, and on (faked) Colab an install
that lets the next cells import the package and load the mini set.

Colab is faked by putting a ``google.colab`` module in ``sys.modules`` before the cell runs, which is all the cell
looks at. The install test points ``REPO_URL`` at a ``file://`` clone of the checkout's committed HEAD and runs the
cell in a fresh venv that reuses the test interpreter's dependencies (see ``fresh_venv``): the real
``pip install "dlb-edu[notebooks] @ git+..."`` runs, offline.
"""
import contextlib
import io
import re
import subprocess
import sys
import time

import nbformat
import pytest
import torch

from dlb_edu import project
from fresh_venv import ROOT, clean_env, fresh_venv, run

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ADDRESS = re.compile(r'^REPO_URL = "([^"]*)"', re.M)
FAKE_COLAB = ("import sys, types\n"
              "sys.modules['google'] = types.ModuleType('google')\n"
              "sys.modules['google.colab'] = sys.modules['google'].colab = types.ModuleType('google.colab')\n")


def code_cells(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def setup_cell(address: str | None = None) -> str:
    source = code_cells(NOTEBOOKS[0])[0]
    return source if address is None else ADDRESS.sub(f'REPO_URL = "{address}"', source)


def test_every_notebook_opens_with_the_same_setup_cell():
    assert len(NOTEBOOKS) == 8  # 00-06 and 04b
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        assert cells[0].cell_type == "markdown" and cells[1].cell_type == "code", path.name  # right after the intro
        assert cells[1].source == setup_cell(), f"{path.name}: its setup cell differs from {NOTEBOOKS[0].name}'s"


def test_the_repository_address_has_one_value_everywhere():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["urls"]["Repository"] == project.REPO_URL, "pyproject.toml [project.urls]"
    for path in NOTEBOOKS:
        assert ADDRESS.findall(code_cells(path)[0]) == [project.REPO_URL], f"{path.name}: REPO_URL of its setup cell"
    assert f'"{project.PLACEHOLDER_MARK}" in REPO_URL' in setup_cell()  # the cell knows the placeholder


def test_a_placeholder_address_stops_the_cell_on_colab_with_one_line(tmp_path):
    if project.repo_url_is_set():
        pytest.skip("the address is set: no placeholder to stop on")
    script = tmp_path / "cell.py"
    script.write_text(FAKE_COLAB + "import subprocess\n"
                      "subprocess.run = lambda *a, **k: sys.exit('the cell ran ' + repr(a))\n"
                      f"exec({setup_cell()!r})\n")
    # -S: no site-packages, so dlb_edu is not importable and the cell wants to install it.
    done = subprocess.run([sys.executable, "-S", str(script)], cwd=tmp_path, env=clean_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == ["REPO_URL above is a placeholder: set it to the dlb-edu repository's git "
                                        "address (e.g. https://github.com/<account>/dlb-edu), then run this cell "
                                        "again"]


def test_outside_colab_the_cell_only_prints_the_device(monkeypatch):
    assert "google.colab" not in sys.modules
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"the cell ran {a}"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(setup_cell(), {})
    assert out.getvalue().splitlines() == [project.device_line()]
    assert out.getvalue().startswith("device: cuda" if torch.cuda.is_available() else "device: cpu")


def test_device_line_on_a_cpu_colab_runtime_says_how_to_switch_to_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert project.device_line(colab=True).startswith("device: cpu")
    assert "Runtime > Change runtime type" in project.device_line(colab=True)
    assert "Runtime" not in project.device_line(colab=False)  # elsewhere there is no such menu


def test_device_line_on_a_gpu_runtime_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    assert project.device_line(colab=True).startswith("device: cuda (Tesla T4)")
    assert "Runtime" not in project.device_line(colab=True)


@pytest.mark.slow
def test_on_colab_the_cell_installs_from_the_address_and_the_next_cells_load_the_mini_set(tmp_path):
    start = time.perf_counter()
    env = clean_env(tmp_path, PIP_NO_BUILD_ISOLATION="0")  # "0" means no isolation: build with the shared setuptools
    clone = tmp_path / "dlb-edu.git"
    run(["git", "clone", "-q", "--no-hardlinks", ROOT, clone], cwd=tmp_path, env=env)
    address = f"file://localhost{clone}"  # with a host: the pip of Python 3.11's venv rejects file:///path
    python = fresh_venv(tmp_path / "venv")
    next_cells = [code_cells(path)[1] for path in NOTEBOOKS]  # each notebook's imports
    script = tmp_path / "colab.py"
    script.write_text(
        FAKE_COLAB +
        f"exec({setup_cell(address)!r}, {{}})\n"
        f"for source in {next_cells!r}:\n"
        "    exec(source, {})\n"
        "import dlb_edu\n"
        "from dlb_edu.data import load_dataset\n"
        "print('package:', dlb_edu.__file__)\n"
        "print('mini set:', tuple(load_dataset('cifar10-mini').x_train.shape))\n"
        "import subprocess\n"  # a second run of the setup cell finds the package and installs nothing
        "subprocess.run = lambda *a, **k: sys.exit('installed again: ' + repr(a))\n"
        f"exec({setup_cell(address)!r}, {{}})\n")
    content = tmp_path / "content"  # Colab's working folder
    content.mkdir()
    done = run([python, script], cwd=content, env=env, timeout=600)
    lines = done.stdout.splitlines()
    device = [line for line in lines if line.startswith("device:")]
    assert len(device) == 2
    if torch.cuda.is_available():
        assert device[0].startswith("device: cuda")
    else:
        assert device[0].startswith("device: cpu") and "Runtime > Change runtime type" in device[0]
    package = next(line for line in lines if line.startswith("package:")).split(": ", 1)[1]
    assert package.startswith(str(tmp_path / "venv")), package  # installed, not found in the checkout
    assert "mini set: (4000, 3, 32, 32)" in lines
    print(f"faked-Colab setup cell, install and imports in {time.perf_counter() - start:.1f} s; "
          f"it printed {device[0]!r}")
