"""The per-epoch measurements against a reference implementation (torchmetrics) and cases computed by hand."""
import math

import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from dlb_edu.metrics import expected_calibration_error, flip_rate, mean_kl, reliability_bins


def random_probs(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64) * 3, dim=1)
    return probs, torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("n_bins", [5, 10, 15])
@pytest.mark.parametrize("seed", [0, 1])
def test_ece_matches_torchmetrics(n_bins, seed):
    probs, labels = random_probs(2000, 10, seed)
    expected = multiclass_calibration_error(probs, labels, num_classes=10, n_bins=n_bins, norm="l1").item()
    assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(expected, rel=1e-6)  # theirs: float32


def test_ece_by_hand():
    # Confidences 0.9 (right), 0.9 (wrong), 0.7 (right), 0.4 (wrong); 10 bins: {0.9, 0.9}, {0.7}, {0.4}.
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.9, 0.05, 0.05], [0.1, 0.7, 0.2], [0.3, 0.3, 0.4]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0])
    expected = 2 / 4 * abs(0.9 - 0.5) + 1 / 4 * abs(0.7 - 1.0) + 1 / 4 * abs(0.4 - 0.0)
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected, rel=1e-12)


def test_ece_is_zero_when_every_bin_is_right_as_often_as_it_is_confident():
    probs = torch.tensor([[0.75, 0.25]] * 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1])  # confident 0.75, right 3 times in 4
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.0, abs=1e-15)


def test_ece_is_the_count_weighted_gap_of_the_reliability_bins():
    probs, labels = random_probs(500, 4, 2)
    conf, acc, count = reliability_bins(probs, labels, 15)
    used = count > 0
    gaps = (conf[used] - acc[used]).abs()
    assert expected_calibration_error(probs, labels, 15) == pytest.approx((gaps * count[used]).sum().item() / 500,
                                                                          rel=1e-12)


def test_reliability_bins_by_hand():
    probs = torch.tensor([[1.0, 0.0], [0.95, 0.05], [0.55, 0.45], [0.5, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 0])
    conf, acc, count = reliability_bins(probs, labels, n_bins=2)  # [0, 0.5) and [0.5, 1]
    assert count.tolist() == [0, 4]  # confidence 1 lands in the last bin, 0.5 in the upper one
    assert math.isnan(conf[0]) and math.isnan(acc[0])  # an empty bin has no confidence and no accuracy
    assert conf[1].item() == pytest.approx((1.0 + 0.95 + 0.55 + 0.5) / 4) and acc[1].item() == 0.75


def test_flip_rate_and_kl_by_hand():
    prev = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5 + 1e-9]], dtype=torch.float64)
    now = torch.tensor([[0.2, 0.8], [0.1, 0.9], [0.6, 0.4]], dtype=torch.float64)
    assert flip_rate(prev, now) == pytest.approx(2 / 3)  # rows 1 and 3 changed their arg-max
    expected = sum(sum(p * math.log(p / q) for p, q in zip(a, b)) for a, b in zip(prev.tolist(), now.tolist())) / 3
    assert mean_kl(prev, now) == pytest.approx(expected, rel=1e-9)
    assert mean_kl(now, now) == pytest.approx(0.0, abs=1e-12) and flip_rate(now, now) == 0.0
