import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from dlb_edu.data import bundled_mini, load_cifar10_mini, load_dataset, make_synthetic
from dlb_edu.errors import DataError


def test_bundled_mini_cifar10_has_exact_shapes_and_labels():
    data = load_dataset("cifar10-mini")
    assert data.x_train.shape == (4000, 3, 32, 32) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (1000, 3, 32, 32)
    assert data.classes[0] == "airplane" and data.classes[-1] == "truck"
    assert set(data.y_train.tolist()) == set(range(10))
    assert bundled_mini().is_file()  # package data (dlb_edu/datasets/), not a file of the checkout


def test_synthetic_is_small_balanced_and_deterministic():
    a, b = make_synthetic(), make_synthetic()
    assert torch.equal(a.x_train, b.x_train)
    counts = torch.bincount(a.y_train).tolist()
    assert max(counts) - min(counts) <= 1
    assert a.num_classes == 10 and a.x_train.shape[1:] == (3, 32, 32)


def write_fake_cifar(root: Path, name: str, n_train=20, n_test=10):
    """Files in the CIFAR python format, as torchvision's own tests make them."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, train_files, test_file, meta, label_key, classes_key, k = (
            "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
            "labels", "label_names", 10)
    else:
        folder, train_files, test_file, meta, label_key, classes_key, k = (
            "cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names", 100)
    base = root / folder
    base.mkdir(parents=True)
    def dump(fname, n):
        with open(base / fname, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         label_key: rng.integers(0, k, n).tolist()}, f)
    for fname in train_files:
        dump(fname, n_train)
    dump(test_file, n_test)
    with open(base / meta, "wb") as f:
        pickle.dump({classes_key: [f"c{i}" for i in range(k)]}, f)
    return len(train_files) * n_train, n_test, k


@pytest.mark.parametrize("name,cls", [("cifar10", torchvision.datasets.CIFAR10),
                                      ("cifar100", torchvision.datasets.CIFAR100)])
def test_torchvision_cifar_from_fake_files(tmp_path, monkeypatch, name, cls):
    n_train, n_test, k = write_fake_cifar(tmp_path, name)
    # The fake files cannot have the real archive's MD5 sums: skip torchvision's integrity checks only.
    monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    data = load_dataset(name, root=tmp_path)
    assert data.x_train.shape == (n_train, 3, 32, 32) and data.x_test.shape == (n_test, 3, 32, 32)
    assert data.num_classes == k


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="--download"):
        load_dataset("cifar10", root=tmp_path)


def test_missing_mini_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="cifar10-mini.npz"):
        load_cifar10_mini(tmp_path / "cifar10-mini.npz")


def write_image_folder(root: Path, classes=("cat", "dog"), per_class=3, size=(32, 32)):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_image_folder_loads_sorted_classes_and_exact_pixels(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("zebra", "ant"))
    data = load_dataset(str(root))
    assert data.classes == ("ant", "zebra")
    assert data.x_train.shape == (6, 3, 32, 32) and data.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    first = np.asarray(Image.open(root / "train" / "ant" / "0.png"))
    assert torch.equal(data.x_train[0], torch.from_numpy(first.copy()).permute(2, 0, 1))


@pytest.mark.parametrize("breakage,match", [
    ("no_test", "test is missing"),
    ("no_classes", "no class folders"),
    ("empty_split", "holds no images"),
    ("mixed_sizes", "one size"),
    ("unreadable", "cannot read image"),
])
def test_malformed_image_folder_is_refused(tmp_path, breakage, match):
    root = write_image_folder(tmp_path / "imgs")
    if breakage == "no_test":
        import shutil; shutil.rmtree(root / "test")
    elif breakage == "no_classes":
        import shutil; shutil.rmtree(root / "train"); (root / "train").mkdir()
    elif breakage == "empty_split":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
    elif breakage == "mixed_sizes":
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "train" / "cat" / "9.png")
    elif breakage == "unreadable":
        (root / "train" / "cat" / "9.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=match):
        load_dataset(str(root))


def test_unknown_dataset_is_refused():
    with pytest.raises(DataError, match="unknown dataset 'cifar11'"):
        load_dataset("cifar11")
