"""The run folder in one process: atomic writes with unique temporary names, the lock, and a forced replacement
that leaves the old run in place until the new run's first checkpoint. (Real processes: test_interruption.py.)"""
import json
import subprocess
import sys
import threading
import time

import pytest
import torch

from dlb_edu.config import TrainConfig
from dlb_edu.errors import ConfigError
from dlb_edu.run_dir import atomic_write, lock_folder, read_history_csv
from dlb_edu.train import Trainer


def tiny(**overrides):
    return TrainConfig(**{**dict(dataset="synthetic", epochs=1, batch_size=64, device="cpu", probe_size=16,
                                 test_subset=64), **overrides})


def test_concurrent_writes_of_one_file_use_their_own_temporary_files(tmp_path):
    target, errors = tmp_path / "f.txt", []

    def slow_write(text):
        def write(p):
            p.write_text(text)
            time.sleep(0.2)  # both writers are between write and rename at once
        try:
            atomic_write(target, write)
        except Exception as e:  # the shared temporary name of old made one rename fail
            errors.append(e)

    threads = [threading.Thread(target=slow_write, args=(t,)) for t in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and target.read_text() in ("first", "second")
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def broken(p):
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_trainers_of_one_process_share_the_lock_and_another_process_is_refused(tmp_path, synthetic):
    first = Trainer(tiny(), data=synthetic, out_dir=tmp_path, progress=False)
    second = Trainer(tiny(), data=synthetic, out_dir=tmp_path, progress=False)  # a notebook may rebuild one
    code = ("import sys; from pathlib import Path; from dlb_edu.run_dir import lock_folder\n"
            "try:\n    lock_folder(Path(sys.argv[1]))\nexcept Exception as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == f"another process (pid {__import__('os').getpid()}) is using {tmp_path}: wait for " \
                                 f"it to end or choose another --out"
    del first, second  # the lock goes with the last trainer that holds it
    assert lock_folder(tmp_path) is not None


def test_force_replaces_the_old_run_only_at_the_new_runs_first_checkpoint(tmp_path, synthetic):
    Trainer(tiny(), data=synthetic, out_dir=tmp_path, progress=False).run()
    old = {name: (tmp_path / name).read_bytes() for name in ("config.json", "checkpoint.pt", "history.csv",
                                                              "summary.json")}
    new = Trainer(tiny(temperature=4.0, epochs=2, checkpoint_every=2), data=synthetic, out_dir=tmp_path, force=True,
                  progress=False)
    batches = iter(new.sampler)
    new.train_step(next(batches), 0, 0)
    assert {name: (tmp_path / name).read_bytes() for name in old} == old  # nothing replaced yet
    new.save_checkpoint()
    assert json.loads((tmp_path / "config.json").read_text())["temperature"] == 4.0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["config"]["temperature"] == 4.0
    assert read_history_csv(tmp_path / "history.csv") == [] and not (tmp_path / "summary.json").exists()


def test_a_folder_with_outputs_but_no_checkpoint_is_refused(tmp_path, synthetic):
    Trainer(tiny(), data=synthetic, out_dir=tmp_path, progress=False).run()
    (tmp_path / "checkpoint.pt").unlink()
    with pytest.raises(ConfigError, match="holds a run's history.csv and summary.json but no checkpoint.pt"):
        Trainer(tiny(), data=synthetic, out_dir=tmp_path, progress=False)


def test_a_resumed_run_rewrites_the_mirror_files_from_its_checkpoint(tmp_path, synthetic):
    Trainer(tiny(), data=synthetic, out_dir=tmp_path, progress=False).run()
    (tmp_path / "config.json").unlink()
    (tmp_path / "history.csv").write_text("stale\n")
    Trainer(tiny(), data=synthetic, out_dir=tmp_path, resume=True, progress=False)
    assert json.loads((tmp_path / "config.json").read_text()) == tiny().to_dict()
    assert len(read_history_csv(tmp_path / "history.csv")) == 1


def test_opening_a_folder_removes_only_the_temporary_files_a_killed_writer_left(tmp_path, synthetic):
    (tmp_path / ".checkpoint.pt.k3j9x.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".notes.tmp").write_text("the user's own")
    Trainer(tiny(), data=synthetic, out_dir=tmp_path, progress=False)
    assert not (tmp_path / ".checkpoint.pt.k3j9x.tmp").exists() and (tmp_path / ".notes.tmp").exists()
