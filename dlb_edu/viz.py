"""Plots of runs: training curves side by side, and a reliability diagram.

Every function draws on matplotlib axes (made for you, or passed in) and returns the figure, so notebooks, widgets
and the CLI share one drawing of each thing.
"""
from __future__ import annotations

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget", "ipympl"):
    matplotlib.use("Agg")  # a headless default for the CLI; notebooks keep their inline backend
import matplotlib.pyplot as plt  # noqa: E402

from . import metrics  # noqa: E402

METHOD_COLORS = {"baseline": "#4C72B0", "dlb": "#DD8452", "label_smoothing": "#55A868", "tf_kd": "#8172B3",
                 "cs_kd": "#937860", "ps_kd": "#C44E52"}

CURVE_PANELS = (
    ("train_loss", "train loss (mean over steps)"),
    ("test_acc", "test accuracy"),
    ("probe_flip_rate", "probe predictions flipped since last epoch"),
    ("probe_kl", "KL between consecutive probe predictions"),
)


def plot_curves(histories: dict[str, list[dict]], title: str = "", panels=CURVE_PANELS, fig=None):
    """One panel per metric, one line per run: ``histories`` maps a run's name to its history rows.

    The train-loss panel shades +-1 within-epoch standard deviation of the step loss.
    """
    if fig is None:
        fig = plt.figure(figsize=(4 * len(panels), 3.4))
    fig.clear()
    axes = fig.subplots(1, len(panels))
    for ax, (key, label) in zip(axes, panels):
        for name, rows in histories.items():
            epochs = [r["epoch"] for r in rows]
            values = [r[key] for r in rows]
            color = METHOD_COLORS.get(name)
            ax.plot(epochs, values, marker="o", ms=3, label=name, color=color)
            if key == "train_loss":
                std = [r["step_loss_std"] for r in rows]
                ax.fill_between(epochs, [v - s for v, s in zip(values, std)], [v + s for v, s in zip(values, std)],
                                alpha=0.2, color=color)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_reliability(probs, labels, n_bins: int = 15, ax=None, label: str = "model"):
    """Reliability diagram: accuracy against confidence per bin, with the diagonal of perfect calibration."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    conf, acc, count = metrics.reliability_bins(probs, labels, n_bins)
    keep = count > 0
    ece = metrics.expected_calibration_error(probs, labels, n_bins)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot(conf[keep].numpy(), acc[keep].numpy(), marker="o", label=f"{label} (ECE {ece:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability diagram")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return ax.figure
