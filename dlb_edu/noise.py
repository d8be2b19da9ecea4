"""Label noise on the training labels: symmetric, or CIFAR-10's class flips.

Self-distillation is often said to help most when labels are wrong, because the soft targets stop the network from
memorizing them. To test that, corrupt a known fraction of the *training* labels (the test labels stay clean):

* ``symmetric``: exactly ``round(rate * N)`` training labels, chosen uniformly at random, are replaced by a
  *different* class drawn uniformly from the other ``K - 1`` classes. The new label never equals the old one, so the
  realized fraction of wrong labels is ``round(rate * N) / N``, within ``0.5 / N`` of ``rate``.
* ``asymmetric`` (Patrini et al., CVPR 2017, CIFAR-10): confusions between similar classes, truck ->
  automobile, bird -> airplane, deer -> horse, cat <-> dog. In each of these five source classes exactly
  ``round(rate * n_c)`` of its ``n_c`` samples are flipped; the other five classes are untouched, so the fraction of
  wrong labels over the whole training set is about ``rate / 2``. Only for data sets with CIFAR-10's classes.

The corruption is a function of ``(labels, rate, kind, seed)`` alone: every method trained with the same seed sees
the same noisy labels.
"""
from __future__ import annotations

import dataclasses

import torch

from .config import check_value
from .errors import ConfigError
from .seeds import derive_seed

# Patrini et al. (2017): the flips for CIFAR-10, by class name.
CIFAR10_FLIPS = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}
_CIFAR10_CLASSES = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}


def noisy_labels(labels: torch.Tensor, classes, rate: float, kind: str = "symmetric", seed: int = 0) -> torch.Tensor:
    """A corrupted copy of ``labels`` (int64, any device); ``classes`` are the class names, in label order."""
    rate, kind = check_value("label_noise", rate), check_value("label_noise_type", kind)  # config's rules
    num_classes = len(classes)
    g = torch.Generator().manual_seed(derive_seed(seed, 424_242))  # its own stream: not the sampler's, not the model's
    clean = labels.cpu()
    noisy = clean.clone()
    if rate == 0:
        return noisy.to(labels.device)
    if num_classes < 2:  # a corrupted label is a *different* class: with one class there is none
        raise ConfigError(f"label_noise needs at least 2 classes (a corrupted label is another class); this data "
                          f"set has {num_classes}")
    if kind == "symmetric":
        k = round(rate * len(clean))
        chosen = torch.randperm(len(clean), generator=g)[:k]
        # Adding 1..K-1 modulo K reaches each of the K-1 other classes exactly once: uniform, never the old label.
        shift = torch.randint(1, num_classes, (k,), generator=g)
        noisy[chosen] = (clean[chosen] + shift) % num_classes
    else:
        if set(classes) != _CIFAR10_CLASSES:
            raise ConfigError(f"label_noise_type asymmetric needs CIFAR-10's classes (Patrini et al.'s flips); this "
                              f"data set has {', '.join(map(str, classes[:10]))}{'...' if len(classes) > 10 else ''}: "
                              f"use symmetric")
        index = {name: i for i, name in enumerate(classes)}
        for source, target in CIFAR10_FLIPS.items():
            members = (clean == index[source]).nonzero().flatten()
            k = round(rate * len(members))
            chosen = members[torch.randperm(len(members), generator=g)[:k]]
            noisy[chosen] = index[target]  # membership is read from the clean labels, so cat <-> dog is a swap
    return noisy.to(labels.device)


def with_label_noise(data, rate: float, kind: str = "symmetric", seed: int = 0):
    """``data`` (an :class:`~dlb_edu.data.ImageData`) with corrupted training labels; the test labels are untouched."""
    if rate == 0:
        return data
    return dataclasses.replace(data, y_train=noisy_labels(data.y_train, data.classes, rate, kind, seed))


def realized_rate(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """The fraction of labels that differ."""
    return (clean != noisy).double().mean().item() if len(clean) else 0.0
