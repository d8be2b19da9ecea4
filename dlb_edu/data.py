"""Data sets as uint8 tensors in memory, and the CIFAR augmentation that works on whole batches.

Every source (CIFAR-10/100 through torchvision, the bundled ``cifar10-mini``, an image folder, ``synthetic``) is
loaded once into an :class:`ImageData`: uint8 images ``(N, 3, H, W)`` and int64 labels. CIFAR images are 3 KB each,
so even all of CIFAR-10 is 180 MB: keeping it resident (on the GPU when there is one) is faster than decoding and
augmenting per sample in worker processes. The augmentation (4-pixel zero-padded random crop, horizontal flip; He et
al., 2016) is one function for a whole batch, driven by an explicit ``torch.Generator``, so a run can be replayed
exactly and a repeated sample gets a fresh crop and flip each time it is drawn.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DATASETS = ("cifar10", "cifar100", "cifar10-mini", "synthetic")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
MINI_FILE = "cifar10-mini.npz"  # package data, in dlb_edu/datasets/


def default_data_dir() -> Path:
    """Where data sets are looked for and downloaded to (``--data-root`` overrides it).

    ``$DLB_EDU_DATA`` if set; else, in a source checkout, its ``data/`` folder; else (an installed package)
    ``$XDG_CACHE_HOME/dlb-edu``, by default ``~/.cache/dlb-edu``, so that every notebook and run on a machine
    shares one download whatever its working folder. The bundled mini set is not read from here unless a copy is
    put here (see :func:`bundled_mini`).
    """
    env = os.environ.get("DLB_EDU_DATA")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "data").is_dir():
        return checkout / "data"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dlb-edu"


def bundled_mini() -> resources.abc.Traversable:
    """``cifar10-mini.npz`` as package data (``dlb_edu/datasets/``), so a wheel or a git install carries it."""
    return resources.files("dlb_edu") / "datasets" / MINI_FILE


@dataclass
class ImageData:
    """A labelled image data set held in memory: uint8 images (N, 3, H, W), int64 labels."""
    name: str
    classes: tuple[str, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean of the training images, in [0, 1]."""
        return self.x_train.float().mean(dim=(0, 2, 3)) / 255

    @property
    def std(self) -> torch.Tensor:
        return self.x_train.float().std(dim=(0, 2, 3)) / 255

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "ImageData":
        """The first ``n_train`` training and ``n_test`` test images (fast modes and demos)."""
        return replace(self, x_train=self.x_train[:n_train], y_train=self.y_train[:n_train],
                       x_test=self.x_test[:n_test], y_test=self.y_test[:n_test])

    def __repr__(self) -> str:
        shape = tuple(self.x_train.shape[1:])
        return (f"ImageData({self.name!r}, {len(self.x_train)} train + {len(self.x_test)} test images of {shape}, "
                f"{self.num_classes} classes)")


# ---------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------

def load_dataset(name: str, root: str | Path | None = None, download: bool = False) -> ImageData:
    """Load a data set by name (``cifar10``, ``cifar100``, ``cifar10-mini``, ``synthetic``) or image-folder path."""
    root = Path(root) if root is not None else default_data_dir()
    if name == "cifar10-mini":
        if (root / MINI_FILE).is_file():  # a copy in the data root overrides the bundled one
            return load_cifar10_mini(root / MINI_FILE)
        with resources.as_file(bundled_mini()) as path:
            return load_cifar10_mini(path)
    if name in ("cifar10", "cifar100"):
        return load_torchvision_cifar(name, root, download)
    if name == "synthetic":
        return make_synthetic()
    if os.sep in name or "/" in name or Path(name).exists():
        return load_image_folder(name)
    raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)} or an image-folder path "
                    f"with train/ and test/")


