"""The notebooks' widgets in a real browser: JupyterLab in headless Chromium, driven by Playwright.

For notebooks 03 and 04: open a copy (the committed notebooks are never saved with outputs) in JupyterLab, run all
cells from the Run menu, check that every widget rendered and no cell shows an error, then move the T and alpha
sliders with the keyboard and check that the figure changed after each move. In 04 the sliders only set the next
run (and epochs goes down to 1, for time), so pressing Run must redraw, with the new T and alpha in the figure's
title. Last, no widget callback may have raised (those tracebacks go to JupyterLab's log console, not to a cell).
The kernels run in smoke mode (DLB_EDU_SMOKE=1).

For a failed run, test-artifacts/browser/ holds a screenshot of every step (``*-FAILED.png`` for the step that
failed), ``<notebook>-steps.txt`` (the steps with their times, and the browser console's errors) and the server's
log. With DLB_EDU_SCREENSHOT_DIR set, each notebook's widgets are also saved there as ``widgets_<notebook>.png``
(the README's picture of notebook 03).

Needs the ``playwright`` package and a Chromium (Debian's ``chromium``, or $DLB_EDU_CHROMIUM); without them the
test is skipped, except when CI=true, where it fails.
"""
from __future__ import annotations

import itertools
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from browser_helpers import (CHROMIUM_ARGS, LabServer, NotebookPage, find_chromium, press_slider_key,
                             wait_for_output_text)

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the test extra not installed
    sync_playwright = None

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
VIEWPORT = {"width": 1600, "height": 1000}


@dataclass(frozen=True)
class Move:
    """One interaction: the slider ``label`` moved one step with ``key``, or (no key) the button ``label``
    pressed. ``redraws``: the cell's figure must change."""
    label: str
    key: str | None = None
    redraws: bool = True


