"""The notebooks' apps without a browser: move a control, check what is computed and what is drawn."""
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from dlb_edu import reference, viz, widgets  # noqa: E402
from dlb_edu.data import load_dataset  # noqa: E402
from dlb_edu.errors import ConfigError, DataError  # noqa: E402
from dlb_edu.losses import consistency_loss, dlb_loss  # noqa: E402
from dlb_edu.sampling import DLBBatchSampler  # noqa: E402
from dlb_edu.smoke import SMOKE_CONFIG  # noqa: E402


def titled_axes(fig):
    """The axes that carry a title (image grids and heat-maps add none of their own)."""
    return [ax for ax in fig.axes if ax.get_title()]


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g), torch.tensor([3, 1, 4, 1])


# ---------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------

def test_take_batches_runs_across_epoch_boundaries():
    batches = widgets.take_batches(DLBBatchSampler(10, 4, seed=0), steps=7)  # 3 steps per epoch
    assert len(batches) == 7
    assert batches[3].repeated == batches[2].fresh  # carry-over into epoch 2
    assert sorted(i for b in batches[3:6] for i in b.fresh) == list(range(10))


def test_stream_matrix_marks_fresh_and_repeated_cells():
    streams = widgets.index_streams(12, 3, steps=8)
    for batches in streams.values():
        m = viz.stream_matrix(batches, 12)
        assert m.shape == (12, 8)
        fresh, repeated = (m == 1) | (m == 3), (m == 2) | (m == 3)
        assert fresh.sum(0).tolist() == [len(b.fresh) for b in batches]
        assert repeated.sum(0).tolist() == [b.num_repeated for b in batches]
    assert (viz.stream_matrix(streams["plain shuffled sampler"], 12) <= 1).all()
    # With carry-over, step 5 repeats the last fresh half of epoch 1 and draws one of those samples fresh again.
    assert (viz.stream_matrix(streams["DLBBatchSampler"], 12)[:, 4] == 3).sum() == 2


def test_sampling_app_recomputes_and_redraws_when_batch_size_changes():
    app = widgets.SamplingApp(num_samples=24, batch_size=4, steps=18)
    app.batch_size.value = 6
    dlb = app.streams["DLBBatchSampler"]
    assert len(dlb) == 18 and all(len(b.fresh) == 6 for b in dlb)
    assert all(b.repeated == a.fresh for a, b in zip(dlb, dlb[1:]))
    assert [ax.get_title() for ax in app.fig.axes] == ["plain shuffled sampler", "DLBBatchSampler"]
    assert "batch size 6: 4 steps per epoch" in app.fig.get_suptitle()
    # 18 steps of 4 per epoch: dashed boundaries after steps 4, 8, 12 and 16 in each panel.
    assert all(len([ln for ln in ax.lines if ln.get_linestyle() == "--"]) == 4 for ax in app.fig.axes)
    assert app.fig.legends


def test_sampling_app_carry_over_switch_reaches_the_sampler():
    app = widgets.SamplingApp(num_samples=24, batch_size=4, steps=8)
    app.carry_over.value = False
    assert app.streams["DLBBatchSampler"][6].num_repeated == 0


def test_consecutive_batches_stack_shared_samples_in_one_column():
    data = load_dataset("synthetic")
    batches = widgets.take_batches(DLBBatchSampler(len(data.x_train), 3, seed=0), steps=3)
    fig = viz.plot_consecutive_batches(data, batches[1], batches[2], generator=torch.Generator().manual_seed(0))
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == len(batches[1]) + len(batches[2])
    # Row 2 starts under row 1's fresh half: 3 repeated + 3 fresh above, 3 + 3 below shifted by 3 columns.
    assert [ax.get_title() for ax in images[3:6]] == [ax.get_title() for ax in images[6:9]]
    with pytest.raises(ConfigError):
        viz.plot_consecutive_batches(data, batches[0], batches[2])


