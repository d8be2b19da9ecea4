"""The live lab: the baseline and DLB train side by side in the background, and you steer T and alpha as they go.

DLB (Shen et al., CVPR 2022, Sec. 3.2) pulls each repeated sample toward the logits the network gave it one step
earlier, with weight alpha at temperature T (Eq. 4-5), and claims that this makes training more consistent
(Sec. 1 and 4.4). The lab shows that claim step by step while a run trains, and lets the learner change T and alpha
mid-run:

- the baseline and DLB train with the same seed and batches, each in a worker thread of its own, taking turns one
  optimizer step each, so their curves grow together and the run is the same whatever the timing;
- every K steps (``every``) each method records the probe flip rate and probe KL (:mod:`dlb_edu.metrics`, on a
  fixed set of training images, since K steps before) and the step-to-step KL of the repeated samples (below);
- ``set("alpha", 2.0)`` takes effect at the next DLB step and is recorded as a :class:`Change` (step, name, old, new);
- ``pause()``, ``resume()``, ``stop()``: Stop ends both runs at a step boundary; with an output folder it writes
  whole checkpoints, which ``python -m dlb_edu train ... --out DIR/dlb --resume`` continues (with the config's T and
  alpha) and ``LiveLab(..., out_dir=DIR, resume=True)`` continues with the changes re-applied (``DIR/lab.json``);
- ``inspect(i)``, the step inspector: repeated sample i at the last step, its cached teacher distribution, its
  student distribution at T and the gradient the consistency term puts on its logits.

**The step-to-step KL** is the quantity DLB trains on, read with a fixed ruler: KL(softmax(logits one step earlier)
|| softmax(logits now)) at T = 1 (T is a knob here; the ruler must not move when it does), averaged over samples.
For DLB both come from the training step itself: the cached logits of the repeated half and this step's logits of
the same samples (a new crop, one update later), before this step's update, as the consistency term sees them. The
baseline has no repeated half and must not be trained on one, so the lab keeps the logits of the baseline's batch
from its own training forward and, after the update, forwards the same samples again with a new crop, without
gradient, in train mode (BatchNorm normalizes with the batch's statistics, as in the training forward) on copies of
the BatchNorm buffers, so the baseline's run is exactly what it would be without the lab (to the bit on a CPU, where
``tests/test_lab.py`` checks it). Both numbers measure what
one update did to the predictions of samples the network has just seen; DLB's term pushes its number down.

The lab reads each step through a small tap in front of the method's ``loss`` call (the one call every training
step makes, see :mod:`dlb_edu.methods`): it sees the step's logits without a second forward. The trainers' own
bookkeeping (per-epoch history, checkpoints, resume) is untouched. This module does not import ipywidgets: it runs
headless (tests, the benchmark, a script); :class:`dlb_edu.widgets.LabApp` puts the buttons and sliders on it and
:class:`LiveView` redraws its figure.
"""
from __future__ import annotations

import io
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from . import metrics
from .config import TrainConfig, check_value
from .data import ImageData, load_dataset, normalize, random_crop_flip
from .errors import ConfigError
from .sampling import step_seed
from .smoke import smoke_mode, smoke_overrides
from .run_dir import write_json
from .train import Trainer

RUNS = ("baseline", "dlb")  # the two runs the lab trains side by side (config.METHODS names every method)
# The knobs that may change mid-run: DLB's, changed through DLB.set, checked by config's rules of these fields.
KNOBS = ("temperature", "alpha")
STATES = ("ready", "running", "paused", "stopped", "finished", "failed")
ENDED = ("stopped", "finished", "failed")
POINT_KEYS = ("step", "loss", "ce", "step_kl", "flip_rate", "probe_kl")   # every K steps
STEP_KEYS = ("step", "loss", "ce", "consistency", "temperature", "alpha")  # every step
RECORD_FILE = "lab.json"
_REAUGMENT_SEED = 104_729  # the baseline's second crop comes from its own stream, never from the trainer's


