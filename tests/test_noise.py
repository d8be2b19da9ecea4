import json
from collections import Counter

import pytest
import torch

from dlb_edu.config import TrainConfig
from dlb_edu.data import CIFAR10_CLASSES, make_synthetic
from dlb_edu.errors import ConfigError
from dlb_edu.noise import CIFAR10_FLIPS, noisy_labels, realized_rate
from dlb_edu.train import Trainer


def balanced_labels(n, k=10):
    return torch.arange(n) % k


@pytest.mark.parametrize("n,rate", [(1000, 0.2), (999, 0.37), (500, 0.8), (10, 0.05)])
def test_symmetric_realized_rate_is_the_requested_rate(n, rate):
    clean = balanced_labels(n)
    noisy = noisy_labels(clean, [f"c{i}" for i in range(10)], rate, "symmetric", seed=1)
    assert abs(realized_rate(clean, noisy) - rate) <= 0.5 / n + 1e-12  # exactly round(rate * n) labels changed
    assert abs(realized_rate(clean, noisy) - rate) < 0.01 or n < 100


def test_symmetric_noise_never_keeps_the_old_label_and_picks_the_others_uniformly():
    k = 5
    clean = torch.zeros(20000, dtype=torch.long)  # all class 0: every corrupted label must be one of 1..4
    noisy = noisy_labels(clean, [f"c{i}" for i in range(k)], 0.5, "symmetric", seed=0)
    changed = noisy[noisy != clean]
    assert len(changed) == 10000
    counts = Counter(changed.tolist())
    assert set(counts) == {1, 2, 3, 4}
    assert all(abs(c / 10000 - 0.25) < 0.02 for c in counts.values())


def test_asymmetric_noise_flips_cifar10_classes_at_the_requested_rate_per_class():
    clean = balanced_labels(2000)
    noisy = noisy_labels(clean, CIFAR10_CLASSES, 0.4, "asymmetric", seed=3)
    idx = {name: i for i, name in enumerate(CIFAR10_CLASSES)}
    for name, i in idx.items():
        members = clean == i
        flipped = noisy[members] != i
        if name in CIFAR10_FLIPS:
            assert abs(flipped.double().mean().item() - 0.4) < 0.01
            assert (noisy[members][flipped] == idx[CIFAR10_FLIPS[name]]).all()
        else:
            assert not flipped.any()
    assert abs(realized_rate(clean, noisy) - 0.2) < 0.01  # half the classes are sources


def test_asymmetric_noise_is_refused_on_a_data_set_without_cifar10_classes():
    with pytest.raises(ConfigError, match="asymmetric"):
        noisy_labels(balanced_labels(100), [f"class{i}" for i in range(10)], 0.2, "asymmetric")


def test_noise_is_seeded():
    clean, names = balanced_labels(500), [f"c{i}" for i in range(10)]
    a = noisy_labels(clean, names, 0.3, seed=7)
    assert torch.equal(a, noisy_labels(clean, names, 0.3, seed=7))
    assert not torch.equal(a, noisy_labels(clean, names, 0.3, seed=8))


@pytest.mark.parametrize("rate", [-0.1, 1.0, float("nan")])
def test_noise_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(ConfigError, match="label_noise"):
        TrainConfig(label_noise=rate).validate()


def test_unknown_noise_type_is_refused():
    with pytest.raises(ConfigError, match="label_noise_type"):
        TrainConfig(label_noise=0.1, label_noise_type="pairflip").validate()


def test_trainer_corrupts_training_labels_only_and_records_it(tmp_path):
    data = make_synthetic(n_train=200, n_test=50, size=8)
    cfg = TrainConfig(method="baseline", dataset="synthetic", epochs=1, batch_size=50, label_noise=0.25,
                      probe_size=10)
    trainer = Trainer(cfg, data=data, out_dir=tmp_path / "run", progress=False)
    assert torch.equal(trainer.y_test.cpu(), data.y_test)
    assert (trainer.y_train.cpu() != data.y_train).sum().item() == 50
    assert trainer.summary()["label_noise_realized"] == pytest.approx(0.25)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["label_noise"] == 0.25 and saved["label_noise_type"] == "symmetric" and saved["seed"] == 0
