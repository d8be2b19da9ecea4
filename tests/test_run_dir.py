"""The run folder in one process: atomic writes with unique temporary names, the lock, and a forced replacement
that leaves the old run in place until the new run's first checkpoint. (Real processes: test_interruption.py.)"""
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
import torch

from dlb_edu.config import TrainConfig
from dlb_edu.errors import ConfigError
from dlb_edu.run_dir import atomic_write, read_history_csv
from dlb_edu.lab import LiveLab
from dlb_edu.train import Trainer, compare


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


def folder_state(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes and modification time (the lock file aside: it holds the pid of
    the folder's last owner, bookkeeping rather than a run's file)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_a_second_owner_in_this_process_is_refused_naming_the_first_and_another_process_too(tmp_path, synthetic):
    first = Trainer(tiny(), data=synthetic, out_dir=tmp_path, progress=False)
    for kwargs in ({}, {"force": True}, {"resume": True}):  # a notebook's second Trainer, however it is made
        with pytest.raises(ConfigError) as e:
            Trainer(tiny(), data=synthetic, out_dir=str(tmp_path) + "/", progress=False, **kwargs)
        assert str(e.value) == (f"{tmp_path} is in use by a Trainer in this process (pid {os.getpid()}): call its "
                                f"close() or let its training end, or choose another --out")
    code = ("import sys; from pathlib import Path; from dlb_edu.run_dir import RunDir\n"
            "try:\n    RunDir(Path(sys.argv[1])).open({}, False, False)\nexcept Exception as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == f"another process (pid {os.getpid()}) is using {tmp_path}: wait for " \
                                 f"it to end or choose another --out"
    first.run()  # the first owner's run is whole: nothing of a second one got in
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["config"] == tiny().to_dict() and len(state["history"]) == 1


def _closed(trainer):
    trainer.close()


def _trained_to_the_end(trainer):
    trainer.run()


def _garbage_collected(trainer):
    pass  # the caller drops its last reference


@pytest.mark.parametrize("end", [_closed, _trained_to_the_end, _garbage_collected], ids=lambda f: f.__name__[1:])
def test_the_folder_has_a_new_owner_once_the_first_is_done(tmp_path, synthetic, end):
    first = Trainer(tiny(epochs=2), data=synthetic, out_dir=tmp_path, progress=False)
    first.train_epoch()
    end(first)
    if end is not _garbage_collected:
        with pytest.raises(ConfigError, match="has given up .* make a new Trainer"):  # and writes nothing more
            first.save_checkpoint()
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None  # nothing (no lock, no registry) keeps a trainer alive
    second = Trainer(tiny(epochs=2), data=synthetic, out_dir=tmp_path, resume=True, progress=False)
    assert len(second.history) == (2 if end is _trained_to_the_end else 1)
    second.run()
    assert len(read_history_csv(tmp_path / "history.csv")) == 2


def test_a_refused_trainer_does_not_keep_the_folder(tmp_path, synthetic):
    Trainer(tiny(epochs=2), data=synthetic, out_dir=tmp_path, progress=False).run()
    refusals = []  # their tracebacks hold the refused trainers, as a notebook's last traceback does
    for refused, match in ((tiny(temperature=4.0), "holds a different run"), (tiny(epochs=1), "past --epochs")):
        with pytest.raises(ConfigError, match=match) as e:
            Trainer(refused, data=synthetic, out_dir=tmp_path, resume=True, progress=False)
        refusals.append(e)
    with Trainer(tiny(epochs=2), data=synthetic, out_dir=tmp_path, resume=True, progress=False) as again:
        assert len(again.history) == 2
    assert again.run_dir.closed and len(refusals) == 2


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, synthetic):
    out = tmp_path_factory.mktemp("two_epochs")
    Trainer(tiny(epochs=2), data=synthetic, out_dir=out, progress=False).run()
    return out


@pytest.mark.parametrize("attempt", [
    dict(epochs=1, resume=True),                    # refused in load_state_dict: the checkpoint is past --epochs
    dict(epochs=2, temperature=4.0),                # another run, no --force
    dict(epochs=2),                                 # this run, neither --resume nor --force
    dict(epochs=2, resume=True, force=True),
    dict(epochs=2, resume=True, classes=True),      # the data set's classes changed
], ids=["past-epochs", "other-run", "no-resume", "resume-and-force", "classes-changed"])
def test_a_refusal_changes_no_file_in_the_folder(tmp_path, synthetic, two_epochs, attempt):
    tmp_path = tmp_path / "run"
    shutil.copytree(two_epochs, tmp_path)
    (tmp_path / "config.json").write_text((tmp_path / "config.json").read_text() + " ")  # a stale mirror stays stale
    before = folder_state(tmp_path)
    attempt = dict(attempt)
    data = synthetic
    if attempt.pop("classes", False):
        data = dataclasses.replace(synthetic, classes=tuple(f"other{i}" for i in range(len(synthetic.classes))))
    resume, force = attempt.pop("resume", False), attempt.pop("force", False)
    with pytest.raises(ConfigError):
        Trainer(tiny(**attempt), data=data, out_dir=tmp_path, resume=resume, force=force, progress=False)
    assert folder_state(tmp_path) == before


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


# ---------------------------------------------------------------------------------------------------------------
# Comparisons and the live lab: several runs, each in its own folder
# ---------------------------------------------------------------------------------------------------------------

def test_a_method_added_to_a_finished_comparison_trains_with_resume_and_leaves_the_others(tmp_path, synthetic):
    compare(tiny(), ["baseline"], tmp_path, data=synthetic, progress=False)
    before = folder_state(tmp_path)
    with pytest.raises(ConfigError, match="baseline already holds this run: pass --resume to continue it"):
        compare(tiny(), ["baseline", "dlb"], tmp_path, data=synthetic, progress=False)
    assert folder_state(tmp_path) == before and not (tmp_path / "dlb").exists()
    results = compare(tiny(), ["baseline", "dlb"], tmp_path, data=synthetic, resume=True, progress=False)
    assert {k: v for k, v in folder_state(tmp_path).items() if k.startswith("baseline/checkpoint")} == \
        {k: v for k, v in before.items() if k.startswith("baseline/checkpoint")}  # continued: nothing to train
    assert len(results["dlb"][0]) == 1 and len(read_history_csv(tmp_path / "dlb" / "history.csv")) == 1
    assert torch.load(tmp_path / "dlb" / "checkpoint.pt", weights_only=True)["config"]["method"] == "dlb"


def lab(synthetic, out, **kwargs) -> LiveLab:
    return LiveLab(tiny(epochs=2, batch_size=32), data=synthetic, every=2, probe_size=16, out_dir=out, **kwargs)


def test_a_live_lab_owns_its_folders_until_its_run_ends(tmp_path, synthetic):
    first = lab(synthetic, tmp_path)
    with pytest.raises(ConfigError, match=f"{tmp_path / 'dlb'} is in use by a LiveLab in this process"):
        Trainer(tiny(epochs=2, batch_size=32, method="dlb"), data=synthetic, out_dir=tmp_path / "dlb", force=True,
                progress=False)
    with pytest.raises(ConfigError, match="is in use by a LiveLab in this process"):
        lab(synthetic, tmp_path, force=True)  # the notebook cell run again while the first lab is paused
    first.pause(at_step=3)
    first.start()
    assert first.wait_paused(timeout=120) == 3
    first.stop(timeout=120)
    trainer = Trainer(tiny(epochs=2, batch_size=32, method="dlb"), data=synthetic, out_dir=tmp_path / "dlb",
                      resume=True, progress=False)
    assert trainer.steps_done == 3  # the lab's Stop checkpoint, and the lab can write no more there
    trainer.run()
    with pytest.raises(ConfigError, match="has given up"):
        first.trainers["dlb"].save_checkpoint()
    assert len(torch.load(tmp_path / "dlb" / "checkpoint.pt", weights_only=True)["history"]) == 2


def test_live_lab_force_keeps_the_old_record_until_dlbs_first_checkpoint(tmp_path, synthetic):
    old = lab(synthetic, tmp_path)
    old.set("alpha", 2.5, at_step=2)
    old.pause(at_step=3)
    old.start()
    assert old.wait_paused(timeout=120) == 3
    old.stop(timeout=120)
    record = (tmp_path / "lab.json").read_bytes()
    abandoned = lab(synthetic, tmp_path, force=True)  # built, never started, then dropped
    assert (tmp_path / "lab.json").read_bytes() == record
    del abandoned
    gc.collect()
    resumed = lab(synthetic, tmp_path, resume=True)  # the old run continues with its recorded change
    assert resumed.knobs()["alpha"] == 2.5 and [c.step for c in resumed.changes] == [2]
    resumed.trainers["dlb"].close(), resumed.trainers["baseline"].close()
    new = lab(synthetic, tmp_path, force=True)
    new.set("alpha", 0.5)  # applied at step 1, before DLB's first checkpoint: the old record stays until then
    new.pause(at_step=1)
    new.start()
    assert new.wait_paused(timeout=120) == 1
    assert (tmp_path / "lab.json").read_bytes() == record
    new.stop(timeout=120)  # Stop writes DLB's first checkpoint: the new run and its record replace the old ones
    saved = json.loads((tmp_path / "lab.json").read_text())
    assert [(c["step"], c["new"]) for c in saved["changes"]] == [(1, 0.5)]
    assert not (tmp_path / "dlb" / ".replace.json").exists()


@pytest.fixture(scope="module")
def stopped_lab(tmp_path_factory, synthetic):
    out = tmp_path_factory.mktemp("stopped_lab")
    first = lab(synthetic, out)
    first.pause(at_step=2)
    first.start()
    assert first.wait_paused(timeout=120) == 2
    first.stop(timeout=120)
    return out


@pytest.mark.parametrize("record", [
    [],                                                                   # a list, not a record
    {"changes": "alpha 2.5"},
    {"changes": [{"step": 2}]},                                           # a change without its values
    {"changes": [{"step": 2, "name": "lr", "old": 0.1, "new": 1.0}]},     # not a knob of the lab
    {"changes": [{"step": 2, "name": "alpha", "old": 1.0, "new": "2"}]},  # not a number
    {"changes": [], "points": {"dlb": {"step": [1, 2]}}},                 # a table without its columns
], ids=["list", "changes-a-string", "change-without-values", "change-of-another-knob", "value-a-string",
        "points-without-columns"])
def test_a_lab_record_of_the_wrong_shape_is_refused_naming_it_and_changes_nothing(tmp_path, synthetic, stopped_lab,
                                                                                   record):
    out = tmp_path / "lab"
    shutil.copytree(stopped_lab, out)
    (out / "lab.json").write_text(json.dumps(record))
    before = folder_state(out)
    with pytest.raises(ConfigError) as e:
        lab(synthetic, out, resume=True)
    assert str(e.value) == (f"{out / 'lab.json'} is damaged (not the record of a lab): delete it (the runs resume "
                            f"with the config's T and alpha)")
    assert folder_state(out) == before
    (out / "lab.json").unlink()  # as the line says: the runs then resume with the config's T and alpha
    assert lab(synthetic, out, resume=True).step == 2
