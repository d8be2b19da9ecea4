"""CS-KD's batches: every sample comes with a random sample of its class.

Class-wise self-knowledge distillation (Yun et al., CVPR 2020, Sec. 3) pulls the prediction on a sample ``x``
toward the (detached) prediction on another sample ``x'`` of the same class. The batch sampler supplies the pairs
as the authors' ``PairBatchSampler`` does (github:alinlab/cs-kd, ``datasets.py:9-37``): each batch holds ``B``
*anchors*, each index once per epoch as in the baseline, then, for each anchor, a partner drawn uniformly from the
training samples that carry the same (possibly noisy) label, the whole class, so the anchor itself with probability
1 / (class size), as their ``random.choice(classwise_indices[y])``. That is 1 in 5,000 on CIFAR-10 and about 1 in 400 on
``cifar10-mini``; the self-pair is then the same image under another crop.

A :class:`ClassPairBatch` lists the anchors first, then the partners, in the authors' order
(``yield batch_indices + pair_indices``); only the anchors count for the training accuracy. With ``forward="split"``
the trainer forwards them as the authors' ``train.py:131-137`` do, anchors first, then the pairs in a second call
under ``no_grad`` (:meth:`~dlb_edu.methods.CSKD.forward_calls`). The partners of a batch are a function of
``(seed, epoch, step)``, so resuming needs nothing beyond the sampler's position.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .errors import ConfigError
from .sampling import BatchSampler, step_seed
from .seeds import derive_seed

_PAIR_STREAM = 17  # the pairs' coordinate under the step's seed: a stream apart from the step's augmentation


class ClassPairBatch(list):
    """The ``anchors`` first, then their ``pairs`` (one per anchor, same class): a list of data set indices."""
    mirror_mix = True  # read by augment.Augmenter: pair i is mixed exactly like anchor i

    def __init__(self, anchors: list[int], pairs: list[int]):
        if len(pairs) != len(anchors):
            raise ConfigError(f"a class-pair batch needs one pair per anchor, got {len(anchors)} anchors and "
                              f"{len(pairs)} pairs")
        super().__init__(anchors + pairs)
        self.num_anchors = len(anchors)

    @property
    def anchors(self) -> list[int]:
        return self[: self.num_anchors]

    @property
    def pairs(self) -> list[int]:
        return self[self.num_anchors:]

    @property
    def anchor_rows(self) -> slice:
        return slice(0, self.num_anchors)

    @property
    def pair_rows(self) -> slice:
        return slice(self.num_anchors, len(self))

    @property
    def parts(self) -> list[int]:
        """Row counts of the anchors and the pairs (augment.py mixes them alike)."""
        return [self.num_anchors, self.num_anchors]

    @property
    def scored(self) -> slice:
        """The rows whose predictions count for the training accuracy: the anchors."""
        return self.anchor_rows


class ClassPairBatchSampler(BatchSampler):
    """The baseline's fresh chunks as anchors, each with a random sample of its class (``labels[i]``)."""

    def __init__(self, num_samples: int, batch_size: int, *, labels: torch.Tensor, **kwargs):
        super().__init__(num_samples, batch_size, **kwargs)
        labels = torch.as_tensor(labels).cpu().long()
        if labels.shape != (num_samples,):
            raise ConfigError(f"labels must have one entry per sample ({num_samples}), got shape {tuple(labels.shape)}")
        # Indices sorted by class; class c's block of that order starts at class_start[c] and has class_count[c].
        self.by_class = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels)
        self.labels, self.class_start, self.class_count = labels, torch.cumsum(counts, 0) - counts, counts

    def partners(self, anchors: list[int], epoch: int, step: int) -> list[int]:
        """One sample per anchor, drawn uniformly from the anchor's class (the anchor included, as the authors')."""
        g = torch.Generator().manual_seed(derive_seed(step_seed(self.seed, epoch, step), _PAIR_STREAM))
        c = self.labels[torch.as_tensor(anchors, dtype=torch.long)]
        n = self.class_count[c]
        j = (torch.rand(len(c), generator=g, dtype=torch.float64) * n).long().clamp_max(n - 1)  # uniform in [0, n)
        return self.by_class[self.class_start[c] + j].tolist()

    def __iter__(self) -> Iterator[ClassPairBatch]:
        for anchors in self.fresh_chunks():
            # fresh_chunks has just set (epoch, step) to this batch's position: the pairs are drawn from it.
            yield ClassPairBatch(anchors, self.partners(anchors, self.epoch, self.step - 1))
