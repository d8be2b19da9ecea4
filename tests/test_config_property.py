"""Property: any value of any setting, given to TrainConfig or on the command line, is either refused with a one-line
ConfigError (the CLI's exit code 2) or accepted, and an accepted run trains a step on synthetic data. Never another
exception.

The examples are drawn deterministically (``derandomize``) and kept few, so the test is quick and CI is repeatable.
Two kinds of values are left out on purpose, because they are valid and slow, not because they could break:
the large architectures (resnet110, vgg16, wrn20_8, densenet40_12: test_models builds them) and ``compile=True``
(torch.compile of a CPU model takes a minute).
"""
import dataclasses
import math
import typing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlb_edu.cli import build_parser, config_from_args, flag, one_line
from dlb_edu.config import TrainConfig
from dlb_edu.data import make_synthetic
from dlb_edu.errors import ConfigError
from dlb_edu.train import Trainer, compare

SYNTHETIC = make_synthetic(n_train=128, n_test=32, size=16)
BASE = dict(dataset="synthetic", device="cpu", probe_size=8)
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
HINTS = typing.get_type_hints(TrainConfig)
CHEAP_ARCHS = ("small_cnn", "resnet32")

anything = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
                     st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3))


def values_for(name: str):
    """Values of the field's type (inside and outside its range, the edges, non-finite) and values of any type."""
    hint, meta = HINTS[name], FIELDS[name].metadata
    if type(None) in typing.get_args(hint):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if name == "arch":
        typed = st.sampled_from(CHEAP_ARCHS + ("resnet9", ""))
    elif name == "compile":
        return st.one_of(st.just(False), anything.filter(lambda v: v is not True))
    elif name == "dataset":
        typed = st.sampled_from(("synthetic", "synthetic", "no-such-set", "", "/no/such\nfolder"))
    elif name == "device":
        typed = st.sampled_from(("cpu", "auto", "cuda", "cuda:1", "tpu", "", "cpu:0"))
    elif meta["choices"] is not None:
        typed = st.one_of(st.sampled_from(list(meta["choices"])), st.text(max_size=8))
    elif hint is bool:
        typed = st.booleans()
    elif hint is int:
        inside = st.integers(min_value=meta["low"], max_value=min(meta["high"], 600))
        typed = st.one_of(inside, inside, st.integers(min_value=-3, max_value=600),
                          st.integers(min_value=2 ** 31 - 2, max_value=2 ** 64),
                          st.floats(min_value=-10, max_value=1e20))
    elif hint is float:
        edges = [v for v in (meta["low"], meta["high"]) if v is not None]
        inside = st.floats(min_value=meta["low"], max_value=meta["high"] if meta["high"] is not None else 1e3,
                           exclude_min=meta["low_open"], exclude_max=meta["high_open"])
        typed = st.one_of(inside, inside, st.floats(allow_nan=True, allow_infinity=True),
                          st.sampled_from(edges + [1e39, -0.0]))
    elif typing.get_origin(hint) is tuple:
        typed = st.lists(st.floats(min_value=-0.5, max_value=1.5), max_size=3)
    else:  # data_root
        typed = st.text(max_size=10)
    return st.one_of(typed, typed, typed, anything)  # mostly the field's own type


@st.composite
def overrides(draw) -> dict:
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True))
    return {name: draw(values_for(name)) for name in names}


def train_one_step(cfg: TrainConfig) -> None:
    """Build the run and train its first step (and a second one: DLB's first with a cached teacher)."""
    trainer = Trainer(cfg, data=SYNTHETIC if cfg.dataset == "synthetic" else None, progress=False)
    batches = iter(trainer.sampler)
    loss = trainer.train_step(next(batches), 0, 0).loss
    assert loss.ndim == 0 and math.isfinite(loss.item())  # computed before the first update
    if len(trainer.sampler) > 1:
        trainer.train_step(next(batches), 0, 1)  # may diverge with an absurd lr, but must not raise


def refused_in_one_line(error: ConfigError) -> None:
    assert str(error) and "\n" not in one_line(str(error))


PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(overrides())
def test_any_values_are_refused_with_config_error_or_train_a_step(values):
    try:
        cfg = TrainConfig(**{**BASE, **values})
        train_one_step(cfg)
    except ConfigError as e:
        refused_in_one_line(e)


def words_for(name: str):
    """Command-line words for one option: its flag and a value as text (a bool's flag alone, or negated)."""
    if HINTS[name] is bool:
        return st.sampled_from([[flag(name)], ["--no-" + flag(name)[2:]], [flag(name) + "=yes"]])
    text = st.one_of(values_for(name).map(str), st.text(max_size=8))
    return text.map(lambda value: [flag(name), value])


@st.composite
def command_lines(draw) -> list[str]:
    names = draw(st.lists(st.sampled_from([n for n in sorted(FIELDS) if n not in ("method", "compile")]),
                          min_size=1, max_size=3, unique=True))
    words = ["train", "--dataset", "synthetic", "--device", "cpu", "--probe-size", "8"]
    for name in names:
        words += draw(words_for(name))
    return words


@PROPERTY
@given(command_lines())
def test_any_command_line_is_refused_in_one_line_or_trains_a_step(argv):
    try:
        cfg = config_from_args(build_parser().parse_args(argv))
        train_one_step(cfg)
    except ConfigError as e:
        refused_in_one_line(e)


def test_the_examples_reach_both_outcomes():
    """The properties above are not vacuous: the strategies produce accepted and refused settings alike."""
    outcomes = set()

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(overrides())
    def collect(values):
        try:
            TrainConfig(**{**BASE, **values})
            outcomes.add("accepted")
        except ConfigError:
            outcomes.add("refused")

    collect()
    assert outcomes == {"accepted", "refused"}



# The Python API's other arguments, as a notebook may pass them: any value is refused in one line or accepted.
api_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=6),
                       st.lists(st.text(max_size=6), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                  max_size=2))


API_PROPERTY = settings(PROPERTY, max_examples=12)  # each accepted example builds a run (or trains a comparison)


@API_PROPERTY
@given(data=st.one_of(st.just(SYNTHETIC), st.just(None), api_values),
       out_dir=st.one_of(st.just("run"), st.none(), api_values),
       resume=st.one_of(st.booleans(), api_values), force=st.one_of(st.booleans(), api_values))
def test_any_trainer_arguments_are_refused_in_one_line_or_build_a_run(tmp_path_factory, data, out_dir, resume, force):
    if isinstance(out_dir, str) and out_dir:
        out_dir = tmp_path_factory.mktemp("api") / out_dir  # a fresh folder each example, never the working one
    elif isinstance(out_dir, str):
        out_dir = ""  # refused: it would be the current folder
    cfg = TrainConfig(**BASE, epochs=1, batch_size=32)
    try:
        with Trainer(cfg, data=data, out_dir=out_dir, resume=resume, force=force, progress=False) as trainer:
            assert trainer.data.num_classes == 10
    except ConfigError as e:
        refused_in_one_line(e)


@API_PROPERTY
@given(methods=st.one_of(api_values, st.lists(st.sampled_from(["baseline", "dlb", "dml", "", 3]), max_size=3)))
def test_any_methods_argument_of_compare_is_refused_in_one_line_or_compares(methods):
    cfg = TrainConfig(**BASE, epochs=1, batch_size=64, train_subset=64, test_subset=32)
    try:
        results = compare(cfg, methods=methods, data=SYNTHETIC, progress=False)
    except ConfigError as e:
        refused_in_one_line(e)
    else:
        assert list(results) == list(methods) and all(len(history) == 1 for history, _ in results.values())
