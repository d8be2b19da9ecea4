import json
import subprocess
import sys

import pytest

from dlb_edu.cli import main

FAST = ["--dataset", "synthetic", "--epochs", "1", "--test-subset", "64", "--device", "cpu", "--no-progress"]


def test_no_traceback_from_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "dlb_edu", "train", "--temperature", "0", *FAST],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "dlb_edu: error: temperature must be > 0, got 0.0"


def test_train_writes_outputs_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    assert main(["train", *FAST, "--out", str(out)]) == 2  # refuses to overwrite silently
    assert main(["train", *[a if a != "1" else "2" for a in FAST], "--out", str(out), "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["method"] == "dlb"
    assert len((out / "history.csv").read_text().strip().splitlines()) == 3


def test_compare_prints_a_table_and_saves_curves(tmp_path, capsys):
    assert main(["compare", *FAST, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "dlb" in out and "final acc" in out
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    for method in ("baseline", "dlb"):
        assert json.loads((tmp_path / method / "summary.json").read_text())["method"] == method
