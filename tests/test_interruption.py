"""Real training processes, killed (SIGKILL) at chosen points, then resumed; the run folder's safety rules with real
processes: a run is never silently replaced, ``--force`` leaves a resumable run at every kill point, a second process
is refused, and no checkpoint holds non-finite weights."""
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlb_edu.cli import main
from resume_checks import assert_same_weights

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
# 512 synthetic images, B = 64: 8 steps per epoch; a checkpoint every 3 steps and at every epoch end.
ARGS = ["train", "--dataset", "synthetic", "--epochs", "3", "--batch-size", "64", "--test-subset", "64",
        "--device", "cpu", "--checkpoint-every", "3", "--no-progress"]


def cli(out, *extra, kill=None, args=ARGS):
    """Run the CLI in a new process (``kill``: a kill point of kill_points.py); return the finished process."""
    if kill is None:
        cmd = [sys.executable, "-m", "dlb_edu", *args, "--out", str(out), *extra]
    else:
        cmd = [sys.executable, str(HERE / "kill_points.py"), *kill, "--", *args, "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def in_process(capsys, out, *extra, args=ARGS) -> tuple[int, str]:
    """Run the CLI in this process (no kill needed: quicker than a new process); return its exit code and stderr."""
    capsys.readouterr()
    code = main([*args, "--out", str(out), *extra])
    return code, capsys.readouterr().err


def final_state(out):
    state = torch.load(Path(out) / "checkpoint.pt", weights_only=True)
    history = [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in state["history"]]
    return state["model"], history


def one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


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
    assert_same_weights(model, ref_model)
    assert json.dumps(history) == json.dumps(ref_history)  # exact, NaN included
    assert len((tmp_path / "history.csv").read_text().strip().splitlines()) == 1 + 3
    assert not list(tmp_path.glob(".*.tmp"))  # the half-written temporary file of the kill is gone


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path, capsys):
    assert cli(tmp_path, kill=("step", "5")).returncode == -signal.SIGKILL
    err = one_error_line(*in_process(capsys, tmp_path, "--resume", "--alpha", "0.5"))
    assert "different run" in err and "alpha" in err


# ---------------------------------------------------------------------------------------------------------------
# The run folder's safety rules, with real processes
# ---------------------------------------------------------------------------------------------------------------

ONE_EPOCH = [*ARGS, "--epochs", "1"]  # the last --epochs counts: 8 steps, checkpoints after step 3, 6 and 8


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run (temperature 3), to copy into each test's folder."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([*ONE_EPOCH, "--out", str(out)]) == 0
    return out


