"""Data that would crash the loader or the model is refused at the door: one DataError line naming the file and the
fault (exit code 2 through the CLI); the normalization statistics are exact, computed once, and never NaN."""
import dataclasses
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dlb_edu.data as data_module
from dlb_edu.cli import main
from dlb_edu.augment import normalize, random_crop_flip
from dlb_edu.data import (ARRAY_KEYS, ImageData, channel_stats, check_arrays, check_image_size, check_trainable,
                          load_dataset)
from dlb_edu.config import TrainConfig
from dlb_edu.errors import ConfigError, DataError
from dlb_edu.models import MIN_IMAGE_SIZE, build_model
from dlb_edu.noise import noisy_labels, with_label_noise
from dlb_edu.train import Trainer


def image_data(n=64, size=8, classes=2, seed=0, x=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8) if x is None else x
    y = torch.arange(len(x)) % classes
    return ImageData("toy", tuple(f"c{i}" for i in range(classes)), x, y, x[:16].clone(), y[:16].clone())


def one_line_error(exc_info, *fragments):
    text = str(exc_info.value)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


# ---------------------------------------------------------------------------------------------------------------
# Normalization statistics: exact, computed once per data set, finite for a constant channel
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_channel_stats_equal_a_float64_reference(chunk):
    x = torch.randint(0, 256, (50, 3, 5, 6), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    x[:, 1] //= 4  # channels with different spreads
    stats = channel_stats(x, chunk=chunk)
    ref = x.double() / 255
    assert torch.allclose(stats.mean.double(), ref.mean(dim=(0, 2, 3)), rtol=0, atol=1e-7)
    assert torch.allclose(stats.std.double(), ref.std(dim=(0, 2, 3)), rtol=0, atol=1e-7)  # unbiased, as torch.std
    assert stats.mean.dtype == stats.std.dtype == torch.float32 and not stats.constant.any()


def test_statistics_are_computed_once_and_a_subset_gets_its_own(monkeypatch):
    calls = []

    def counting(x, *args, **kwargs):
        calls.append(len(x))
        return channel_stats(x, *args, **kwargs)

    monkeypatch.setattr(data_module, "channel_stats", counting)
    data = image_data(n=40)
    for _ in range(3):
        mean, std = data.mean, data.std
    assert calls == [40] and data.mean is mean and data.std is std
    part = data.subset(10)
    assert torch.allclose(part.mean.double(), (part.x_train.double() / 255).mean(dim=(0, 2, 3)), atol=1e-7)
    assert not torch.equal(part.mean, mean)  # the statistics of the training images actually used
    part.std
    assert calls == [40, 10]


def test_image_data_is_frozen_so_its_statistics_cannot_go_stale():
    data = image_data()
    data.mean
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.x_train = torch.zeros_like(data.x_train)


def test_a_constant_channel_normalizes_to_zeros_and_trains_without_nan(tmp_path):
    x = image_data(n=64).x_train.clone()
    x[:, 2] = 0  # "RGB" images whose blue channel is always 0
    data = image_data(x=x)
    assert data.stats.constant.tolist() == [False, False, True]
    assert data.std[2].item() == 1.0 and data.mean[2].item() == 0.0
    z = normalize(random_crop_flip(data.x_train, generator=torch.Generator().manual_seed(0)), data.mean, data.std)
    assert torch.isfinite(z).all() and (z[:, 2] == 0).all()
    x = x.clone()
    x[:, 2] = 200  # constant but not zero: the crop's zero padding reads -mean, still finite
    data = image_data(x=x)
    z = normalize(random_crop_flip(data.x_train, generator=torch.Generator().manual_seed(0)), data.mean, data.std)
    assert torch.isfinite(z).all() and z[:, 2].unique().tolist() == pytest.approx([-200 / 255, 0.0])
    cfg = TrainConfig(method="dlb", arch="small_cnn", epochs=1, batch_size=16, probe_size=8, device="cpu")
    row = Trainer(cfg, data=data, out_dir=None, progress=False).train_epoch()
    assert math.isfinite(row["train_loss"])


def test_a_training_set_of_one_solid_colour_is_refused():
    x = torch.empty(32, 3, 8, 8, dtype=torch.uint8)
    x[:, 0], x[:, 1], x[:, 2] = 10, 20, 30
    with pytest.raises(DataError) as e:
        check_trainable(image_data(x=x), "small_cnn", 8)
    one_line_error(e, "toy", "one solid colour", "RGB 10, 20, 30", "nothing to learn")


# ---------------------------------------------------------------------------------------------------------------
# Images too small (or too large) for the network
# ---------------------------------------------------------------------------------------------------------------

def test_images_too_small_for_the_network_are_refused_before_its_pooling_fails():
    data = image_data(size=4)
    with pytest.raises(RuntimeError, match="too small"):  # what the check prevents: MaxPool's error mid-forward
        build_model("small_cnn")(normalize(data.x_train[:2], data.mean, data.std))
    with pytest.raises(DataError) as e:
        check_trainable(data, "small_cnn", MIN_IMAGE_SIZE["small_cnn"])
    one_line_error(e, "images are 4x4", "arch small_cnn needs at least 8x8", "--arch")
    check_trainable(data, "resnet32", MIN_IMAGE_SIZE["resnet32"])  # global pooling: 4x4 is fine


@pytest.mark.parametrize("arch", sorted(MIN_IMAGE_SIZE))
def test_image_size_check_follows_each_networks_minimum(arch):
    side = MIN_IMAGE_SIZE[arch]
    check_image_size(image_data(n=4, size=side), arch, side)
    with pytest.raises(DataError, match=f"arch {arch} needs at least {side}x{side}"):
        check_image_size(image_data(n=4, size=side - 1), arch, side)


def test_a_non_square_image_is_judged_by_its_short_side_and_a_maximum_is_enforced():
    wide = image_data(x=torch.zeros(4, 3, 8, 40, dtype=torch.uint8))
    with pytest.raises(DataError, match="images are 40x8, arch vgg16 needs at least 32x32"):
        check_image_size(wide, "vgg16", 32)
    with pytest.raises(DataError, match="images are 64x64, arch vgg16 takes at most 63x63"):
        check_image_size(image_data(n=4, size=64), "vgg16", 32, max_side=63)


# ---------------------------------------------------------------------------------------------------------------
# Fewer than two classes
# ---------------------------------------------------------------------------------------------------------------

def write_image_folder(root: Path, classes=("cat", "dog"), per_class=2, size=8):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def test_an_image_folder_with_one_class_is_refused(tmp_path):
    root = write_image_folder(tmp_path / "imgs", classes=("cat",))
    with pytest.raises(DataError) as e:
        load_dataset(str(root))
    one_line_error(e, str(root / "train"), "1 class (cat): a classifier needs at least 2")


def test_label_noise_on_a_single_class_is_refused():
    with pytest.raises(ConfigError, match="label_noise needs at least 2 classes"):
        noisy_labels(torch.zeros(10, dtype=torch.long), ["only"], 0.2)
    x, y = torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)
    data = ImageData("one", ("only",), x, y, x, y)
    with pytest.raises(ConfigError, match="this data set has 1"):
        with_label_noise(data, 0.5)
    assert with_label_noise(data, 0.0) is data  # no noise asked, nothing to refuse


