"""Where dlb-edu lives, and the line a notebook prints first: the device it will train on.

``REPO_URL`` is the repository's address, in one place. The notebooks' setup cells install the package from it on
Google Colab (``pip install "dlb-edu[notebooks] @ git+<REPO_URL>"``); they run before the package is there, so each
carries a copy, as does ``[project.urls]`` in ``pyproject.toml``: ``tests/test_colab_setup.py`` checks that every
copy equals this one. Until the repository is public the address is a placeholder, and a setup cell on Colab stops
with one line asking for it.
"""
from __future__ import annotations

import functools

REPO_URL = "https://github.com/YOUR-ACCOUNT/dlb-edu"
PLACEHOLDER_MARK = "YOUR-ACCOUNT"  # in REPO_URL while the address is not set


def repo_url_is_set(url: str = REPO_URL) -> bool:
    return PLACEHOLDER_MARK not in url


@functools.cache
def cpu_name() -> str:
    """The CPU's model name as the system reports it (``/proc/cpuinfo`` on Linux), else what ``platform`` knows:
    the name every record of where a run trained carries. Read once per process (every epoch's summary asks)."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_line(colab: bool = False) -> str:
    """The device training will use (the trainer's ``device="auto"``); on Colab without a GPU, how to get one.

    Colab starts notebooks on a CPU runtime unless told otherwise, and a course notebook run on a CPU by mistake
    is slow without saying why: so the line says what to click.
    """
    import torch

    from .config import resolve_device

    device = resolve_device("auto")
    if device.type == "cuda":
        return f"device: cuda ({torch.cuda.get_device_name(device)}), torch {torch.__version__}"
    threads = torch.get_num_threads()
    line = f"device: cpu ({threads} thread{'s' * (threads != 1)}), torch {torch.__version__}"
    if colab:
        line += (" -- this Colab runtime has no GPU: Runtime > Change runtime type > a GPU (e.g. T4) > Save, "
                 "then run the notebook again from the top")
    return line
