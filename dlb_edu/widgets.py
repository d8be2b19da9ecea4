"""Interactive apps for the notebooks: each is a few ipywidgets controls, a callback that computes with the package's
tested functions, and a figure drawn by :mod:`dlb_edu.viz`.

Four apps follow the paper (Shen et al., CVPR 2022): :class:`SamplingApp` the overlapping batches (Sec. 3.2),
:class:`ConsistencyApp` the temperature-scaled KL term (Eq. 4-5), :class:`StabilityApp` the baseline and DLB trained
side by side, :class:`LabApp` the same pair trained in the background and steered while it trains (the live lab).
Sliders only redraw cheap things; training runs behind the ``Run`` and ``Start`` buttons. Every app keeps what it
last computed (``streams``, ``terms``, ``histories``) and its figure (``fig``), so tests can check both without a
browser, and ``snapshot()`` returns that figure as a plain image, for a reader without a kernel (an exported
notebook, GitHub), who sees no widget. This is the only module that imports ipywidgets: the training core never does.
"""
from __future__ import annotations

import dataclasses
import html
import io
import time
from pathlib import Path

import ipywidgets as W
import numpy as np
import torch
from IPython.display import Image, clear_output, display
from matplotlib.figure import Figure

from . import reference, viz
from .config import TEACHING_RANGES, TrainConfig
from .data import ImageData, load_dataset
from .errors import ConfigError, TrainingDiverged
from .lab import FRAME_DPI, LiveLab, LiveView, default_every, lab_config
from .losses import consistency_loss, dlb_loss
from .sampling import Batch, DLBBatchSampler, PlainBatchSampler
from .smoke import SMOKE_CONFIG, smoke_mode
from .train import Trainer


def _png(fig: Figure) -> bytes:
    png = io.BytesIO()
    fig.savefig(png, format="png")
    return png.getvalue()


def _knob_slider(name: str, value: float, **kwargs) -> W.FloatSlider:
    """A slider for DLB's ``temperature`` or ``alpha`` over its teaching range (config.TEACHING_RANGES)."""
    low, high = TEACHING_RANGES[name]
    step, label = (0.5, "T") if name == "temperature" else (0.1, name)
    return W.FloatSlider(value=value, min=low, max=high, step=step, description=label, **kwargs)


class _App:
    """An app shows ``ui`` when it is the last expression of a cell; ``out`` holds its figure and printed text."""
    ui: W.Widget
    out: W.Output
    fig: Figure

    def _ipython_display_(self):
        display(self.ui)

    def snapshot(self) -> Image:
        """The app's figure as it is now, as a plain PNG image: what a reader without a kernel can see."""
        return Image(_png(self.fig))

    def _show(self, *lines: str) -> None:
        # The figure is a matplotlib.figure.Figure, made without pyplot, so nothing but this Output shows it; it is
        # sent as a PNG, which needs no matplotlib backend in the kernel.
        png = _png(self.fig)
        with self.out:
            clear_output(wait=True)
            for line in lines:
                print(line)
            display(Image(png))


# ---------------------------------------------------------------------------------------------------------------
# Notebook 01: the index stream
# ---------------------------------------------------------------------------------------------------------------

def take_batches(sampler, steps: int) -> list[Batch]:
    """The first ``steps`` batches of ``sampler``, across epoch boundaries."""
    batches: list[Batch] = []
    while len(batches) < steps:
        for batch in sampler:
            batches.append(batch)
            if len(batches) == steps:
                break
    return batches


def index_streams(num_samples: int, batch_size: int, steps: int, seed: int = 0,
                  carry_over: bool = True) -> dict[str, list[Batch]]:
    """The first ``steps`` batches of the plain shuffled sampler and of DLB's, with the same seed (``carry_over`` is
    DLB's)."""
    return {"plain shuffled sampler": take_batches(PlainBatchSampler(num_samples, batch_size, seed=seed), steps),
            "DLBBatchSampler": take_batches(DLBBatchSampler(num_samples, batch_size, seed=seed, carry_over=carry_over),
                                            steps)}


