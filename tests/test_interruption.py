"""Kill real training processes (SIGKILL) at several points, resume them, and compare with an uninterrupted run."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
# 512 synthetic images, B = 64: 8 steps per epoch; a checkpoint every 3 steps and at every epoch end.
ARGS = ["train", "--dataset", "synthetic", "--epochs", "3", "--batch-size", "64", "--test-subset", "64",
        "--device", "cpu", "--checkpoint-every", "3", "--no-progress"]


def cli(out, *extra, kill=None):
    if kill is None:
        cmd = [sys.executable, "-m", "dlb_edu", *ARGS, "--out", str(out), *extra]
    else:
        cmd = [sys.executable, str(HERE / "kill_points.py"), *kill, "--", *ARGS, "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def final_state(out):
    state = torch.load(Path(out) / "checkpoint.pt", weights_only=True)
    history = [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in state["history"]]
    return state["model"], history


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = cli(out)
    assert proc.returncode == 0, proc.stderr
    return final_state(out)


@pytest.mark.parametrize("kill", [
    ("step", "6"),         # mid-epoch, after the checkpoint at step 3 of epoch 1
    ("step", "12"),        # mid-epoch in epoch 2
    ("after_save", "3"),   # between epochs: epoch 1's checkpoint is written, its history not yet
    ("save", "4"),         # during a checkpoint write (the one at step 3 of epoch 2)
], ids=["mid-epoch-1", "mid-epoch-2", "between-epochs", "during-checkpoint-write"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, reference, kill):
    killed = cli(tmp_path, kill=kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / "checkpoint.pt").exists()  # the last good checkpoint survived
    resumed = cli(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    model, history = final_state(tmp_path)
    ref_model, ref_history = reference
    for name, tensor in ref_model.items():
        assert torch.equal(model[name], tensor), name
    assert json.dumps(history) == json.dumps(ref_history)  # exact, NaN included
    csv_rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + 3


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    assert cli(tmp_path, kill=("step", "5")).returncode == -signal.SIGKILL
    proc = cli(tmp_path, "--resume", "--alpha", "0.5")
    assert proc.returncode == 2
    assert "different run" in proc.stderr and "alpha" in proc.stderr and "Traceback" not in proc.stderr
