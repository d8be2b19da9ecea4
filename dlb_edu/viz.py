"""Plots for the CLI and the notebooks: training curves, calibration, the index stream, memory, the loss, sweeps.

Every function draws on matplotlib axes (made for you, or passed in) and returns the figure, so notebooks, widgets
and the CLI share one drawing of each thing. Importing this module leaves matplotlib's backend alone: a notebook
keeps its inline backend, a script its own; the CLI passes a ``matplotlib.figure.Figure``, which needs none.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from . import metrics
from .augment import random_crop_flip
from .errors import ConfigError
from .progress import format_bytes  # noqa: F401 (the notebooks call viz.format_bytes)

METHOD_COLORS = {"baseline": "#4C72B0", "dlb": "#DD8452", "label_smoothing": "#55A868", "tf_kd": "#8172B3",
                 "cs_kd": "#937860", "ps_kd": "#C44E52"}

CURVE_PANELS = (
    ("train_loss", "train loss (mean over steps)"),
    ("test_acc", "test accuracy"),
    ("probe_flip_rate", "probe predictions flipped since last epoch"),
    ("probe_kl", "KL between consecutive probe predictions"),
)


# Row keys of the 10th and 90th percentile of an epoch's step losses (see step_loss_band).
LOSS_BAND_KEYS = ("step_loss_q10", "step_loss_q90")


def step_loss_band(step_losses) -> dict:
    """The 10th and 90th percentile of one epoch's step losses, under :data:`LOSS_BAND_KEYS`: a band that stays
    inside the losses that happened (a mean +- std band of a skewed loss can reach below zero)."""
    q10, q90 = np.quantile(np.asarray(step_losses, dtype=float), [0.1, 0.9])
    return {LOSS_BAND_KEYS[0]: float(q10), LOSS_BAND_KEYS[1]: float(q90)}


def plot_curves(histories: dict[str, list[dict]], title: str = "", panels=CURVE_PANELS, fig=None):
    """One panel per metric, one line per run: ``histories`` maps a run's name to its history rows.

    Where the rows carry :data:`LOSS_BAND_KEYS` (:func:`step_loss_band`), the train-loss panel shades the 10th to
    90th percentile of each epoch's step losses.
    """
    if fig is None:
        fig = plt.figure(figsize=(4 * len(panels), 3.4))
    fig.clear()
    axes = fig.subplots(1, len(panels))
    all_epochs = [r["epoch"] for rows in histories.values() for r in rows] or [1]
    for ax, (key, label) in zip(axes, panels):
        for name, rows in histories.items():
            epochs = [r["epoch"] for r in rows]
            values = [r[key] for r in rows]
            color = METHOD_COLORS.get(name)
            ax.plot(epochs, values, marker="o", ms=3, label=name, color=color)
            if key == "train_loss" and rows and all(k in rows[0] for k in LOSS_BAND_KEYS):
                # the spread of the epoch's step losses as quantiles: never below the smallest step loss
                ax.fill_between(epochs, [r[LOSS_BAND_KEYS[0]] for r in rows], [r[LOSS_BAND_KEYS[1]] for r in rows],
                                alpha=0.2, color=color)
        ax.set_title(label, fontsize=10)
        if all(np.isnan(r[key]) for rows in histories.values() for r in rows):
            ax.text(0.5, 0.5, "measured from epoch 2 on", transform=ax.transAxes, ha="center", va="center", color="0.5")
        ax.set_xlim(min(all_epochs) - 0.25, max(all_epochs) + 0.25)  # the same epochs in every panel
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _seed_values(histories: list[list[dict]], key: str):
    """The epochs of the shortest history and a (seeds, epochs) array of ``key``."""
    n = min(len(h) for h in histories)
    return [r["epoch"] for r in histories[0][:n]], np.array([[r[key] for r in h[:n]] for h in histories], dtype=float)


def _range_band(ax, epochs, values, color, style="-", label=None, lw=1.6, alpha=0.15):
    """The mean over seeds as a line and the seeds' range (min to max) as a band: it never leaves the data."""
    ax.plot(epochs, np.nanmean(values, 0), style, color=color, lw=lw, label=label)
    if len(values) > 1:
        ax.fill_between(epochs, np.nanmin(values, 0), np.nanmax(values, 0), color=color, alpha=alpha, lw=0)


def plot_final_dots(runs: dict[str, list[list[dict]]], key: str = "test_acc", colors: dict | None = None, ax=None):
    """Final (filled) and best (open) ``key`` of each run, a dot per seed and a bar for the mean: a dot plot, whose
    axis need not start at 0 because it draws positions, not lengths."""
    colors = colors or {}
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 0.45 * len(runs) + 1.5))
    for y, (name, histories) in enumerate(runs.items()):
        color = colors.get(name) or f"C{y}"
        _, values = _seed_values(histories, key)
        for vals, offset, face in ((values[:, -1], -0.15, color), (np.nanmax(values, 1), 0.15, "white")):
            ax.plot(vals, np.full(len(vals), y + offset), "o", ms=5, mfc=face, mec=color, mew=1.3)
            ax.plot([vals.mean()] * 2, [y + offset - 0.14, y + offset + 0.14], color="black", lw=2)
    label = key.replace("test_acc", "test accuracy").replace("_", " ")
    ax.set_yticks(range(len(runs)), list(runs), fontsize=8)
    ax.set_ylim(len(runs) - 0.5, -0.5)
    ax.set_xlabel(label)
    ax.grid(axis="x", color="0.9")
    ax.set_title(f"final (filled) and best* (open) {label}\na dot per seed, black bar: the mean", fontsize=9)
    ax.text(0, -0.1, "*best: the epoch is chosen on the test set (optimistic)", transform=ax.transAxes,
            fontsize=7, color="0.35", va="top")
    return ax.figure