def _bounded(name: str, value, low, high, integer: bool = True):
    """``value`` if it is a number (an integer if ``integer``) in [low, high], the slider's range; else one
    ConfigError line giving the bounds (a slider would clamp it silently, or fail with a widget error)."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise ConfigError(f"{name} must be {'an integer' if integer else 'a number'} in [{low}, {high}], "
                          f"got {value!r}")
    return value


class SamplingApp(_App):
    """Heat-maps of the plain and the DLB index streams; sliders for batch size and steps, a carry-over switch."""

    MAX_SAMPLES = 200  # one row of the heat-map each

    def __init__(self, num_samples: int = 24, batch_size: int = 4, steps: int = 18, seed: int = 0):
        _bounded("num_samples", num_samples, 2, self.MAX_SAMPLES)
        _bounded("batch_size", batch_size, 1, num_samples // 2)  # a DLB batch holds two halves
        _bounded("steps", steps, 2, 60)
        _bounded("seed", seed, 0, 2 ** 63 - 1)
        self.num_samples, self.seed = num_samples, seed
        # A heat-map takes about a second to draw: redraw when a slider is released, not while it is dragged.
        self.batch_size = W.IntSlider(value=batch_size, min=1, max=num_samples // 2, description="batch size",
                                      continuous_update=False)
        self.steps = W.IntSlider(value=steps, min=2, max=60, description="steps", continuous_update=False)
        self.carry_over = W.Checkbox(value=True, description="carry over")
        self.out = W.Output()
        self.fig = Figure(figsize=(12, 0.16 * num_samples + 2.4))
        for control in (self.batch_size, self.steps, self.carry_over):
            control.observe(self.update, names="value")
        self.ui = W.VBox([W.HBox([self.batch_size, self.steps, self.carry_over]), self.out])
        self.update()

    def update(self, change=None) -> None:
        n, b = self.num_samples, self.batch_size.value
        self.streams = index_streams(n, b, self.steps.value, self.seed, self.carry_over.value)
        steps_per_epoch = len(DLBBatchSampler(n, b))
        viz.plot_index_streams(self.streams, n, steps_per_epoch, fig=self.fig,
                               title=f"{n} samples, batch size {b}: {steps_per_epoch} steps per epoch")
        self._show()


# ---------------------------------------------------------------------------------------------------------------
# Notebook 03: the consistency loss
# ---------------------------------------------------------------------------------------------------------------

def consistency_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      temperature: float, alpha: float) -> dict:
    """Each term of :func:`~dlb_edu.losses.dlb_loss` when the whole batch is the repeated half, and the norm of
    the gradient each term puts on the student logits.

    Returns floats ``ce``, ``kl`` (plain KL at T), ``consistency`` (T^2 KL), ``weighted`` (alpha T^2 KL),
    ``total``, ``grad_ce``, ``grad_consistency`` (of alpha T^2 KL), ``grad_total``, and the tensors
    ``p_teacher``, ``p_student`` (softmax at T) and ``grad`` (of the total).
    """
    student = student_logits.detach().float().requires_grad_(True)
    teacher = teacher_logits.detach().float()
    total, ce, kd = dlb_loss(student, targets, teacher, temperature, alpha)
    grad_ce, = torch.autograd.grad(ce, student, retain_graph=True)
    grad_kd, = torch.autograd.grad(alpha * kd, student, retain_graph=True)
    grad, = torch.autograd.grad(total, student)
    return {
        "temperature": float(temperature), "alpha": float(alpha),
        "ce": ce.item(), "kl": kd.item() / temperature ** 2, "consistency": kd.item(),
        "weighted": alpha * kd.item(), "total": total.item(),
        "grad_ce": grad_ce.norm().item(), "grad_consistency": grad_kd.norm().item(), "grad_total": grad.norm().item(),
        "p_teacher": torch.softmax(teacher / temperature, 1),
        "p_student": torch.softmax(student.detach() / temperature, 1),
        "grad": grad,
    }


def gradient_scale(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperatures) -> dict:
    """Norm of the consistency term's gradient on the student logits at each T: with the T^2 factor (as
    :func:`~dlb_edu.losses.consistency_loss`) and without it (the same gradient divided by T^2)."""
    with_t2, without_t2 = [], []
    for T in temperatures:
        student = student_logits.detach().float().requires_grad_(True)
        grad, = torch.autograd.grad(consistency_loss(student, teacher_logits, float(T)), student)
        with_t2.append(grad.norm().item())
        without_t2.append(grad.norm().item() / T ** 2)
    return {"temperatures": np.asarray(temperatures, dtype=float), "with_t2": with_t2, "without_t2": without_t2}


class ConsistencyApp(_App):
    """Sliders ``T`` and ``alpha``; each move recomputes :func:`consistency_terms` and redraws three panels."""

    def __init__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 classes=None, temperature: float = 3.0, alpha: float = 1.0):
        _bounded("temperature", temperature, 0.5, 10.0, integer=False)  # the sliders' ranges
        _bounded("alpha", alpha, 0.0, 3.0, integer=False)
        self.student, self.teacher, self.targets = student_logits, teacher_logits, targets
        self.classes = classes
        self.temperature = _knob_slider("temperature", temperature)
        self.alpha = _knob_slider("alpha", alpha)
        self.out = W.Output()
        self.fig = Figure(figsize=(14, 4.4), dpi=80)
        # The gradient curve does not depend on alpha (it scales it), so it is computed once.
        self.curve = gradient_scale(student_logits, teacher_logits, np.linspace(0.5, 10.0, 39))
        for control in (self.temperature, self.alpha):
            control.observe(self.update, names="value")
        self.ui = W.VBox([W.HBox([self.temperature, self.alpha]), self.out])
        self.update()

    def update(self, change=None) -> None:
        t = self.terms = consistency_terms(self.student, self.teacher, self.targets, self.temperature.value,
                                           self.alpha.value)
        viz.plot_consistency(t, self.curve, self.classes, fig=self.fig)
        self._show(f"T = {t['temperature']:g}, alpha = {t['alpha']:g}:  CE {t['ce']:.4f} + alpha x T^2 x KL "
                   f"{t['weighted']:.4f} = total {t['total']:.4f}   (KL at T: {t['kl']:.4f})",
                   f"gradient norm on the student logits:  CE {t['grad_ce']:.4f}, consistency "
                   f"{t['grad_consistency']:.4f}, total {t['grad_total']:.4f}")


# ---------------------------------------------------------------------------------------------------------------
# Notebook 04: training the baseline and DLB side by side
# ---------------------------------------------------------------------------------------------------------------

class StabilityApp(_App):
    """Controls for T, alpha, forward mode, data and epochs; ``Run`` trains the baseline and DLB with the same seed,
    one epoch each in turn, and redraws the curves after every epoch.

    ``smoke`` (default: :func:`~dlb_edu.smoke.smoke_mode`, what tests and CI set) trains with
    :data:`~dlb_edu.smoke.SMOKE_CONFIG`'s few images and epochs. Otherwise the default is the mini set for 4 epochs
    without a GPU (about a minute on two CPU cores), 15 with one. Before the first Run the figure shows the same four
    panels for the committed reference runs of the baseline and DLB (``dlb_edu.reference``, seed 0), when the
    project's ``results/reference`` is there: what Run draws, for a real run.
    """

    # A click reaches the app only when the kernel is idle: said from the start, as no callback can say it later.
    READY = ("Press Run to train the baseline and DLB. <i>If a cell is still running (Run All), the click waits "
             "for it: the kernel runs one thing at a time, and this line changes when training starts.</i>")

    def __init__(self, smoke: bool | None = None, device: str = "auto", data_choices=("cifar10-mini", "synthetic")):
        cuda = torch.cuda.is_available() and device != "cpu"
        self.smoke = smoke_mode() if smoke is None else smoke
        self.device = device
        self.temperature = _knob_slider("temperature", 3.0)
        self.alpha = _knob_slider("alpha", 1.0)
        self.forward = W.ToggleButtons(options=["joint", "split"], value="joint", description="forward")
        self.dataset = W.Dropdown(options=list(data_choices), value=data_choices[0], description="data")
        self.num_epochs = W.IntSlider(value=SMOKE_CONFIG["epochs"] if self.smoke else (15 if cuda else 4), min=1,
                                      max=60, description="epochs")
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="epochs done",
                                      style={"description_width": "initial"})
        self.status = W.HTML(self.READY)
        self.out = W.Output()
        self.fig = Figure(figsize=(16, 3.6), dpi=80)
        self.histories: dict[str, list[dict]] = {}
        self.trainers: dict[str, Trainer] = {}
        self._data: dict[str, ImageData] = {}
        self.run_button.on_click(self.run)
        self.ui = W.VBox([W.HBox([self.temperature, self.alpha, self.forward]),
                          W.HBox([self.dataset, self.num_epochs, self.run_button]),
                          W.HBox([self.progress, self.status]), self.out])
        self.preview = self._draw_reference()

    def _draw_reference(self) -> bool:
        """Draw the reference runs' baseline and DLB (seed 0) in the app's four panels; False if there are none."""
        try:
            ref = reference.load()
            runs = {v: ref.of(v)[0] for v in ("baseline", "dlb")}  # the first seed of each
        except ConfigError:  # DataError included: no committed reference results (an installed package)
            return False
        cfg, seed = runs["dlb"].config, runs["dlb"].seed
        viz.plot_curves({v: run.history for v, run in runs.items()}, fig=self.fig,
                        title=f"REFERENCE runs, not yours: {cfg['arch']} on {cfg['dataset']}, "
                              f"{len(runs['dlb'].history)} epochs, T = {cfg['temperature']:g}, alpha = "
                              f"{cfg['alpha']:g}, forward = {cfg['forward']}, seed {seed} (press Run to train yours)")
        self._show()
        return True

    def config(self) -> TrainConfig:
        """The run the controls describe (the ``quick`` preset otherwise)."""
        return TrainConfig.from_preset(
            "quick", dataset=self.dataset.value, epochs=self.num_epochs.value, temperature=self.temperature.value,
            alpha=self.alpha.value, forward=self.forward.value, device=self.device,
            **({k: v for k, v in SMOKE_CONFIG.items() if k != "epochs"} if self.smoke else {}))

    def data(self, name: str) -> ImageData:
        if name not in self._data:
            self._data[name] = load_dataset(name, download=name in ("cifar10", "cifar100"))
        return self._data[name]

    def run(self, button=None) -> None:
        self.run_button.disabled = True
        try:
            self._train()
        except (ConfigError, TrainingDiverged) as e:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
        finally:
            self.run_button.disabled = False

    def _train(self) -> None:
        cfg = self.config()
        self.status.value = f"loading {html.escape(cfg.dataset)}..."
        data = self.data(cfg.dataset)
        self.trainers = {m: Trainer(dataclasses.replace(cfg, method=m), data=data, progress=False)
                         for m in ("baseline", "dlb")}
        # The drawn rows: the trainers' history rows plus the quantiles of each epoch's step losses (the band).
        self.histories = {m: [] for m in self.trainers}
        losses = {m: [] for m in self.trainers}
        self.progress.max, self.progress.value = cfg.epochs, 0
        title = (("SMOKE RUN, not a result: " if self.smoke else "")
                 + f"{cfg.arch} on {cfg.dataset} ({len(self.trainers['dlb'].data.x_train)} images), "
                 f"T = {cfg.temperature:g}, alpha = {cfg.alpha:g}, forward = {cfg.forward}")
        start = time.perf_counter()
        # One epoch of each method in turn: the two curves grow together.
        epochs = [t.epochs(on_step=lambda trainer, record, m=m: losses[m].append(float(record.loss)))
                  for m, t in self.trainers.items()]
        for rows in zip(*epochs):
            for m, row in zip(self.trainers, rows):
                self.histories[m].append({**row, **viz.step_loss_band(losses[m])})
                losses[m].clear()
            self.progress.value += 1
            viz.plot_curves(self.histories, title=title, fig=self.fig)
            accs = ", ".join(f"{m} {r['test_acc']:.3f}" for m, r in zip(self.trainers, rows))
            self.status.value = (f"epoch {rows[0]['epoch']}/{cfg.epochs}: test accuracy {accs} "
                                 f"({time.perf_counter() - start:.0f} s on {self.trainers['dlb'].device})")
            self._show()


# ---------------------------------------------------------------------------------------------------------------
# Notebook 04b: the live lab
# ---------------------------------------------------------------------------------------------------------------



def _error_html(message: str) -> str:
    return f"<span style='color:#b00'>{html.escape(message)}</span>"


class LabApp(_App):
    """The live lab: ``Start`` trains the baseline and DLB side by side in background threads
    (:class:`~dlb_edu.lab.LiveLab`), so the kernel stays free while they train.

    Moving T or alpha during the run changes DLB's next step; each change is listed under the figure and drawn in
    it as a vertical line. Pause, Resume and Stop act between two steps. ``Inspect`` shows repeated sample
    ``sample`` of the last step (the step inspector). A :class:`~dlb_edu.lab.LiveView` redraws the figure at most
    ``max_fps`` times a second, from a thread of its own.

    ``config`` is the run (default :func:`~dlb_edu.lab.lab_config`); the sliders set its T, alpha and epochs at
    Start. With ``out_dir`` each Start begins a new run there and Stop leaves checkpoints that
    ``LiveLab(config, out_dir=..., resume=True)`` or ``python -m dlb_edu train ... --resume`` continue.
    A new LabApp stops the run of the one made before it: re-running the cell would otherwise leave that run
    training, unseen, in the background.
    """
    _latest: "LabApp | None" = None

    def __init__(self, config: TrainConfig | None = None, data: ImageData | None = None, every: int | None = None,
                 out_dir: str | Path | None = None, max_fps: float = 2.0):
        if every is not None:
            _bounded("every", every, 1, 200)  # the slider's range
        if LabApp._latest is not None and LabApp._latest.lab is not None:
            LabApp._latest.lab.stop(wait=False)
        LabApp._latest = self
        cfg = self.config = config if config is not None else lab_config()
        self.out_dir, self.max_fps = out_dir, max_fps
        self._data: dict[str, ImageData] = {} if data is None else {cfg.dataset: data}
        # Released, not dragged: one change per move, not one per pixel of the drag.
        self.temperature = _knob_slider("temperature", cfg.temperature, continuous_update=False)
        self.alpha = _knob_slider("alpha", cfg.alpha, continuous_update=False)
        self.num_epochs = W.IntSlider(value=cfg.epochs, min=1, max=max(60, cfg.epochs), description="epochs")
        self.every = W.IntSlider(value=every or default_every(cfg), min=1, max=200, description="every K steps",
                                 style={"description_width": "initial"})
        self.start_button = W.Button(description="Start", button_style="primary", icon="play")
        self.pause_button = W.Button(description="Pause", icon="pause")
        self.resume_button = W.Button(description="Resume", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop")
        self.status = W.HTML("Press Start to train the baseline and DLB side by side; move T and alpha while they "
                             "train.")
        self.change_log = W.HTML("changes: none yet")
        self.figure = W.Image(format="png")
        self.sample = W.IntSlider(value=0, min=0, max=cfg.batch_size - 1, description="sample")
        self.inspect_button = W.Button(description="Inspect", icon="search")
        self.inspector_text = W.HTML()
        self.inspector = W.Image(format="png", layout=W.Layout(display="none"))  # shown at the first Inspect
        self.fig = Figure(figsize=(12, 6.5), dpi=FRAME_DPI)  # drawn by the view's thread only, once a run started
        self.inspector_fig = Figure(figsize=(12, 3.4), dpi=72)
        self.lab: LiveLab | None = None
        self.view: LiveView | None = None
        self.inspection: dict | None = None
        for button, handler in ((self.start_button, self.start), (self.pause_button, self.pause),
                                (self.resume_button, self.resume), (self.stop_button, self.stop),
                                (self.inspect_button, self.inspect)):
            button.on_click(handler)
        for knob in (self.temperature, self.alpha):
            knob.observe(self._knob_moved, names="value")
        self.ui = W.VBox([W.HBox([self.temperature, self.alpha, self.num_epochs, self.every]),
                          W.HBox([self.start_button, self.pause_button, self.resume_button, self.stop_button]),
                          self.status, self.figure, self.change_log,
                          W.HBox([self.sample, self.inspect_button]), self.inspector_text, self.inspector])
        empty = {"points": {m: {"step": [], "ce": [], "loss": [], "step_kl": [], "flip_rate": [], "probe_kl": []}
                            for m in ("baseline", "dlb")},
                 "every": self.every.value, "total_steps": 1, "changes": [], "lr_drops": []}
        self.figure.value = _png(viz.plot_lab(empty, fig=self.fig))
        self._buttons()

    def snapshot(self) -> Image:
        """The lab's last drawn frame, as a plain PNG image. (The view's thread draws ``fig``; the frame it last
        sent is whole, so the kernel never saves a figure that is being drawn.)"""
        return Image(bytes(self.figure.value))

    def data(self, cfg: TrainConfig) -> ImageData:
        if cfg.dataset not in self._data:
            self._data[cfg.dataset] = load_dataset(cfg.dataset, cfg.data_root, cfg.download)
        return self._data[cfg.dataset]

    def _buttons(self) -> None:
        """Enable what makes sense in the lab's state (called from the kernel and from the view's thread)."""
        state = "none" if self.lab is None else self.lab.state
        idle = state in ("none", "ready", "stopped", "finished", "failed")
        self.start_button.disabled = not idle
        self.pause_button.disabled = state != "running"
        self.resume_button.disabled = state != "paused"
        self.stop_button.disabled = state not in ("running", "paused")
        self.num_epochs.disabled = self.every.disabled = not idle
        self.inspect_button.disabled = self.lab is None

    # Buttons and sliders (the kernel's thread)

    def start(self, button=None) -> None:
        if self.lab is not None and not self.lab.ended:
            return
        cfg = dataclasses.replace(self.config, temperature=self.temperature.value, alpha=self.alpha.value,
                                  epochs=self.num_epochs.value)
        self.status.value = f"loading {html.escape(cfg.dataset)} and building the two runs..."
        try:
            lab = LiveLab(cfg, data=self.data(cfg), every=self.every.value, out_dir=self.out_dir,
                          force=self.out_dir is not None)
        except ConfigError as e:
            self.status.value = _error_html(str(e))
            return
        if self.view is not None:
            self.view.stop()  # the last run's view has drawn its last frame, or is told to stop now
        self.lab, self.inspection = lab, None
        self.view = LiveView(lab, self._frame, max_fps=self.max_fps, fig=self.fig)
        lab.start()
        self.view.start()
        self._buttons()

    def pause(self, button=None) -> None:
        if self.lab is not None and self.lab.state == "running":
            self.lab.pause()
            self.pause_button.disabled = True
            self.status.value = "pausing before the next step..."

    def resume(self, button=None) -> None:
        if self.lab is not None and self.lab.state == "paused":
            self.lab.resume()
            self._buttons()

    def stop(self, button=None) -> None:
        if self.lab is not None and self.lab.state in ("running", "paused"):
            self.lab.stop(wait=False)  # the threads end between two steps; the view shows "stopped" then
            self.pause_button.disabled = self.resume_button.disabled = self.stop_button.disabled = True
            self.status.value = "stopping after the current step..."

    def _knob_moved(self, change) -> None:
        name = "temperature" if change["owner"] is self.temperature else "alpha"
        if self.lab is None or self.lab.state not in ("running", "paused"):
            return  # the value the next Start begins with
        try:
            self.lab.set(name, change["new"])
        except ConfigError as e:
            self.status.value = _error_html(str(e))
            return
        when = "when you press Resume" if self.lab.state == "paused" else "from the next step"
        self.status.value = html.escape(f"{'T' if name == 'temperature' else name} -> {change['new']:g} {when}")

    def inspect(self, button=None) -> None:
        """Draw the step inspector for repeated sample ``sample`` of the last step."""
        if self.lab is None:
            return
        try:
            info = self.inspection = self.lab.inspect(self.sample.value)
        except ConfigError as e:
            self.inspector_text.value = _error_html(str(e))
            return
        self.inspector.value = _png(viz.plot_inspector(info, self.lab.classes, fig=self.inspector_fig))
        self.inspector.layout.display = None
        self.inspector_text.value = html.escape(
            f"step {info['step']}: repeated sample {info['sample']} (training image #{info['index']}, "
            f"{self.lab.classes[info['label']]}), T {info['temperature']:g}, alpha {info['alpha']:g}, "
            f"KL at T {info['kl']:.4f}. Gradient on its logits: alpha T (p_student - p_teacher) / n, "
            f"n = {info['num_repeated']} repeated samples.")

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run has ended and its last frame is drawn (headless runs, tests)."""
        if self.lab is not None:
            self.lab.wait(timeout)
        if self.view is not None:
            self.view.wait(timeout)

    # The view's thread

    def _frame(self, png: bytes, snap: dict) -> None:
        self.figure.value = png
        text = html.escape(snap["status"])
        self.status.value = _error_html(snap["status"]) if snap["state"] == "failed" else text
        changes = "; ".join(f"step {c['step']}: {'T' if c['name'] == 'temperature' else c['name']} "
                            f"{c['old']:g} -> {c['new']:g}" for c in snap["changes"])
        self.change_log.value = html.escape(f"changes: {changes or 'none yet'}")
        self._buttons()