def test_image_grid_titles_each_image_with_its_class():
    data = load_dataset("synthetic")
    fig = viz.plot_image_grid(data.x_train[:10], data.y_train[:10], data.classes, ncols=4, title="grid")
    assert [ax.get_title() for ax in fig.axes if ax.images] == [data.classes[int(y)] for y in data.y_train[:10]]
    assert len(fig.axes) == 12  # 3 rows of 4, two left empty


# ---------------------------------------------------------------------------------------------------------------
# The consistency loss
# ---------------------------------------------------------------------------------------------------------------

def test_consistency_terms_match_the_package_loss_and_its_gradient(logits):
    student, teacher, targets = logits
    T, alpha = 4.0, 0.5
    terms = widgets.consistency_terms(student, teacher, targets, T, alpha)
    total, ce, kd = dlb_loss(student, targets, teacher, T, alpha)
    assert terms["consistency"] == pytest.approx(consistency_loss(student, teacher, T).item())
    assert terms["kl"] == pytest.approx(terms["consistency"] / T ** 2)
    assert terms["weighted"] == pytest.approx(alpha * kd.item())
    assert (terms["ce"], terms["total"]) == (pytest.approx(ce.item()), pytest.approx(total.item()))
    closed_form = alpha * T * (torch.softmax(student / T, 1) - torch.softmax(teacher / T, 1)) / len(student)
    assert terms["grad_consistency"] == pytest.approx(closed_form.norm().item(), rel=1e-5)
    torch.testing.assert_close(terms["p_teacher"].sum(1), torch.ones(4))


def test_gradient_scale_t2_keeps_the_gradient_while_plain_kl_fades(logits):
    student, teacher, _ = logits
    curve = widgets.gradient_scale(student, teacher, [8.0, 16.0])
    assert curve["with_t2"][1] / curve["with_t2"][0] == pytest.approx(1.0, abs=0.05)
    assert curve["without_t2"][0] / curve["without_t2"][1] == pytest.approx(4.0, rel=0.05)


def test_consistency_app_sliders_recompute_redraw_and_print(logits, capsys):
    student, teacher, targets = logits
    app = widgets.ConsistencyApp(student, teacher, targets)
    assert [s.description for s in (app.temperature, app.alpha)] == ["T", "alpha"]
    app.temperature.value = 5.0
    app.alpha.value = 2.0
    expected = dlb_loss(student, targets, teacher, 5.0, 2.0)[0].item()
    assert app.terms["total"] == pytest.approx(expected)
    titles = [ax.get_title() for ax in app.fig.axes]
    assert titles == ["softmax at T = 5 (first sample)", "loss terms, α = 2", "gradient on the student logits"]
    bars = [p.get_height() for p in app.fig.axes[1].patches]
    assert bars[-1] == pytest.approx(expected)
    assert all(ax.get_legend() is not None and ax.get_xlabel() and ax.get_ylabel() for ax in app.fig.axes)
    assert "T = 5, alpha = 2" in capsys.readouterr().out  # outside a kernel the Output widget prints to stdout


# ---------------------------------------------------------------------------------------------------------------
# Training side by side
# ---------------------------------------------------------------------------------------------------------------

def test_stability_app_config_follows_the_controls():
    app = widgets.StabilityApp(smoke=True)
    assert app.num_epochs.value == SMOKE_CONFIG["epochs"]
    app.temperature.value, app.alpha.value, app.forward.value, app.num_epochs.value = 2.0, 0.5, "split", 3
    cfg = app.config()
    assert (cfg.temperature, cfg.alpha, cfg.forward, cfg.epochs) == (2.0, 0.5, "split", 3)
    assert (cfg.train_subset, cfg.test_subset) == (SMOKE_CONFIG["train_subset"], SMOKE_CONFIG["test_subset"])
    assert app.run_button.description == "Run"


