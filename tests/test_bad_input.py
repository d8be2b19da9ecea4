"""Every bad input named in the project's issues, through the CLI: exit code 2 and one line naming the parameter."""
import shutil

import numpy as np
import pytest
from PIL import Image

from dlb_edu.cli import main

FAST = ["--dataset", "synthetic", "--epochs", "1", "--test-subset", "64", "--device", "cpu", "--no-progress"]


def image_folder(tmp_path, breakage=None):
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / split / c / f"{i}.png")
    if breakage == "no_classes":
        shutil.rmtree(root / "train")
        (root / "train").mkdir()
    elif breakage == "mixed_sizes":
        Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "train" / "cat" / "big.png")
    elif breakage == "empty_split":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
    elif breakage == "unreadable":
        (root / "train" / "dog" / "bad.png").write_bytes(b"\x89PNG broken")
    return str(root)


def finished_run(tmp_path, *extra):
    out = str(tmp_path / "run")
    assert main(["train", *FAST, "--out", out, *extra]) == 0
    return out


def corrupt_checkpoint(tmp_path):
    out = finished_run(tmp_path)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    return ["train", *FAST, "--epochs", "2", "--out", out, "--resume"]


# (id, argv or a function of tmp_path giving argv, text the one error line must contain)
CASES = [
    ("temperature-zero", ["train", *FAST, "--temperature", "0"], "temperature must be > 0"),
    ("temperature-negative", ["train", *FAST, "--temperature", "-3"], "temperature must be > 0"),
    ("alpha-negative", ["train", *FAST, "--alpha", "-0.1"], "alpha must be >= 0"),
    ("batch-size-zero", ["train", *FAST, "--batch-size", "0"], "batch_size must be an integer >= 1"),
    ("batch-size-too-large", ["train", *FAST, "--batch-size", "513"], "batch_size must be at most the training set"),
    ("batch-size-not-a-number", ["train", *FAST, "--batch-size", "many"], "--batch-size: invalid int value"),
    ("unknown-method", ["train", *FAST, "--method", "dml"], "unknown method 'dml'"),
    ("unknown-arch", ["train", *FAST, "--arch", "resnet9"], "unknown arch 'resnet9'"),
    ("unknown-dataset", ["train", "--dataset", "cifar11"], "unknown dataset 'cifar11'"),
    ("unknown-preset", ["train", *FAST, "--preset", "huge"], "unknown preset 'huge'"),
    ("unknown-forward", ["train", *FAST, "--forward", "both"], "forward must be one of joint, split"),
    ("unknown-device", ["train", *FAST, "--device", "tpu"], "device must be auto, cpu or cuda"),
    ("unknown-command", ["fly"], "invalid choice: 'fly'"),
    ("missing-image-folder", ["train", "--dataset", "/no/such/folder"], "image folder /no/such/folder does not exist"),
    ("image-folder-without-classes", lambda t: ["train", "--dataset", image_folder(t, "no_classes")],
     "has no class folders"),
    ("image-folder-mixed-sizes", lambda t: ["train", "--dataset", image_folder(t, "mixed_sizes")],
     "all images must have one size"),
    ("image-folder-empty-split", lambda t: ["train", "--dataset", image_folder(t, "empty_split")], "holds no images"),
    ("image-folder-unreadable-file", lambda t: ["train", "--dataset", image_folder(t, "unreadable")],
     "cannot read image"),
    ("resume-without-checkpoint", lambda t: ["train", *FAST, "--out", str(t / "empty"), "--resume"],
     "nothing to resume"),
    ("corrupt-checkpoint", corrupt_checkpoint, "is corrupt or not a dlb_edu checkpoint"),
    ("checkpoint-of-another-configuration", lambda t: ["train", *FAST, "--epochs", "2", "--alpha", "0.3", "--out",
                                                        finished_run(t), "--resume"], "different run (alpha: 1.0 -> 0.3)"),
    ("out-folder-holds-another-run", lambda t: ["train", *FAST, "--temperature", "4", "--out", finished_run(t)],
     "holds a different run (temperature: 3.0 -> 4.0): choose another --out or pass --force"),
    ("out-folder-holds-this-run", lambda t: ["train", *FAST, "--out", finished_run(t)],
     "already holds this run: pass --resume"),
    ("out-is-a-file", lambda t: (t / "f").write_text("x") and ["train", *FAST, "--out", str(t / "f")],
     "is a file, not a folder"),
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


def test_force_starts_over_in_a_folder_with_another_run(tmp_path):
    out = finished_run(tmp_path)
    assert main(["train", *FAST, "--temperature", "4", "--out", out, "--force"]) == 0


def test_nan_loss_stops_with_one_line_naming_the_step(tmp_path, capsys):
    code = main(["train", *FAST, "--lr", "1e30", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("dlb_edu: training stopped: the loss became") and "at epoch 1, step " in err