def plot_seed_summary(runs: dict[str, list[list[dict]]], key: str = "test_acc", title: str = "",
                      colors: dict | None = None, fig=None):
    """Several seeds per run: ``runs`` maps a name to its seeds' histories.

    Left: ``key`` per epoch, the mean over seeds with the seeds' range (min to max) as a band. With more than three
    runs the curves are small multiples: one panel per run, each against the first run (a thin grey line and band),
    so that no two bands of the others overlap. Right: :func:`plot_final_dots`.
    """
    colors = colors or {}
    names = list(runs)
    label = key.replace("test_acc", "test accuracy").replace("_", " ")
    multiples = len(names) > 3
    cols = 3 if multiples else 1
    rows = -(-(len(names) - 1) // cols) if multiples else 1
    if fig is None:
        fig = plt.figure(figsize=(14, 2.6 * rows + 1.4) if multiples else (13, 4.2))
    fig.clear()
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1] * cols + [1.1 if multiples else 0.8])
    color_of = {name: colors.get(name) or f"C{k}" for k, name in enumerate(names)}
    lows = [np.nanmin(_seed_values(runs[n], key)[1]) for n in names]
    if multiples:
        first = names[0]
        epochs0, values0 = _seed_values(runs[first], key)
        axes = []
        for k, name in enumerate(names[1:]):
            ax = fig.add_subplot(grid[k // cols, k % cols], sharey=axes[0] if axes else None)
            axes.append(ax)
            _range_band(ax, epochs0, values0, "0.55", lw=1, alpha=0.2, label=f"{first}")
            epochs, values = _seed_values(runs[name], key)
            _range_band(ax, epochs, values, color_of[name], "--" if "split" in name else "-",
                        label=f"{name} ({len(runs[name])} seeds)")
            ax.set_title(f"{name} against {first}", fontsize=9)
            ax.legend(fontsize=7, loc="lower right")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=8)
            if k // cols == rows - 1:
                ax.set_xlabel("epoch", fontsize=8)
            if k % cols == 0:
                ax.set_ylabel(label, fontsize=8)
        axes[0].set_ylim(max(0.0, min(lows) - 0.02), None)
        fig.text(0.01, 0.005, f"{label} per epoch: line = mean over seeds, band = the seeds' range (min to max)",
                 fontsize=8, color="0.3")
    else:
        ax = fig.add_subplot(grid[0, 0])
        for name in names:
            epochs, values = _seed_values(runs[name], key)
            _range_band(ax, epochs, values, color_of[name], "--" if "split" in name else "-",
                        label=f"{name} ({len(runs[name])} seeds)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch: mean over seeds, band: the seeds' range (min to max)", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(max(0.0, min(lows) - 0.02), None)
        ax.legend(fontsize=8, loc="lower right")
    plot_final_dots(runs, key, color_of, ax=fig.add_subplot(grid[:, cols]))
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig


# t quantiles for a two-sided 95% interval, by degrees of freedom (scipy is not a dependency); 1.96 beyond 30.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 25: 2.060, 30: 2.042}


def t95(df: int) -> float:
    """The t quantile for a two-sided 95% interval with ``df`` degrees of freedom (the next tabulated df down)."""
    if df < 1:
        raise ConfigError(f"a t interval needs at least 2 values (df >= 1), got df = {df}")
    return 1.96 if df > 30 else _T95[max(d for d in _T95 if d <= df)]


def paired_interval(diffs) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided 95% t interval (low, high); NaN bounds for one value."""
    d = np.asarray(list(diffs), dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    half = t95(len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return mean, mean - half, mean + half


def plot_paired_differences(differences: dict[str, list[float]], title: str = "",
                            xlabel: str = "difference in final test accuracy (points)", scale: float = 100.0,
                            ax=None):
    """Seed-by-seed paired differences: one row per contrast, a dot per seed, the mean (diamond) with its 95% t
    interval, on an axis that always includes 0 (drawn as a line).

    ``differences`` maps a contrast's name to its per-seed differences, e.g. ``{"DLB - baseline": [0.038, 0.009,
    0.031]}`` (accuracies as fractions: ``scale`` 100 draws them in points). An empty list draws "not run yet".
    """
    if not differences:
        raise ConfigError("plot_paired_differences needs at least one contrast")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.7 * len(differences) + 1.6))
    xs = [0.0]
    for y, (name, diffs) in enumerate(differences.items()):
        d = scale * np.asarray(list(diffs), dtype=float)
        if len(d) == 0:
            ax.text(0, y, "  not run yet", va="center", fontsize=8, color="0.4")
            continue
        ax.plot(d, np.full(len(d), y), "o", color="0.35", ms=5, zorder=3)
        mean, low, high = paired_interval(d)
        xs += list(d) + [mean] + ([low, high] if len(d) > 1 else [])
        if len(d) > 1:
            ax.plot([low, high], [y + 0.25] * 2, color="C3", lw=2, solid_capstyle="butt", zorder=2)
            for end in (low, high):
                ax.plot([end] * 2, [y + 0.17, y + 0.33], color="C3", lw=2)
        ax.plot([mean], [y + 0.25], "D", color="C3", ms=7, zorder=4)
        ax.annotate(f"mean {mean:+.2f}" + (f", 95% interval [{low:+.2f}, {high:+.2f}]" if len(d) > 1
                                           else " (one seed: no interval)") + f", n = {len(d)}",
                    (max(high, mean) if len(d) > 1 else mean, y + 0.25), xytext=(6, 0), textcoords="offset points",
                    ha="left", va="center", fontsize=7, color="C3")
    ax.axvline(0, color="black", lw=0.9)
    span = max(xs) - min(xs) or 1.0
    ax.set_xlim(min(xs) - 0.08 * span, max(xs) + 0.75 * span)
    ax.set_yticks(range(len(differences)), list(differences), fontsize=8)
    ax.set_ylim(len(differences) - 0.4, -0.5)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", color="0.92")
    ax.set_title(title or "paired by seed: a dot per seed; diamond: the mean, red bar: its 95% t interval",
                 fontsize=9)
    ax.figure.tight_layout()
    return ax.figure


def plot_stability_vs_accuracy(runs: dict[str, list[list[dict]]], colors: dict | None = None,
                               key: str = "probe_flip_rate", curves=None, title: str = "", fig=None):
    """Stability over seeds. Left: ``key`` per epoch for the names in ``curves`` (default all), the mean over seeds
    with the seeds' range as a band. Right: each run's mean ``key`` (epochs 2 on: epoch 1 has no previous epoch)
    against its final test accuracy, a dot per seed: whether the steadier runs are the more accurate ones."""
    colors = colors or {}
    if fig is None:
        fig = plt.figure(figsize=(13, 4.2))
    fig.clear()
    ax_c, ax_s = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    label = {"probe_flip_rate": "probe flip rate", "probe_kl": "probe KL"}.get(key, key.replace("_", " "))
    for k, (name, histories) in enumerate(runs.items()):
        color = colors.get(name) or f"C{k}"
        epochs, values = _seed_values(histories, key)
        keep = ~np.all(np.isnan(values), 0)
        if curves is None or name in curves:
            _range_band(ax_c, np.asarray(epochs)[keep], values[:, keep], color, "--" if "split" in name else "-",
                        label=f"{name} ({len(histories)} seeds)")
        means = np.nanmean(values, 1)
        accs = [h[-1]["test_acc"] for h in histories]
        ax_s.plot(means, accs, "o" if "split" not in name else "s", color=color, ms=7, mec="black", mew=0.5,
                  label=name)
    ax_c.set_xlabel("epoch")
    ax_c.set_ylabel(label)
    ax_c.set_title(f"{label} per epoch: mean over seeds, band: the seeds' range", fontsize=10)
    ax_c.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_c.legend(fontsize=8)
    ax_s.set_xlabel(f"mean {label}, epochs 2 on (lower: steadier)")
    ax_s.set_ylabel("final test accuracy")
    ax_s.set_title("one dot per run (method and seed)", fontsize=10)
    ax_s.legend(fontsize=7, ncol=2, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_bn_statistics(stats: dict[str, tuple], channels: int = 4, title: str = "", fig=None):
    """What one BatchNorm layer normalized with, per channel: ``stats`` maps a call's name (e.g. "joint, 96 rows")
    to its per-channel (mean, variance) tensors; grouped bars for the first ``channels`` channels, mean and variance
    side by side."""
    if fig is None:
        fig = plt.figure(figsize=(11, 3.4))
    fig.clear()
    axes = fig.subplots(1, 2)
    x = np.arange(channels)
    width = 0.8 / len(stats)
    palette = ("0.3", METHOD_COLORS["dlb"], METHOD_COLORS["baseline"], "0.7")
    for ax, which, name in zip(axes, (0, 1), ("mean", "variance")):
        for k, (call, values) in enumerate(stats.items()):
            v = np.asarray(values[which], dtype=float)[:channels]
            ax.bar(x + (k - (len(stats) - 1) / 2) * width, v, width, label=call, color=palette[k % len(palette)])
        ax.axhline(0, color="black", lw=0.7)
        ax.set_xticks(x, [f"channel {c}" for c in x], fontsize=8)
        ax.set_ylabel(f"per-channel {name}")
        ax.set_title(f"the {name} BatchNorm normalizes with", fontsize=10)
    axes[0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
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


# ---------------------------------------------------------------------------------------------------------------
# Images and the index stream (notebooks 00 and 01)
# ---------------------------------------------------------------------------------------------------------------

STREAM_COLORS = ("#f0f0f0", "#DD8452", "#4C72B0", "#8172B3")  # not in the batch, fresh, repeated, both
STREAM_LABELS = ("not in the batch", "fresh", "repeated from the previous step",
                 "repeated and fresh again (carry-over)")


def _hwc(image):
    """A uint8 (3, H, W) tensor as an (H, W, 3) array for imshow."""
    return image.permute(1, 2, 0).cpu().numpy()


def plot_image_grid(images, labels=None, classes=None, ncols: int = 8, title: str = "", fig=None):
    """uint8 images ``(n, 3, H, W)`` in a grid, each titled with its class name."""
    n = len(images)
    nrows = -(-n // ncols)
    if fig is None:
        fig = plt.figure(figsize=(1.25 * ncols, 1.4 * nrows + 0.5))
    fig.clear()
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < n:
            ax.imshow(_hwc(images[k]))
            if labels is not None:
                label = int(labels[k])
                ax.set_title(classes[label] if classes else str(label), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def stream_matrix(batches, num_samples: int):
    """``(num_samples, steps)`` codes: 0 not in the batch, 1 fresh, 2 repeated, 3 both at that step.

    Both happens with carry-over: the first batch of an epoch repeats the last fresh half of the previous epoch,
    and the new epoch's first chunk may draw some of those samples fresh again.
    """
    m = np.zeros((num_samples, len(batches)), dtype=int)
    for t, batch in enumerate(batches):
        m[batch.fresh, t] += 1
        m[batch.repeated, t] += 2
    return m


def first_fresh_order(batches, num_samples: int) -> list[int]:
    """Sample indices sorted by the step at which each is first fresh (never-fresh ones last)."""
    first = {}
    for t, batch in enumerate(batches):
        for pos, i in enumerate(batch.fresh):
            first.setdefault(i, (t, pos))
    return sorted(range(num_samples), key=lambda i: first.get(i, (len(batches), i)))


def plot_index_streams(streams: dict, num_samples: int, steps_per_epoch: int, title: str = "", fig=None):
    """One heat-map per sampler: which sample (row) is in the batch at which step (column), fresh or repeated.

    ``streams`` maps a name to a list of batches (``Batch``). Rows follow the order in which the first stream
    draws the samples fresh, so epoch 1 reads as a staircase; dashed lines mark epoch boundaries.
    """
    import seaborn as sns  # imported here: it takes a second and only two plots need it

    if fig is None:
        fig = plt.figure(figsize=(5.5 * len(streams), 0.16 * num_samples + 2.2))
    fig.clear()
    axes = fig.subplots(1, len(streams), squeeze=False)[0]
    order = first_fresh_order(next(iter(streams.values())), num_samples)
    show_ticks = num_samples <= 40
    for ax, (name, batches) in zip(axes, streams.items()):
        m = stream_matrix(batches, num_samples)[order]
        sns.heatmap(m, ax=ax, cmap=ListedColormap(STREAM_COLORS), vmin=-0.5, vmax=3.5, cbar=False,
                    linewidths=0.4, linecolor="white", yticklabels=order if show_ticks else False,
                    xticklabels=[str(t + 1) for t in range(len(batches))])
        for boundary in range(steps_per_epoch, len(batches), steps_per_epoch):
            ax.axvline(boundary, color="black", ls="--", lw=1.2)
        ax.tick_params(axis="both", labelsize=7, rotation=0)
        ax.set_title(name)
        ax.set_xlabel("step (dashed: epoch boundary)")
        ax.set_ylabel("sample index (in order of first draw)")
    shown = 4 if any((stream_matrix(b, num_samples) == 3).any() for b in streams.values()) else 3
    handles = [Patch(facecolor=c, edgecolor="0.6", label=lab)
               for c, lab in zip(STREAM_COLORS[:shown], STREAM_LABELS[:shown])]
    fig.legend(handles=handles, loc="lower center", ncol=shown, fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_consecutive_batches(data, prev, nxt, generator=None, title: str = "", fig=None):
    """Two consecutive DLB batches as a staircase of real (augmented) images.

    ``nxt`` starts below ``prev``'s fresh half, so each shared sample sits in one column: above as fresh at step t,
    below as repeated at step t+1, with a new crop and flip. Frame colours follow :func:`plot_index_streams`.
    """
    if list(nxt.repeated) != list(prev.fresh):
        raise ConfigError("the second batch's repeated half must be the first batch's fresh half")
    offset = prev.num_repeated
    ncols = offset + len(nxt)
    if fig is None:
        fig = plt.figure(figsize=(1.05 * ncols, 3.3))
    fig.clear()
    axes = fig.subplots(2, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for row, (batch, start, name) in enumerate(((prev, 0, "step t"), (nxt, offset, "step t+1"))):
        images = random_crop_flip(data.x_train[list(batch)], generator=generator)
        for k, i in enumerate(batch):
            ax = axes[row, start + k]
            ax.set_axis_on()
            ax.imshow(_hwc(images[k]))
            ax.set_xticks([])
            ax.set_yticks([])
            color = STREAM_COLORS[2] if k < batch.num_repeated else STREAM_COLORS[1]
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
            ax.set_title(f"#{i} {data.classes[int(data.y_train[i])]}", fontsize=7)
            if k == 0:
                ax.set_ylabel(name, fontsize=10)
    handles = [Patch(facecolor="white", edgecolor=c, linewidth=3, label=lab)
               for c, lab in zip(STREAM_COLORS[1:3], STREAM_LABELS[1:3])]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(title or "two consecutive DLB batches: each column is one sample")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Memory (notebook 02)
# ---------------------------------------------------------------------------------------------------------------

def plot_memory(sizes: dict, dlb: tuple[str, ...] = (), title: str = "what each method keeps in memory", ax=None):
    """Horizontal bars of bytes on a log scale; the names in ``dlb`` are drawn in DLB's colour.

    A value is a number of bytes, or a dict of named parts (``{"parameters": p, "activations": a}``): its bar is
    stacked, the first part solid, the others hatched, and its label gives the total and each part.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 0.6 * len(sizes) + 1.9))
    names = list(sizes)
    parts = {n: dict(sizes[n]) if isinstance(sizes[n], dict) else {"": sizes[n]} for n in names}
    totals = {n: sum(parts[n].values()) for n in names}
    hatches = {}  # part name -> hatch, in the order the parts first appear
    for n in names:
        for k, part in enumerate(parts[n]):
            if k:
                hatches.setdefault(part, ("//", "xx", "..", "++")[len(hatches) % 4])
    for y, n in enumerate(names):
        color = METHOD_COLORS["dlb"] if n in dlb else "0.6"
        left = 0
        for k, (part, nbytes) in enumerate(parts[n].items()):
            ax.barh(y, nbytes, left=left, color=color, alpha=1.0 if k == 0 else 0.55,
                    hatch=hatches.get(part) if k else None, edgecolor="0.25" if k else color)
            left += nbytes
        label = format_bytes(totals[n])
        if len(parts[n]) > 1:
            label += " = " + " + ".join(f"{format_bytes(b)} {part}" for part, b in parts[n].items())
        ax.text(totals[n] * 1.15, y, label, va="center", fontsize=9)
    ax.set_xscale("log")
    smallest = min(b for n in names for b in parts[n].values() if b > 0)
    ax.set_xlim(smallest / 5, max(totals.values()) * (2000 if hatches else 20))
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("bytes (log scale)")
    ax.set_ylabel("what is stored")
    ax.set_title(title)
    handles = [Patch(color=METHOD_COLORS["dlb"], label="DLB"), Patch(color="0.6", label="alternatives")]
    handles += [Patch(facecolor="0.85", edgecolor="0.25", hatch=h, label=part) for part, h in hatches.items()]
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=len(handles),
              frameon=False)  # below the axes: it covers no bar and no label
    ax.figure.tight_layout()
    return ax.figure


