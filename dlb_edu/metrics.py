"""Per-epoch measurements beyond accuracy: stability of the predictions and calibration.

DLB claims to make training more *consistent* (Shen et al., CVPR 2022, Sec. 1 and 4.4): a sample's prediction
should not swing from one step to the next. Two numbers follow that on a fixed probe set of training images:
the fraction whose predicted class flipped since the previous probe, and the mean KL divergence between
consecutive probe predictions. Calibration is the expected calibration error (Guo et al., 2017) over 15 bins.
"""
from __future__ import annotations

import torch

from .seeds import derive_seed


def probe_indices(num_samples: int, size: int, seed: int) -> torch.Tensor:
    """The probe set: ``size`` training images drawn at random from the run's seed, the same every epoch. One
    permutation per seed, so a smaller probe set (the live lab's every K steps) is the start of a larger one."""
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(derive_seed(seed)))[:size]


def flip_rate(prev_probs: torch.Tensor, probs: torch.Tensor) -> float:
    """Fraction of samples whose arg-max class differs between two predictions."""
    return (prev_probs.argmax(1) != probs.argmax(1)).float().mean().item()


def mean_kl(prev_probs: torch.Tensor, probs: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean over samples of KL(prev || current), in nats."""
    kl = (prev_probs * ((prev_probs + eps).log() - (probs + eps).log())).sum(1)
    return kl.mean().item()


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15):
    """Per bin: (mean confidence, accuracy, count), for a reliability diagram. Empty bins give NaN.

    The confidence is the top probability; bin ``b`` holds the samples with confidence in ``[b/n, (b+1)/n)``, the
    last bin also confidence 1.
    """
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    bins = torch.clamp((confidence * n_bins).long(), max=n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).double()
    conf = torch.bincount(bins, weights=confidence.double(), minlength=n_bins) / count
    acc = torch.bincount(bins, weights=correct, minlength=n_bins) / count
    return conf, acc, count


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE (Guo et al., 2017): ``sum_b (n_b / N) |confidence_b - accuracy_b|`` over the reliability bins."""
    conf, acc, count = reliability_bins(probs, labels, n_bins)
    used = count > 0
    return ((count[used] / count.sum()) * (conf[used] - acc[used]).abs()).sum().item()