INTERACTIONS = {
    "03_consistency_loss.ipynb": (Move("T", "ArrowRight"), Move("alpha", "ArrowLeft")),
    "04_training_stability.ipynb": (Move("T", "ArrowRight", redraws=False),
                                    Move("alpha", "ArrowLeft", redraws=False),
                                    Move("epochs", "ArrowLeft", redraws=False), Move("Run")),
}


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so the browser test must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    chromium = find_chromium()
    if chromium is None:
        _unavailable(f"DLB_EDU_CHROMIUM={os.environ['DLB_EDU_CHROMIUM']} is not an executable"
                     if os.environ.get("DLB_EDU_CHROMIUM") else "no chromium on the PATH (apt-get install chromium)")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=60_000)
        yield browser
        browser.close()
    finally:
        pw.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving copies of the notebooks; its kernels run in fast mode."""
    root = tmp_path_factory.mktemp("notebooks")
    for name in INTERACTIONS:
        shutil.copy(ROOT / "notebooks" / name, root / name)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = LabServer(root, tmp_path_factory.mktemp("jupyter"), kernel_env={"DLB_EDU_SMOKE": "1"})
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if server.log_path.exists():
            shutil.copy(server.log_path, ARTIFACTS / "jupyter-server.log")


@pytest.mark.parametrize("name", list(INTERACTIONS), ids=lambda name: name.split("_")[0])
def test_widgets_render_and_respond_in_jupyterlab(name, browser, lab):
    stem = name.removesuffix(".ipynb")
    for old in ARTIFACTS.glob(f"{stem}-*"):
        old.unlink()
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(30_000)
    steps = open(ARTIFACTS / f"{stem}-steps.txt", "w")
    page.on("console", lambda msg: msg.type == "error" and print(f"console error: {msg.text}", file=steps))
    page.on("pageerror", lambda exc: print(f"page error: {exc}", file=steps))
    start, numbers = time.monotonic(), itertools.count()

    def shot(step: str) -> None:
        print(f"{time.monotonic() - start:6.1f} s  {step}", file=steps, flush=True)
        page.screenshot(path=ARTIFACTS / f"{stem}-{next(numbers):02d}-{step}.png")

    nb = NotebookPage(page, lab, name)
    try:
        nb.open()
        nb.run_all(timeout=180)
        nb.wait_widgets_rendered()
        shot("ran-all")
        errors = nb.errors()
        assert not errors, f"{name}: errors after running all cells:\n" + "\n".join(errors)
        cell = nb.widget_cell("T")
        cell.scroll_into_view_if_needed()
        state = nb.settle(cell)
        assert state["images"], f"{name}: the cell with the sliders shows no figure:\n{state['text'][:1500]}"
        shot("widgets")
        if os.environ.get("DLB_EDU_SCREENSHOT_DIR"):
            out = Path(os.environ["DLB_EDU_SCREENSHOT_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            cell.locator(".jp-Cell-outputArea").screenshot(path=out / f"widgets_{stem}.png")

        for move in INTERACTIONS[name]:
            if move.key:
                before, after = nb.move_slider(nb.slider(move.label, within=cell), move.key)
                assert after != before, f"{name}: slider {move.label} did not move from {before}"
                step = f"{move.label}-{before}-to-{after}"
            else:
                nb.button(move.label, within=cell).click()
                step = f"pressed-{move.label}"
            if move.redraws:
                new = nb.wait_output_change(cell, state, step, timeout=120)
                assert new["images"] and new["images"] != state["images"], (
                    f"{name}: after {step} the text changed but not the figure:\n{new['text'][:1500]}")
            else:
                new = nb.settle(cell)
            state = new
            shot(step)

        nb.wait_widgets_rendered(timeout=5)
        errors = nb.errors()
        assert not errors, f"{name}: errors after moving the widgets:\n" + "\n".join(errors)
        errors = nb.log_console_errors()
        assert not errors, f"{name}: a widget callback raised:\n" + "\n".join(errors)
        shot("end")
    except BaseException:
        try:
            shot("FAILED")
        except Exception:  # noqa: BLE001 - keep the test's own error
            pass
        raise
    finally:
        page.close()
        steps.close()


LIVE_LAB = "04b_live_lab.ipynb"


def test_live_lab_takes_alpha_mid_run_and_stops_in_jupyterlab(browser, lab):
    """Notebook 04b: Start a run (epochs at the slider's maximum, so it lasts), move alpha while it trains and see
    the change listed under a redrawn figure, press Stop and see the status say so; no error in the cells and no
    traceback in the log console (where the background threads' and callbacks' exceptions would go)."""
    shutil.copy(ROOT / "notebooks" / LIVE_LAB, lab.root_dir / LIVE_LAB)
    stem = LIVE_LAB.removesuffix(".ipynb")
    for old in ARTIFACTS.glob(f"{stem}-*"):
        old.unlink()
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(30_000)
    nb = NotebookPage(page, lab, LIVE_LAB)
    try:
        nb.open()
        nb.run_all(timeout=240)
        nb.wait_widgets_rendered()
        assert not nb.errors(), "errors after running all cells:\n" + "\n".join(nb.errors())
        cell = nb.widget_cell("alpha")
        cell.scroll_into_view_if_needed()
        assert nb.output_state(cell)["images"], "the lab shows no figure before Start"
        _, epochs = press_slider_key(nb.slider("epochs", within=cell), "End")
        assert epochs == "60", f"the epochs slider went to {epochs}, not its maximum"

        nb.button("Start", within=cell).click()
        running = wait_for_output_text(nb, cell, r"running: step \d+", timeout=120)
        before, after = nb.move_slider(nb.slider("alpha", within=cell), "ArrowRight")
        assert (before, after) == ("1.00", "1.10"), (before, after)
        changed = wait_for_output_text(nb, cell, r"changes: step \d+: alpha 1 -> 1\.1", timeout=120)
        assert changed["images"] and changed["images"] != running["images"], "the figure was not redrawn"
        page.screenshot(path=ARTIFACTS / f"{stem}-alpha-changed.png")

        nb.button("Stop", within=cell).click()
        wait_for_output_text(nb, cell, r"stopped after step \d+", timeout=120)
        page.screenshot(path=ARTIFACTS / f"{stem}-stopped.png")
        assert not nb.errors(), "errors after the run:\n" + "\n".join(nb.errors())
        errors = nb.log_console_errors()
        assert not errors, "a callback or a background thread raised:\n" + "\n".join(errors)
    except BaseException:
        try:
            page.screenshot(path=ARTIFACTS / f"{stem}-FAILED.png")
        except Exception:  # noqa: BLE001 - keep the test's own error
            pass
        raise
    finally:
        page.close()