def test_stability_app_follows_the_smoke_switch_by_default(monkeypatch):
    monkeypatch.setenv("DLB_EDU_SMOKE", "1")
    assert widgets.StabilityApp().config().train_subset == SMOKE_CONFIG["train_subset"]
    monkeypatch.setenv("DLB_EDU_SMOKE", "0")
    assert widgets.StabilityApp().config().train_subset is None


def test_stability_app_shows_the_reference_runs_until_the_first_run():
    app = widgets.StabilityApp(smoke=True)
    assert app.preview  # the project's results/reference is committed
    assert app.fig.get_suptitle().startswith("REFERENCE runs, not yours")
    ref = reference.load()
    test_acc = [ax for ax in app.fig.axes if ax.get_title() == "test accuracy"][0]
    curves = {line.get_label(): list(line.get_ydata()) for line in test_acc.lines}
    assert curves == {v: [row["test_acc"] for row in ref.of(v)[0].history] for v in ("baseline", "dlb")}


def test_snapshot_is_the_apps_current_figure_as_a_png(logits):
    app = widgets.ConsistencyApp(*logits)
    png = app.snapshot().data
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    app.temperature.value = 7.0  # a redraw changes the figure, so the next snapshot differs
    assert app.snapshot().data != png


def test_stability_app_run_trains_both_methods_and_redraws_every_epoch(monkeypatch):
    app = widgets.StabilityApp(smoke=True)
    drawn = []
    plot_curves = viz.plot_curves
    monkeypatch.setattr(viz, "plot_curves", lambda h, **kw: drawn.append({m: len(r) for m, r in h.items()})
                        or plot_curves(h, **kw))
    app.dataset.value, app.num_epochs.value = "synthetic", 2
    app.run_button.click()
    assert [len(h) for h in app.histories.values()] == [2, 2]
    for rows in app.histories.values():  # the loss band: quantiles of each epoch's step losses, inside the losses
        assert all(0 < r["step_loss_q10"] <= r["step_loss_q90"] for r in rows)
    assert drawn == [{"baseline": 1, "dlb": 1}, {"baseline": 2, "dlb": 2}]  # both curves grow together
    assert app.progress.value == app.progress.max == 2
    assert "epoch 2/2" in app.status.value
    assert app.fig.get_suptitle().startswith("SMOKE RUN, not a result")
    assert len(app.fig.axes) == 4 and all(len(ax.lines) == 2 for ax in app.fig.axes)
    assert not app.run_button.disabled


def test_stability_app_shows_a_bad_input_in_its_status_line(monkeypatch):
    app = widgets.StabilityApp(smoke=True)
    monkeypatch.setattr(widgets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(DataError("no such data")))
    app.run_button.click()
    assert "no such data" in app.status.value and not app.run_button.disabled


def test_sweep_plot_draws_two_annotated_heat_maps():
    acc, flips = np.array([[0.5, 0.6], [0.55, 0.65], [0.4, 0.7]]), np.full((3, 2), 0.1)
    fig = viz.plot_sweep(acc, flips, [1, 3, 6], [0.5, 1], baseline={"acc": 0.5, "flip_rate": 0.2})
    heat = [ax for ax in fig.axes if ax.get_xlabel() == "alpha"]
    assert len(heat) == 2 and all(ax.get_ylabel() == "T" for ax in heat)
    assert len(heat[0].texts) == 6 and heat[0].texts[0].get_text() == "0.500"
    assert "baseline: 0.500" in heat[0].get_title()


def test_memory_plot_puts_each_size_on_a_labelled_log_axis():
    fig = viz.plot_memory({"DLB cache": 3072, "teacher": 6_900_000}, dlb=("DLB cache",))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.texts] == ["3.0 KiB", "6.6 MiB"]
    assert ax.get_legend() is not None


