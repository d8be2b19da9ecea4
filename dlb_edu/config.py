"""What defines a run, and the one place where its values are checked.

:class:`TrainConfig` holds every setting of a run. Each field carries its rule beside its default (type, allowed
range or choices) and its help text; :meth:`TrainConfig.validate`, called on construction and again by the trainer,
applies those rules, so a bad value is refused with a one-line :class:`~dlb_edu.errors.ConfigError` naming the field
before any data is loaded or any file is written. The command line (``cli.py``) is generated from the same fields, and
a value set outside a config (the live lab's T and alpha, the augmenter) goes through :func:`check_value`, the same
rule with the same message. The modules that implement a field take its value as checked here.

This module is the ground floor of the package: it imports nothing of ours but ``errors``. It owns the names the
fields choose from (methods, augmentations, label noise); ``ARCHS`` is the registry of networks that ``models``
fills when the package is imported.

The presets are the authors' recipe (Shen et al., CVPR 2022, Sec. 4.1), a short one for CPUs, and CS-KD's and PS-KD's
own recipes.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

from typing import Callable

import torch

from .errors import ConfigError

METHODS = ("baseline", "dlb", "label_smoothing", "tf_kd", "cs_kd", "ps_kd")  # methods.py builds each
AUGMENTS = ("none", "cutout", "mixup", "cutmix")                             # augment.py, on top of crop + flip
NOISE_TYPES = ("symmetric", "asymmetric")                                    # noise.py
# The networks by name: models.py registers its own (``import dlb_edu`` imports it); one registered later counts too.
ARCHS: dict[str, Callable] = {}
FORWARD_MODES = ("joint", "split")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
GPU_SPEEDUPS = ("auto", "off")
SWITCHES = ("auto", "on", "off")

# The authors' recipe (their `base.py` and `dlb.py`, the paper's Sec. 4.1) and a short one for CPUs. The learning rate
# drops x0.1 at the same *fractions* of the run as the authors' 150/180/210 of 240 epochs, so a shorter run keeps the
# schedule's shape. `paper` also takes the authors' step: the fresh half and the repeated half forwarded in two calls,
# fresh first, so BatchNorm sees each half alone (`forward="split"`), in float32 (`precision="fp32"`). T = 3 and
# alpha = 1 are our defaults: the authors' `dlb.py` has none (both must be given on its command line).
PRESETS = {
    "paper": dict(arch="resnet32", epochs=240, batch_size=64, lr=0.05, momentum=0.9, nesterov=True,
                  weight_decay=5e-4, milestones=(0.625, 0.75, 0.875), temperature=3.0, alpha=1.0,
                  forward="split", precision="fp32"),
    "quick": dict(arch="small_cnn", epochs=15, batch_size=64, lr=0.05, momentum=0.9, nesterov=True,
                  weight_decay=5e-4, milestones=(0.625, 0.75, 0.875), temperature=3.0, alpha=1.0,
                  forward="joint", precision="auto"),
    # The paper's recipe and schedule shape on a network two CPU cores train on all of CIFAR-10 in minutes: 16 epochs
    # put the drops at epochs 10, 12 and 14, the authors' 150/180/210 of 240 scaled by 1/15, and one seed's baseline +
    # DLB pair trains in 10 minutes on a quiet 2-core AMD EPYC (seed 2's clean pair: 574 s) and about 17 on the
    # loaded Intel Xeon of the first runs (README, "The full CIFAR-10 experiment on a CPU").
    "cpu": dict(arch="small_cnn", epochs=16, batch_size=64, lr=0.05, momentum=0.9, nesterov=True,
                weight_decay=5e-4, milestones=(0.625, 0.75, 0.875), temperature=3.0, alpha=1.0,
                forward="split", precision="auto"),
    # Two rivals' own recipes, where our fields express them: optimizer, schedule, batch and step as in their code, on
    # DLB's network (their CIFAR ResNet-18s are not in models.py). README, "The rival methods' own recipes", cites
    # each value. CS-KD's drops take effect one epoch after 50% and 75% (alinlab/cs-kd sets the lr after each epoch,
    # train.py:216-231): 0.505 and 0.755 of 200 epochs are epochs 101 and 151. PS-KD's B = 128 is over all GPUs
    # (main.py:62, 238): with N processes pass --batch-size 128/N. Tf-KD's schedule (x0.2 at 60/120/160 after a
    # one-epoch warm-up) is not expressible here, and label smoothing has no authors' CIFAR code.
    "cs_kd_authors": dict(method="cs_kd", arch="resnet32", epochs=200, batch_size=128, lr=0.1, momentum=0.9,
                          nesterov=False, weight_decay=1e-4, milestones=(0.505, 0.755), cskd_temperature=4.0,
                          cskd_lambda=1.0, forward="split", precision="fp32"),
    "ps_kd_authors": dict(method="ps_kd", arch="resnet32", epochs=300, batch_size=128, lr=0.1, momentum=0.9,
                          nesterov=True, weight_decay=5e-4, milestones=(0.5, 0.75), pskd_alpha_T=0.8,
                          forward="joint", precision="fp32"),
}

FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # the weights and losses are float32: no setting may exceed it
INT_MAX = 2 ** 31 - 1                                  # counts and sizes: far beyond any run, safe in int64 arithmetic
SEED_MAX = 2 ** 63 - 1                                 # torch generators take seeds below 2^63 (see seeds.py)
# Temperatures: below 0.01 the logits / T overflow float32 (NaN losses); above 100 softmax(z / T) is uniform to float32
# precision and T^2 KL is rounding noise.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0
# The knobs' ranges on the notebooks' sliders: inside the fields' rules, and where the effects are worth seeing.
TEACHING_RANGES = {"temperature": (0.5, 10.0), "alpha": (0.0, 5.0)}


def _opt(default, help: str, *, low=None, high=None, low_open=False, high_open=False, choices=None,
         resumable=False):
    """A config field: its default, its help text and its rule (range or choices). ``resumable``: a resumed run may
    change it, because it does not change what is computed."""
    meta = dict(help=help, low=low, high=high, low_open=low_open, high_open=high_open, choices=choices,
                resumable=resumable)
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything that defines a run. ``TrainConfig.from_preset("paper", method="dlb")`` gives the paper's."""
    method: str = _opt("dlb", "the method to train", choices=METHODS)
    dataset: str = _opt("cifar10-mini", "cifar10, cifar100, cifar10-mini (bundled), synthetic, or an image-folder "
                                        "path with train/ and test/")
    arch: str = _opt("small_cnn", "the network", choices=ARCHS)  # the registry itself: an arch added later counts
    epochs: int = _opt(15, "epochs to train", low=1, high=INT_MAX, resumable=True)
    batch_size: int = _opt(64, "B: fresh samples per step (DLB forwards B repeated + B fresh)", low=1, high=INT_MAX)
    lr: float = _opt(0.05, "SGD's learning rate before the first milestone", low=0, low_open=True)
    momentum: float = _opt(0.9, "SGD momentum", low=0, high=1, high_open=True)
    nesterov: bool = _opt(True, "Nesterov momentum")
    weight_decay: float = _opt(5e-4, "SGD weight decay", low=0)
    milestones: tuple[float, ...] = _opt((0.625, 0.75, 0.875), "fractions of the run where the lr is multiplied by "
                                         "0.1", low=0, high=1, low_open=True)
    temperature: float = _opt(3.0, "T of DLB's consistency term (paper: 3)", low=MIN_TEMPERATURE,
                              high=MAX_TEMPERATURE)
    alpha: float = _opt(1.0, "weight of DLB's consistency term (paper: 1)", low=0)
    forward: str = _opt("joint", "joint: both halves in one forward call; split: two calls, as the authors (dlb: "
                                 "fresh half first; cs_kd: anchors, then pairs under no_grad), so BatchNorm sees "
                                 "each half alone", choices=FORWARD_MODES)
    carry_over: bool = _opt(True, "repeat the last fresh half of an epoch at the start of the next")
    seed: int = _opt(0, "seed of every random stream of the run (seeds.py)", low=0, high=SEED_MAX)
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N", resumable=True)
    gpu_speedups: str = _opt("auto", "auto: on CUDA, a fused SGD step; off: never", choices=GPU_SPEEDUPS)
    channels_last: str = _opt("auto", "channels_last activations; auto: on (measured faster on a CPU here; on GPUs "
                                      "the usual choice, not measured here)", choices=SWITCHES)
    precision: str = _opt("auto", "auto: bf16 autocast on CUDA capability >= 8 and on CPUs with native bf16, fp16 "
                                  "with a GradScaler on CUDA 7.x, else fp32; or force bf16, fp16 or fp32",
                          choices=PRECISIONS)
    threads: int | None = _opt(None, "intra-op CPU threads (default: torch's, one per core); the rounding, and so "
                                     "the bits, depend on it", low=1, high=1024, resumable=True)
    deterministic: bool = _opt(False, "deterministic CUDA kernels (torch.use_deterministic_algorithms, cuDNN "
                                      "deterministic, no cuDNN autotuning), for bitwise repeatable GPU runs (not yet "
                                      "measured on a GPU); slower. CPU runs are repeatable without it")
    compile: bool = _opt(False, "torch.compile the model (CUDA and CPU; the compilation costs tens of seconds, so it "
                                "pays only on long runs)")
    train_subset: int | None = _opt(None, "use only the first N training images", low=1, high=INT_MAX)
    test_subset: int | None = _opt(None, "use only the first N test images", low=1, high=INT_MAX)
    probe_size: int = _opt(500, "training images whose predictions are tracked for the stability metrics", low=1,
                           high=INT_MAX)
    checkpoint_every: int = _opt(0, "also checkpoint every K steps (0: only at epoch ends)", low=0, high=INT_MAX,
                                 resumable=True)
    data_root: str | None = _opt(None, "where data sets live (default: $DLB_EDU_DATA, else data/ in a checkout, "
                                             "else ~/.cache/dlb-edu)", resumable=True)
    download: bool = _opt(False, "download CIFAR-10/100 into the data root if missing", resumable=True)
    tensorboard: bool = _opt(False, "also write each epoch's history row and the step losses as TensorBoard scalars "
                                    "into <out>/tensorboard/", resumable=True)
    # Beyond DLB: the other methods' settings (methods.py, defaults from their papers), label noise, augmentation.
    ls_epsilon: float = _opt(0.1, "label_smoothing: eps (Szegedy et al., 2016)", low=0, high=1)
    tfkd_alpha: float = _opt(0.1, "tf_kd: weight of the KL to the virtual teacher (Yuan et al., 2020)", low=0, high=1)
    tfkd_temperature: float = _opt(20.0, "tf_kd: T softening the virtual teacher", low=MIN_TEMPERATURE,
                                   high=MAX_TEMPERATURE)
    # At least 1/2, so that the true class is the virtual teacher's most likely one whatever the number of classes.
    tfkd_correct_prob: float = _opt(0.99, "tf_kd: the virtual teacher's probability of the true class", low=0.5,
                                    high=1)
    # The authors' KL is nn.KLDivLoss() (a mean over N x K elements) times this (Teacher-free-Knowledge-Distillation,
    # my_loss_function.py:47); 100 in their ResNet-18 CIFAR-100 config (experiments/base_experiments/base_resnet18/
    # params.json:11). Before this field our weight was 1 per sample, which is multiplier = K.
    tfkd_multiplier: float = _opt(100.0, "tf_kd: the authors' multiplier m of the KL term, whose per-sample weight "
                                         "is m / K (their ResNet-18 CIFAR-100 config: 100)", low=0)
    cskd_temperature: float = _opt(4.0, "cs_kd: T (Yun et al., 2020)", low=MIN_TEMPERATURE, high=MAX_TEMPERATURE)
    cskd_lambda: float = _opt(1.0, "cs_kd: weight of the class-wise consistency term", low=0)
    pskd_alpha_T: float = _opt(0.8, "ps_kd: alpha at the last epoch (Kim et al., 2021)", low=0, high=1)
    label_noise: float = _opt(0.0, "fraction of training labels to corrupt (noise.py)", low=0, high=1, high_open=True)
    label_noise_type: str = _opt("symmetric", "symmetric, or asymmetric: CIFAR-10's class flips", choices=NOISE_TYPES)
    augment: str = _opt("none", "on top of crop + flip (augment.py)", choices=AUGMENTS)
    cutout_size: int = _opt(16, "Cutout's square side in pixels (DeVries & Taylor: 16 on CIFAR-10)", low=1,
                            high=INT_MAX)
    mix_alpha: float = _opt(1.0, "mixup and CutMix draw lam ~ Beta(mix_alpha, mix_alpha)", low=0, low_open=True)
    cutmix_prob: float = _opt(0.5, "probability that CutMix mixes a batch (part)", low=0, high=1)

    def __post_init__(self):
        self.validate()

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "TrainConfig":
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[preset], **overrides})

    @classmethod
    def from_dict(cls, d) -> "TrainConfig":
        """A config from ``to_dict()``'s output (config.json, a checkpoint); unknown or bad entries are refused."""
        if not isinstance(d, dict):
            raise ConfigError(f"a run configuration must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(map(str, unknown))}")
        return cls(**d)

    def validate(self) -> "TrainConfig":
        """Apply every field's rule, then the rules between fields; raise ConfigError naming the field; return self.

        Numbers are normalized on the way: an int where a float is expected becomes a float, a list of milestones
        a tuple, so that equal configs compare and serialize equal.
        """
        hints = _type_hints()
        for f in dataclasses.fields(self):
            setattr(self, f.name, _checked(f.name, getattr(self, f.name), hints[f.name], f.metadata))
        _check_device_name(self.device)
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov needs momentum > 0: pass a momentum or --no-nesterov")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def milestone_epochs(self) -> list[int]:
        """The epochs (0-based) from which the learning rate is multiplied by 0.1 once more."""
        return [max(1, round(f * self.epochs)) for f in self.milestones]

    def lr_at(self, epoch: int) -> float:
        """The learning rate of the 0-based ``epoch``: ``lr`` times 0.1 for every milestone reached."""
        return self.lr * 0.1 ** sum(epoch >= m for m in self.milestone_epochs())


