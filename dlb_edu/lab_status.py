"""The live lab in words: its status line and its figure's title, as the lab's widget and view show them.

Plain text from a :class:`~dlb_edu.lab.LiveLab`'s state (no ipywidgets here: :class:`~dlb_edu.lab.LiveView` puts
both on each frame it draws, headless too, and :class:`~dlb_edu.widgets.LabApp` shows the status under its buttons).
"""
from __future__ import annotations

import math

from .lab_record import RUNS


def status_line(lab) -> str:
    """One line: the state, the step, the epoch and speed, T and alpha, and the test accuracies so far."""
    step, total, state, cfg = lab.step, lab.total_steps, lab.state, lab.config
    knobs = ", ".join(f"{'T' if k == 'temperature' else k} {v:g}" for k, v in lab.knobs().items())
    epoch = f"epoch {min(step // lab.steps_per_epoch + 1, cfg.epochs)}/{cfg.epochs}"
    accs = [f"{m} {lab.trainers[m].history[-1]['test_acc']:.3f}" for m in RUNS if lab.trainers[m].history]
    acc = f"; test accuracy after epoch {len(lab.trainers['dlb'].history)}: {', '.join(accs)}" if accs else ""
    if state == "ready":
        return f"ready: press Start ({knobs}; {total} steps, stability every {lab.every} steps)"
    if state == "running":
        recent = lab.steps_per_second(max(0, step - 30))
        rate = "" if math.isnan(recent) else f", {recent:.1f} steps/s"
        return f"running: step {step}/{total} ({epoch}{rate}); {knobs}{acc}"
    if state == "paused":
        return f"paused after step {step}/{total}: move T or alpha, inspect a sample, then Resume; {knobs}"
    if state == "stopped":
        saved = (f"checkpoints in {lab.out_dir}/baseline and {lab.out_dir}/dlb" if lab.out_dir is not None
                 else "no output folder, nothing saved")
        return f"stopped after step {step}/{total} ({saved}); {knobs}{acc}"
    if state == "finished":
        return f"finished: {step} steps; {knobs}{acc}"
    return f"failed after step {step}: {lab.error}"


def title(lab) -> str:
    """The figure's title: the model, the data, the batch size and the stability measurement."""
    cfg = lab.config
    return (f"{cfg.arch} on {cfg.dataset} ({len(lab.trainers['dlb'].x_train)} images), B = {cfg.batch_size}, "
            f"stability every {lab.every} steps on {len(lab.probe_idx)} probe images")
