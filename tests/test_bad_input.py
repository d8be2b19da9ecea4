"""Every kind of bad input named in the project's issues, through the CLI: exit code 2 and one line naming the
parameter (or the file), never a traceback; and the good inputs that used to break, accepted."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dlb_edu.cli import main

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
    ("class-added-before-resume", class_added_before_resume,
     "the data set's classes changed since the checkpoint was written: it had 2 (cat, dog), it now has 3 (bird, cat, "
     "dog)"),
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


def test_force_starts_over_in_a_folder_with_another_run(tmp_path):
    out = finished_run(tmp_path)
    assert main(["train", *FAST, "--temperature", "4", "--out", out, "--force"]) == 0


def test_nan_loss_stops_with_one_line_naming_the_step(tmp_path, capsys):
    code = main(["train", *FAST, "--lr", "1e30", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("dlb_edu: training stopped: the loss became") and "at epoch 1, step " in err
    assert "no checkpoint of this run was written" in err
