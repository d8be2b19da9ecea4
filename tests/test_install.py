"""A plain install has everything: the mini set ships inside the package, found through importlib.resources.

The slow test builds the wheel from the checkout's files, installs it into a fresh venv (see ``fresh_venv``) and runs
``python -m dlb_edu compare --epochs 1`` from a folder outside the checkout, as a learner would after ``pip install``.
"""
import hashlib
import json
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlb_edu.data import bundled_mini, default_data_dir, load_dataset
from fresh_venv import ROOT, clean_env, fresh_venv, git_files, run

MINI_SHA256 = "d6d43624fe78225a052e96d47d1ea62f40b70fcf54c71b338995f4ea2703f39f"  # dlb_edu/datasets/README.md


def write_mini(path: Path, n_train: int = 10, n_test: int = 5) -> None:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(n_train) % 10, x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(n_test) % 10, classes=np.array([f"c{i}" for i in range(10)]))


def test_mini_set_is_package_data_with_its_documented_checksum():
    mini = Path(str(bundled_mini()))
    assert mini.parent == ROOT / "dlb_edu" / "datasets" and mini.is_file()
    assert hashlib.sha256(mini.read_bytes()).hexdigest() == MINI_SHA256
    assert not (ROOT / "data" / "cifar10-mini.npz").exists()  # data/ is only for downloads now


def test_a_checkout_downloads_into_its_data_folder_unless_dlb_edu_data_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("DLB_EDU_DATA", raising=False)
    assert default_data_dir() == ROOT / "data"
    monkeypatch.setenv("DLB_EDU_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path


def test_a_mini_set_in_the_data_root_overrides_the_bundled_one(tmp_path, monkeypatch):
    write_mini(tmp_path / "cifar10-mini.npz")
    assert len(load_dataset("cifar10-mini", root=tmp_path).x_train) == 10  # --data-root
    monkeypatch.setenv("DLB_EDU_DATA", str(tmp_path))
    assert len(load_dataset("cifar10-mini").x_train) == 10


def test_a_data_root_without_a_mini_set_uses_the_bundled_one(tmp_path, monkeypatch):
    monkeypatch.setenv("DLB_EDU_DATA", str(tmp_path))  # e.g. set for CIFAR downloads
    data = load_dataset("cifar10-mini")
    assert data.x_train.shape == (4000, 3, 32, 32) and data.x_test.shape == (1000, 3, 32, 32)
    assert len(load_dataset("cifar10-mini", root=tmp_path / "empty").x_test) == 1000


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_runs_compare_on_the_mini_set(tmp_path):
    start = time.perf_counter()
    env = clean_env(tmp_path)
    src = tmp_path / "src"  # the checkout's files, as a git clone or an sdist would have them
    for name in git_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
         src], cwd=tmp_path, env=env)
    wheel, = (tmp_path / "dist").glob("dlb_edu-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert "dlb_edu/datasets/cifar10-mini.npz" in z.namelist()
    python = fresh_venv(tmp_path / "venv")
    run([python, "-m", "pip", "install", "-q", "--no-deps", wheel], cwd=tmp_path, env=env)

    elsewhere = tmp_path / "elsewhere"  # a learner's folder, far from the checkout
    elsewhere.mkdir()
    probe = run([python, "-c", "import dlb_edu, dlb_edu.data as d; print(dlb_edu.__file__); "
                 "print(d.default_data_dir()); print(d.bundled_mini())"], cwd=elsewhere, env=env)
    package, data_dir, mini = probe.stdout.splitlines()
    assert Path(package).is_relative_to(tmp_path / "venv") and Path(mini).is_relative_to(tmp_path / "venv")
    assert Path(data_dir) == tmp_path / "cache" / "dlb-edu"  # downloads go to the user's cache, not site-packages

    done = run([python, "-m", "dlb_edu", "compare", "--epochs", "1", "--arch", "small_cnn", "--train-subset", "256",
                "--test-subset", "128", "--no-progress"], cwd=elsewhere, env=env)
    assert "curves saved" in done.stdout
    for method in ("baseline", "dlb"):
        config = json.loads((elsewhere / "runs" / "compare" / method / "config.json").read_text())
        summary = json.loads((elsewhere / "runs" / "compare" / method / "summary.json").read_text())
        assert config["dataset"] == "cifar10-mini" and summary["epochs"] == 1
        assert 0 <= summary["final_test_acc"] <= 1
    print(f"wheel built, installed and run in {time.perf_counter() - start:.1f} s")
