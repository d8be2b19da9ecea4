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

The lab reads each step from the record the step returns (:class:`~dlb_edu.train.StepRecord`, handed to the
trainer's ``on_step``): its loss terms, its logits and DLB's teacher logits, without a second forward and without
touching the method. Knobs change through ``DLB.set`` (config's checks) at the gate between two steps
(:mod:`~dlb_edu.lab_schedule`); the record is :mod:`~dlb_edu.lab_record`'s, its words :mod:`~dlb_edu.lab_status`'s.
The trainers' own bookkeeping (per-epoch history, checkpoints, resume) is untouched. This module does not import
ipywidgets: it runs headless (tests, the benchmark, a script); :class:`dlb_edu.widgets.LabApp` puts the buttons
and sliders on it and :class:`LiveView` redraws its figure.
"""
from __future__ import annotations

import io
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from . import lab_record, metrics
from .config import TrainConfig, check_value
from .data import ImageData, load_dataset
from .errors import ConfigError
from .lab_record import KNOBS, RECORD_FILE, RUNS, Change, LabRecord
from .lab_schedule import ENDED, Stop, TurnTaking
from .lab_status import status_line, title
from .metrics import probe_indices
from .sampling import step_seed
from .smoke import smoke_mode, smoke_overrides
from .train import OnStep, StepRecord, Trainer

__all__ = ["LiveLab", "LiveView", "Change", "lab_config", "default_every", "step_kl", "consistency_gradient"]
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


def inspect_step(step: int, rec: StepRecord, temperature: float, alpha: float, sample: int) -> dict:
    """:meth:`LiveLab.inspect` of repeated sample ``sample`` of DLB's step ``step`` (its record, T and alpha)."""
    r, T = rec.batch.num_repeated, temperature
    if not isinstance(sample, int) or not 0 <= sample < r:
        raise ConfigError(f"sample must be an integer in [0, {r}) (the repeated half), got {sample!r}")
    teacher, student = rec.teacher.float().cpu(), rec.logits[:r].float().cpu()
    p_teacher, p_student = F.softmax(teacher[sample] / T, 0), F.softmax(student[sample] / T, 0)
    return {"step": step, "sample": sample, "index": rec.batch[sample], "label": int(rec.y[sample]),
            "temperature": T, "alpha": alpha, "num_repeated": r, "teacher_logits": teacher, "student_logits": student,
            "p_teacher": p_teacher, "p_student": p_student,
            "kl": float((p_teacher * (p_teacher.clamp_min(1e-12).log() - p_student.clamp_min(1e-12).log())).sum()),
            "grad": consistency_gradient(student, teacher, T, alpha)[sample]}


class LiveLab:
    """The baseline and DLB trained side by side in two background threads, steerable while they train.

    ``config`` (default :func:`lab_config`) is the run; its ``method`` is ignored (both are trained). ``every`` is K,
    the steps between two stability points (default :func:`default_every`); ``probe_size`` the number of training
    images whose predictions are compared every K steps (default 1000 on a GPU; on a CPU 256, or the config's
    ``probe_size`` if smaller; the start of the trainers' own probe set). With ``out_dir``, ``out_dir/baseline`` and
    ``out_dir/dlb`` are ordinary run folders (see :class:`~dlb_edu.train.Trainer`) and ``out_dir/lab.json`` keeps
    the lab's record (:mod:`~dlb_edu.lab_record`); ``resume=True`` continues them, ``force=True`` starts over there.
    ``on_step(trainer, record)`` (optional) sees every step of both runs, in its worker thread, once recorded.

    Use it as ``lab.start()``, then ``set``, ``pause``, ``resume``, ``inspect``, ``stop`` from any thread;
    ``wait()`` blocks until the run ends. The turn-taking is :mod:`~dlb_edu.lab_schedule`'s; ``view_state()`` copies
    the record for drawing and :mod:`~dlb_edu.lab_status` words it. (The trainers' own epoch times, in their
    histories, include the other method's turns: the two share the machine step by step.)
    """

    def __init__(self, config: TrainConfig | None = None, data: ImageData | None = None, every: int | None = None,
                 probe_size: int | None = None, out_dir: str | Path | None = None, resume: bool = False,
                 force: bool = False, on_step: OnStep | None = None):
        config = (config if config is not None else lab_config()).validate()
        every = default_every(config) if every is None else every
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"every (steps between stability points) must be an integer >= 1, got {every!r}")
        if probe_size is not None and (not isinstance(probe_size, int) or probe_size < 1):
            raise ConfigError(f"probe_size must be an integer >= 1, got {probe_size!r}")
        data = data if data is not None else load_dataset(config.dataset, config.data_root, config.download)
        self.config, self.every, self.on_step = config, every, on_step
        self.out_dir = Path(out_dir) if out_dir is not None else None
        # A saved record is read and checked before any trainer opens its folder: a damaged one changes no file.
        saved = lab_record.read(self.out_dir / RECORD_FILE) if resume and self.out_dir is not None else None
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
        n = len(dlb.x_train)
        size = min(probe_size or (1000 if dlb.device.type == "cuda" else min(256, config.probe_size)), n)
        self.probe_idx = probe_indices(n, size, config.seed)  # the trainers' probe set is its start (or it theirs)
        self._probe_x = dlb.x_train[self.probe_idx.to(dlb.device)]

        self.turns = TurnTaking(RUNS, {m: t.steps_done for m, t in self.trainers.items()})
        self.record = LabRecord(every, self.turns.cond)
        self.step_times: list[tuple[int, float]] = []  # (DLB step, perf_counter) after every DLB step
        self._unread = {m: [] for m in RUNS}        # step values still on the device, read every K steps
        self._prev_probe = {m: None for m in RUNS}
        self._inspectable: tuple[int, StepRecord, float, float] | None = None  # DLB's last step, its T and alpha
        if saved is not None and not self._replacing:
            for change in self.record.restore(saved, self.turns.steps):
                dlb.method.set(**{change.name: change.new})

    # Controls (any thread) --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start both worker threads; return at once."""
        for trainer in self.trainers.values():
            if trainer.run_dir is not None and self.state == "ready":  # replacing old runs: killed before a run's
                trainer.run_dir.mark_for_replacement()  # first checkpoint, resume replaces it (never started: not)
        self.turns.start(self._train, "this lab has already run: make a new LiveLab (resume=True continues a saved "
                                      "one)")

    def set(self, name: str, value: float, at_step: int | None = None) -> None:
        """Set DLB's ``temperature`` or ``alpha``: before the next DLB step (or before step ``at_step``, >= 1).

        Before ``start`` the value is the run's starting value, recorded as a change at its first step. Several
        moves of one knob before the next step count as one change (the last value). The value is checked by
        config's rule of the field, with its message: what the CLI refuses is refused here.
        """
        if name not in KNOBS:
            raise ConfigError(f"only {' and '.join(KNOBS)} can change mid-run, not {name!r}")
        self.turns.ask(name, check_value(name, value), at_step)

    def pause(self, at_step: int | None = None) -> None:
        """Pause both runs before DLB's next step (or once both have taken ``at_step`` steps)."""
        self.turns.pause(at_step)

    def resume(self) -> None:
        self.turns.resume()

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """End both runs at the next step boundary (a paused run at once) and, with an output folder, write their
        checkpoints. ``wait``: return once the threads have ended."""
        if self.turns.stop() and wait:
            self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until both threads have ended (or ``timeout`` seconds); True when they have. Re-raises nothing:
        a failed run has ``state == "failed"`` and its exception in ``error``."""
        return self.turns.wait(timeout)

    def wait_paused(self, timeout: float | None = None) -> int | None:
        return self.turns.wait_paused(timeout)  # the step it paused after; None if it ended or timed out first

    state = property(lambda self: self.turns.state, doc="One of lab_schedule.STATES.")
    error = property(lambda self: self.turns.error, doc="What failed the run, if it failed.")
    ended = property(lambda self: self.turns.state in ENDED)
    step = property(lambda self: self.turns.steps["dlb"], doc="DLB steps so far (the baseline is at most one apart).")
    changes = property(lambda self: self.record.changes, doc="The knob changes so far, as lab_record.Change.")

    def knobs(self) -> dict[str, float]:
        """DLB's T and alpha as they stand (a change asked with ``set`` shows once applied, before the next step)."""
        return {name: getattr(self.trainers["dlb"].method, name) for name in KNOBS}

    # What the lab shows -----------------------------------------------------------------------------------------

    def inspect(self, sample: int = 0) -> dict:
        """The step inspector: repeated sample ``sample`` (its position in the repeated half) at the last DLB step.

        Returns ``step``, ``index`` (in the training set), ``label``, ``temperature``, ``alpha`` (those the step
        used), ``num_repeated``, the repeated half's ``teacher_logits`` (cached at the step before) and
        ``student_logits`` (this step's, before its update), and for the sample ``p_teacher`` and ``p_student``
        (softmax at T), ``kl`` (KL(p_teacher || p_student) at T) and ``grad``, the gradient that the weighted
        consistency term puts on its logits (:func:`consistency_gradient`). All tensors are on the CPU.
        """
        if self._inspectable is None or self._inspectable[1].teacher is None:
            raise ConfigError("no repeated half yet: DLB's first step has no cached logits; inspect after step 2")
        return inspect_step(*self._inspectable, sample)

    def view_state(self) -> dict:
        """What a view draws, copied under the lock: the state, the points, the changes and the lr drops."""
        with self.turns.cond:
            snap = {"state": self.state, "step": self.step, "total_steps": self.total_steps, "every": self.every,
                    "version": self.turns.version,
                    "points": {m: {k: list(v) for k, v in p.items()} for m, p in self.record.points.items()},
                    "changes": [asdict(c) for c in self.record.changes]}
        rows = list(self.trainers["dlb"].history)  # the lr drops: known once that epoch has ended
        snap["lr_drops"] = [(b["epoch"] - 1) * self.steps_per_epoch for a, b in zip(rows, rows[1:])
                            if b["lr"] != a["lr"]]
        return snap

    def steps_per_second(self, since_step: int = 0) -> float:
        """DLB steps per second (each with one baseline step) from ``since_step`` to the last step; NaN if fewer
        than two steps were timed."""
        times = [(s, t) for s, t in list(self.step_times) if s >= since_step]
        if len(times) < 2 or times[-1][1] <= times[0][1]:
            return float("nan")
        return (times[-1][0] - times[0][0]) / (times[-1][1] - times[0][1])

    # The worker threads -----------------------------------------------------------------------------------------

    def _train(self, name: str) -> None:
        trainer, error = self.trainers[name], None
        try:
            self._take_turn(name)  # the baseline waits for DLB's first step; DLB may pause or stop before it
            for row in trainer.epochs(on_step=self._after_step):
                self.turns.changed()  # a new per-epoch row (test accuracy, maybe a learning-rate drop)
                if name == "dlb":
                    self._save_record()  # beside the checkpoint the trainer has just written
        except Stop:
            self._read_back(name)
            if self.out_dir is not None:
                trainer.save_checkpoint()  # on_step left the run consistent: a whole checkpoint
        except BaseException as e:  # noqa: BLE001 - any failure ends the lab and is shown, the other run stops too
            error = e
        finally:
            trainer.close()  # the run has ended here: its folder may have a new owner (a Trainer, a new LiveLab)
            if self.turns.ended(name, error, last_words=lambda: [self._read_back(m) for m in RUNS]):
                self._save_record()

    def _after_step(self, trainer: Trainer, rec: StepRecord) -> None:
        """``on_step`` of both trainers: record the step, measure every K steps, then hand the turn over."""
        name, method = trainer.config.method, trainer.method
        step = self.turns.steps[name] + 1  # only this thread changes its own count
        T, alpha = getattr(method, "temperature", None), getattr(method, "alpha", None)  # the step's: set between
        self._unread[name].append((step, rec.loss, rec.ce, rec.consistency, T, alpha))
        if name == "dlb":
            self.step_times.append((step, time.perf_counter()))
            self._inspectable = (step, rec, T, alpha)
        if step % self.every == 0:
            self._measure(name, trainer, rec, step)
        if self.on_step is not None:
            self.on_step(trainer, rec)
        self._take_turn(name, step)

    def _take_turn(self, name: str, step: int | None = None) -> None:
        step = self.turns.steps[name] if step is None else step
        if self.turns.take_turn(name, step, self._apply):
            self._save_record()

    def _apply(self, step: int, changes: dict[str, float]) -> bool:
        """At the gate before DLB's ``step`` (the lock held): set the knobs that change; record each change."""
        method, applied = self.trainers["dlb"].method, False
        for knob, value in changes.items():
            old = getattr(method, knob)
            if value != old:
                method.set(**{knob: value})  # DLB's loss reads it at its next call: the next step
                self.record.changes.append(Change(step, knob, float(old), value))
                applied = True
        return applied

    def _save_record(self) -> None:
        if self.out_dir is None or (self._replacing and self.trainers["dlb"].run_dir.replacing):
            return  # no folder; or the old run and its record are still in place: ours is written from DLB's first
        self.record.write(self.out_dir / RECORD_FILE, self.config.to_dict())  # checkpoint on

    # Measurements -----------------------------------------------------------------------------------------------

    def _measure(self, name: str, trainer: Trainer, rec: StepRecord, step: int) -> None:
        """One stability point after ``step``: probe flip rate and KL since K steps before, the step-to-step KL."""
        self._read_back(name)
        probs = trainer.predict(self._probe_x)
        prev, self._prev_probe[name] = self._prev_probe[name], probs
        flip = float("nan") if prev is None else metrics.flip_rate(prev, probs)
        probe_kl = float("nan") if prev is None else metrics.mean_kl(prev, probs)
        if name == "dlb":
            r = rec.batch.num_repeated
            s_kl = float("nan") if rec.teacher is None else step_kl(rec.teacher, rec.logits[:r])
        else:
            s_kl = step_kl(rec.logits, self._forward_again(trainer, rec.batch, step))
        self.record.add_point(name, step, s_kl, flip, probe_kl)
        self.turns.changed()

    @torch.no_grad()
    def _forward_again(self, trainer: Trainer, batch, step: int) -> torch.Tensor:
        """The baseline's logits of ``batch`` now: the trainer's own input pipeline with a new crop, in train mode,
        on copies of the BatchNorm buffers (the running statistics of the run stay as they are). In float32
        whatever the training precision."""
        gen = torch.Generator(trainer.device).manual_seed(step_seed(self.config.seed + _REAUGMENT_SEED, 0, step))
        x, _ = trainer.inputs(torch.as_tensor(list(batch), device=trainer.device), batch, gen)
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
        self.record.add_steps(name, [(step, loss, ce, kd, temperature, alpha) for (step, *_, temperature, alpha),
                                     (loss, ce, kd) in zip(unread, values)])


FRAME_DPI = 100  # the lab's frames: at 72 dpi its legend and labels were too small to read


class LiveView:
    """Redraws a lab's figure in a thread of its own, at most ``max_fps`` times a second and only when the lab has
    something new; hands each frame to ``show(png_bytes, snapshot)``.

    The view copies the lab's record under its lock (a few microseconds) and draws from the copy, so training never
    waits for drawing. Drawing does take CPU time from training, so after each frame the view also rests at least
    long enough that drawing takes at most ``max_busy`` of the time. It draws a last frame once the run has ended,
    then stops by itself.
    """

    def __init__(self, lab: LiveLab, show: Callable[[bytes, dict], None], max_fps: float = 2.0,
                 max_busy: float = 0.2, fig=None, dpi: int = FRAME_DPI):
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

        snap = self.lab.view_state()
        if snap["version"] == self._drawn_version:
            return None
        snap.update(status=status_line(self.lab), title=title(self.lab))
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
