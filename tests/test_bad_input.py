"""Every kind of bad input named in the project's issues, through the CLI: exit code 2 and one line naming the
parameter (or the file), never a traceback; and the good inputs that used to break, accepted."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlb_edu.cli import main
from dlb_edu.data import load_dataset
from dlb_edu.errors import ConfigError
from dlb_edu.run_dir import DiskFull, atomic_write
from dlb_edu.smoke import smoke_mode
from dlb_edu.config import TrainConfig
from dlb_edu.train import Trainer, compare

# 128 of the synthetic images, 2 steps of 64: a run in about a second.
FAST = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "128", "--test-subset", "64", "--probe-size", "16",
        "--device", "cpu", "--no-progress"]


def image_folder(tmp_path, breakage=None, size=8):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / split / c / f"{i}.png")
    if breakage == "no_classes":
        shutil.rmtree(root / "train")
        (root / "train").mkdir()
    elif breakage == "mixed_sizes":
        Image.fromarray(np.zeros((size + 1, size + 1, 3), np.uint8)).save(root / "train" / "cat" / "big.png")
    elif breakage == "empty_split":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
    elif breakage == "unreadable":
        (root / "train" / "dog" / "bad.png").write_bytes(b"\x89PNG broken")
    elif breakage == "jupyter_leftovers":  # what Jupyter and macOS leave: hidden, to be skipped
        for split in ("train", "test"):
            (root / split / ".ipynb_checkpoints").mkdir()
            (root / split / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
            (root / split / "cat" / ".ipynb_checkpoints").mkdir()
    elif breakage == "empty_class":
        for split in ("train", "test"):
            (root / split / "bird").mkdir()
    elif breakage == "readme_class":
        for split in ("train", "test"):
            (root / split / "notes").mkdir()
            (root / split / "notes" / "README.md").write_text("what these images are")
    elif breakage == "class_only_in_test":
        (root / "test" / "bird").mkdir()
        Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(root / "test" / "bird" / "0.png")
    elif breakage == "class_without_test_images":
        for f in (root / "test" / "dog").glob("*.png"):
            f.unlink()
    elif breakage == "symlink_to_parent":
        (root / "train" / "all").symlink_to(root / "train")
        (root / "test" / "all").symlink_to(root / "test")
    elif breakage == "deep":
        for f in root.rglob("*.png"):
            Image.fromarray(rng.integers(0, 65536, (size, size), dtype=np.uint16)).save(f)
        Image.fromarray(np.full((size, size), 2.0, np.float32)).save(root / "train" / "cat" / "2.tiff")
    return str(root)


def finished_run(tmp_path, *extra):
    out = str(tmp_path / "run")
    assert main(["train", *FAST, "--out", out, *extra]) == 0
    return out


def corrupt_checkpoint(tmp_path):
    out = finished_run(tmp_path)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    return ["train", *FAST, "--epochs", "2", "--out", out, "--resume"]


def checkpoint_without(key):
    def make(tmp_path):
        out = finished_run(tmp_path)
        state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
        del state[key]
        torch.save(state, tmp_path / "run" / "checkpoint.pt")
        return ["train", *FAST, "--epochs", "2", "--out", out, "--resume"]
    return make


def checkpoint_with(change):
    """A finished run whose checkpoint has every key, one of them with a damaged value (``change(state)``)."""
    def make(tmp_path):
        out = finished_run(tmp_path)
        state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
        change(state)
        torch.save(state, tmp_path / "run" / "checkpoint.pt")
        return ["train", *FAST, "--epochs", "2", "--out", out, "--resume"]
    return make


def file_replaced_by_a_folder(name):
    def make(tmp_path):
        out = finished_run(tmp_path)
        (tmp_path / "run" / name).unlink()
        (tmp_path / "run" / name).mkdir()
        return ["train", *FAST, "--epochs", "2", "--out", out, "--resume"]
    return make


def folder_with_config(text):
    def make(tmp_path):
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "config.json").write_text(text)
        return ["train", *FAST, "--out", str(tmp_path / "run")]
    return make


def class_added_before_resume(tmp_path):
    data = image_folder(tmp_path, size=16)
    args = ["train", "--dataset", data, "--batch-size", "2", "--epochs", "1", "--probe-size", "4", "--device", "cpu",
            "--no-progress", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    for split in ("train", "test"):
        (tmp_path / "imgs" / split / "bird").mkdir()
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "imgs" / split / "bird" / "0.png")
    return [*args, "--epochs", "2", "--resume"]


def read_only_place(tmp_path):
    if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0:
        return ["train", *FAST, "--out", "/sys/dlb-edu-run"]  # root may write anywhere but into sysfs
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    return ["train", *FAST, "--out", str(tmp_path / "ro" / "run")]


def read_only_data_root(tmp_path):
    if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0:
        return ["train", "--dataset", "cifar10", "--download", "--data-root", "/sys/dlb-edu-data"]
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    return ["train", "--dataset", "cifar10", "--download", "--data-root", str(tmp_path / "ro")]


# (id, argv or a function of tmp_path giving argv, text the one error line must contain)
CASES = [
    # Values: types, finiteness and ranges of every field, checked before anything is loaded or written.
    ("temperature-zero", ["train", *FAST, "--temperature", "0"],
     "temperature must be a number in [0.01, 100], got 0.0"),
    ("temperature-negative", ["train", *FAST, "--temperature", "-3"], "temperature must be a number in [0.01, 100]"),
    ("temperature-inf", ["train", *FAST, "--temperature", "inf"], "temperature must be a number in [0.01, 100]"),
    ("temperature-nan", ["train", *FAST, "--temperature", "nan"], "temperature must be a number in [0.01, 100]"),
    ("alpha-negative", ["train", *FAST, "--alpha", "-0.1"], "alpha must be a number >= 0"),
    ("alpha-inf", ["train", *FAST, "--alpha", "inf"], "alpha must be a number >= 0 and finite in float32, got inf"),
    ("mix-alpha-inf", ["train", *FAST, "--mix-alpha", "inf"], "mix_alpha must be a number > 0 and finite"),
    ("mix-alpha-zero", ["train", *FAST, "--mix-alpha", "0"], "mix_alpha must be a number > 0"),
    ("lr-beyond-float32", ["train", *FAST, "--lr", "1e39"], "lr must be a number > 0 and finite in float32, got 1e+39"),
    ("lr-nan", ["train", *FAST, "--lr", "nan"], "lr must be a number > 0"),
    ("momentum-one", ["train", *FAST, "--momentum", "1"], "momentum must be a number in [0, 1)"),
    ("weight-decay-negative", ["train", *FAST, "--weight-decay", "-0.001"], "weight_decay must be a number >= 0"),
    ("milestone-beyond-the-run", ["train", *FAST, "--milestones", "0.5", "1.5"],
     "milestones must be a number in (0, 1]"),
    ("batch-size-zero", ["train", *FAST, "--batch-size", "0"], "batch_size must be an integer in [1, 2147483647]"),
    ("batch-size-too-large", ["train", *FAST, "--batch-size", "129"],
     "batch_size must be in [1, 128] (the training set of 128 images), got 129"),
    ("batch-size-not-a-number", ["train", *FAST, "--batch-size", "many"], "--batch-size: invalid int value"),
    ("cutout-size-huge-float", ["train", *FAST, "--cutout-size", "1e20"], "--cutout-size: invalid int value: '1e20'"),
    ("seed-negative", ["train", *FAST, "--seed", "-1"], "seed must be an integer in [0, 9223372036854775807], got -1"),
    ("seed-beyond-2-63", ["train", *FAST, "--seed", str(2 ** 63)],
     "seed must be an integer in [0, 9223372036854775807]"),
    ("probe-size-negative", ["train", *FAST, "--probe-size", "-1"],
     "probe_size must be an integer in [1, 2147483647]"),
    ("epochs-zero", ["train", *FAST, "--epochs", "0"], "epochs must be an integer in [1, 2147483647], got 0"),
    ("checkpoint-every-negative", ["train", *FAST, "--checkpoint-every", "-2"], "checkpoint_every must be an integer"),
    ("tfkd-correct-prob-below-a-half", ["train", *FAST, "--method", "tf_kd", "--tfkd-correct-prob", "0.05"],
     "tfkd_correct_prob must be a number in [0.5, 1], got 0.05"),
    ("label-noise-one", ["train", *FAST, "--label-noise", "1"], "label_noise must be a number in [0, 1), got 1.0"),
    ("bool-with-a-value", ["train", *FAST, "--nesterov=no"], "ignored explicit argument 'no'"),
    ("unknown-method", ["train", *FAST, "--method", "dml"], "method must be one of baseline, dlb"),
    ("unknown-arch", ["train", *FAST, "--arch", "resnet9"], "arch must be one of "),
    ("unknown-dataset", ["train", "--dataset", "cifar11"], "unknown dataset 'cifar11'"),
    ("unknown-preset", ["train", *FAST, "--preset", "huge"], "unknown preset 'huge'"),
    ("unknown-forward", ["train", *FAST, "--forward", "both"], "forward must be one of joint, split"),
    ("unknown-device", ["train", *FAST, "--device", "tpu"], "device must be auto, cpu or cuda"),
    ("unknown-command", ["fly"], "invalid choice: 'fly'"),
    ("compare-a-method-twice", ["compare", *FAST, "--methods", "baseline,baseline"],
     "--methods names baseline more than once"),
    # Data
    ("missing-image-folder", ["train", "--dataset", "/no/such/folder"], "image folder /no/such/folder does not exist"),
    ("path-with-a-newline", ["train", "--dataset", "/no/such\nfolder"],
     "image folder /no/such\\nfolder does not exist"),  # printed escaped, on one line
    ("image-folder-without-classes", lambda t: ["train", "--dataset", image_folder(t, "no_classes")],
     "has no class folders"),
    ("image-folder-mixed-sizes", lambda t: ["train", "--dataset", image_folder(t, "mixed_sizes")],
     "all images must have one size"),
    ("image-folder-empty-split", lambda t: ["train", "--dataset", image_folder(t, "empty_split")], "holds no images"),
    ("image-folder-unreadable-file", lambda t: ["train", "--dataset", image_folder(t, "unreadable")],
     "cannot read image"),
    ("image-folder-empty-class", lambda t: ["train", "--dataset", image_folder(t, "empty_class")],
     "imgs/train/bird holds no images"),
    ("image-folder-class-of-a-readme", lambda t: ["train", "--dataset", image_folder(t, "readme_class")],
     "imgs/train/notes holds no images"),
    ("image-folder-class-only-in-test", lambda t: ["train", "--dataset", image_folder(t, "class_only_in_test")],
     "class 'bird' is in "),
    ("image-folder-class-without-test-images",
     lambda t: ["train", "--dataset", image_folder(t, "class_without_test_images")], "imgs/test/dog holds no images"),
    ("image-folder-symlink-to-its-parent", lambda t: ["train", "--dataset", image_folder(t, "symlink_to_parent")],
     "imgs/train/all holds no images"),
    ("image-folder-float-image-beyond-one", lambda t: ["train", "--dataset", image_folder(t, "deep")],
     "2.tiff: a F image with values in [2, 2], outside [0, 1]: convert it to 8 bits"),
    ("cutout-larger-than-the-image", ["train", *FAST, "--augment", "cutout", "--cutout-size", "33"],
     "synthetic: cutout_size 33 is larger than the 32x32 images"),
    # Numbers argparse used to take for options
    ("weight-decay-negative-scientific", ["train", *FAST, "--weight-decay", "-1e-4"],
     "weight_decay must be a number >= 0, got -0.0001"),
    ("temperature-minus-inf", ["train", *FAST, "--temperature", "-inf"], "temperature must be a number in [0.01, 100]"),
    ("milestone-negative-scientific", ["train", *FAST, "--milestones", "-5E-1"],
     "milestones must be a number in (0, 1]"),
    ("class-added-before-resume", class_added_before_resume,
     "the data set's classes changed since the checkpoint was written: it had 2 (cat, dog), it now has 3 (bird, cat, "
     "dog)"),
    ("data-root-is-a-file", lambda t: (t / "f").write_text("x") and
     ["train", "--dataset", "cifar10", "--download", "--data-root", str(t / "f")],
     "f is a file, not a folder: pass --data-root (or set DLB_EDU_DATA to) a folder"),
    ("data-root-under-a-file", lambda t: (t / "f").write_text("x") and
     ["train", "--dataset", "cifar10", "--download", "--data-root", str(t / "f" / "data")],
     "cannot create the data folder"),
    ("data-root-read-only-with-download", read_only_data_root,
     "pass --data-root (or set DLB_EDU_DATA to) a folder you can write"),
    # Output folders
    ("out-empty", ["train", *FAST, "--out", ""], "--out must name a folder, got ''"),
    ("out-blank", ["train", *FAST, "--out", "  "], "--out must name a folder"),
    ("out-is-a-file", lambda t: (t / "f").write_text("x") and ["train", *FAST, "--out", str(t / "f")],
     "is a file, not a folder"),
    ("out-under-a-file", lambda t: (t / "f").write_text("x") and ["train", *FAST, "--out", str(t / "f" / "run")],
     "cannot write the run folder"),
    ("out-in-a-read-only-place", read_only_place, "cannot write the run folder"),
    ("config-json-is-a-list", folder_with_config("[]"), "config.json is not a run configuration"),
    ("config-json-is-null", folder_with_config("null"), "config.json is not a run configuration"),
    ("config-json-is-garbage", folder_with_config("{not json"), "config.json is not a run configuration"),
    ("resume-and-force", lambda t: ["train", *FAST, "--out", finished_run(t), "--resume", "--force"],
     "--resume continues the run in --out and --force starts it over: pass one of them"),
    ("resume-without-checkpoint", lambda t: ["train", *FAST, "--out", str(t / "empty"), "--resume"],
     "nothing to resume"),
    ("corrupt-checkpoint", corrupt_checkpoint, "is corrupt or not a dlb_edu checkpoint"),
    ("checkpoint-without-its-optimizer", checkpoint_without("optimizer"), "checkpoint.pt lacks optimizer"),
    ("checkpoint-without-its-config", checkpoint_without("config"), "checkpoint.pt lacks config"),
    ("checkpoint-with-no-ranks", checkpoint_with(lambda s: s.update(ranks=[])),
     "checkpoint.pt is damaged (it holds 0 ranks for 1 processes)"),
    ("checkpoint-with-a-rank-without-sampler", checkpoint_with(lambda s: s["ranks"][0].pop("sampler")),
     "is damaged (a rank's sampler, method or statistics are missing)"),
    ("checkpoint-history-row-without-a-column", checkpoint_with(lambda s: s["history"][0].pop("test_acc")),
     "is damaged (its history rows do not have the columns epoch, "),
    ("checkpoint-with-a-bad-rng-state",
     checkpoint_with(lambda s: s.update(torch_rng=torch.zeros(7, dtype=torch.uint8))),
     "is damaged (its RNG state is not torch's)"),
    ("checkpoint-classes-not-a-list", checkpoint_with(lambda s: s.update(classes="cat,dog")),
     "is damaged (its classes are not a list of names)"),
    ("checkpoint-world-size-zero", checkpoint_with(lambda s: s.update(world_size=0)),
     "is damaged (its world_size is 0)"),
    ("history-csv-is-a-folder", file_replaced_by_a_folder("history.csv"),
     "history.csv is a folder, not a file: move it out of the run folder"),
    ("config-json-is-a-folder", file_replaced_by_a_folder("config.json"),
     "config.json is a folder, not a file: move it out of the run folder"),
    ("checkpoint-of-another-configuration",
     lambda t: ["train", *FAST, "--epochs", "2", "--alpha", "0.3", "--out", finished_run(t), "--resume"],
     "different run (alpha: 1.0 -> 0.3)"),
    ("out-folder-holds-another-run", lambda t: ["train", *FAST, "--temperature", "4", "--out", finished_run(t)],
     "holds a different run (temperature: 3.0 -> 4.0): choose another --out or pass --force"),
    ("out-folder-holds-this-run", lambda t: ["train", *FAST, "--out", finished_run(t)],
     "already holds this run: pass --resume"),
    ("out-folder-holds-outputs-without-checkpoint",
     lambda t: (t / "run").mkdir() or (t / "run" / "history.csv").write_text("epoch\n") and
     ["train", *FAST, "--out", str(t / "run")], "holds a run's history.csv but no checkpoint.pt"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, expected):
    if callable(argv):
        argv = argv(tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("dlb_edu: error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["train", *FAST, "--seed", "100000000000000"],       # used to overflow in the sampler's seed arithmetic
    ["train", *FAST, "--seed", "100000000000000", "--label-noise", "0.2", "--method", "cs_kd"],  # and the others'
    ["train", *FAST, "--seed", str(2 ** 63 - 1)],
    ["train", *FAST, "--method", "tf_kd", "--tfkd-correct-prob", "0.5"],
    ["train", *FAST, "--milestones"],                    # no milestone: a constant learning rate
], ids=["seed-1e14", "seed-1e14-noise-pairs", "largest-seed", "tfkd-correct-prob-a-half", "no-milestones"])
def test_good_inputs_that_used_to_break_train(argv):
    assert main(argv) == 0


def test_an_image_folder_made_in_jupyter_loads_without_its_hidden_entries(tmp_path):
    data = load_dataset(image_folder(tmp_path, "jupyter_leftovers"))
    assert data.classes == ("cat", "dog") and len(data.x_train) == len(data.x_test) == 4


def test_sixteen_bit_images_are_scaled_by_their_range_not_clipped(tmp_path):
    root = Path(image_folder(tmp_path))
    grey = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)  # up to 63000 of 65535
    for f in root.rglob("*.png"):
        Image.fromarray(grey).save(f)
    x = load_dataset(str(root)).x_train
    expected = torch.from_numpy(np.rint(grey / 257.0).astype(np.uint8))  # 65535 / 255 = 257
    assert all(torch.equal(x[i, c], expected) for i in range(len(x)) for c in range(3))
    assert int(x.max()) == 245  # clipping to 8 bits would have made nearly every pixel 255


@pytest.mark.parametrize("value,on", [("1", True), ("TRUE", True), ("yes", True), (" On ", True), ("0", False),
                                      ("false", False), ("No", False), ("off", False), ("", False)])
def test_smoke_mode_takes_the_usual_spellings(monkeypatch, value, on):
    monkeypatch.setenv("DLB_EDU_SMOKE", value)
    assert smoke_mode() is on


@pytest.mark.parametrize("value", ["2", "ture", "enabled", "-1"])
def test_smoke_mode_refuses_any_other_value_in_one_line(monkeypatch, value):
    monkeypatch.setenv("DLB_EDU_SMOKE", value)
    with pytest.raises(ConfigError) as e:
        smoke_mode()
    assert str(e.value) == (f"DLB_EDU_SMOKE={value!r} is neither on (1, true, yes, on) nor off (0, false, no, off, "
                            f"empty): set one of those")


needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) for a real ENOSPC")


@needs_dev_full
def test_a_full_disk_during_a_checkpoint_write_says_so_and_where_the_last_good_checkpoint_is(tmp_path, capsys,
                                                                                          monkeypatch):
    out = finished_run(tmp_path)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        with open("/dev/full", "wb") as full:  # the kernel's own ENOSPC
            real_save(obj, full, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    capsys.readouterr()
    code = main(["train", *FAST, "--epochs", "2", "--out", out, "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    ckpt = tmp_path / "run" / "checkpoint.pt"
    assert err == (f"dlb_edu: error: the disk is full: cannot write {ckpt} (No space left on device); the last good "
                   f"checkpoint is {ckpt} (after epoch 1): free some space, then continue with --resume\n")
    assert ckpt.read_bytes() == before and not list((tmp_path / "run").glob(".*.tmp"))


@needs_dev_full
def test_a_full_disk_during_a_small_file_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def write_to_a_full_disk(p):
        with open("/dev/full", "w") as full:
            full.write("x" * 10_000)
            full.flush()

    with pytest.raises(DiskFull, match=f"^the disk is full: cannot write {target} \\(No space left on device\\)$"):
        atomic_write(target, write_to_a_full_disk)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_dlb_edu_data_naming_a_file_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("DLB_EDU_DATA", str(tmp_path / "f"))
    capsys.readouterr()
    assert main(["train", "--dataset", "cifar10-mini", *FAST[2:]]) == 2
    assert capsys.readouterr().err == (f"dlb_edu: error: the data root {tmp_path / 'f'} is a file, not a folder: pass "
                                       f"--data-root (or set DLB_EDU_DATA to) a folder\n")


def test_force_starts_over_in_a_folder_with_another_run(tmp_path):
    out = finished_run(tmp_path)
    assert main(["train", *FAST, "--temperature", "4", "--out", out, "--force"]) == 0


def test_nan_loss_stops_with_one_line_naming_the_step(tmp_path, capsys):
    code = main(["train", *FAST, "--lr", "1e30", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("dlb_edu: training stopped: the loss became") and "at epoch 1, step " in err
    assert "no checkpoint of this run was written" in err


# The Python API as a notebook calls it: a wrong type is one ConfigError line, as the CLI gives.
API_CONFIG = TrainConfig(dataset="synthetic", epochs=1, device="cpu")
API_CASES = [
    ("compare-methods-a-string", lambda: compare(API_CONFIG, methods="dlb"),
     "methods must be a list of method names such as ['baseline', 'dlb'], got 'dlb'"),
    ("compare-methods-not-names", lambda: compare(API_CONFIG, methods=["dlb", 3]),
     "methods must be a list of method names"),
    ("compare-unknown-method", lambda: compare(API_CONFIG, methods=["dml"]), "method must be one of baseline, dlb"),
    ("compare-config-a-dict", lambda: compare(API_CONFIG.to_dict()),
     "config must be a TrainConfig, got a dict: pass TrainConfig(**that_dict)"),
    ("trainer-config-a-dict", lambda: Trainer(API_CONFIG.to_dict()), "config must be a TrainConfig, got a dict"),
    ("trainer-config-a-string", lambda: Trainer("quick"), "config must be a TrainConfig, got str"),
    ("trainer-data-a-name", lambda: Trainer(API_CONFIG, data="synthetic"),
     "data must be an ImageData (from dlb_edu.data.load_dataset) or None, got str"),
    ("trainer-out-dir-a-number", lambda: Trainer(API_CONFIG, out_dir=3),
     "out_dir must be a folder path (str or Path) or None, got int"),
    ("compare-out-dir-a-list", lambda: compare(API_CONFIG, out_dir=["runs"]), "out_dir must be a folder path"),
    ("trainer-resume-a-string", lambda: Trainer(API_CONFIG, resume="yes"), "resume must be True or False, got 'yes'"),
    ("preset-a-number", lambda: TrainConfig.from_preset(3), "unknown preset 3: choose one of"),
    ("preset-none", lambda: TrainConfig.from_preset(None), "unknown preset None"),
]


@pytest.mark.parametrize("call,expected", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_the_python_api_refuses_a_wrong_type_in_one_line(call, expected):
    with pytest.raises(ConfigError) as e:
        call()
    assert expected in str(e.value) and "\n" not in str(e.value)