# ---------------------------------------------------------------------------------------------------------------
# Image files that do not decode: one line naming the file
# ---------------------------------------------------------------------------------------------------------------

def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels and holds none: all a decompression bomb check reads."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def encoded(fmt: str, size=8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


BAD_FILES = [  # (id, file name, bytes, what the line says)
    ("decompression-bomb", "bomb.png", png_header(30000, 30000), "DecompressionBombError"),
    ("bomb-warning-size", "big.png", png_header(10000, 10000), "DecompressionBombWarning"),
    ("ppm-header-not-a-number", "bad.ppm", b"P6\n8 x\n255\n", "ValueError"),
    ("ppm-header-maxval-zero", "zero.ppm", b"P6\n8 8\n0\n" + bytes(192), "maxval"),
    ("ppm-header-cut", "cut.ppm", b"P6\n8\n", "EOF"),
    ("truncated-jpeg", "half.jpg", encoded("JPEG", 64)[:400], "OSError"),
    ("truncated-png", "half.png", encoded("PNG")[:40], "not an image format PIL can decode"),
    ("garbage", "junk.png", b"this is not an image at all", "not an image format PIL can decode"),
    ("empty", "empty.bmp", b"", "not an image format PIL can decode"),
]


@pytest.mark.parametrize("name,content,match", [case[1:] for case in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_an_image_file_that_does_not_decode_is_refused_by_name(tmp_path, name, content, match):
    root = write_image_folder(tmp_path / "imgs")
    bad = root / "train" / "dog" / name
    bad.write_bytes(content)
    with pytest.raises(DataError) as e:
        load_dataset(str(root))
    one_line_error(e, f"cannot read image {bad}", match)


@pytest.mark.parametrize("where", ["train", "test"])
def test_images_of_different_sizes_are_refused(tmp_path, where):
    root = write_image_folder(tmp_path / "imgs")
    odd = root / where / "cat" / "odd.png"
    Image.fromarray(np.zeros((9, 12, 3), np.uint8)).save(odd)
    with pytest.raises(DataError) as e:
        load_dataset(str(root))
    one_line_error(e, f"{odd} is 12x9, other images are 8x8", "one size")


def test_a_class_folder_that_cannot_be_listed_is_refused_by_name(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "imgs")
    locked, iterdir = root / "test" / "dog", Path.iterdir

    def refusing(self):  # what a folder without read permission gives (tests may run as root, who can read all)
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", refusing)
    with pytest.raises(DataError) as e:
        load_dataset(str(root))
    one_line_error(e, f"cannot list {locked}: Permission denied")


# ---------------------------------------------------------------------------------------------------------------
# A bad cifar10-mini.npz under --data-root, and arrays that are not an image data set wherever they come from
# ---------------------------------------------------------------------------------------------------------------

def good_arrays(n=6, size=4):
    rng = np.random.default_rng(0)
    return {"classes": np.array(["a", "b", "c"]),
            "x_train": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), "y_train": np.arange(n) % 3,
            "x_test": rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8), "y_test": np.arange(3)}


