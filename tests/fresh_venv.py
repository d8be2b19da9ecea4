"""A fresh virtual environment for install tests, offline and in seconds.

Installing torch into a new venv would download gigabytes. Instead the new venv gets a ``.pth`` file naming a folder
of links to every entry of the test interpreter's site-packages except dlb-edu's own (its editable hook included):
torch, pip, setuptools and the other dependencies are importable and count as installed for pip, while dlb-edu is
not there until the test installs it. pip runs with ``--no-index`` (``PIP_NO_INDEX``), so nothing is downloaded.
"""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN = ("dlb_edu", "dlb-edu", "__editable__")  # entries of the shared site-packages the new venv must not see


def fresh_venv(path: Path) -> Path:
    """Create a venv at ``path`` that sees the shared dependencies but not dlb-edu; return its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    shared = Path(sysconfig.get_paths()["purelib"])
    deps = path / "shared-site-packages"
    deps.mkdir()
    for entry in shared.iterdir():
        if not entry.name.lower().startswith(OWN) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "shared-site-packages.pth").write_text(f"{deps}\n")
    return python


def clean_env(tmp: Path, **extra: str) -> dict:
    """The environment of a learner's shell: no PYTHONPATH to the checkout, no data folder, pip offline."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DLB_EDU_DATA") and not k.startswith("PIP_")}
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1",
               XDG_CACHE_HOME=str(tmp / "cache"), OMP_NUM_THREADS="1", **extra)
    return env


def run(cmd: list, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure the assertion shows its output."""
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def git_files(root: Path = ROOT) -> list[str]:
    """The checkout's files as git sees them: tracked and untracked-but-not-ignored, present on disk."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                         capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (root / f).is_file()]