def copy_of(finished, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def test_a_finished_run_without_its_config_json_is_not_replaced(tmp_path, finished, capsys):
    out = copy_of(finished, tmp_path)
    (out / "config.json").unlink()
    before = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "history.csv", "summary.json")}
    err = one_error_line(*in_process(capsys, out, "--temperature", "4", args=ONE_EPOCH))
    assert "holds a different run (temperature: 3.0 -> 4.0)" in err
    assert "already holds this run" in one_error_line(*in_process(capsys, out, args=ONE_EPOCH))
    assert {name: (out / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("kill,survivor", [
    (("step", "2"), "old"),          # before the new run's first checkpoint
    (("save", "1"), "old"),          # while its first checkpoint is being written
    (("after_write", "1"), "new"),   # its checkpoint is in place, config.json is still the old run's
    (("after_write", "2"), "new"),   # config.json replaced, history.csv still the old run's
    (("after_write", "3"), "new"),   # history.csv replaced too
], ids=["before-first-checkpoint", "during-first-checkpoint", "after-checkpoint", "after-config", "after-history"])
def test_force_leaves_either_the_old_or_the_new_run_resumable_at_every_kill_point(tmp_path, finished, capsys, kill,
                                                                                   survivor):
    out = copy_of(finished, tmp_path)
    new = ("--temperature", "4")
    assert cli(out, *new, "--force", kill=kill, args=ONE_EPOCH).returncode == -signal.SIGKILL
    old_resume, new_resume = (), new
    refused, resumed = (new_resume, old_resume) if survivor == "old" else (old_resume, new_resume)
    assert "holds a different run" in one_error_line(*in_process(capsys, out, *refused, "--resume", args=ONE_EPOCH))
    code, err = in_process(capsys, out, *resumed, "--resume", args=ONE_EPOCH)
    assert code == 0, err
    temperature = json.loads((out / "config.json").read_text())["temperature"]
    assert temperature == (3.0 if survivor == "old" else 4.0)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["config"]["temperature"] == temperature
    assert len((out / "history.csv").read_text().strip().splitlines()) == 2  # header + the one epoch


def test_a_second_process_on_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    cmd = [sys.executable, str(HERE / "kill_points.py"), "pause", "2", "--", *ARGS, "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "paused"  # it holds the folder, mid-epoch
        err = one_error_line(*in_process(capsys, out, "--resume"))  # this process is the second one
        assert f"another process (pid {first.pid}) is using {out}" in err
    finally:
        first.kill()
        first.wait(timeout=60)
    assert in_process(capsys, out, "--resume")[0] == 0  # the lock died with its process


def test_no_checkpoint_with_non_finite_weights_is_ever_written(tmp_path, capsys):
    # lr 1e30: the first step's update is huge but finite, a later loss or weight is not.
    code, err = in_process(capsys, tmp_path, "--lr", "1e30", "--checkpoint-every", "1")
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("dlb_edu: training stopped: the ")  # loss, or weights, no longer finite
    kept = re.search(rf"the last finite checkpoint is {re.escape(str(tmp_path / 'checkpoint.pt'))} "
                     rf"\(epoch 1, step (\d+)\)$", err.strip())
    assert kept, err
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert state["ranks"][0]["sampler"]["step"] == int(kept.group(1))
    assert all(torch.isfinite(t).all() for t in state["ranks"][0]["stats"]["step_losses"])


# ---------------------------------------------------------------------------------------------------------------
# A comparison forced over an old one, killed between its methods
# ---------------------------------------------------------------------------------------------------------------

# baseline then DLB, one epoch each: the baseline's 8 steps, then DLB's (checkpoints after each one's step 3 and 6).
COMPARE = ["compare", "--dataset", "synthetic", "--epochs", "1", "--batch-size", "64", "--test-subset", "64",
           "--device", "cpu", "--checkpoint-every", "3", "--no-progress"]
NEW = ("--temperature", "4")


def method_states(out) -> dict:
    return {m: torch.load(Path(out) / m / "checkpoint.pt", weights_only=True) for m in ("baseline", "dlb")}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """The old comparison (temperature 3), and an uninterrupted one with the new options, in their own folders."""
    root = tmp_path_factory.mktemp("compared")
    for name, extra in (("old", ()), ("new", NEW)):
        proc = cli(root / name, *extra, args=COMPARE)
        assert proc.returncode == 0, proc.stderr
    return root


@pytest.mark.parametrize("kill,dlb_was_replaced", [
    (("step", "9"), False),    # DLB's first step: the baseline is replaced and done, DLB's folder holds its old run
    (("step", "13"), True),    # DLB's fifth step: its first checkpoint (after step 3) has replaced its old run
], ids=["before-dlb-started", "dlb-mid-epoch"])
def test_a_killed_compare_force_continues_with_resume_method_by_method(tmp_path, compared, capsys, kill,
                                                                      dlb_was_replaced):
    out = tmp_path / "cmp"
    shutil.copytree(compared / "old", out)
    old_dlb = (out / "dlb" / "checkpoint.pt").read_bytes()
    assert cli(out, *NEW, "--force", kill=kill, args=COMPARE).returncode == -signal.SIGKILL
    baseline_after_kill = (out / "baseline" / "checkpoint.pt").read_bytes()
    assert method_states(out)["baseline"]["config"]["temperature"] == 4.0  # the baseline's new run is finished
    assert ((out / "dlb" / "checkpoint.pt").read_bytes() == old_dlb) is not dlb_was_replaced
    # The old options cannot continue what is now a half-replaced comparison; the new ones continue it.
    assert "holds a different run" in one_error_line(*in_process(capsys, out, "--resume", args=COMPARE))
    resumed = cli(out, *NEW, "--resume", args=COMPARE)  # a new process, as the reference ran: same threads
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "baseline" / "checkpoint.pt").read_bytes() == baseline_after_kill  # continued, not retrained
    assert not (out / "dlb" / ".replace.json").exists()
    resumed, reference = method_states(out), method_states(compared / "new")
    for m in ("baseline", "dlb"):
        assert resumed[m]["config"] == reference[m]["config"]
        assert_same_weights(resumed[m]["model"], reference[m]["model"])
        assert len((out / m / "history.csv").read_text().strip().splitlines()) == 2  # header + the one epoch
        assert json.loads((out / m / "config.json").read_text())["temperature"] == 4.0
