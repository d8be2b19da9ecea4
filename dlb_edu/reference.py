"""The committed reference results: real runs the notebooks show beside their own (smoke or short) runs."""
from __future__ import annotations

from pathlib import Path

DEFAULT_DIR = Path("results") / "reference"


def run_dir(root: Path, preset: str, method: str, forward: str | None, seed: int) -> Path:
    """``root/<preset>/<method>[-<forward>]/seed<seed>``: forward None means the preset's own."""
    name = method if forward is None else f"{method}-{forward}"
    return Path(root) / preset / name / f"seed{seed}"
