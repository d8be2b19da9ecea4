"""Drive the notebooks' widgets in a real browser: a throwaway JupyterLab server and headless Chromium.

:class:`LabServer` starts ``jupyter lab`` on a free localhost port with a token and its own config, runtime, data,
settings and workspace folders (so nothing of the user's is read or written), and always kills its process group.
:class:`NotebookPage` wraps a Playwright page showing one notebook: run all cells from the Run menu, find a slider
or button by its label, move a slider with the keyboard, and read what the outputs show, so a test can check that
moving a control changed the figure or the printed numbers. Used by ``test_browser.py``.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

# User settings of the throwaway server: no news or update checks (no network, no pop-ups), every cell attached to
# the DOM (the default windowing leaves cells out of view unrendered), and never save the open notebooks.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
}


def find_chromium() -> str | None:
    """The Chromium to drive: ``$DLB_EDU_CHROMIUM`` if set, else ``chromium`` (Debian's package) on the PATH."""
    if os.environ.get("DLB_EDU_CHROMIUM"):
        return shutil.which(os.environ["DLB_EDU_CHROMIUM"])
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _die_with_parent() -> None:
    """Run in the server's process before it starts: on Linux, have it terminated should pytest itself be killed
    (then no fixture finalizer runs). Its kernels exit by themselves once it is gone."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``jupyter lab`` serving ``root_dir``, its kernels started with ``kernel_env`` added to the environment.

    Everything it writes (settings, runtime files, its log) goes under ``work_dir``.
    """

    def __init__(self, root_dir: Path, work_dir: Path, kernel_env: dict[str, str] | None = None):
        self.root_dir, self.work_dir = Path(root_dir), Path(work_dir)
        self.kernel_env = kernel_env or {}
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.log_path = self.work_dir / "jupyter-server.log"
        self.proc: subprocess.Popen | None = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The kernels inherit the server's environment: the test session's MPLBACKEND=Agg would stop inline figures.
        env.pop("MPLBACKEND", None)
        env.update(self.kernel_env)
        for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                         # The user data folder only: the venv's share/jupyter (widgets' labextension, the python3
                         # kernel) is still found through sys.prefix.
                         ("JUPYTER_DATA_DIR", "data"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                         ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")):
            env[var] = str(self.work_dir / sub)
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        return env

    def _write_settings(self) -> None:
        for plugin, values in LAB_SETTINGS.items():
            path = self.work_dir / "settings" / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))

    def start(self, timeout: float = 60, tries: int = 3) -> None:
        """Start the server and wait until it answers; on a fresh free port if another process took this one."""
        for _ in range(tries - 1):
            try:
                return self._start(timeout)
            except RuntimeError as e:
                if "already in use" not in str(e):
                    raise
                self.port = free_port()
        return self._start(timeout)

    def _start(self, timeout: float) -> None:
        env = self._env()
        self._write_settings()
        cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={self.root_dir}",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", "--ServerApp.open_browser=False",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
               "--ServerApp.allow_root=True"]  # CI containers run as root
        log = open(self.log_path, "wb")
        # A new session (process group) so stop() can kill the server and anything it started in one go.
        self.proc = subprocess.Popen(cmd, cwd=self.root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url(f"api/status?token={self.token}"), timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"jupyter lab did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _api(self, method: str, path: str):
        req = urllib.request.Request(self.url(f"api/{path}"), method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            body = r.read()
        return json.loads(body) if body else None

    def wait_kernel_done(self, path: str, timeout: float = 120) -> None:
        """Block until the kernel of the notebook ``path`` has handled every request sent to it so far.

        A second client sends a silent ``pass``: the kernel answers it only after the requests queued before it,
        a widget's callback included. (The status bar's Idle is no such signal: it shows Idle while a Run callback
        still trains.)
        """
        from jupyter_client import BlockingKernelClient

        sessions = [s for s in self._api("GET", "sessions") if s["path"] == path]
        if not sessions:
            raise RuntimeError(f"no kernel session for {path}")
        session = sessions[0]
        client = BlockingKernelClient(
            connection_file=str(self.work_dir / "runtime" / f"kernel-{session['kernel']['id']}.json"))
        client.load_connection_file()
        client.start_channels(iopub=False, stdin=False, hb=False, control=False)
        try:
            client.execute("pass", silent=True, store_history=False, reply=True, timeout=timeout)
        finally:
            client.stop_channels()

    def stop(self) -> None:
        """Terminate the server's process group (the server shuts its kernels down); kill it after 15 s.

        A kernel runs in a session of its own, and exits by itself within a second once the server is gone.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


# JavaScript run in the page. Each returns plain JSON.

# What a code cell's outputs show, leaving out the controls (a slider's readout changes by itself when it moves):
# a hash of each image's source, and the text of everything else (printed lines, HTML labels).
_OUTPUT_STATE_JS = """cell => {
    const hash = s => { let h = 0; for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
                        return s.length + ':' + h; };
    const area = cell.querySelector('.jp-Cell-outputArea') || cell;
    const clone = area.cloneNode(true);
    clone.querySelectorAll('.widget-slider, .widget-readout, button, input, select, .widget-toggle-buttons')
         .forEach(e => e.remove());
    return {text: clone.textContent, images: Array.from(area.querySelectorAll('img')).map(img => hash(img.src))};
}"""

_PROMPTS_JS = """panel => Array.from(panel.querySelectorAll('.jp-CodeCell')).map(
    c => (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '')"""

# JupyterLab shows an error output like stderr, as text with the stderr MIME type: a traceback, or for a SyntaxError
# just the "...Error: ..." line. Warnings on stderr are allowed. The two messages are ipywidgets' own.
_ERRORS_JS = """panel => {
    const found = [];
    panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').forEach(o => {
        if (/Traceback|Error\\b|KeyboardInterrupt/.test(o.textContent)) found.push(o.textContent);
    });
    const all = panel.textContent;
    for (const bad of ['Error displaying widget', 'Error rendering output'])
        if (all.includes(bad)) found.push(bad);
    return Array.from(new Set(found)).map(t => t.slice(0, 3000));
}"""


class NotebookPage:
    """A Playwright page showing one notebook in JupyterLab."""

    def __init__(self, page, server: LabServer, name: str):
        self.page, self.server, self.name = page, server, name
        self.panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first
        # The status bar's kernel item, e.g. "Python 3 (ipykernel) | Idle" (not "No Kernel | Initializing").
        self.kernel_idle = page.locator("#jp-main-statusbar .jp-StatusBar-TextItem",
                                        has_text=re.compile(r"^(?!No Kernel).+ \| Idle$")).first

    def open(self, timeout: float = 60) -> None:
        """Open the notebook (in a fresh workspace), and wait until its kernel is started and idle."""
        self.page.goto(self.server.url(f"lab/tree/{self.name}?token={self.server.token}&reset"),
                       timeout=timeout * 1000)
        self.panel.locator(".jp-Notebook").wait_for(state="visible", timeout=timeout * 1000)
        self.kernel_idle.wait_for(state="visible", timeout=timeout * 1000)

    def run_all(self, timeout: float = 120) -> None:
        """Run > Run All Cells; wait until every code cell has an execution count.

        Stops early when a cell shows an error (JupyterLab then leaves the cells below unrun).
        """
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click()
        self.page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
        deadline = time.monotonic() + timeout
        while True:
            prompts = self.panel.evaluate(_PROMPTS_JS)
            if prompts and all(re.fullmatch(r"\s*\[\d+\]:\s*", p) for p in prompts):
                break
            errors = self.errors()
            if errors:
                raise AssertionError(f"{self.name}: a cell failed while running all cells:\n" + "\n".join(errors))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: cells not all run after {timeout} s; prompts {prompts}")
            time.sleep(0.25)

    def wait_widgets_rendered(self, timeout: float = 30) -> None:
        """Wait until no widget shows "Loading widget..." any more."""
        deadline = time.monotonic() + timeout
        while "Loading widget..." in self.panel.text_content():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: a widget still shows 'Loading widget...' after {timeout} s")
            time.sleep(0.2)

    def errors(self) -> list[str]:
        """Tracebacks and error outputs in the cells, and widgets that could not be displayed."""
        return self.panel.evaluate(_ERRORS_JS)

    def log_console_errors(self, timeout: float = 10) -> list[str]:
        """Tracebacks in the notebook's log console, where a widget callback's uncaught exception goes.

        Opens the log console (a panel below the notebook) only when the status bar says it has entries.
        """
        item = self.page.locator(".jp-LogConsoleStatusItem")
        if item.count() == 0 or "lm-mod-hidden" in (item.get_attribute("class") or ""):
            return []
        item.click()
        console = self.page.locator(".jp-LogConsolePanel")
        console.wait_for(state="visible", timeout=timeout * 1000)
        texts = console.locator(".jp-OutputArea-output").all_text_contents()
        return [t[:3000] for t in texts if "Traceback" in t]

    def _slider_query(self, label: str):
        return self.page.locator(".widget-slider").filter(
            has=self.page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")))

    def widget_cell(self, label: str, timeout: float = 30):
        """The first code cell whose outputs hold a slider labelled ``label``, once that slider is shown."""
        cell = self.panel.locator(".jp-CodeCell").filter(has=self._slider_query(label)).first
        cell.wait_for(state="visible", timeout=timeout * 1000)
        return cell

    def slider(self, label: str, within):
        """The first ipywidgets slider in ``within`` whose description is exactly ``label``."""
        return within.locator(".widget-slider").filter(
            has=self.page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))).first

    def button(self, label: str, within):
        """The first ipywidgets button in ``within`` whose text is exactly ``label``."""
        return within.locator("button.jupyter-button", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")).first

    def readout(self, slider) -> str:
        return slider.locator(".widget-readout").inner_text().strip()

    def move_slider(self, slider, key: str = "ArrowRight") -> tuple[str, str]:
        """Focus the slider's handle and press ``key`` once (the other way if the slider is at that end).

        One step, so one update goes to the kernel: a user's drag does the same, the handle sets the model's value
        and the kernel calls the slider's observers. Returns the readout before and after.
        """
        before = self.readout(slider)
        handle = slider.locator(".noUi-handle").first
        for k in (key, {"ArrowRight": "ArrowLeft", "ArrowLeft": "ArrowRight"}[key]):
            handle.focus()
            handle.press(k)
            after = self.readout(slider)
            if after != before:
                break
        return before, after

    def output_state(self, cell) -> dict:
        return cell.evaluate(_OUTPUT_STATE_JS)

    def settle(self, cell, timeout: float = 120, quiet: float = 0.5) -> dict:
        """Wait until the kernel has handled everything sent so far and the cell's outputs then stay the same for
        ``quiet`` seconds (the last outputs may still be on their way to the page). Returns the outputs' state."""
        time.sleep(0.2)  # let the page's last widget message reach the kernel before the one that waits behind it
        self.server.wait_kernel_done(self.name, timeout)
        deadline = time.monotonic() + timeout
        last, since = self.output_state(cell), time.monotonic()
        while time.monotonic() - since < quiet:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: the outputs kept changing for {timeout} s")
            time.sleep(0.1)
            state = self.output_state(cell)
            if state != last:
                last, since = state, time.monotonic()
        return last

    def wait_output_change(self, cell, before: dict, what: str, timeout: float = 120, grace: float = 5) -> dict:
        """The cell's settled outputs once they differ from ``before``; fails when, ``grace`` seconds after the
        kernel handled the interaction (``what``, for the message), they are still the same."""
        give_up = None
        while True:
            state = self.settle(cell, timeout)
            if state != before:
                return state
            give_up = give_up or time.monotonic() + grace
            if time.monotonic() > give_up:
                raise AssertionError(f"{self.name}: the output did not change after {what}; it still shows:\n"
                                     f"{state['text'][:1500]}")
            time.sleep(0.5)


def press_slider_key(slider, key: str) -> tuple[str, str]:
    """Focus a slider's handle and press ``key`` (e.g. "End": the slider's maximum); return the readout before
    and after."""
    readout = slider.locator(".widget-readout")
    before = readout.inner_text().strip()
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    handle.press(key)
    return before, readout.inner_text().strip()


def wait_for_output_text(notebook: NotebookPage, cell, pattern: str, timeout: float = 120) -> dict:
    """Poll a cell's outputs (see :meth:`NotebookPage.output_state`) until their text matches the regular
    expression ``pattern``; return that state. Fails after ``timeout`` seconds with the text it last saw."""
    deadline = time.monotonic() + timeout
    while True:
        state = notebook.output_state(cell)
        if re.search(pattern, state["text"]):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{notebook.name}: no {pattern!r} in the outputs after {timeout} s; they show:\n"
                                 f"{state['text'][:1500]}")
        time.sleep(0.25)