def lab_config(dataset: str = "cifar10-mini", device: str = "auto", **overrides) -> TrainConfig:
    """The lab's default run: the ``quick`` preset (small_cnn) for 8 epochs on a CPU, about a minute for both
    methods on two cores; ResNet-32 for 30 epochs on a GPU. Smoke mode (:mod:`dlb_edu.smoke`) shrinks it.

    Outside smoke mode every field is one the command line can set, so ``python -m dlb_edu train ... --resume``
    continues a stopped lab.
    """
    cuda = device != "cpu" and torch.cuda.is_available()
    size = dict(arch="resnet32", epochs=30) if cuda else dict(epochs=8)
    return TrainConfig.from_preset("quick", dataset=dataset, device=device,
                                   **{**size, **smoke_overrides(), **overrides})


def default_every(config: TrainConfig) -> int:
    """K, the steps between two stability points: dozens of points in a default run (a few in smoke mode)."""
    if smoke_mode():
        return 2
    return 50 if config.device != "cpu" and torch.cuda.is_available() else 10


def step_kl(before_logits: torch.Tensor, after_logits: torch.Tensor) -> float:
    """Mean over samples of KL(softmax(before) || softmax(after)) at T = 1, in nats (:func:`metrics.mean_kl`)."""
    return metrics.mean_kl(F.softmax(before_logits.float(), 1), F.softmax(after_logits.float(), 1))


def consistency_gradient(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                         alpha: float) -> torch.Tensor:
    """The gradient that DLB's weighted consistency term, alpha T^2 KL(p_teacher || p_student) averaged over the n
    repeated samples, puts on the student logits: ``alpha * T * (p_student - p_teacher) / n``, p at T.

    (The KL's gradient with respect to a logit is (p_student - p_teacher) / T, see :mod:`dlb_edu.losses`.)
    """
    T = temperature
    p_student = F.softmax(student_logits.float() / T, 1)
    p_teacher = F.softmax(teacher_logits.float() / T, 1)
    return alpha * T * (p_student - p_teacher) / len(student_logits)


@dataclass(frozen=True)
class Change:
    """A knob moved mid-run: from ``step`` on (the first DLB step that used it) ``name`` is ``new``, was ``old``."""
    step: int
    name: str
    old: float
    new: float


class _Stop(Exception):
    """Raised from ``on_step`` to end a run at a step boundary (the trainer leaves the run consistent)."""


class _StepTap:
    """Sits in front of a method's ``loss`` and keeps what the last training step computed: its logits, the
    cached teacher logits of its repeated half, the T and alpha it used and its loss terms (all detached)."""

    def __init__(self, method):
        self.method, self.inner = method, method.loss
        self.last: dict | None = None
        method.loss = self  # an instance attribute: only this trainer's method object is tapped

    def __call__(self, logits, y, batch, *args, **kwargs):
        r = getattr(batch, "num_repeated", 0)
        cache = getattr(self.method, "cache", None)
        teacher = cache.get() if r > 0 and cache is not None else None  # read before after_step replaces it
        temperature, alpha = getattr(self.method, "temperature", None), getattr(self.method, "alpha", None)
        loss, ce, reg = self.inner(logits, y, batch, *args, **kwargs)
        self.last = {"logits": logits.detach(), "y": y.detach(), "batch": list(batch), "num_repeated": r,
                     "teacher": teacher, "temperature": temperature, "alpha": alpha,
                     "loss": loss.detach(), "ce": ce.detach(), "consistency": reg.detach()}
        return loss, ce, reg


def steps_done(trainer: Trainer) -> int:
    """Optimizer steps a trainer has taken since its run began (across epochs and resumes)."""
    return trainer.sampler.epoch * len(trainer.sampler) + trainer.sampler.step