def test_training_core_does_not_import_ipywidgets_or_ipython():
    code = ("import sys, dlb_edu, dlb_edu.sampling, dlb_edu.cache, dlb_edu.losses, dlb_edu.data, dlb_edu.models, "
            "dlb_edu.train, dlb_edu.metrics, dlb_edu.viz; "
            "print(sorted(m for m in ('ipywidgets', 'IPython') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bytes_are_shown_in_binary_units():
    assert [viz.format_bytes(n) for n in (1023, 1024, 1536, 3 * 2 ** 20)] == ["1023 B", "1.0 KiB", "1.5 KiB",
                                                                               "3.0 MiB"]


@pytest.mark.parametrize("make,message", [
    (lambda: widgets.SamplingApp(num_samples=1), "num_samples must be an integer in [2, 200], got 1"),
    (lambda: widgets.SamplingApp(num_samples=0), "num_samples must be an integer in [2, 200], got 0"),
    (lambda: widgets.SamplingApp(num_samples=10_000), "num_samples must be an integer in [2, 200], got 10000"),
    (lambda: widgets.SamplingApp(num_samples=24, batch_size=13), "batch_size must be an integer in [1, 12], got 13"),
    (lambda: widgets.SamplingApp(batch_size=0), "batch_size must be an integer in [1, 12], got 0"),
    (lambda: widgets.SamplingApp(steps=1), "steps must be an integer in [2, 60], got 1"),
    (lambda: widgets.SamplingApp(steps=2.5), "steps must be an integer in [2, 60], got 2.5"),
    (lambda: widgets.SamplingApp(seed=-1), "seed must be an integer in [0, 9223372036854775807], got -1"),
    (lambda: widgets.ConsistencyApp(*torch.zeros(3, 2, 4).unbind(0)[:2], torch.zeros(2, dtype=torch.long),
                                    temperature=0.1), "temperature must be a number in [0.5, 10.0], got 0.1"),
    (lambda: widgets.ConsistencyApp(*torch.zeros(3, 2, 4).unbind(0)[:2], torch.zeros(2, dtype=torch.long),
                                    alpha=float("nan")), "alpha must be a number in [0.0, 3.0], got nan"),
    (lambda: widgets.LabApp(every=0), "every must be an integer in [1, 200], got 0"),
], ids=["one-sample", "no-sample", "too-many-samples", "batch-beyond-half", "batch-zero", "one-step",
        "steps-a-float", "seed-negative", "consistency-temperature", "consistency-alpha-nan", "lab-every-zero"])
def test_apps_refuse_sizes_outside_their_sliders_in_one_line(make, message):
    with pytest.raises(ConfigError) as e:
        make()
    assert str(e.value) == message


# ---------------------------------------------------------------------------------------------------------------
# Figures that compare honestly (issue 25)
# ---------------------------------------------------------------------------------------------------------------

def _history(values, key="test_acc", **extra):
    return [{"epoch": e + 1, key: v, **extra} for e, v in enumerate(values)]


def test_paired_differences_axis_includes_zero_and_draws_a_dot_per_seed():
    fig = viz.plot_paired_differences({"DLB - baseline": [0.03, 0.04, 0.05], "none yet": []}, title="t")
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert low < 0 < high  # all differences positive, yet 0 is on the axis
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(dots) == 1 and sorted(dots[0].get_xdata()) == pytest.approx([3.0, 4.0, 5.0])
    assert any("not run yet" in t.get_text() for t in ax.texts)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["DLB - baseline", "none yet"]
    assert ax.get_title() == "t"


def test_paired_interval_is_the_t_interval_of_the_mean():
    mean, low, high = viz.paired_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and (low, high) == pytest.approx((2 - 4.303 / 3 ** 0.5, 2 + 4.303 / 3 ** 0.5))
    assert np.isnan(viz.paired_interval([1.0])[1])
    with pytest.raises(ConfigError):
        viz.t95(0)


def test_seed_summary_band_stays_inside_the_seeds_values():
    runs = {"baseline": [_history([0.2, 0.4]), _history([0.3, 0.6])], "dlb": [_history([0.25, 0.5])] * 2}
    fig = viz.plot_seed_summary(runs)
    band = fig.axes[0].collections[0]  # the baseline's band: min to max over its seeds
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(0.2) and ys.max() == pytest.approx(0.6)
    from matplotlib.patches import Rectangle
    assert not any(isinstance(p, Rectangle) and p.get_height() > 0.1
                   for p in fig.axes[-1].patches)  # a dot plot, not bars from 0


def test_seed_summary_draws_small_multiples_against_the_first_run_for_many_runs():
    runs = {name: [_history([0.3, 0.5])] * 2 for name in ("baseline", "a", "b", "c", "d")}
    fig = viz.plot_seed_summary(runs)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:4] == [f"{n} against baseline" for n in "abcd"] and len(fig.axes) == 5


