"""Data sets as uint8 tensors in memory, read once and checked at the door.

Every source (CIFAR-10/100 through torchvision, the bundled ``cifar10-mini``, an image folder, ``synthetic``) is
loaded once into an :class:`ImageData`: uint8 images ``(N, 3, H, W)`` and int64 labels. CIFAR images are 3 KiB each,
so even all of CIFAR-10 is 176 MiB: keeping it resident (on the GPU when there is one) is faster than decoding and
augmenting per sample in worker processes: :mod:`~dlb_edu.augment` crops, flips and normalizes a whole batch at once.

Bad data is refused at the door with one :class:`~dlb_edu.errors.DataError` line that names the file and what is
wrong: every file source goes through :func:`check_arrays` (what a labelled image data set is), every image file
through one decoder that turns PIL's many failure types into that line, and :func:`check_trainable` refuses, before
any training, images too small for the network and a training set with nothing to learn.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch

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


class ChannelStats(NamedTuple):
    """Per-channel statistics of uint8 images, scaled to [0, 1]."""
    mean: torch.Tensor  # float32 (C,)
    std: torch.Tensor  # float32 (C,), unbiased; 1 where the channel is constant (see ImageData.std)
    constant: torch.Tensor  # bool (C,): the channel holds one value throughout


@dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image data set held in memory: uint8 images (N, 3, H, W), int64 labels.

    Frozen, so the normalization statistics, computed once from ``x_train`` on first use, keep describing it (the
    tensors are shared, not copied: to change pixels, make a new ``ImageData``). A :meth:`subset` is a new
    ``ImageData`` with statistics of its own: those of the training images actually used.
    """
    name: str
    classes: tuple[str, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def stats(self) -> ChannelStats:
        """The training images' per-channel statistics, computed on first access only."""
        return channel_stats(self.x_train)

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean of the training images, in [0, 1]."""
        return self.stats.mean

    @property
    def std(self) -> torch.Tensor:
        """Per-channel standard deviation of the training images, in [0, 1]; 1 for a constant channel.

        A channel with one value throughout (a blue channel that is always 0, say) carries no information, and
        dividing by its zero deviation would give 0/0 = NaN at the first step. With 1 in its place the channel
        normalizes to zeros, and the crop's zero padding to ``-mean``: finite, as scikit-learn's StandardScaler does.
        """
        return self.stats.std

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
    if name in ("cifar10-mini", "cifar10", "cifar100") and root.exists() and not root.is_dir():
        raise DataError(f"the data root {root} is a file, not a folder: pass --data-root (or set DLB_EDU_DATA to) "
                        f"a folder")
    if name == "cifar10-mini":
        if (root / MINI_FILE).exists():  # a copy in the data root overrides the bundled one (or is refused)
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
    return image_data_from_arrays(read_npz(path), "cifar10-mini", source=str(path))


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
        missing = str(e)
    else:
        missing = None
    if missing is not None:  # outside the except block: a failed download is not chained to torchvision's message
        if not download:
            raise DataError(f"{name} not found in {root}: run with --download (about 163 MiB), or pass an "
                            f"image-folder path ({missing})")
        archive = fetch(cifar_archive(name), root)
        try:
            extract_archive(str(archive), str(root))
        except OSError as e:
            raise DataError(f"cannot unpack {archive} into {root} ({e.strerror or e}): free some space there (or "
                            f"pass --data-root elsewhere) and run again") from None
        try:
            train, test = cls(str(root), train=True), cls(str(root), train=False)
        except RuntimeError as e:
            raise DataError(f"{name} in {root} is corrupt after unpacking: delete {root / cls.base_folder} and "
                            f"run again ({e})") from None
    arrays = {"classes": train.classes, "x_train": train.data, "y_train": np.asarray(train.targets),
              "x_test": test.data, "y_test": np.asarray(test.targets)}
    return image_data_from_arrays(arrays, name, source=f"{name} in {root}")


def load_image_folder(path: str | Path) -> ImageData:
    """An image folder in torchvision's ImageFolder layout: ``path/{train,test}/<class>/<image>``.

    Class order is the sorted folder names (for the CIFAR-10 JPEG copy, the CIFAR-10 label order). All images must
    have one size; they are decoded once into memory. At least two classes; a file that does not decode is refused
    by name.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist")
    classes = _class_folders(path / "train")
    test_classes = _class_folders(path / "test")
    for split, other, names, other_names in (("train", "test", classes, test_classes),
                                             ("test", "train", test_classes, classes)):
        extra = sorted(set(names) - set(other_names))
        if extra:
            raise DataError(f"class {extra[0]!r} is in {path / split} but not in {path / other}: train/ and test/ "
                            f"need the same class folders")
    check_class_names(classes, str(path / "train"))  # before decoding any image
    arrays, size = {"classes": classes}, None
    for split in ("train", "test"):
        images, labels = [], []
        for label, cls in enumerate(classes):
            files = _list_dir(path / split / cls, lambda f: f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not files:
                raise DataError(f"{path / split / cls} holds no images (looked for {', '.join(IMAGE_SUFFIXES)}): "
                                f"every class needs images in train/ and test/; add some or remove the folder")
            for f in files:
                arr = read_image(f)
                if size is None:
                    size = arr.shape
                elif arr.shape != size:
                    raise DataError(f"{f} is {arr.shape[1]}x{arr.shape[0]}, other images are {size[1]}x{size[0]}: "
                                    f"all images must have one size")
                images.append(arr)
                labels.append(label)
        if not images:
            raise DataError(f"{path / split} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = np.stack(images), np.array(labels)
    return image_data_from_arrays(arrays, path.name, source=str(path))


def read_image(f: Path) -> np.ndarray:
    """One image file as uint8 RGB (H, W, 3), or a DataError naming the file.

    PIL reports a bad file with many exception types (``UnidentifiedImageError``, ``OSError`` for a truncated file,
    ``ValueError`` for a corrupt PPM header, ``DecompressionBombError``, which is none of those), so every
    ``Exception`` from decoding is the file's fault here. Its ``DecompressionBombWarning`` (over 89 M pixels, not yet
    the error's 179 M) is an error too: such an image is no training image, and decoding it could exhaust memory.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                if im.mode in DEEP_MODES:
                    return _deep_to_rgb(np.asarray(im), im.mode, f)
                return np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"cannot read image {f}: not an image format PIL can decode") from None
    except Exception as e:
        raise DataError(f"cannot read image {f}: {_reason(e)}") from None


# Images of more than 8 bits a channel, in PIL's modes: 16-bit greyscale, 32-bit integers, 32-bit floats.
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _deep_to_rgb(a: np.ndarray, mode: str, f: Path) -> np.ndarray:
    """A greyscale image of more than 8 bits as uint8 RGB, scaled by its type's range (not clipped, which
    PIL's ``convert`` does): 16-bit integers from [0, 65535], floats from [0, 1]; other values are refused."""
    a = a.astype(np.float64)
    top = 1.0 if mode == "F" else 65535.0
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > top:
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        raise DataError(f"cannot read image {f}: a {mode} image with values in [{lo:g}, {hi:g}], outside "
                        f"[0, {top:g}]: convert it to 8 bits")
    grey = np.rint(a * (255.0 / top)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


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
    classes = [d.name for d in _list_dir(split_dir, Path.is_dir)]
    if not classes:
        raise DataError(f"{split_dir} has no class folders: put each class's images in {split_dir}/<class>/")
    return classes


def _list_dir(folder: Path, keep) -> list[Path]:
    """The sorted entries of ``folder`` for which ``keep(entry)``, hidden ones aside (``.ipynb_checkpoints``, macOS's
    ``._x.png``); an unreadable folder is a DataError."""
    try:
        return sorted(f for f in folder.iterdir() if not f.name.startswith(".") and keep(f))
    except OSError as e:
        raise DataError(f"cannot list {folder}: {e.strerror or _reason(e)}") from None


def _nhwc_to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------------------------------------------------------
# Validation: refuse at the door what would crash the loader or the model later
# ---------------------------------------------------------------------------------------------------------------

ARRAY_KEYS = ("classes", "x_train", "y_train", "x_test", "y_test")
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Those of the arrays ``ARRAY_KEYS`` an .npz archive holds, or a DataError naming the file and what is wrong
    with it as a file (:func:`check_arrays` judges the arrays)."""
    try:
        with open(path, "rb") as fh:
            empty = not fh.read(1)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or _reason(e)}") from None
    if empty:
        raise DataError(f"{path} is empty: an image data set needs arrays {', '.join(ARRAY_KEYS)} "
                        f"(numpy.savez writes them)")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an .npz archive (a zip of .npy arrays, as numpy.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as f:  # never unpickle: a data file must not run code
            return {k: f[k] for k in ARRAY_KEYS if k in f.files}
    except Exception as e:  # zipfile, zlib and numpy each raise their own types for a damaged archive
        raise DataError(f"{path} is damaged: {_reason(e)}") from None


def check_arrays(arrays: Mapping[str, Any], source: str) -> None:
    """Refuse what is not a labelled image data set, in one line that names ``source`` and what is wrong.

    ``arrays`` maps ``ARRAY_KEYS`` to NumPy arrays or tensors, wherever they came from: ``classes``, at least two
    distinct names; ``x_train``/``x_test``, non-empty uint8 images (N, H, W, 3), both splits of one size (the layout
    of every file format here); ``y_train``/``y_test``, one integer label per image, each in [0, K).
    """
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    if missing:
        held = f"it has {', '.join(arrays)}" if arrays else "it holds no arrays"
        raise DataError(f"{source} lacks {', '.join(missing)} ({held}): an image data set needs arrays "
                        f"{', '.join(ARRAY_KEYS)}")
    classes = np.asarray(arrays["classes"])
    if classes.ndim != 1:
        raise DataError(f"{source}: classes must be a list of class names, got shape {classes.shape}")
    check_class_names([str(c) for c in classes.tolist()], source)
    k = len(classes)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if _dtype(x) != "uint8":
            raise DataError(f"{source}: x_{split} has dtype {_dtype(x)}, expected uint8 (pixel values 0..255)")
        if len(x.shape) != 4 or x.shape[-1] != 3:
            hint = ": it looks channels-first, transpose it" if len(x.shape) == 4 and x.shape[1] == 3 else ""
            raise DataError(f"{source}: x_{split} has shape {tuple(x.shape)}, expected (N, H, W, 3) RGB "
                            f"images{hint}")
        if x.shape[0] == 0:
            raise DataError(f"{source}: x_{split} holds no images")
        if _dtype(y) not in _INT_DTYPES or len(y.shape) != 1:
            raise DataError(f"{source}: y_{split} must be one integer label per image, got dtype {_dtype(y)} and "
                            f"shape {tuple(y.shape)}")
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{source}: {x.shape[0]} images in x_{split} but {y.shape[0]} labels in y_{split}")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= k:
            raise DataError(f"{source}: y_{split} holds labels {low}..{high}, but there are {k} classes: labels "
                            f"must be in 0..{k - 1}")
    if tuple(arrays["x_train"].shape[1:3]) != tuple(arrays["x_test"].shape[1:3]):
        (h, w), (th, tw) = arrays["x_train"].shape[1:3], arrays["x_test"].shape[1:3]
        raise DataError(f"{source}: training images are {w}x{h}, test images {tw}x{th}: they must have one size")


def check_class_names(names: list[str], source: str) -> None:
    """At least two classes (a classifier, label noise and every loss here need them), with distinct names."""
    if len(names) < 2:
        raise DataError(f"{source}: {len(names)} class{'' if len(names) == 1 else 'es'} ({_short(names)}): a "
                        f"classifier needs at least 2")
    if len(set(names)) != len(names):
        raise DataError(f"{source}: class names must be distinct, got {_short(names)}")


def image_data_from_arrays(arrays: Mapping[str, Any], name: str, source: str) -> ImageData:
    """An :class:`ImageData` from checked (N, H, W, 3) arrays (see :func:`check_arrays`); ``source`` names them."""
    check_arrays(arrays, source)

    def labels(key):
        return torch.as_tensor(np.asarray(arrays[key]), dtype=torch.long)

    return ImageData(name, tuple(str(c) for c in np.asarray(arrays["classes"]).tolist()),
                     _nhwc_to_tensor(arrays["x_train"]), labels("y_train"),
                     _nhwc_to_tensor(arrays["x_test"]), labels("y_test"))


def check_image_size(data: ImageData, arch: str, min_side: int, max_side: int | None = None) -> None:
    """Refuse images the network ``arch`` cannot take: a side under ``min_side`` (its pooling would reach zero
    pixels) or, for a network whose classifier expects a fixed feature size, over ``max_side``."""
    h, w = data.x_train.shape[2:]
    if min(h, w) < min_side:
        raise DataError(f"{data.name}: images are {w}x{h}, arch {arch} needs at least {min_side}x{min_side} (each "
                        f"pooling halves the side): resize the images or choose another --arch")
    if max_side is not None and max(h, w) > max_side:
        raise DataError(f"{data.name}: images are {w}x{h}, arch {arch} takes at most {max_side}x{max_side} (its "
                        f"classifier expects a fixed feature size): resize the images or choose another --arch")


def check_trainable(data: ImageData, arch: str, min_side: int, max_side: int | None = None,
                    cutout_size: int | None = None) -> None:
    """Refuse, before any training, data the network ``arch`` cannot take or cannot learn from.

    The data must be a labelled image data set (:func:`check_arrays`, also for an ``ImageData`` built by hand), of a
    size ``arch`` takes (:func:`check_image_size`), and its training images must not all be one solid colour: then
    every channel is constant and there is nothing to learn (a single constant channel is fine, see
    :attr:`ImageData.std`). A Cutout patch (``cutout_size``, when Cutout is on) must not be larger than the images:
    it would blank most of every one. Call it on the data actually trained on, after subsetting.
    """
    check_arrays({"classes": data.classes, "x_train": data.x_train.permute(0, 2, 3, 1), "y_train": data.y_train,
                  "x_test": data.x_test.permute(0, 2, 3, 1), "y_test": data.y_test}, data.name)
    check_image_size(data, arch, min_side, max_side)
    h, w = data.x_train.shape[2:]
    if cutout_size is not None and cutout_size > min(h, w):
        raise DataError(f"{data.name}: cutout_size {cutout_size} is larger than the {w}x{h} images (it would blank "
                        f"most of every one): choose --cutout-size <= {min(h, w)} (DeVries & Taylor: half the side)")
    if bool(data.stats.constant.all()):
        colour = ", ".join(str(round(v * 255)) for v in data.mean.tolist())
        raise DataError(f"{data.name}: every training image is one solid colour (RGB {colour}): there is nothing "
                        f"to learn; check how the images were made")


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> ChannelStats:
    """Per-channel mean and unbiased standard deviation of uint8 images (N, C, H, W), scaled to [0, 1].

    Counting how often each of the 256 values occurs in each channel gives the sums of values and of squares
    exactly, in integers, without a float copy of the set (all of CIFAR-10 as float32 is 703 MiB): ``chunk`` images
    at a time, one channel at a time. A constant channel's deviation is replaced by 1 (see :attr:`ImageData.std`).
    """
    if x.dtype != torch.uint8 or x.dim() != 4 or x.numel() == 0:
        raise DataError(f"statistics need non-empty uint8 images (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    counts = torch.zeros(x.shape[1], 256, dtype=torch.int64)
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk].cpu()
        for c in range(x.shape[1]):
            counts[c] += torch.bincount(block[:, c].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.int64)
    means, stds = [], []
    for n, s, ss in zip(counts.sum(1).tolist(), (counts * values).sum(1).tolist(),
                        (counts * values ** 2).sum(1).tolist()):
        # Python integers: n * ss - s * s is exact (it can pass 2**63 for all of CIFAR-10).
        means.append(s / n / 255)
        stds.append(((n * ss - s * s) / (n * (n - 1))) ** 0.5 / 255 if n > 1 else 0.0)
    std = torch.tensor(stds, dtype=torch.float32)
    constant = std == 0
    return ChannelStats(torch.tensor(means, dtype=torch.float32), torch.where(constant, torch.ones_like(std), std),
                        constant)


def _dtype(a: Any) -> str:
    """``uint8``, ``float32``, ... for a NumPy array or a tensor alike."""
    return str(a.dtype).removeprefix("torch.")


def _short(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "") if names else "none"


def _reason(e: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__