class LiveLab:
    """The baseline and DLB trained side by side in two background threads, steerable while they train.

    ``config`` (default :func:`lab_config`) is the run; its ``method`` is ignored (both are trained). ``every`` is K,
    the steps between two stability points (default :func:`default_every`); ``probe_size`` the number of training
    images whose predictions are compared every K steps (default 1000 on a GPU; on a CPU 256, or the config's
    ``probe_size`` if smaller). With ``out_dir``, ``out_dir/baseline`` and ``out_dir/dlb`` are ordinary run folders
    (see :class:`~dlb_edu.train.Trainer`) and ``out_dir/lab.json`` keeps the lab's record; ``resume=True``
    continues them, ``force=True`` starts over there.

    Use it as ``lab.start()``, then ``set``, ``pause``, ``resume``, ``inspect``, ``stop`` from any thread;
    ``wait()`` blocks until the run ends. ``snapshot()`` copies the record for drawing. (The trainers' own epoch
    times, in their histories, include the other method's turns: the two share the machine step by step.)
    """

    def __init__(self, config: TrainConfig | None = None, data: ImageData | None = None, every: int | None = None,
                 probe_size: int | None = None, out_dir: str | Path | None = None, resume: bool = False,
                 force: bool = False):
        config = (config if config is not None else lab_config()).validate()
        every = default_every(config) if every is None else every
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"every (steps between stability points) must be an integer >= 1, got {every!r}")
        if probe_size is not None and (not isinstance(probe_size, int) or probe_size < 1):
            raise ConfigError(f"probe_size must be an integer >= 1, got {probe_size!r}")
        data = data if data is not None else load_dataset(config.dataset, config.data_root, config.download)
        self.config, self.every = config, every
        self.out_dir = Path(out_dir) if out_dir is not None else None
        # A saved record is read and checked before any trainer opens its folder: a damaged one changes no file.
        record = self._read_record() if resume else None
        self.trainers = {}
        try:
            for m in RUNS:
                self.trainers[m] = Trainer(replace(config, method=m), data=data, progress=False, resume=resume,
                                           force=force, out_dir=None if self.out_dir is None else self.out_dir / m)
                if self.out_dir is not None:
                    self.trainers[m].run_dir.owner = "a LiveLab"  # named to a second owner of the folder
        except BaseException:
            for trainer in self.trainers.values():
                trainer.close()
            raise
        dlb = self.trainers["dlb"]
        # Replacing an old run (force): its record stays until DLB's first checkpoint replaces its run, and goes then.
        self._replacing = self.out_dir is not None and dlb.run_dir.replacing
        if self._replacing:
            dlb.run_dir.also_replaced.append(self.out_dir / RECORD_FILE)
        self.classes = data.classes
        self.steps_per_epoch = len(dlb.sampler)
        self.total_steps = config.epochs * self.steps_per_epoch
        trained_on = data.subset(config.train_subset, config.test_subset)  # what the trainers normalize with
        self._mean, self._std = trained_on.mean.to(dlb.device), trained_on.std.to(dlb.device)
        n = len(dlb.x_train)
        size = min(probe_size or (1000 if dlb.device.type == "cuda" else min(256, config.probe_size)), n)
        self.probe_idx = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 1))[:size]
        self._probe_x = dlb.x_train[self.probe_idx.to(dlb.device)]
        self._taps = {m: _StepTap(t.method) for m, t in self.trainers.items()}

        # Shared between the worker threads and the callers; guarded by the condition's lock.
        self._cond = threading.Condition()
        self._steps = {m: steps_done(t) for m, t in self.trainers.items()}
        self._active: set[str] = set()
        self._stop = False
        self._pause_now = False
        self._pause_at: int | None = None
        self._pending: dict[str, float] = {}               # applied before DLB's next step
        self._scheduled: dict[int, dict[str, float]] = {}  # step -> changes to apply before that step
        self.state = "ready"
        self.paused_at: int | None = None
        self.error: BaseException | None = None
        self.version = 0  # bumped whenever the record or the state changes: a view redraws only then
        self._threads: list[threading.Thread] = []

        # The record: what the lab keeps beside the trainers' per-epoch histories.
        self.changes: list[Change] = []
        self.points = {m: {k: [] for k in POINT_KEYS} for m in RUNS}
        self.steps = {m: {k: [] for k in STEP_KEYS} for m in RUNS}
        self.step_times: list[tuple[int, float]] = []  # (DLB step, perf_counter) after every DLB step
        self._unread = {m: [] for m in RUNS}        # step values still on the device, read every K steps
        self._prev_probe = {m: None for m in RUNS}
        self._inspectable: dict | None = None
        if record is not None and not self._replacing:
            self._apply_record(*record)

    # -----------------------------------------------------------------------------------------------------------
    # Controls (any thread)
    # -----------------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start both worker threads; return at once."""
        with self._cond:
            if self.state != "ready":
                raise ConfigError("this lab has already run: make a new LiveLab (resume=True continues a saved one)")
            self.state, self._active = "running", set(RUNS)
            self.version += 1
        for trainer in self.trainers.values():
            if trainer.run_dir is not None:  # replacing old runs: killed before a run's first checkpoint, the lab's
                trainer.run_dir.mark_for_replacement()  # resume replaces it too (built but never started: it does not)
        self._threads = [threading.Thread(target=self._train, args=(m,), name=f"dlb-edu-lab-{m}", daemon=True)
                         for m in RUNS]
        for thread in self._threads:
            thread.start()

    def set(self, name: str, value: float, at_step: int | None = None) -> None:
        """Set DLB's ``temperature`` or ``alpha``: before the next DLB step (or before step ``at_step``, >= 1).

        Before ``start`` the value is the run's starting value, recorded as a change at its first step. Several
        moves of one knob before the next step count as one change (the last value).
        """
        if name not in KNOBS:
            raise ConfigError(f"only {' and '.join(KNOBS)} can change mid-run, not {name!r}")
        value = check_value(name, value)  # the config's rule and message: what the CLI refuses is refused here
        with self._cond:
            if self.state in ENDED:
                raise ConfigError(f"the run has {self.state}: start a new lab to change {name}")
            if at_step is None:
                self._pending[name] = value
            else:
                if not isinstance(at_step, int) or at_step <= self._steps["dlb"]:
                    raise ConfigError(f"at_step must be an integer after the current step {self._steps['dlb']}, "
                                      f"got {at_step!r}")
                self._scheduled.setdefault(at_step, {})[name] = value

    def pause(self, at_step: int | None = None) -> None:
        """Pause both runs before DLB's next step (or once both have taken ``at_step`` steps)."""
        with self._cond:
            if at_step is None:
                self._pause_now = True
            else:
                if not isinstance(at_step, int) or at_step < self._steps["dlb"]:
                    raise ConfigError(f"at_step must be an integer >= the current step {self._steps['dlb']}, "
                                      f"got {at_step!r}")
                self._pause_at = at_step
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._pause_now = False
            if self.state == "paused":
                self.state, self.paused_at = "running", None
                self.version += 1
            self._cond.notify_all()

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """End both runs at the next step boundary (a paused run at once) and, with an output folder, write their
        checkpoints. ``wait``: return once the threads have ended."""
        with self._cond:
            if self.state == "ready":
                self.state = "stopped"
                self.version += 1
                return
            self._stop = True
            self._cond.notify_all()
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until both threads have ended (or ``timeout`` seconds); True when they have. Re-raises nothing:
        a failed run has ``state == "failed"`` and its exception in ``error``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def wait_paused(self, timeout: float | None = None) -> int | None:
        """Block until the run is paused; return the step it paused after (None if it ended or timed out first)."""
        with self._cond:
            self._cond.wait_for(lambda: self.state == "paused" or self.state in ENDED, timeout)
            return self.paused_at if self.state == "paused" else None

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def step(self) -> int:
        """DLB steps taken so far (the baseline is at most one step apart)."""
        return self._steps["dlb"]

    def knobs(self) -> dict[str, float]:
        """DLB's T and alpha as they stand (a change asked for with ``set`` shows here once applied, before the
        next step)."""
        method = self.trainers["dlb"].method
        return {name: getattr(method, name) for name in KNOBS}

    # -----------------------------------------------------------------------------------------------------------
    # What the lab shows
    # -----------------------------------------------------------------------------------------------------------

    def inspect(self, sample: int = 0) -> dict:
        """The step inspector: repeated sample ``sample`` (its position in the repeated half) at the last DLB step.

        Returns ``step``, ``index`` (in the training set), ``label``, ``temperature``, ``alpha`` (those the step
        used), ``num_repeated``, the repeated half's ``teacher_logits`` (cached at the step before) and
        ``student_logits`` (this step's, before its update), and for the sample ``p_teacher`` and ``p_student``
        (softmax at T), ``kl`` (KL(p_teacher || p_student) at T) and ``grad``, the gradient that the weighted
        consistency term puts on its logits (:func:`consistency_gradient`). All tensors are on the CPU.
        """
        last = self._inspectable
        if last is None or last["teacher"] is None:
            raise ConfigError("no repeated half yet: DLB's first step has no cached logits; inspect after step 2")
        r = last["num_repeated"]
        if not isinstance(sample, int) or not 0 <= sample < r:
            raise ConfigError(f"sample must be an integer in [0, {r}) (the repeated half), got {sample!r}")
        T, alpha = last["temperature"], last["alpha"]
        teacher, student = last["teacher"].float().cpu(), last["logits"][:r].float().cpu()
        p_teacher, p_student = F.softmax(teacher[sample] / T, 0), F.softmax(student[sample] / T, 0)
        return {"step": last["step"], "sample": sample, "index": last["batch"][sample],
                "label": int(last["y"][sample]), "temperature": T, "alpha": alpha, "num_repeated": r,
                "teacher_logits": teacher, "student_logits": student, "p_teacher": p_teacher, "p_student": p_student,
                "kl": float((p_teacher * (p_teacher.clamp_min(1e-12).log() - p_student.clamp_min(1e-12).log())).sum()),
                "grad": consistency_gradient(student, teacher, T, alpha)[sample]}

    def history(self) -> dict:
        """The lab's record as plain data: changes, the points every K steps and the values of every step."""
        with self._cond:
            return {"every": self.every, "changes": [asdict(c) for c in self.changes],
                    "points": {m: {k: list(v) for k, v in p.items()} for m, p in self.points.items()},
                    "steps": {m: {k: list(v) for k, v in s.items()} for m, s in self.steps.items()}}

    def snapshot(self) -> dict:
        """What a view draws, copied under the lock: the points, the changes, the lr drops, a title and the status."""
        with self._cond:
            snap = {"state": self.state, "step": self._steps["dlb"], "total_steps": self.total_steps,
                    "every": self.every, "version": self.version,
                    "points": {m: {k: list(v) for k, v in p.items()} for m, p in self.points.items()},
                    "changes": [asdict(c) for c in self.changes]}
        snap["lr_drops"] = self.lr_drops()
        snap["status"] = self.status_line()
        snap["title"] = self.title()
        return snap

    def lr_drops(self) -> list[int]:
        """The steps at which the learning rate changed, from DLB's history (known once that epoch has ended)."""
        rows = list(self.trainers["dlb"].history)
        return [(b["epoch"] - 1) * self.steps_per_epoch for a, b in zip(rows, rows[1:]) if b["lr"] != a["lr"]]

    def title(self) -> str:
        cfg = self.config
        return (f"{cfg.arch} on {cfg.dataset} ({len(self.trainers['dlb'].x_train)} images), B = {cfg.batch_size}, "
                f"stability every {self.every} steps on {len(self.probe_idx)} probe images")

    def steps_per_second(self, since_step: int = 0) -> float:
        """DLB steps per second (each with one baseline step) from ``since_step`` to the last step; NaN if fewer
        than two steps were timed."""
        times = [(s, t) for s, t in list(self.step_times) if s >= since_step]
        if len(times) < 2 or times[-1][1] <= times[0][1]:
            return float("nan")
        return (times[-1][0] - times[0][0]) / (times[-1][1] - times[0][1])

    def status_line(self) -> str:
        step, total, state = self._steps["dlb"], self.total_steps, self.state
        knobs = ", ".join(f"{'T' if k == 'temperature' else k} {v:g}" for k, v in self.knobs().items())
        epoch = f"epoch {min(step // self.steps_per_epoch + 1, self.config.epochs)}/{self.config.epochs}"
        accs = [f"{m} {self.trainers[m].history[-1]['test_acc']:.3f}" for m in RUNS if self.trainers[m].history]
        acc = f"; test accuracy after epoch {len(self.trainers['dlb'].history)}: {', '.join(accs)}" if accs else ""
        if state == "ready":
            return f"ready: press Start ({knobs}; {total} steps, stability every {self.every} steps)"
        if state == "running":
            recent = self.steps_per_second(max(0, step - 30))
            rate = "" if math.isnan(recent) else f", {recent:.1f} steps/s"
            return f"running: step {step}/{total} ({epoch}{rate}); {knobs}{acc}"
        if state == "paused":
            return f"paused after step {step}/{total}: move T or alpha, inspect a sample, then Resume; {knobs}"
        if state == "stopped":
            saved = (f"checkpoints in {self.out_dir}/baseline and {self.out_dir}/dlb" if self.out_dir is not None
                     else "no output folder, nothing saved")
            return f"stopped after step {step}/{total} ({saved}); {knobs}{acc}"
        if state == "finished":
            return f"finished: {step} steps; {knobs}{acc}"
        return f"failed after step {step}: {self.error}"

    # -----------------------------------------------------------------------------------------------------------
    # The worker threads
    # -----------------------------------------------------------------------------------------------------------

    def _train(self, name: str) -> None:
        trainer = self.trainers[name]
        try:
            self._take_turn(name)  # the baseline waits for DLB's first step; DLB may pause or stop before it
            for row in trainer.epochs(on_step=self._after_step):
                with self._cond:
                    self.version += 1  # a new per-epoch row (test accuracy, maybe a learning-rate drop)
                if name == "dlb" and self.out_dir is not None:
                    self._save_record()  # beside the checkpoint the trainer has just written
        except _Stop:
            self._read_back(name)
            if self.out_dir is not None:
                trainer.save_checkpoint()  # on_step left the run consistent: a whole checkpoint
        except BaseException as e:  # noqa: BLE001 - any failure ends the lab and is shown, the other run stops too
            with self._cond:
                self.error = self.error or e
                self._stop = True
        finally:
            trainer.close()  # the run has ended here: its folder may have a new owner (a Trainer, a new LiveLab)
            with self._cond:
                self._active.discard(name)
                last = not self._active
                if last:
                    self._read_back_all()
                    self.state = "failed" if self.error else "stopped" if self._stop else "finished"
                    self.version += 1
                self._cond.notify_all()
            if last and self.out_dir is not None:
                self._save_record()

    def _after_step(self, trainer: Trainer, loss: torch.Tensor) -> None:
        """``on_step`` of both trainers: record the step, measure every K steps, then hand the turn over."""
        name = trainer.config.method
        tap = self._taps[name].last
        step = self._steps[name] + 1  # only this thread changes its own count
        self._unread[name].append((step, loss, tap["ce"], tap["consistency"], tap["temperature"], tap["alpha"]))
        if name == "dlb":
            self.step_times.append((step, time.perf_counter()))
            self._inspectable = {**tap, "step": step}
        if step % self.every == 0:
            self._measure(name, trainer, tap, step)
        with self._cond:
            self._steps[name] = step
        self._take_turn(name)

    def _take_turn(self, name: str) -> None:
        """Wait until it is ``name``'s turn: the one with fewer steps goes, DLB first on a tie, alone once the
        other has ended. DLB then passes the gate (pause, stop, changes); the baseline stops once level with DLB."""
        other = "dlb" if name == "baseline" else "baseline"
        with self._cond:
            self._cond.notify_all()  # this step may make it the other's turn
            self._cond.wait_for(lambda: other not in self._active or self._steps[name] < self._steps[other]
                                or (self._steps[name] == self._steps[other] and name == "dlb"))
            if name == "dlb":
                applied = self._gate()
            else:
                if self._stop and (other not in self._active or self._steps[name] >= self._steps[other]):
                    raise _Stop
                applied = False
        if applied and self.out_dir is not None:
            self._save_record()

    def _gate(self) -> bool:
        """Before each DLB step, with the lock held: pause if asked, stop if asked, apply the pending changes.
        Returns whether a change was applied."""
        step = self._steps["dlb"]
        if self._pause_now or self._pause_at == step:
            self._pause_now, self._pause_at = False, None
            self.state, self.paused_at = "paused", step
            self.version += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.state != "paused" or self._stop)
        if self._stop:
            raise _Stop
        changes = {**self._pending, **self._scheduled.pop(step + 1, {})}
        self._pending = {}
        method = self.trainers["dlb"].method
        applied = False
        for knob, value in changes.items():
            old = getattr(method, knob)
            if value != old:
                method.set(**{knob: value})  # DLB's loss reads it at its next call: the next step
                self.changes.append(Change(step + 1, knob, float(old), value))
                applied = True
        if applied:
            self.version += 1
        return applied

    # -----------------------------------------------------------------------------------------------------------
    # Measurements
    # -----------------------------------------------------------------------------------------------------------

    def _measure(self, name: str, trainer: Trainer, tap: dict, step: int) -> None:
        """One stability point after ``step``: probe flip rate and KL since K steps before, the step-to-step KL."""
        self._read_back(name)
        probs = trainer.predict(self._probe_x)
        prev, self._prev_probe[name] = self._prev_probe[name], probs
        flip = float("nan") if prev is None else metrics.flip_rate(prev, probs)
        probe_kl = float("nan") if prev is None else metrics.mean_kl(prev, probs)
        if name == "dlb":
            r = tap["num_repeated"]
            s_kl = float("nan") if tap["teacher"] is None else step_kl(tap["teacher"], tap["logits"][:r])
        else:
            s_kl = step_kl(tap["logits"], self._forward_again(trainer, tap["batch"], step))
        with self._cond:
            steps = self.steps[name]
            start = len(steps["step"])
            while start > 0 and steps["step"][start - 1] > step - self.every:  # the last K steps (fewer after a resume)
                start -= 1
            n = len(steps["step"]) - start
            point = {"step": step, "loss": sum(steps["loss"][start:]) / n, "ce": sum(steps["ce"][start:]) / n,
                     "step_kl": s_kl, "flip_rate": flip, "probe_kl": probe_kl}
            for key in POINT_KEYS:
                self.points[name][key].append(point[key])
            self.version += 1

    @torch.no_grad()
    def _forward_again(self, trainer: Trainer, indices: list[int], step: int) -> torch.Tensor:
        """The baseline's logits of ``indices`` now: a new crop, train mode, on copies of the BatchNorm buffers (the
        running statistics of the run stay as they are). In float32 whatever the training precision."""
        dev = trainer.device
        gen = torch.Generator(dev).manual_seed(step_seed(self.config.seed + _REAUGMENT_SEED, 0, step))
        x = normalize(random_crop_flip(trainer.x_train[torch.as_tensor(indices, device=dev)], generator=gen),
                      self._mean, self._std)
        model = trainer.model
        state = {**dict(model.named_parameters()), **{k: b.clone() for k, b in model.named_buffers()}}
        return functional_call(model, state, (x,))

    def _read_back(self, name: str) -> None:
        """Move the step values kept on the device to the record: one copy per K steps, not one sync per step."""
        unread, self._unread[name] = self._unread[name], []
        if not unread:
            return
        values = torch.stack([torch.stack([loss.float(), ce.float(), kd.float()])
                              for _, loss, ce, kd, _, _ in unread]).cpu().tolist()
        with self._cond:
            rec = self.steps[name]
            for (step, *_, temperature, alpha), (loss, ce, kd) in zip(unread, values):
                for key, value in zip(STEP_KEYS, (step, loss, ce, kd, temperature, alpha)):
                    rec[key].append(value)

    def _read_back_all(self) -> None:
        for name in RUNS:
            self._read_back(name)

    # -----------------------------------------------------------------------------------------------------------
    # The record on disk
    # -----------------------------------------------------------------------------------------------------------

    def _save_record(self) -> None:
        if self._replacing and self.trainers["dlb"].run_dir.replacing:
            return  # the old run and its record are still in place: ours is written from DLB's first checkpoint on
        write_json(self.out_dir / RECORD_FILE, {"config": self.config.to_dict(), **self.history()})

    def _read_record(self) -> tuple[list[Change], dict] | None:
        """The saved record (``out_dir/lab.json``), checked, or None if there is none; ConfigError naming the file if
        it is unreadable or of the wrong shape."""
        path = self.out_dir / RECORD_FILE if self.out_dir is not None else None
        if path is None or not path.exists():
            return None
        try:
            saved = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ConfigError(f"{path} is unreadable: delete it (the runs resume with the config's T and alpha)") \
                from None
        try:
            changes = [Change(**c) for c in saved["changes"]]
            if not all(isinstance(c.step, int) and c.name in ("temperature", "alpha")
                       and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (c.old, c.new))
                       for c in changes):
                raise ValueError
            tables = {}
            for table, keys in (("points", POINT_KEYS), ("steps", STEP_KEYS)):
                for m in RUNS:
                    rows = saved.get(table, {}).get(m, {})
                    columns = {k: list(rows.get(k, [])) for k in keys}
                    if rows and (set(rows) != set(keys) or len({len(v) for v in columns.values()}) != 1):
                        raise ValueError
                    tables[table, m] = columns
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ConfigError(f"{path} is damaged (not the record of a lab): delete it (the runs resume with the "
                              f"config's T and alpha)") from None
        return changes, tables

    def _apply_record(self, changes: list[Change], tables: dict) -> None:
        """Continue a saved lab: its record up to where each trainer resumed, and DLB's T and alpha as they were.

        A change recorded at step s was made before step s; the DLB checkpoint holds n steps, so the changes up to
        step n + 1 were in force when the run stopped, and later ones belong to the part that is trained again.
        """
        method, n = self.trainers["dlb"].method, self._steps["dlb"]
        self.changes = [c for c in changes if c.step <= n + 1]
        for change in self.changes:
            method.set(**{change.name: change.new})
        for (table, m), columns in tables.items():
            keep = [i for i, step in enumerate(columns["step"]) if step <= self._steps[m]]
            (self.points if table == "points" else self.steps)[m] = {k: [v[i] for i in keep]
                                                                      for k, v in columns.items()}


