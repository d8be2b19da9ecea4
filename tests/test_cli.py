import json
import subprocess
import sys

import pytest

from dlb_edu.cli import main

FAST = ["--dataset", "synthetic", "--epochs", "1", "--test-subset", "64", "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("argv,match", [
    (["train", "--temperature", "0"], "temperature must be > 0"),
    (["train", "--temperature", "-2"], "temperature must be > 0"),
    (["train", "--alpha", "-1"], "alpha must be >= 0"),
    (["train", "--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["train", "--batch-size", "100000"], "at most the training set size"),
    (["train", "--method", "dml"], "unknown method 'dml'"),
    (["train", "--arch", "resnet9"], "unknown arch 'resnet9'"),
    (["train", "--dataset", "cifar11"], "unknown dataset 'cifar11'"),
    (["train", "--dataset", "/no/such/folder"], "does not exist"),
    (["train", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "--epochs", "ten"], "invalid int value"),
    (["train", "--resume", "--out", "/no/such/run"], "nothing to resume"),
    (["fly"], "invalid choice"),
])
def test_bad_values_exit_2_with_one_line(argv, match, capsys):
    extra = FAST if argv[0] == "train" and "--dataset" not in argv else []
    code = main(argv + extra)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("dlb_edu: error: ") and match in err, err


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