def npz(tmp_path, **changes):
    arrays = {**good_arrays(), **changes}
    np.savez(tmp_path / "cifar10-mini.npz", **{k: v for k, v in arrays.items() if v is not None})


BAD_ARRAYS = [  # (id, changes to the good arrays, what the line says)
    ("no-labels", {"y_train": None},
     "lacks y_train (it has classes, x_train, x_test, y_test): an image data set needs arrays"),
    ("float-images", {"x_train": np.zeros((6, 4, 4, 3), np.float32)}, "x_train has dtype float32, expected uint8"),
    ("channels-first", {"x_train": np.zeros((6, 3, 4, 4), np.uint8)},
     "(N, H, W, 3) RGB images: it looks channels-first"),
    ("grey-images", {"x_test": np.zeros((3, 4, 4), np.uint8)}, "x_test has shape (3, 4, 4)"),
    ("no-test-images", {"x_test": np.zeros((0, 4, 4, 3), np.uint8), "y_test": np.zeros(0, np.int64)},
     "x_test holds no images"),
    ("label-too-large", {"y_train": np.array([0, 1, 2, 3, 0, 1])},
     "y_train holds labels 0..3, but there are 3 classes"),
    ("label-negative", {"y_test": np.array([0, -1, 2])}, "labels must be in 0..2"),
    ("float-labels", {"y_train": np.zeros(6, np.float64)}, "y_train must be one integer label per image"),
    ("labels-2d", {"y_train": np.zeros((6, 1), np.int64)}, "shape (6, 1)"),
    ("count-mismatch", {"y_train": np.zeros(5, np.int64)}, "6 images in x_train but 5 labels in y_train"),
    ("one-class", {"classes": np.array(["a"]), "y_train": np.zeros(6, np.int64),
                   "y_test": np.zeros(3, np.int64)},
     "1 class (a): a classifier needs at least 2"),
    ("class-name-scalar", {"classes": np.array("abc")}, "classes must be a list of class names"),
    ("duplicate-classes", {"classes": np.array(["a", "b", "a"])}, "class names must be distinct"),
    ("sizes-differ", {"x_test": np.zeros((3, 5, 5, 3), np.uint8)}, "training images are 4x4, test images 5x5"),
]


@pytest.mark.parametrize("changes,match", [c[1:] for c in BAD_ARRAYS], ids=[c[0] for c in BAD_ARRAYS])
def test_a_malformed_mini_npz_is_refused_naming_the_file_and_the_fault(tmp_path, changes, match):
    npz(tmp_path, **changes)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10-mini", root=tmp_path)
    one_line_error(e, str(tmp_path / "cifar10-mini.npz"), match)


def test_a_well_formed_npz_loads(tmp_path):
    npz(tmp_path)
    data = load_dataset("cifar10-mini", root=tmp_path)
    arrays = good_arrays()
    assert data.classes == ("a", "b", "c") and data.y_train.dtype == torch.long
    assert torch.equal(data.x_train, torch.from_numpy(arrays["x_train"]).permute(0, 3, 1, 2))


def write_npy(path):
    np.save(open(path, "wb"), np.zeros(3))


def write_truncated(path):
    np.savez_compressed(path, **good_arrays(n=60))
    path.write_bytes(path.read_bytes()[:300])


def write_corrupted(path):
    np.savez(path, **good_arrays(n=60))
    raw = bytearray(path.read_bytes())
    raw[200:260] = b"\xff" * 60  # inside x_train's data: the zip's CRC check fails on reading
    path.write_bytes(bytes(raw))