class LiveView:
    """Redraws a lab's figure in a thread of its own, at most ``max_fps`` times a second and only when the lab has
    something new; hands each frame to ``show(png_bytes, snapshot)``.

    The view copies the lab's record under its lock (a few microseconds) and draws from the copy, so training never
    waits for drawing. Drawing does take CPU time from training, so after each frame the view also rests at least
    long enough that drawing takes at most ``max_busy`` of the time. It draws a last frame once the run has ended,
    then stops by itself.
    """

    def __init__(self, lab: LiveLab, show: Callable[[bytes, dict], None], max_fps: float = 2.0,
                 max_busy: float = 0.2, fig=None, dpi: int = 72):
        if not max_fps > 0 or not 0 < max_busy <= 1:
            raise ConfigError(f"max_fps must be > 0 and max_busy in (0, 1], got {max_fps} and {max_busy}")
        from matplotlib.figure import Figure  # a figure without pyplot: safe to draw outside the main thread

        self.lab, self.show, self.max_fps, self.max_busy, self.dpi = lab, show, max_fps, max_busy, dpi
        self.fig = fig if fig is not None else Figure(figsize=(12, 6.5), dpi=dpi)
        self.frames = 0
        self.draw_seconds: list[float] = []      # wall-clock time of each frame (drawing and PNG encoding)
        self.draw_cpu_seconds: list[float] = []  # CPU time of this thread for it: what drawing takes from training
        self._quit = threading.Event()
        self._drawn_version = -1
        self._thread: threading.Thread | None = None
        self.error: Exception | None = None  # what stopped the view, if drawing failed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dlb-edu-lab-view", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._quit.set()
        self.wait(timeout)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the view has drawn the ended run's last frame (or was stopped)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def draw(self) -> bytes | None:
        """Draw the lab's current state now if it changed since the last frame; return the PNG (None if not)."""
        from . import viz

        snap = self.lab.snapshot()
        if snap["version"] == self._drawn_version:
            return None
        start, cpu = time.perf_counter(), time.thread_time()
        viz.plot_lab(snap, fig=self.fig)
        png = io.BytesIO()
        self.fig.savefig(png, format="png", dpi=self.dpi)
        self.draw_seconds.append(time.perf_counter() - start)
        self.draw_cpu_seconds.append(time.thread_time() - cpu)
        self._drawn_version = snap["version"]
        self.frames += 1
        self.show(png.getvalue(), snap)
        return png.getvalue()

    def _loop(self) -> None:
        while not self._quit.is_set():
            ended = self.lab.ended  # read before drawing: the last frame then shows the ended state
            start = time.perf_counter()
            try:
                self.draw()
            except Exception as e:  # noqa: BLE001 - a view that cannot draw must not take the run down with it
                self.error = e
                break
            if ended:
                break
            took = time.perf_counter() - start
            rest = max(1 / self.max_fps - took, took * (1 - self.max_busy) / self.max_busy)
            self._quit.wait(rest)