@functools.cache
def _type_hints() -> dict:
    return typing.get_type_hints(TrainConfig)


def check_value(name: str, value):
    """``value`` checked by the rule of TrainConfig's field ``name``, with the message a config gives (for values set
    outside a config: :class:`~dlb_edu.augment.Augmenter`, DLB's knobs in the live lab); returns it normalized."""
    field_ = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    return _checked(name, value, _type_hints()[name], field_.metadata)


def field_defaults() -> dict:
    """Every field's default. A field absent from an older run's config takes its default: a field is only ever added
    with a default that computes what the versions before it computed."""
    return {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(TrainConfig)}


def resumable_fields() -> tuple[str, ...]:
    """Fields a resumed run may change: they do not change what is computed."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resumable"])


def _range_text(meta) -> str:
    low, high = _num(meta["low"]), _num(meta["high"])
    if high is None:
        return f"{'>' if meta['low_open'] else '>='} {low}"
    return f"in {'(' if meta['low_open'] else '['}{low}, {high}{')' if meta['high_open'] else ']'}"


def _num(x) -> str | None:
    return None if x is None else str(x) if isinstance(x, int) else f"{x:g}"


def _in_range(value, meta) -> bool:
    low, high = meta["low"], meta["high"]
    if low is not None and not (value > low if meta["low_open"] else value >= low):
        return False
    return high is None or (value < high if meta["high_open"] else value <= high)


def _checked(name: str, value, hint, meta):
    """``value`` checked against the field's type hint and rule, normalized (int -> float, list -> tuple)."""
    args = typing.get_args(hint)
    if type(None) in args:  # `int | None`, `str | None`
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{name} must be an integer {_range_text(meta)}, got {value!r}")
        value = int(value)
        if not _in_range(value, meta):
            raise ConfigError(f"{name} must be an integer {_range_text(meta)}, got {value}")
        return value
    if hint is float:
        return _checked_float(name, value, meta)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        if meta["choices"] is not None and value not in meta["choices"]:
            raise ConfigError(f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}")
        return value
    if typing.get_origin(hint) is tuple:  # milestones: any number of floats
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{name} must be a list of numbers {_range_text(meta)}, got {value!r}")
        return tuple(_checked_float(name, v, meta) for v in value)
    raise TypeError(f"no rule for field {name} of type {hint}")  # a new field with a new type: give it a rule


