"""The figures that compare: the cache timeline, the memory bars with their parts, the per-image CE weights, and
legends that leave the data visible."""
import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from dlb_edu import viz, widgets  # noqa: E402
from dlb_edu.errors import ConfigError  # noqa: E402
from dlb_edu.models import activation_bytes, build_model  # noqa: E402
from dlb_edu.sampling import DLBBatchSampler  # noqa: E402


def test_cache_timeline_links_each_read_to_the_step_that_wrote_it():
    batches = [b for _, b in zip(range(4), DLBBatchSampler(12, 3, seed=0))]
    steps = [{"read": None if k == 0 else batches[k - 1].fresh, "written": b.fresh} for k, b in enumerate(batches)]
    rows = viz.cache_timeline(steps)
    assert [r["read_from"] for r in rows] == [None, 1, 2, 3]
    fig = viz.plot_cache_timeline(steps)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum("reads step" in t for t in texts) == 3 and any("cache empty" in t for t in texts)
    assert any(t.startswith("reads step 2's") for t in texts)
    assert len([c for c in fig.axes[0].get_children() if type(c).__name__ == "Annotation"]) == 3  # one arrow each


def test_cache_timeline_refuses_a_read_nobody_wrote():
    with pytest.raises(ConfigError, match="step 2 reads"):
        viz.cache_timeline([{"read": None, "written": [1, 2]}, {"read": [3, 4], "written": [5, 6]}])


def test_memory_plot_stacks_a_teachers_parameters_and_activations():
    fig = viz.plot_memory({"DLB cache": 3072, "teacher": {"parameters": 4 * 2 ** 20, "activations": 60 * 2 ** 20}},
                          dlb=("DLB cache",))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["3.0 KiB", "64.0 MiB = 4.0 MiB parameters + 60.0 MiB activations"]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert sorted(round(b.get_width()) for b in bars) == [3072, 4 * 2 ** 20, 60 * 2 ** 20]
    hatched = [b for b in bars if b.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_x() == 4 * 2 ** 20  # the activations start where parameters end
    assert "activations" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_activation_bytes_counts_what_a_training_forward_saves_and_leaves_the_model_alone():
    model = build_model("small_cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one, four = activation_bytes(model, torch.randn(1, 3, 32, 32)), activation_bytes(model, torch.randn(4, 3, 32, 32))
    assert one > 3 * 32 * 32 * 4  # more than the input alone
    assert four == pytest.approx(4 * one, rel=0.01)  # activations grow with the batch
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm stats unchanged


def test_ce_weights_plot_shows_each_weight_its_augmentation_and_each_images_sum():
    base = np.array([[0.5, 0.0], [0.0, 0.5]])
    dlb = np.array([[0.25, 0.25], [0.25, 0.25]])
    fig = viz.plot_ce_weights({"baseline": {"weights": base, "rows": ["2", "2"]},
                               "dlb": {"weights": dlb, "rows": ["4", "4"]}})
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert texts[0] == ["1/2\naug 1", "Σ 1/2", "1/2\naug 1", "Σ 1/2"]
    assert texts[1] == ["1/4\naug 1", "1/4\naug 2", "Σ 1/2", "1/4\naug 1", "1/4\naug 2", "Σ 1/2"]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["1\n4", "2\n4"]


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("temperature,alpha", [(10.0, 1.0), (3.0, 0.0), (1.0, 5.0)])
def test_consistency_legends_cover_no_bar_or_value(temperature, alpha):
    g = torch.Generator().manual_seed(0)
    student, teacher, targets = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g), torch.tensor([3] * 4)
    terms = widgets.consistency_terms(student, teacher, targets, temperature, alpha)
    curve = widgets.gradient_scale(student, teacher, np.linspace(0.5, 10, 20))
    fig = viz.plot_consistency(terms, curve)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        data = [p.get_window_extent(renderer) for p in ax.patches] + [t.get_window_extent(renderer) for t in ax.texts]
        data += [line.get_window_extent(renderer) for line in ax.lines]
        assert not any(_overlaps(legend, d) for d in data if d.width > 0 and d.height > 0), ax.get_title()


def test_ce_weights_plot_names_both_augmentations_of_an_image_twice_in_its_batch():
    w, count = np.array([[0.25, 0.5, 0.25]]), np.array([[1, 2, 1]])
    fig = viz.plot_ce_weights({"dlb": {"weights": w, "count": count, "rows": ["4", "4", "4"]}})
    assert [t.get_text() for t in fig.axes[0].texts] == ["1/4\naug 1", "1/2\naug 2-3", "1/4\naug 4", "Σ 1"]