def test_curves_loss_band_comes_from_the_step_loss_quantiles_and_never_goes_below_them():
    losses = [0.1, 0.1, 0.1, 0.1, 5.0]  # skewed: mean - std would be negative
    assert np.mean(losses) - np.std(losses, ddof=1) < 0
    band = viz.step_loss_band(losses)
    rows = [{"epoch": 1, "train_loss": float(np.mean(losses)), "test_acc": 0.5, "probe_flip_rate": float("nan"),
             "probe_kl": float("nan"), "step_loss_std": float(np.std(losses, ddof=1)), **band}]
    fig = viz.plot_curves({"dlb": rows})
    ys = fig.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert ys.min() >= min(losses) and ys.max() <= max(losses)
    no_band = viz.plot_curves({"dlb": [{k: v for k, v in rows[0].items() if k not in viz.LOSS_BAND_KEYS}]})
    assert not no_band.axes[0].collections


def test_lab_plot_keeps_the_total_loss_spike_off_the_ce_axis_and_marks_it():
    steps = list(range(10, 110, 10))
    ce = [2.0 - 0.05 * k for k in range(10)]
    loss = [c + 0.1 for c in ce]
    loss[4] = 12.0
    snap = {"points": {"baseline": {"step": steps, "ce": ce, "loss": ce, "step_kl": [0.1] * 10,
                                    "flip_rate": [0.5] * 10, "probe_kl": [0.1] * 10},
                       "dlb": {"step": steps, "ce": ce, "loss": loss, "step_kl": [0.05] * 10,
                               "flip_rate": [0.4] * 10, "probe_kl": [0.05] * 10}},
            "every": 10, "total_steps": 100, "changes": [], "lr_drops": []}
    fig = viz.plot_lab(snap)
    ax = fig.axes[0]
    assert ax.get_ylim()[1] < 4 and ax.get_ylim()[0] <= min(ce)
    assert any("up to 12.0 at step 50" in t.get_text() for t in ax.texts)
    assert max(t.get_fontsize() for t in fig.legends[0].get_texts()) >= 10


def test_bn_statistics_plot_draws_a_bar_per_call_and_channel():
    stats = {"joint": ([0.1, -0.2, 0.3, 0.0], [1.0, 2.0, 0.5, 1.5]), "split, fresh": ([0.2] * 4, [1.0] * 4)}
    fig = viz.plot_bn_statistics(stats)
    assert len(fig.axes[0].patches) == len(fig.axes[1].patches) == 8
    assert fig.axes[1].patches[1].get_height() == pytest.approx(2.0)


def test_stability_vs_accuracy_puts_a_dot_per_run_at_its_mean_flip_rate_and_accuracy():
    nan = float("nan")
    runs = {"baseline": [[{"epoch": 1, "probe_flip_rate": nan, "test_acc": 0.3},
                          {"epoch": 2, "probe_flip_rate": 0.4, "test_acc": 0.5}]] * 2}
    fig = viz.plot_stability_vs_accuracy(runs)
    dots = fig.axes[1].lines[0]
    assert list(dots.get_xdata()) == [0.4, 0.4] and list(dots.get_ydata()) == [0.5, 0.5]
