"""CS-KD's batches: every sample comes with a random other sample of its class.

Class-wise self-knowledge distillation (Yun et al., CVPR 2020) pulls the prediction on a sample ``x``
toward the (detached) prediction on another sample ``x'`` of the same class. The batch sampler supplies the pairs:
each batch holds ``B`` *anchors*, each index once per epoch as in the baseline, plus, for each anchor, a partner drawn
uniformly from the *other* training samples that carry the same (possibly noisy) label. The authors' sampler may draw
the anchor itself (``random.choice`` over the whole class); we exclude it, unless the class has one sample only.

A :class:`ClassPairBatch` lists the partners first, then the anchors; only the anchors count for the training
accuracy, and both halves go through one forward call (``forward="split"`` is refused for CS-KD: it would normalize
pairs and anchors with separate BatchNorm statistics). The partners of a batch are a function of
``(seed, epoch, step)``, so resuming needs nothing beyond the sampler's position.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .errors import ConfigError
from .sampling import DLBBatchSampler, step_seed
from .seeds import derive_seed

_PAIR_STREAM = 17  # the pairs' coordinate under the step's seed: a stream apart from the step's augmentation


class ClassPairBatch(list):
    """``pairs`` (one per anchor, same class) first, then the ``anchors``: a list of data set indices."""
    mirror_mix = True  # read by augment.Augmenter: pair i is mixed exactly like anchor i

    def __init__(self, pairs: list[int], anchors: list[int]):
        if len(pairs) != len(anchors):
            raise ConfigError(f"a class-pair batch needs one pair per anchor, got {len(pairs)} and {len(anchors)}")
        super().__init__(pairs + anchors)
        self.num_pairs = len(pairs)

    @property
    def pairs(self) -> list[int]:
        return self[: self.num_pairs]

    @property
    def anchors(self) -> list[int]:
        return self[self.num_pairs:]

    @property
    def parts(self) -> list[int]:
        """Row counts of the pairs and the anchors (augment.py mixes them alike)."""
        return [self.num_pairs, self.num_pairs]

    @property
    def scored(self) -> slice:
        """The rows whose predictions count for the training accuracy: the anchors."""
        return slice(self.num_pairs, len(self))


class ClassPairBatchSampler(DLBBatchSampler):
    """The baseline's fresh chunks as anchors, each with a random other sample of its class (``labels[i]``)."""

    def __init__(self, num_samples: int, batch_size: int, *, labels: torch.Tensor, **kwargs):
        super().__init__(num_samples, batch_size, **kwargs)
        labels = torch.as_tensor(labels).cpu().long()
        if labels.shape != (num_samples,):
            raise ConfigError(f"labels must have one entry per sample ({num_samples}), got shape {tuple(labels.shape)}")
        # Indices sorted by class; sample i sits at position pos[i] of its class's block, which starts at start[c].
        self.by_class = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels)
        starts = torch.cumsum(counts, 0) - counts
        self.labels, self.class_start, self.class_count = labels, starts, counts
        self.pos = torch.empty(num_samples, dtype=torch.long)
        self.pos[self.by_class] = torch.arange(num_samples) - starts[labels[self.by_class]]

    def partners(self, anchors: list[int], epoch: int, step: int) -> list[int]:
        """One uniformly drawn other sample of the same class per anchor (the anchor itself if it is alone)."""
        g = torch.Generator().manual_seed(derive_seed(step_seed(self.seed, epoch, step), _PAIR_STREAM))
        a = torch.as_tensor(anchors, dtype=torch.long)
        c = self.labels[a]
        others = (self.class_count[c] - 1).clamp_min(1)
        j = (torch.rand(len(a), generator=g) * others).long().clamp_max(others - 1)  # uniform in [0, others)
        # Skip the anchor's own position: positions >= its own move up by one (unless it is alone in its class).
        j = j + ((j >= self.pos[a]) & (self.class_count[c] > 1)).long()
        return self.by_class[self.class_start[c] + j].tolist()

    def __iter__(self) -> Iterator[ClassPairBatch]:
        for batch in super().__iter__():
            # The parent has just set (epoch, step) to this batch's position: the pairs are drawn from it.
            yield ClassPairBatch(self.partners(batch.fresh, self.epoch, self.step - 1), batch.fresh)