def cache_timeline(steps) -> list[dict]:
    """Who wrote what each step reads: ``steps`` holds, per step, ``read`` (the indices read from the cache as the
    teacher's, None if it was empty) and ``written`` (the indices whose logits the step put in the cache).

    Returns one dict per step (1-based): ``step``, ``written``, ``read`` and ``read_from`` (the step that wrote the
    logits read, None if nothing was read). A read that no earlier step wrote is refused.
    """
    writer, rows = {}, []
    for t, s in enumerate(steps, start=1):
        read = None if s["read"] is None else list(s["read"])
        source = None
        if read is not None:
            source = writer.get(tuple(read))
            if source is None:
                raise ConfigError(f"step {t} reads indices {read} that no earlier step wrote to the cache")
        rows.append({"step": t, "written": list(s["written"]), "read": read, "read_from": source})
        writer[tuple(s["written"])] = t
    return rows


def _short(indices, limit: int = 4) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return f"#{shown}{', ...' if len(indices) > limit else ''}"


def plot_cache_timeline(steps, title: str = "", ax=None):
    """The cache over the steps: at each step (x), the fresh half whose logits are written (top lane) and the
    logits read as the teacher for the repeated half (bottom lane), coloured by the step that wrote them; an arrow
    goes from each write to its read. ``steps`` as for :func:`cache_timeline`."""
    rows = cache_timeline(steps)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.9 * len(rows) + 1.8, 2.9))
    colors = plt.get_cmap("tab10")
    for r in rows:
        t, c = r["step"], colors((r["step"] - 1) % 10)
        ax.add_patch(plt.Rectangle((t - 0.42, 0.62), 0.84, 0.6, color=c, alpha=0.85))
        ax.text(t, 0.92, f"writes step {t}'s\nfresh half\n{_short(r['written'])}", ha="center", va="center",
                fontsize=7, color="white")
        if r["read_from"] is None:
            ax.text(t, -0.08, "cache empty:\nCE only", ha="center", va="center", fontsize=7, color="0.4")
            continue
        s = r["read_from"]
        ax.add_patch(plt.Rectangle((t - 0.42, -0.38), 0.84, 0.6, color=colors((s - 1) % 10), alpha=0.85))
        ax.text(t, -0.08, f"reads step {s}'s\nlogits as teacher\n{_short(r['read'])}", ha="center",
                va="center", fontsize=7, color="white")
        ax.annotate("", xy=(t - 0.42, 0.05), xytext=(s + 0.3, 0.62),
                    arrowprops={"arrowstyle": "->", "color": "0.2", "lw": 1.2})
    ax.set_xlim(0.4, len(rows) + 0.6)
    ax.set_ylim(-0.55, 1.4)
    ax.set_xticks([r["step"] for r in rows])
    ax.set_yticks([0.92, -0.08], ["written\n(after the step)", "read\n(teacher)"])
    ax.set_xlabel("training step")
    ax.set_title(title or "the soft-target cache: each step's fresh logits are the next step's teacher", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.figure.tight_layout()
    return ax.figure


# ---------------------------------------------------------------------------------------------------------------
# The consistency loss (notebook 03)
# ---------------------------------------------------------------------------------------------------------------

def plot_consistency(terms: dict, curve: dict, classes=None, fig=None):
    """Three panels for one (T, alpha): teacher and student distributions at T (first sample), each loss term, and
    the gradient norm on the student logits against T, with and without the T^2 factor.

    ``terms`` comes from :func:`dlb_edu.widgets.consistency_terms`, ``curve`` from
    :func:`dlb_edu.widgets.gradient_scale`.
    """
    T, alpha = terms["temperature"], terms["alpha"]
    if fig is None:
        fig = plt.figure(figsize=(14, 4.4))
    fig.clear()
    ax_p, ax_l, ax_g = fig.subplots(1, 3, gridspec_kw={"width_ratios": (1.5, 1, 1.2)})

    p_t, p_s = terms["p_teacher"][0].numpy(), terms["p_student"][0].numpy()
    x = np.arange(len(p_t))
    ax_p.bar(x - 0.2, p_t, 0.4, label="teacher (cached logits)", color="0.45")
    ax_p.bar(x + 0.2, p_s, 0.4, label="student (this step)", color=METHOD_COLORS["dlb"])
    ax_p.set_xticks(x, classes if classes else [str(i) for i in x], rotation=45, ha="right", fontsize=8)
    ax_p.set_ylim(0, 1)
    ax_p.set_ylabel("probability")
    ax_p.set_xlabel("class")
    ax_p.set_title(f"softmax at T = {T:g} (first sample)")

    names = ("CE", "KL", "T²·KL", "α·T²·KL", "total")
    values = [terms["ce"], terms["kl"], terms["consistency"], terms["weighted"], terms["total"]]
    colors = [METHOD_COLORS["baseline"]] + ["0.6", "0.6", METHOD_COLORS["dlb"]] + ["black"]
    ax_l.bar(names, values, color=colors)
    for k, v in enumerate(values):
        ax_l.text(k, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax_l.set_ylim(0, max(values) * 1.2 + 1e-9)
    ax_l.set_ylabel("loss (batch mean)")
    ax_l.set_xlabel("term")
    ax_l.set_title(f"loss terms, α = {alpha:g}")
    ax_l.tick_params(axis="x", labelsize=8)
    # Below the panel, outside the axes: inside, a legend covers the CE bar whenever CE is the tallest term.
    ax_l.legend(handles=[Patch(color=METHOD_COLORS["baseline"], label="hard labels"),
                         Patch(color="0.6", label="parts of the DLB term"),
                         Patch(color=METHOD_COLORS["dlb"], label="added by DLB")], fontsize=8,
                loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    ax_p.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.42), ncol=2, frameon=False)  # under the names

    plot_gradient_scale(curve, alpha=alpha, temperature=T, grad_ce=terms["grad_ce"], ax=ax_g)
    ax_g.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def _fraction(w: float) -> str:
    from fractions import Fraction
    f = Fraction(w).limit_denominator(4096)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def plot_ce_weights(panels: dict, title: str = "", fig=None):
    """Per-image cross-entropy weights, step by step: one heat-map per method, rows are images, columns steps.

    ``panels`` maps a name to ``{"weights": (images, steps) array, "rows": [str per step]}`` and optionally
    ``"count"`` (how many times the image is in that step's batch; default: once where its weight is not 0): a
    cell is the weight of that image's cross-entropy in that step's loss (0: not in the batch), ``rows`` labels
    each step's forward call(s) (what BatchNorm normalizes over). A cell says its weight and which augmentation of
    the image it is (each appearance is cropped and flipped anew); the right margin gives each image's sum over the
    steps shown.
    """
    if fig is None:
        n = max(np.asarray(p["weights"]).shape[0] for p in panels.values())
        fig = plt.figure(figsize=(5.2 * len(panels) + 0.5, 0.42 * n + 2.2))
    fig.clear()
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    top = max(float(np.asarray(p["weights"]).max()) for p in panels.values())
    for ax, (name, panel) in zip(axes, panels.items()):
        w = np.asarray(panel["weights"], dtype=float)
        count = np.asarray(panel.get("count", w > 0), dtype=int)
        ax.imshow(w, cmap="Oranges", vmin=0, vmax=top * 1.25, aspect="auto")
        seen = np.cumsum(count, axis=1)  # the image's appearances so far: each one is an augmentation of its own
        for i in range(w.shape[0]):
            for t in range(w.shape[1]):
                if count[i, t] == 1:
                    ax.text(t, i, f"{_fraction(w[i, t])}\naug {seen[i, t]}", ha="center", va="center", fontsize=7)
                elif count[i, t] > 1:  # in its batch more than once (DLB's carry-over): several augmentations
                    ax.text(t, i, f"{_fraction(w[i, t])}\naug {seen[i, t] - count[i, t] + 1}-{seen[i, t]}",
                            ha="center", va="center", fontsize=7)
            ax.text(w.shape[1] - 0.35, i, f"Σ {_fraction(w[i].sum())}", ha="left", va="center", fontsize=8)
        ax.set_xlim(-0.5, w.shape[1] + 0.5)
        ax.set_xticks(range(w.shape[1]), [f"{t + 1}\n{r}" for t, r in enumerate(panel["rows"])], fontsize=7)
        ax.set_yticks(range(w.shape[0]), [str(i) for i in range(w.shape[0])], fontsize=7)
        ax.set_xlabel("step (below: rows per forward call, what BatchNorm normalizes over)", fontsize=8)
        ax.set_ylabel("image")
        ax.set_title(name, fontsize=10)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_gradient_scale(curve: dict, alpha: float = 1.0, temperature: float | None = None,
                        grad_ce: float | None = None, ax=None):
    """Gradient norm of the consistency term on the student logits against T, with the T^2 factor and without.

    ``curve`` comes from :func:`dlb_edu.widgets.gradient_scale`; ``temperature`` marks the current T and
    ``grad_ce`` draws the cross-entropy's gradient norm for scale.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    temps = curve["temperatures"]
    with_t2 = alpha * np.asarray(curve["with_t2"])
    ax.plot(temps, with_t2, color=METHOD_COLORS["dlb"], label="α·T²·KL (DLB)")
    ax.plot(temps, alpha * np.asarray(curve["without_t2"]), color="0.5", ls="--", label="α·KL (no T²)")
    if grad_ce is not None:
        ax.axhline(grad_ce, color=METHOD_COLORS["baseline"], lw=1, ls=":", label="CE")
    if temperature is not None:
        ax.axvline(temperature, color="black", lw=1)
        ax.plot([temperature], [np.interp(temperature, temps, with_t2)], "o", color=METHOD_COLORS["dlb"])
    ax.set_xlabel("temperature T")
    ax.set_ylabel("‖∂ term / ∂ student logits‖")
    ax.set_title("gradient on the student logits")
    ax.legend(fontsize=8)
    return ax.figure


# ---------------------------------------------------------------------------------------------------------------
# The (T, alpha) sweep (notebook 04)
# ---------------------------------------------------------------------------------------------------------------

def plot_sweep(accuracy, flip_rate, temperatures, alphas, baseline: dict | None = None, title: str = "", fig=None):
    """Two heat-maps over the (T, alpha) grid: final test accuracy and mean probe flip rate (lower is steadier).

    ``accuracy`` and ``flip_rate`` are arrays of shape ``(len(temperatures), len(alphas))``; ``baseline`` (optional)
    holds the baseline's ``test_acc`` and ``flip_rate`` for the titles.
    """
    import seaborn as sns  # see plot_index_streams

    if fig is None:
        fig = plt.figure(figsize=(10, 3.8))
    fig.clear()
    axes = fig.subplots(1, 2)
    panels = ((accuracy, "final test accuracy", "acc", "viridis"),
              (flip_rate, "probe flip rate (lower is steadier)", "flip_rate", "rocket_r"))
    for ax, (values, label, key, cmap) in zip(axes, panels):
        sns.heatmap(values, ax=ax, annot=True, fmt=".3f", cmap=cmap, cbar_kws={"label": label},
                    xticklabels=[f"{a:g}" for a in alphas], yticklabels=[f"{t:g}" for t in temperatures])
        ax.set_xlabel("alpha")
        ax.set_ylabel("T")
        ax.set_title(f"DLB {label}" + (f"\nbaseline: {baseline[key]:.3f}" if baseline else ""), fontsize=10)
        ax.tick_params(axis="y", rotation=0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# The live lab (notebook 04b)
# ---------------------------------------------------------------------------------------------------------------

KNOB_COLORS = {"temperature": "#8172B3", "alpha": "#55A868"}
KNOB_SYMBOLS = {"temperature": "T", "alpha": "α"}
LAB_PANELS = (
    ("ce", "cross-entropy (mean of the last K steps)", "linear"),
    ("step_kl", "step-to-step KL of the repeated samples", "log"),
    ("flip_rate", "probe predictions flipped in K steps", "linear"),
    ("probe_kl", "probe KL over K steps", "log"),
)


def plot_lab(view: dict, fig=None):
    """The live lab's view: four panels against the step, the baseline and DLB in each, one point every K steps.

    ``view`` comes from :meth:`dlb_edu.lab.LiveLab.view_state`. Solid vertical lines mark the changes of T and
    alpha (labelled old -> new), grey dotted ones the learning-rate drops. DLB's total loss (CE + alpha T^2 KL) is
    dashed in the first panel. The KL panels use a log scale: a change of alpha shows as a step in it.
    """
    from matplotlib.lines import Line2D

    if fig is None:
        fig = plt.figure(figsize=(12, 6.5))
    fig.clear()
    axes = fig.subplots(2, 2).flat
    points, every = view["points"], view["every"]
    x_max = max(view["total_steps"], 1)
    empty = not any(p["step"] for p in points.values())
    for ax, (key, label, scale) in zip(axes, LAB_PANELS):
        for name, p in points.items():
            ax.plot(p["step"], p[key], color=METHOD_COLORS.get(name), lw=1.4, marker="o", ms=2, label=name)
            if key == "ce" and name == "dlb":
                ax.plot(p["step"], p["loss"], color=METHOD_COLORS["dlb"], lw=1, ls="--", label="dlb total loss")
                _clip_total_loss(ax, points, p)
        values = [v for p in points.values() for v in p[key] if v == v]  # NaN: not measured yet
        if scale == "log" and values and min(values) > 0:
            ax.set_yscale("log")
        for step in view["lr_drops"]:
            ax.axvline(step, color="0.55", ls=":", lw=1.2)
        for c in view["changes"]:
            ax.axvline(c["step"], color=KNOB_COLORS[c["name"]], lw=1.4)
            ax.annotate(f"{KNOB_SYMBOLS[c['name']]} {c['old']:g}→{c['new']:g}", (c["step"], 1),
                        xycoords=("data", "axes fraction"), xytext=(-2, -3), textcoords="offset points",
                        rotation=90, va="top", ha="right", fontsize=8, color=KNOB_COLORS[c["name"]])
        if empty:
            ax.text(0.5, 0.5, "press Start", transform=ax.transAxes, ha="center", va="center", color="0.5")
        ax.set_xlim(0, x_max)
        ax.set_title(label.replace("K steps", f"{every} steps"), fontsize=10)
        ax.set_xlabel("step (one DLB step and one baseline step)")
        ax.set_ylabel({"ce": "cross-entropy", "step_kl": "KL (nats, T = 1)", "flip_rate": "fraction flipped",
                       "probe_kl": "KL (nats)"}[key])
    handles = [Line2D([], [], color=METHOD_COLORS[m], lw=1.4, label=m) for m in points]
    handles += [Line2D([], [], color=METHOD_COLORS["dlb"], lw=1, ls="--", label="dlb total loss (CE + α·T²·KL)"),
                Line2D([], [], color=KNOB_COLORS["temperature"], lw=1.4, label="T changed"),
                Line2D([], [], color=KNOB_COLORS["alpha"], lw=1.4, label="α changed"),
                Line2D([], [], color="0.55", ls=":", lw=1.2, label="learning rate ×0.1")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=10.5, frameon=False)
    if view.get("title"):
        fig.suptitle(view["title"], fontsize=11)
    # A fixed layout: tight_layout would draw the figure once more, and this figure is redrawn while training runs.
    fig.subplots_adjust(left=0.065, right=0.98, top=0.91, bottom=0.17, hspace=0.5, wspace=0.2)
    return fig


def _clip_total_loss(ax, points: dict, dlb: dict) -> None:
    """Keep DLB's total loss from squashing the CE curves: the panel's top follows the CE (its largest point, with
    a margin, at least 1.3 x the 90th percentile of the total loss); total-loss points above it are drawn as
    triangles at the top edge, the largest labelled with its value."""
    ce = [v for p in points.values() for v in p["ce"] if v == v]
    loss = [(s, v) for s, v in zip(dlb["step"], dlb["loss"]) if v == v]
    if not ce or not loss:
        return
    top = max(max(ce) * 1.12, float(np.quantile([v for _, v in loss], 0.9)) * 1.05)
    bottom = min(min(ce), min(v for _, v in loss)) * 0.9
    over = [(s, v) for s, v in loss if v > top]
    ax.set_ylim(bottom, top)
    if over:
        ax.plot([s for s, _ in over], [top] * len(over), "^", color=METHOD_COLORS["dlb"], ms=6, clip_on=False)
        s, v = max(over, key=lambda o: o[1])
        ax.annotate(f"▲ total loss above the axis,\nup to {v:.1f} at step {s}", (s, top), xytext=(22, -8),
                    textcoords="offset points", fontsize=8, color=METHOD_COLORS["dlb"], va="top",
                    bbox=dict(fc="white", ec="none", alpha=0.85, pad=1))


def plot_inspector(info: dict, classes=None, fig=None):
    """The step inspector: one repeated sample's cached teacher and current student distributions at T, and the
    gradient the weighted consistency term puts on its logits. ``info`` comes from
    :meth:`dlb_edu.lab.LiveLab.inspect`."""
    if fig is None:
        fig = plt.figure(figsize=(12, 3.4))
    fig.clear()
    ax_p, ax_g = fig.subplots(1, 2)
    p_t, p_s, grad = info["p_teacher"].numpy(), info["p_student"].numpy(), info["grad"].numpy()
    x = np.arange(len(p_t))
    names = list(classes) if classes else [str(i) for i in x]
    T, alpha, label = info["temperature"], info["alpha"], info["label"]
    ax_p.bar(x - 0.2, p_t, 0.4, color="0.45", label="teacher: cached at the step before")
    ax_p.bar(x + 0.2, p_s, 0.4, color=METHOD_COLORS["dlb"], label="student: this step")
    ax_p.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax_p.set_ylim(0, 1)
    ax_p.set_xlabel("class")
    ax_p.set_ylabel(f"probability at T = {T:g}")
    ax_p.set_title(f"sample #{info['index']} ({names[label]}) at step {info['step']}: KL {info['kl']:.4f}",
                   fontsize=10)
    ax_p.legend(fontsize=8)
    ax_g.bar(x, grad, color=np.where(grad > 0, METHOD_COLORS["baseline"], METHOD_COLORS["dlb"]))
    ax_g.axhline(0, color="black", lw=0.8)
    ax_g.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax_g.set_xlabel("class")
    ax_g.set_ylabel("∂ loss / ∂ logit")
    ax_g.set_title(f"gradient of α·T²·KL on its logits: α T (p_s − p_t) / n, α = {alpha:g}, "
                   f"n = {info['num_repeated']}", fontsize=10)
    ax_g.legend(handles=[Patch(color=METHOD_COLORS["baseline"], label="> 0: the step lowers this logit"),
                         Patch(color=METHOD_COLORS["dlb"], label="< 0: the step raises it")], fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# The networks: DLB's collapse on the option-A ResNet (notebook 05, benchmarks/collapse_runs.py)
# ---------------------------------------------------------------------------------------------------------------

COLLAPSE_STYLES = {"resnet32": ("#4C72B0", "authors' ResNet-32 (projection shortcuts)"),
                   "resnet32_option_a": ("#C44E52", "He et al.'s option-A ResNet-32")}


def _collapse_label(run: dict) -> tuple[str, str, str]:
    """(colour, line style, legend label) of one run of a collapse record."""
    color, label = COLLAPSE_STYLES.get(run["arch"], ("0.4", run["arch"]))
    if run["overrides"]:
        what = ", ".join(f"{k} = {v:g}" for k, v in run["overrides"].items())
        return "0.45", ":" if "lr" in run["overrides"] else "--", f"option-A, {what}"
    return color, "-", label


def plot_collapse(record: dict, fig=None):
    """Step loss (log scale) and the probe predictions' entropy over the first steps of DLB on each network.

    ``record`` is ``results/collapse/collapse.json``: runs of ``{"arch", "seed", "overrides", "losses", "probes"}``.
    Runs with the same network and settings share a colour and one legend entry (one line per seed).
    """
    fig = fig or plt.figure(figsize=(11, 4))
    ax_loss, ax_ent = fig.subplots(1, 2)
    seen = set()
    for run in record["runs"]:
        color, style, label = _collapse_label(run)
        first = label not in seen
        seen.add(label)
        steps = np.arange(1, len(run["losses"]) + 1)
        ax_loss.plot(steps, run["losses"], color=color, ls=style, lw=1.3, label=label if first else None)
        probes = run["probes"]
        ax_ent.plot([p["step"] for p in probes], [p["entropy"] for p in probes], color=color, ls=style, lw=1.3,
                    marker="o", ms=3, label=label if first else None)
    ax_loss.set_yscale("log")
    ax_loss.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_loss.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(int(v))[0] in "235" else ""))
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("step loss: CE + alpha T² KL (log scale)")
    ax_loss.set_title("DLB, paper recipe: the step loss")
    uniform = float(np.log(10))
    ax_ent.axhline(uniform, color="0.3", lw=0.8, ls="--")
    ax_ent.text(1, uniform, " uniform guessing, ln 10", va="bottom", fontsize=8, color="0.3")
    ax_ent.set_ylim(0, uniform * 1.12)
    ax_ent.set_xlabel("optimizer step")
    ax_ent.set_ylabel("entropy of test predictions (nats)")
    ax_ent.set_title(f"{record.get('probe', '')} test images, eval mode")
    ax_ent.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"DLB's first {record.get('steps', '')} steps on two ResNet-32s (one line per seed)")
    fig.tight_layout()
    return fig
