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
from matplotlib.ticker import MaxNLocator

from . import metrics
from .data import random_crop_flip
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


def plot_curves(histories: dict[str, list[dict]], title: str = "", panels=CURVE_PANELS, fig=None):
    """One panel per metric, one line per run: ``histories`` maps a run's name to its history rows.

    The train-loss panel shades +-1 within-epoch standard deviation of the step loss.
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
            if key == "train_loss":
                std = [r["step_loss_std"] for r in rows]
                ax.fill_between(epochs, [v - s for v, s in zip(values, std)], [v + s for v, s in zip(values, std)],
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


def plot_seed_summary(runs: dict[str, list[list[dict]]], key: str = "test_acc", title: str = "",
                      colors: dict | None = None, fig=None):
    """Several seeds per run: ``runs`` maps a name to its seeds' histories.

    Left: ``key`` per epoch, the mean over seeds with a +-1 standard deviation band. Right: the final and the best
    value of each name, mean over seeds with +-1 std error bars and one dot per seed.
    """
    colors = colors or {}
    if fig is None:
        fig = plt.figure(figsize=(13, 4.2))
    fig.clear()
    ax_curve, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1]})
    names = list(runs)
    for k, name in enumerate(names):
        histories = runs[name]
        epochs = [r["epoch"] for r in histories[0]]
        values = np.array([[r[key] for r in h[:len(epochs)]] for h in histories])
        mean, std = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
        color = colors.get(name) or f"C{k}"
        style = "--" if "split" in name else "-"
        ax_curve.plot(epochs, mean, style, color=color, label=f"{name} ({len(histories)} seeds)")
        ax_curve.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15)
        finals, bests = values[:, -1], values.max(1)
        for offset, vals, hatch in ((-0.2, finals, None), (0.2, bests, "//")):
            ax_bar.bar(k + offset, vals.mean(), 0.38, yerr=vals.std(ddof=1) if len(vals) > 1 else 0,
                       color=color, alpha=0.55 if hatch else 0.9, hatch=hatch, capsize=3, edgecolor="0.2")
            ax_bar.plot(np.full(len(vals), k + offset), vals, "k.", ms=4)
    label = key.replace("test_acc", "test accuracy").replace("_", " ")
    ax_curve.set_xlabel("epoch")
    ax_curve.set_ylabel(label)
    ax_curve.set_title(f"{label} per epoch: mean over seeds, band ±1 std", fontsize=10)
    ax_curve.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_curve.legend(fontsize=8)
    lows = [min(min(r[key] for r in h) for h in runs[n]) for n in names]
    tops = [max(max(r[key] for r in h) for h in runs[n]) for n in names]
    last_lows = [min(h[-1][key] for h in runs[n]) for n in names]
    ax_bar.set_ylim(max(0.0, min(last_lows) - 0.05), min(1.0, max(tops) + 0.03) if key.endswith("acc") else None)
    ax_curve.set_ylim(max(0.0, min(lows) - 0.02), None)
    ax_bar.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
    ax_bar.set_ylabel(label)
    ax_bar.set_title(f"final (solid) and best (hatched, epoch chosen on the test set) {label}\n"
                     "mean ± std over seeds, dots: one seed each", fontsize=10)
    ax_bar.legend(handles=[Patch(facecolor="0.5", label="final"), Patch(facecolor="0.8", hatch="//", label="best")],
                  fontsize=8, loc="lower right")
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

    ``streams`` maps a name to a list of batches (``DLBBatch``). Rows follow the order in which the first stream
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


def plot_lab(snapshot: dict, fig=None):
    """The live lab's view: four panels against the step, the baseline and DLB in each, one point every K steps.

    ``snapshot`` comes from :meth:`dlb_edu.lab.LiveLab.snapshot`. Solid vertical lines mark the changes of T and
    alpha (labelled old -> new), grey dotted ones the learning-rate drops. DLB's total loss (CE + alpha T^2 KL) is
    dashed in the first panel. The KL panels use a log scale: a change of alpha shows as a step in it.
    """
    from matplotlib.lines import Line2D

    if fig is None:
        fig = plt.figure(figsize=(12, 6.5))
    fig.clear()
    axes = fig.subplots(2, 2).flat
    points, every = snapshot["points"], snapshot["every"]
    x_max = max(snapshot["total_steps"], 1)
    empty = not any(p["step"] for p in points.values())
    for ax, (key, label, scale) in zip(axes, LAB_PANELS):
        for name, p in points.items():
            ax.plot(p["step"], p[key], color=METHOD_COLORS.get(name), lw=1.4, marker="o", ms=2, label=name)
            if key == "ce" and name == "dlb":
                ax.plot(p["step"], p["loss"], color=METHOD_COLORS["dlb"], lw=1, ls="--", label="dlb total loss")
        values = [v for p in points.values() for v in p[key] if v == v]  # NaN: not measured yet
        if scale == "log" and values and min(values) > 0:
            ax.set_yscale("log")
        for step in snapshot["lr_drops"]:
            ax.axvline(step, color="0.55", ls=":", lw=1.2)
        for c in snapshot["changes"]:
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
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    if snapshot.get("title"):
        fig.suptitle(snapshot["title"], fontsize=11)
    # A fixed layout: tight_layout would draw the figure once more, and this figure is redrawn while training runs.
    fig.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.14, hspace=0.45, wspace=0.18)
    return fig


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