BAD_FILES_NPZ = [  # (id, how the file is made, what the line says)
    ("empty", lambda p: p.write_bytes(b""), "is empty"),
    ("garbage", lambda p: p.write_bytes(b"certainly not numpy"), "is not an .npz archive"),
    ("a-plain-npy", write_npy, "is not an .npz archive"),
    ("no-arrays", lambda p: np.savez(p), "lacks classes, x_train, y_train, x_test, y_test"),
    ("pickled-objects", lambda p: np.savez(p, **{**good_arrays(), "classes": np.array(["a", 1], dtype=object)}),
     "is damaged: ValueError: Object arrays cannot be loaded when allow_pickle=False"),
    ("truncated", write_truncated, "is not an .npz archive"),
    ("corrupted", write_corrupted, "is damaged: BadZipFile"),
    ("a-folder", lambda p: p.mkdir(), "cannot read"),
]


@pytest.mark.parametrize("make,match", [c[1:] for c in BAD_FILES_NPZ], ids=[c[0] for c in BAD_FILES_NPZ])
def test_an_unreadable_mini_npz_is_refused_naming_the_file(tmp_path, make, match):
    path = tmp_path / "cifar10-mini.npz"
    make(path)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10-mini", root=tmp_path)
    one_line_error(e, str(path), match)


def test_check_arrays_takes_tensors_and_an_image_data_built_by_hand_is_checked_before_training():
    arrays = {k: torch.as_tensor(v) if k != "classes" else v for k, v in good_arrays().items()}
    check_arrays(arrays, "tensors")
    arrays["y_test"] = torch.tensor([0, 1, 5])
    with pytest.raises(DataError, match="tensors: y_test holds labels 0..5, but there are 3 classes"):
        check_arrays(arrays, "tensors")
    data = image_data(size=8)
    data = dataclasses.replace(data, y_train=data.y_train + 1)  # labels 1..2 for classes c0, c1
    with pytest.raises(DataError, match="toy: y_train holds labels 1..2, but there are 2 classes"):
        check_trainable(data, "small_cnn", 8)
    assert set(ARRAY_KEYS) == set(good_arrays())


# ---------------------------------------------------------------------------------------------------------------
# Through the CLI: exit code 2 and one line on stderr, no traceback
# ---------------------------------------------------------------------------------------------------------------

CLI = ["--epochs", "1", "--device", "cpu", "--no-progress"]


def test_cli_refuses_a_keyless_mini_npz_in_one_line(tmp_path, capsys):
    np.savez(tmp_path / "cifar10-mini.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8))
    code = main(["train", "--dataset", "cifar10-mini", "--data-root", str(tmp_path), *CLI])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'cifar10-mini.npz'} lacks classes, y_train, x_test, y_test" in err


def test_cli_refuses_a_decompression_bomb_in_an_image_folder_in_one_line(tmp_path, capsys):
    root = write_image_folder(tmp_path / "imgs")
    (root / "test" / "cat" / "bomb.png").write_bytes(png_header(30000, 30000))
    code = main(["train", "--dataset", str(root), *CLI, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot read image {root / 'test' / 'cat' / 'bomb.png'}: DecompressionBombError" in err
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


@pytest.mark.parametrize("arch,size,match", [("small_cnn", 4, "needs at least 8x8"), ("vgg16", 64, "at most 63x63"),
                                             ("vgg16", 16, "needs at least 32x32")])
def test_the_cli_refuses_images_its_network_cannot_take_in_one_line(tmp_path, capsys, arch, size, match):
    # Without the trainer's check, small_cnn's pooling fails on 4x4 images and VGG-16's classifier on 64x64 ones.
    folder = tmp_path / "imgs"
    write_image_folder(folder, size=size)
    code = main(["train", "--dataset", str(folder), "--arch", arch, "--epochs", "1", "--batch-size", "2",
                 "--device", "cpu", "--no-progress", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and match in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was written


# ---------------------------------------------------------------------------------------------------------------
# Batches of one image on the smallest images an architecture takes
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,rows", [
    (dict(method="baseline", batch_size=64), 1),                  # 65 images: the last batch holds one
    (dict(method="dlb", forward="split", batch_size=1), 1),       # each half forwarded on its own: one image each
], ids=["last-batch-of-one", "split-forward-batch-size-1"])
def test_a_forward_of_one_image_into_a_1x1_batchnorm_is_refused_in_one_line(tmp_path, kwargs, rows):
    data = image_data(n=65, size=4, classes=2)
    cfg = TrainConfig(dataset="toy", arch="resnet32", epochs=1, device="cpu", probe_size=8, **kwargs)
    trainer = Trainer(cfg, data=data, out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError) as e:
        trainer.run()
    one_line_error(e, f"forwards {rows} image(s) at once and resnet32's BatchNorm sees a 1x1 map on 4x4 images",
                   "choose a --batch-size that leaves no batch of one image (65 training images)")
    assert ("not --forward split with --batch-size 1" in str(e.value)) is (kwargs.get("forward") == "split")
    good = dataclasses.replace(cfg, batch_size=13)  # 65 = 5 x 13: no batch of one
    Trainer(good, data=data, out_dir=tmp_path, force=True, progress=False).run()
