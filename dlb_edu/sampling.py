"""The index streams: every sampler hands out each index fresh once per epoch; DLB's repeats the last fresh half.

A :class:`BatchSampler` cuts each epoch's order into chunks of B *fresh* indices and knows where it stands (epoch,
step), so a run resumes where it stopped; with several processes each rank takes its own share. Its subclasses say
what a batch holds: the baseline's :class:`PlainBatchSampler` the fresh chunk alone, CS-KD's
:class:`~dlb_edu.pairs.ClassPairBatchSampler` each fresh index with a partner of its class, and
:class:`DLBBatchSampler` (Shen et al., CVPR 2022, Sec. 3.2) two halves: the samples that were fresh at the previous
step (now *repeated*, so their cached logits can serve as soft targets), then the B fresh ones (whose logits are
cached for the next step). The trainer and a torch DataLoader both consume these index lists, so repeated samples
are loaded, and augmented, anew.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from .errors import ConfigError
from .seeds import derive_seed


def step_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """The seed of one step's randomness (crops, flips, mixing): a function of (seed, epoch, step) alone, so a resumed
    run replays it. Another rank than 0 adds its rank as a fourth coordinate: each process augments its own way."""
    return derive_seed(seed, epoch, step, rank) if rank else derive_seed(seed, epoch, step)


class Batch(list):
    """A list of dataset indices: ``num_repeated`` repeated ones first, then the fresh ones (the baseline's: none
    repeated).

    It is a plain list to a DataLoader. The trainer and the augmenter read ``parts`` (the row counts of the repeated
    and the fresh half, each forwarded on its own with ``forward="split"`` and mixed on its own by mixup or CutMix)
    and ``scored`` (the rows whose predictions count for the training accuracy: the fresh half).
    """
    mirror_mix = False  # the two halves are mixed independently (augment.py)

    def __init__(self, repeated: list[int], fresh: list[int]):
        super().__init__(repeated + fresh)
        self.num_repeated = len(repeated)

    @property
    def parts(self) -> list[int]:
        return [n for n in (self.num_repeated, len(self) - self.num_repeated) if n > 0]

    @property
    def scored(self) -> slice:
        return slice(self.num_repeated, len(self))

    @property
    def repeated(self) -> list[int]:
        return self[: self.num_repeated]

    @property
    def fresh(self) -> list[int]:
        return self[self.num_repeated:]


class BatchSampler(Sampler[list[int]]):
    """What every sampler shares: each epoch's order cut into chunks of ``batch_size`` fresh indices, and its position.

    Each index is fresh exactly once per epoch (the last chunk may be short). The order of epoch e depends only on
    ``(seed, e)``. With ``world_size > 1`` each rank takes a disjoint share of every epoch's order. The sampler is
    resumable: it remembers its epoch, how many batches of that epoch it has handed out and the last fresh chunk
    (DLB's next repeated half), and ``state_dict()`` / ``load_state_dict()`` save and restore exactly that. A
    subclass's ``__iter__`` makes its batches from :meth:`fresh_chunks`.
    """
    STATE_CHECKED = ("num_samples", "batch_size", "seed", "rank", "world_size")  # what a saved state must match

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size={world_size}), got {rank}")
        # The one check of the batch size against the data (the config checks that it is a positive integer).
        per_rank = num_samples // world_size
        if not isinstance(batch_size, int) or not 1 <= batch_size <= per_rank:
            share = "" if world_size == 1 else f" shared by {world_size} processes"
            raise ConfigError(f"batch_size must be in [1, {per_rank}] (the training set of {num_samples} images"
                              f"{share}), got {batch_size!r}")
        self.num_samples, self.batch_size, self.shuffle, self.seed = num_samples, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0          # the epoch the next batch belongs to
        self.step = 0           # batches of that epoch already handed out
        self.last_fresh: list[int] = []  # the fresh chunk of the last batch handed out

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's fresh indices for ``epoch``, in order. Ranks get disjoint, equally long shares."""
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        per_rank = self.num_samples // self.world_size
        return order[self.rank * per_rank:(self.rank + 1) * per_rank].tolist()

    def __len__(self) -> int:
        """Batches per epoch."""
        per_rank = self.num_samples // self.world_size
        return -(-per_rank // self.batch_size)

    def fresh_chunks(self) -> Iterator[list[int]]:
        """The remaining fresh chunks of the current epoch; afterwards the sampler stands at the next epoch."""
        order = self.epoch_order(self.epoch)
        chunks = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for k in range(self.step, len(chunks)):
            # Record the position before handing the chunk out: a checkpoint taken after this step resumes after it.
            self.step, self.last_fresh = k + 1, chunks[k]
            yield chunks[k]
        self.epoch, self.step = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "last_fresh": list(self.last_fresh),
                **{key: getattr(self, key) for key in self.STATE_CHECKED}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved position. Keys this sampler does not keep are passed over: before the samplers had a common
        base, every sampler's state also held DLB's ``carry_over``."""
        for key in self.STATE_CHECKED:
            if state[key] != getattr(self, key):
                raise ConfigError(f"sampler state was saved with {key}={state[key]!r}, this run has "
                                  f"{getattr(self, key)!r}")
        self.epoch, self.step, self.last_fresh = state["epoch"], state["step"], list(state["last_fresh"])


class PlainBatchSampler(BatchSampler):
    """The baseline's stream: the fresh chunks in order, never a repeated half."""

    def __iter__(self) -> Iterator[Batch]:
        for fresh in self.fresh_chunks():
            yield Batch([], fresh)


class DLBBatchSampler(BatchSampler):
    """Yields DLB batches: the previous batch's fresh indices first, then ``batch_size`` new fresh ones.

    The fresh halves are the plain stream's chunks, in the same order. The first batch of a run holds only fresh
    indices. With ``carry_over`` (the original code's behaviour) the last fresh half of epoch e is repeated in the first
    batch of epoch e+1; without it every epoch starts clean. With carry-over, an index repeated from the end of epoch e
    can also be drawn fresh in the first chunk of epoch e+1, so that one batch may hold it twice (as in the original
    code); it then has two augmentations, and the KL term applies to its repeated copy only. With several processes
    each rank keeps its own overlap (its repeated half is its own previous fresh half).
    """
    STATE_CHECKED = BatchSampler.STATE_CHECKED + ("carry_over",)

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 carry_over: bool = True, rank: int = 0, world_size: int = 1):
        super().__init__(num_samples, batch_size, shuffle, seed, rank, world_size)
        self.carry_over = carry_over

    def __iter__(self) -> Iterator[Batch]:
        """The remaining batches of the current epoch; afterwards the sampler stands at the next epoch."""
        starts_clean = self.step == 0 and not self.carry_over
        repeated = [] if starts_clean else self.last_fresh
        for fresh in self.fresh_chunks():
            yield Batch(repeated, fresh)
            repeated = fresh
