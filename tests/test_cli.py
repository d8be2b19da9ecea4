"""The command line: options generated from the config, outputs and resume, compare, one-line errors, and a
matplotlib backend left alone."""
import dataclasses
import json
import subprocess
import sys
import typing

import pytest

from dlb_edu.cli import build_parser, config_from_args, flag, main
from dlb_edu.config import TrainConfig

# 128 of the synthetic images, 2 steps of 64: a run in about a second.
FAST = ["--dataset", "synthetic", "--epochs", "1", "--train-subset", "128", "--test-subset", "64", "--probe-size", "16",
        "--device", "cpu", "--no-progress"]


@pytest.mark.slow
def test_no_traceback_from_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "dlb_edu", "train", "--temperature", "0", *FAST],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "dlb_edu: error: temperature must be a number in [0.01, 100], got 0.0\n"


def another_valid_value(field: dataclasses.Field, hint, default):
    """A value of the field's type and range that differs from ``default``, as command-line words."""
    meta = field.metadata
    if hint is bool:
        return [flag(field.name) if not default else "--no-" + flag(field.name)[2:]], not default
    if meta["choices"] is not None:
        value = next(c for c in meta["choices"] if c != default)
    elif hint is int:
        value = (default or meta["low"]) + 1
    elif hint is float:
        value = (default + meta["high"]) / 2 if meta["high"] is not None and default != meta["high"] else default / 2
        value = value if value != default else 0.5
    elif typing.get_origin(hint) is tuple:
        return [flag(field.name), "0.5"], (0.5,)
    else:
        value = {"dataset": "synthetic", "device": "cpu"}.get(field.name, "somewhere")
    return [flag(field.name), str(value)], value


def test_every_config_field_is_an_option_that_reaches_the_config():
    hints = typing.get_type_hints(TrainConfig)
    quick = TrainConfig.from_preset("quick")
    for field in dataclasses.fields(TrainConfig):
        if field.name == "method":
            continue
        hint = hints[field.name]
        if type(None) in typing.get_args(hint):  # `int | None`: an int
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        words, value = another_valid_value(field, hint, getattr(quick, field.name))
        cfg = config_from_args(build_parser().parse_args(["train", *words]))
        assert getattr(cfg, field.name) == value, field.name


def test_help_lists_every_field_with_its_help_text(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for field in dataclasses.fields(TrainConfig):
        assert flag(field.name) in text, field.name
        assert " ".join(field.metadata["help"].split()) in text, field.name


def test_train_writes_outputs_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    assert main(["train", *FAST, "--out", str(out)]) == 2  # refuses to overwrite silently
    assert main(["train", *[a if a != "1" else "2" for a in FAST], "--out", str(out), "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["method"] == "dlb"
    assert len((out / "history.csv").read_text().strip().splitlines()) == 3


def test_compare_prints_a_table_and_saves_curves(tmp_path, capsys):
    assert main(["compare", *FAST, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "dlb" in out and "final acc" in out and "best acc" in out
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    for method in ("baseline", "dlb"):
        assert json.loads((tmp_path / method / "summary.json").read_text())["method"] == method


def test_compare_refuses_a_method_named_twice_before_training(tmp_path, capsys):
    assert main(["compare", *FAST, "--methods", "baseline,dlb,baseline", "--out", str(tmp_path / "cmp")]) == 2
    assert capsys.readouterr().err == ("dlb_edu: error: --methods names baseline more than once: each method runs "
                                       "once\n")
    assert not (tmp_path / "cmp").exists()


def test_compare_refuses_a_bad_run_folder_before_training_any(tmp_path, capsys):
    (tmp_path / "cmp" / "dlb").mkdir(parents=True)
    (tmp_path / "cmp" / "dlb" / "config.json").write_text("null")
    assert main(["compare", *FAST, "--out", str(tmp_path / "cmp")]) == 2
    assert "is not a run configuration" in capsys.readouterr().err
    assert not (tmp_path / "cmp" / "baseline" / "checkpoint.pt").exists()  # the baseline did not train


def test_importing_viz_leaves_the_matplotlib_backend_alone():
    code = "import matplotlib; matplotlib.use('svg'); import dlb_edu.viz; print(matplotlib.get_backend())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "svg"


def test_an_error_is_one_line_even_with_progress_bars_asked_for(tmp_path, capsys):
    # Bars are drawn only on a terminal: in a log (here, a captured stderr) no frame precedes the error line.
    code = main(["train", *[a for a in FAST if a != "--no-progress"], "--lr", "1e30", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "\r" not in err, repr(err)
    assert err.startswith("dlb_edu: training stopped: ")