def load_cifar10_mini(path: str | Path) -> ImageData:
    """The bundled 4,000 + 1,000 CIFAR-10 images with their exact pixels."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found: reinstall dlb-edu (the mini set ships inside the package)")
    with np.load(path) as f:
        return ImageData("cifar10-mini", tuple(str(c) for c in f["classes"]),
                         _nhwc_to_tensor(f["x_train"]), torch.as_tensor(f["y_train"], dtype=torch.long),
                         _nhwc_to_tensor(f["x_test"]), torch.as_tensor(f["y_test"], dtype=torch.long))


def load_torchvision_cifar(name: str, root: Path, download: bool = False) -> ImageData:
    """CIFAR-10 or CIFAR-100 in torchvision's format, read by torchvision (which checks each file's MD5).

    With ``download``, a missing set is fetched by :func:`dlb_edu.download.fetch` (torchvision's URL, then
    mirrors, each archive checked against its MD5; a partial file is resumed) and unpacked into ``root``.
    """
    import torchvision
    from torchvision.datasets.utils import extract_archive

    from .download import cifar_archive, fetch

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    root = Path(root)
    try:
        train, test = cls(str(root), train=True), cls(str(root), train=False)
    except RuntimeError as e:
        if not download:
            raise DataError(f"{name} not found in {root}: run with --download (about 170 MB), or pass an "
                            f"image-folder path ({e})") from None
        extract_archive(str(fetch(cifar_archive(name), root)), str(root))
        try:
            train, test = cls(str(root), train=True), cls(str(root), train=False)
        except RuntimeError as e:
            raise DataError(f"{name} in {root} is corrupt after unpacking: delete {root / cls.base_folder} and "
                            f"run again ({e})") from None
    return ImageData(name, tuple(train.classes),
                     _nhwc_to_tensor(train.data), torch.as_tensor(train.targets, dtype=torch.long),
                     _nhwc_to_tensor(test.data), torch.as_tensor(test.targets, dtype=torch.long))


def load_image_folder(path: str | Path) -> ImageData:
    """An image folder in torchvision's ImageFolder layout: ``path/{train,test}/<class>/<image>``.

    Class order is the sorted folder names (for the CIFAR-10 JPEG copy, the CIFAR-10 label order). All images must
    have one size; they are decoded once into memory.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist")
    classes = _class_folders(path / "train")
    test_classes = _class_folders(path / "test")
    if test_classes != classes:
        raise DataError(f"{path}/test has classes {test_classes[:5]}..., {path}/train has {classes[:5]}...: "
                        f"they must be the same")
    splits, size = {}, None
    for split in ("train", "test"):
        images, labels = [], []
        for label, cls in enumerate(classes):
            files = sorted(f for f in (path / split / cls).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            for f in files:
                try:
                    with Image.open(f) as im:
                        arr = np.asarray(im.convert("RGB"))
                except (UnidentifiedImageError, OSError) as e:
                    raise DataError(f"cannot read image {f}: {e}") from None
                if size is None:
                    size = arr.shape
                elif arr.shape != size:
                    raise DataError(f"{f} is {arr.shape[1]}x{arr.shape[0]}, other images are {size[1]}x{size[0]}: "
                                    f"all images must have one size")
                images.append(arr)
                labels.append(label)
        if not images:
            raise DataError(f"{path / split} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
        splits[split] = (_nhwc_to_tensor(np.stack(images)), torch.tensor(labels, dtype=torch.long))
    return ImageData(path.name, tuple(classes), *splits["train"], *splits["test"])


def make_synthetic(num_classes: int = 10, n_train: int = 512, n_test: int = 256, size: int = 32,
                   seed: int = 0) -> ImageData:
    """A tiny learnable data set: each class is a smooth random colour pattern, each image a noisy copy of it."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(num_classes, 3, 4, 4, generator=g)
    prototypes = torch.nn.functional.interpolate(prototypes, size=(size, size), mode="bilinear",
                                                 align_corners=False)

    def draw(n):
        y = torch.arange(n) % num_classes
        x = prototypes[y] * 200 + torch.rand(n, 3, size, size, generator=g) * 55
        return x.clamp(0, 255).to(torch.uint8), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return ImageData("synthetic", tuple(f"class{i}" for i in range(num_classes)), x_train, y_train, x_test, y_test)


def _class_folders(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} is missing: an image folder needs train/ and test/, one sub-folder per class")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{split_dir} has no class folders: put each class's images in {split_dir}/<class>/")
    return classes


def _nhwc_to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------------------------------------------------------
# Augmentation and normalization
# ---------------------------------------------------------------------------------------------------------------

def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """CIFAR augmentation for a batch: zero-pad by ``padding``, crop back at a random offset, flip half at random.

    ``x`` is (n, C, H, W), any dtype, on any device; each image gets its own offset and flip, drawn from
    ``generator`` (which must live on ``x``'s device), so the same generator state gives the same batch.
    """
    n, _, h, w = x.shape
    dev = x.device
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=dev, generator=generator)
    flips = torch.rand(n, device=dev, generator=generator) < 0.5
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    rows = offsets[0, :, None] + torch.arange(h, device=dev)  # (n, H)
    cols = offsets[1, :, None] + torch.arange(w, device=dev)  # (n, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # a flipped crop reads its columns backwards
    batch = torch.arange(n, device=dev)[:, None, None]
    # Advanced indexing over (batch, row, col) gives (n, H, W, C); move channels back to dim 1.
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images to float, per-channel standardized."""
    mean = mean.to(x.device).view(1, -1, 1, 1)
    std = std.to(x.device).view(1, -1, 1, 1)
    return (x.float() / 255 - mean) / std


class AugmentedDataset(Dataset):
    """Per-sample view of an :class:`ImageData` split for a torch DataLoader (e.g. with ``DLBBatchSampler``).

    Each ``__getitem__`` draws a new crop and flip, so a sample that appears in two consecutive batches is augmented
    twice, as in the original code. The trainer itself augments whole batches with the same function.
    """

    def __init__(self, data: ImageData, train: bool = True, augment: bool = True):
        self.x = data.x_train if train else data.x_test
        self.y = data.y_train if train else data.y_test
        self.augment = augment
        self.mean, self.std = data.mean, data.std

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i: i + 1]
        if self.augment:
            x = random_crop_flip(x)
        return normalize(x, self.mean, self.std)[0], self.y[i]