def _checked_float(name: str, value, meta) -> float:
    what = f"{name} must be a number {_range_text(meta)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise ConfigError(f"{what} and finite in float32, got {value!r}")
    if not _in_range(value, meta):
        raise ConfigError(f"{what}, got {value!r}")
    return value


def _check_device_name(device: str) -> None:
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}")


def resolve_device(device: str) -> torch.device:
    """The torch device a config's ``device`` names here; ConfigError if it is not available. Under torchrun (several
    processes), a CUDA device means each process's own GPU, ``cuda:$LOCAL_RANK``, whatever index was written."""
    _check_device_name(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here: use --device cpu")
    if dev.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {str(dev)!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast is measured faster than fp32
    (README, "Speed on a CPU"); elsewhere bf16 is emulated, and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: we have measured nothing there
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision a run with ``precision=requested`` uses on ``device``: ``auto`` is bf16 on CUDA capability >= 8
    (Ampere and later), fp16 with a GradScaler on 7.x (V100, T4: no native bf16, though
    ``torch.cuda.is_bf16_supported()`` says yes through emulation), fp32 on older GPUs; on a CPU, bf16 where it is
    native, else fp32. An explicit bf16, fp16 or fp32 is taken as it is."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return "bf16" if major >= 8 else "fp16" if major >= 7 else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"
