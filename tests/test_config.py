"""The run's settings are checked in one place, on construction: types, finiteness and ranges of every field."""
import dataclasses

import numpy as np
import pytest

from dlb_edu.config import TrainConfig, resumable_fields
from dlb_edu.errors import ConfigError
from knob_cases import KNOB_VALUES, config_verdict


@pytest.mark.parametrize("field,value,match", [
    ("lr", "0.1", r"lr must be a number > 0, got '0.1'"),
    ("lr", float("inf"), r"lr must be a number > 0 and finite in float32, got inf"),
    ("lr", 1e39, r"finite in float32"),
    ("nesterov", "no", r"nesterov must be true or false, got 'no'"),
    ("nesterov", 1, r"nesterov must be true or false, got 1"),
    ("probe_size", -1, r"probe_size must be an integer in \[1, 2147483647\], got -1"),
    ("epochs", 2.0, r"epochs must be an integer in \[1, 2147483647\], got 2.0"),
    ("epochs", True, r"epochs must be an integer"),
    ("cutout_size", 1e20, r"cutout_size must be an integer"),
    ("cutout_size", 10 ** 20, r"cutout_size must be an integer in \[1, 2147483647\]"),
    ("seed", 2 ** 63, r"seed must be an integer in \[0, 9223372036854775807\]"),
    ("temperature", float("nan"), r"temperature must be a number in \[0.01, 100\]"),
    ("temperature", 101, r"temperature must be a number in \[0.01, 100\], got 101.0"),
    ("alpha", -1e-9, r"alpha must be a number >= 0"),
    ("tfkd_correct_prob", 0.05, r"tfkd_correct_prob must be a number in \[0.5, 1\], got 0.05"),
    ("label_noise", 1.0, r"label_noise must be a number in \[0, 1\)"),
    ("milestones", 0.5, r"milestones must be a list of numbers"),
    ("milestones", (0.5, "x"), r"milestones must be a number in \(0, 1\], got 'x'"),
    ("method", "dml", r"method must be one of baseline, dlb, label_smoothing, tf_kd, cs_kd, ps_kd, got 'dml'"),
    ("arch", None, r"arch must be a non-empty string, got None"),
    ("dataset", "", r"dataset must be a non-empty string, got ''"),
    ("device", "tpu", r"device must be auto, cpu or cuda\[:N\], got 'tpu'"),
    ("data_root", 3, r"data_root must be a non-empty string, got 3"),
    ("train_subset", 0, r"train_subset must be an integer in \[1, 2147483647\], got 0"),
])
def test_bad_values_are_refused_naming_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value})


def test_a_config_changed_after_construction_is_checked_again():
    cfg = TrainConfig()
    cfg.batch_size = 0
    with pytest.raises(ConfigError, match="batch_size"):
        cfg.validate()
    with pytest.raises(ConfigError, match="alpha"):
        dataclasses.replace(TrainConfig(), alpha=-1)


@pytest.mark.parametrize("name,value", KNOB_VALUES)
def test_dlb_set_refuses_exactly_what_the_config_refuses(name, value):
    from dlb_edu.methods import DLB

    dlb = DLB(temperature=3.0, alpha=1.0)
    verdict, what = config_verdict(name, value)
    if verdict == "refused":
        with pytest.raises(ConfigError) as caught:
            dlb.set(**{name: value})
        assert str(caught.value) == what
        assert (dlb.temperature, dlb.alpha) == (3.0, 1.0)  # unchanged
    else:
        dlb.set(**{name: value})
        assert getattr(dlb, name) == what and type(getattr(dlb, name)) is float


def test_the_config_refuses_too_small_a_temperature_in_one_line():
    with pytest.raises(ConfigError) as caught:
        TrainConfig(temperature=0.005)
    assert str(caught.value) == "temperature must be a number in [0.01, 100], got 0.005"


def test_teaching_ranges_lie_inside_the_fields_rules():
    from dlb_edu.config import TEACHING_RANGES, check_value

    for name, (low, high) in TEACHING_RANGES.items():
        assert check_value(name, low) == low and check_value(name, high) == high


def test_the_settings_load_no_implementation_above_them():
    import subprocess
    import sys

    code = "import sys, dlb_edu.config; print(' '.join(sorted(m for m in sys.modules if m.startswith('dlb_edu.'))))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert {"dlb_edu.config", "dlb_edu.errors", "dlb_edu.models"} <= loaded  # models fills config.ARCHS
    above = {"dlb_edu.methods", "dlb_edu.augment", "dlb_edu.pairs", "dlb_edu.noise", "dlb_edu.data", "dlb_edu.train"}
    assert not loaded & above, f"importing the settings loaded {sorted(loaded & above)}"


def test_nesterov_needs_momentum():
    with pytest.raises(ConfigError, match="nesterov needs momentum > 0"):
        TrainConfig(momentum=0.0)
    assert TrainConfig(momentum=0.0, nesterov=False).momentum == 0.0


def test_numbers_are_normalized_so_equal_configs_compare_equal():
    cfg = TrainConfig(lr=1, epochs=np.int64(3), milestones=[0.5], temperature=np.float32(2.0))
    assert (type(cfg.lr), type(cfg.epochs), cfg.milestones, type(cfg.temperature)) == (float, int, (0.5,), float)
    assert cfg == TrainConfig(lr=1.0, epochs=3, milestones=(0.5,), temperature=2.0)


def test_to_dict_and_from_dict_round_trip():
    cfg = TrainConfig.from_preset("paper", method="cs_kd", forward="joint", seed=7)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown configuration field"):
        TrainConfig.from_dict({**cfg.to_dict(), "fast": "auto"})
    with pytest.raises(ConfigError, match="must be a JSON object, got list"):
        TrainConfig.from_dict([])


def test_only_fields_that_change_nothing_computed_may_change_on_resume():
    # device and threads change only the rounding (which kernels, how reductions are split), not the computation
    assert set(resumable_fields()) == {"epochs", "device", "threads", "checkpoint_every", "data_root", "download",
                                       "tensorboard"}


def test_unknown_preset_is_refused():
    with pytest.raises(ConfigError, match="unknown preset 'huge': choose one of paper, quick, cpu, cs_kd_authors, "
                                          "ps_kd_authors"):
        TrainConfig.from_preset("huge")
