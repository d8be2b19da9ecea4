"""Interactive apps for the notebooks: each is a few ipywidgets controls, a callback that computes with the package's
tested functions, and a figure drawn by :mod:`dlb_edu.viz`.

Three apps follow the paper (Shen et al., CVPR 2022): :class:`SamplingApp` the overlapping batches (Sec. 3.2),
:class:`ConsistencyApp` the temperature-scaled KL term (Eq. 4-5), :class:`StabilityApp` the baseline and DLB trained
side by side. Sliders only redraw cheap things; training runs behind the ``Run`` button. Every app keeps what it
last computed (``streams``, ``terms``, ``histories``) and its figure (``fig``), so tests can check both without a
browser, and ``snapshot()`` returns that figure as a plain image, for a reader without a kernel (an exported
notebook, GitHub), who sees no widget. This is the only module that imports ipywidgets: the training core never does.
"""
from __future__ import annotations

import dataclasses
import html
import io
import time

import ipywidgets as W
import numpy as np
import torch
from IPython.display import Image, clear_output, display
from matplotlib.figure import Figure

from . import reference, viz
from .data import ImageData, load_dataset
from .errors import ConfigError, TrainingDiverged
from .losses import consistency_loss, dlb_loss
from .sampling import DLBBatch, DLBBatchSampler, PlainBatchSampler
from .smoke import SMOKE_CONFIG, smoke_mode
from .train import TrainConfig, Trainer


class _App:
    """An app shows ``ui`` when it is the last expression of a cell; ``out`` holds its figure and printed text."""
    ui: W.Widget
    out: W.Output

    def _ipython_display_(self):
        display(self.ui)

    def _png(self) -> bytes:
        png = io.BytesIO()
        self.fig.savefig(png, format="png")
        return png.getvalue()

    def snapshot(self) -> Image:
        """The app's figure as it is now, as a plain PNG image: what a reader without a kernel can see."""
        return Image(self._png())

    def _show(self, *lines: str) -> None:
        # The figure is a matplotlib.figure.Figure, made without pyplot, so nothing but this Output shows it; it is
        # sent as a PNG, which needs no matplotlib backend in the kernel.
        png = self._png()
        with self.out:
            clear_output(wait=True)
            for line in lines:
                print(line)
            display(Image(png))


# ---------------------------------------------------------------------------------------------------------------
# Notebook 01: the index stream
# ---------------------------------------------------------------------------------------------------------------

def take_batches(sampler, steps: int) -> list[DLBBatch]:
    """The first ``steps`` batches of ``sampler``, across epoch boundaries."""
    batches: list[DLBBatch] = []
    while len(batches) < steps:
        for batch in sampler:
            batches.append(batch)
            if len(batches) == steps:
                break
    return batches


def index_streams(num_samples: int, batch_size: int, steps: int, seed: int = 0,
                  carry_over: bool = True) -> dict[str, list[DLBBatch]]:
    """The first ``steps`` batches of the plain shuffled sampler and of DLB's, with the same seed."""
    return {name: take_batches(cls(num_samples, batch_size, seed=seed, carry_over=carry_over), steps)
            for name, cls in (("plain shuffled sampler", PlainBatchSampler), ("DLBBatchSampler", DLBBatchSampler))}


class SamplingApp(_App):
    """Heat-maps of the plain and the DLB index streams; sliders for batch size and steps, a carry-over switch."""

    def __init__(self, num_samples: int = 24, batch_size: int = 4, steps: int = 18, seed: int = 0):
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
        self.student, self.teacher, self.targets = student_logits, teacher_logits, targets
        self.classes = classes
        self.temperature = W.FloatSlider(value=temperature, min=0.5, max=10.0, step=0.5, description="T")
        self.alpha = W.FloatSlider(value=alpha, min=0.0, max=3.0, step=0.1, description="alpha")
        self.out = W.Output()
        self.fig = Figure(figsize=(14, 3.8), dpi=80)
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

    def __init__(self, smoke: bool | None = None, device: str = "auto", data_choices=("cifar10-mini", "synthetic")):
        cuda = torch.cuda.is_available() and device != "cpu"
        self.smoke = smoke_mode() if smoke is None else smoke
        self.device = device
        self.temperature = W.FloatSlider(value=3.0, min=0.5, max=10.0, step=0.5, description="T")
        self.alpha = W.FloatSlider(value=1.0, min=0.0, max=3.0, step=0.1, description="alpha")
        self.forward = W.ToggleButtons(options=["joint", "split"], value="joint", description="forward")
        self.dataset = W.Dropdown(options=list(data_choices), value=data_choices[0], description="data")
        self.num_epochs = W.IntSlider(value=SMOKE_CONFIG["epochs"] if self.smoke else (15 if cuda else 4), min=1,
                                      max=60, description="epochs")
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="epochs done",
                                      style={"description_width": "initial"})
        self.status = W.HTML("Press Run to train the baseline and DLB.")
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
        self.histories = {m: t.history for m, t in self.trainers.items()}
        self.progress.max, self.progress.value = cfg.epochs, 0
        title = (("SMOKE RUN, not a result: " if self.smoke else "")
                 + f"{cfg.arch} on {cfg.dataset} ({len(self.trainers['dlb'].data.x_train)} images), "
                 f"T = {cfg.temperature:g}, alpha = {cfg.alpha:g}, forward = {cfg.forward}")
        start = time.perf_counter()
        # One epoch of each method in turn: the two curves grow together.
        for rows in zip(*(t.epochs() for t in self.trainers.values())):
            self.progress.value += 1
            viz.plot_curves(self.histories, title=title, fig=self.fig)
            accs = ", ".join(f"{m} {r['test_acc']:.3f}" for m, r in zip(self.trainers, rows))
            self.status.value = (f"epoch {rows[0]['epoch']}/{cfg.epochs}: test accuracy {accs} "
                                 f"({time.perf_counter() - start:.0f} s on {self.trainers['dlb'].device})")
            self._show()
