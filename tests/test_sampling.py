from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from dlb_edu.errors import ConfigError
from dlb_edu.pairs import ClassPairBatchSampler
from dlb_edu.sampling import DLBBatchSampler, PlainBatchSampler


def run_epochs(sampler, n):
    return [[list(b) for b in sampler] for _ in range(n)]


@pytest.mark.parametrize("carry_over", [True, False])
@pytest.mark.parametrize("num_samples,batch_size", [(20, 4), (23, 5), (7, 7)])
def test_each_index_is_fresh_exactly_once_per_epoch(num_samples, batch_size, carry_over):
    s = DLBBatchSampler(num_samples, batch_size, seed=3, carry_over=carry_over)
    for _ in range(3):
        batches = list(s)
        fresh = [i for b in batches for i in b.fresh]
        assert Counter(fresh) == Counter(range(num_samples))
        assert all(len(b.fresh) == batch_size for b in batches[:-1])  # only the last fresh chunk may be short
        assert len(batches) == len(s)


def test_repeated_half_is_previous_fresh_half():
    s = DLBBatchSampler(30, 4, seed=0)
    prev = None
    for _ in range(3):
        for b in s:
            if prev is not None:
                assert b.repeated == prev.fresh
                assert list(b) == prev.fresh + b.fresh
            prev = b


def test_first_batch_of_run_holds_only_fresh_indices():
    b = next(iter(DLBBatchSampler(30, 4, seed=0)))
    assert b.num_repeated == 0 and len(b) == 4


def test_carry_over_repeats_last_fresh_half_at_next_epoch():
    s = DLBBatchSampler(10, 4, seed=1, carry_over=True)
    e0 = list(s)
    e1 = list(s)
    assert e1[0].repeated == e0[-1].fresh and len(e0[-1].fresh) == 2  # last chunk of 10 by 4 is short


def test_without_carry_over_each_epoch_starts_clean():
    s = DLBBatchSampler(10, 4, seed=1, carry_over=False)
    list(s)
    e1 = list(s)
    assert e1[0].num_repeated == 0
    assert all(b.repeated == a.fresh for a, b in zip(e1, e1[1:]))


def test_epochs_are_shuffled_differently_and_seeded():
    a, b = DLBBatchSampler(50, 5, seed=0), DLBBatchSampler(50, 5, seed=0)
    assert run_epochs(a, 2) == run_epochs(b, 2)
    s = DLBBatchSampler(50, 5, seed=0)
    assert s.epoch_order(0) != s.epoch_order(1)
    assert DLBBatchSampler(50, 5, seed=1).epoch_order(0) != s.epoch_order(0)


def test_state_dict_resumes_mid_epoch_exactly():
    full = DLBBatchSampler(40, 3, seed=5)
    expected = run_epochs(full, 2)
    s = DLBBatchSampler(40, 3, seed=5)
    it = iter(s)
    got = [list(next(it)) for _ in range(4)]
    state = s.state_dict()
    resumed = DLBBatchSampler(40, 3, seed=5)
    resumed.load_state_dict(state)
    got += [list(b) for b in resumed]
    assert got == expected[0]
    assert [list(b) for b in resumed] == expected[1]


def test_state_from_another_configuration_is_refused():
    state = DLBBatchSampler(40, 3, seed=5).state_dict()
    with pytest.raises(ConfigError, match="batch_size"):
        DLBBatchSampler(40, 4, seed=5).load_state_dict(state)


def test_dlb_state_refuses_another_carry_over():
    state = DLBBatchSampler(40, 3, seed=5, carry_over=True).state_dict()
    with pytest.raises(ConfigError, match="carry_over"):
        DLBBatchSampler(40, 3, seed=5, carry_over=False).load_state_dict(state)


# A sampler's state as every sampler saved it before they had a common base (each was a DLBBatchSampler then).
OLD_STATE = {"epoch": 1, "step": 2, "last_fresh": [5, 6, 7], "num_samples": 40, "batch_size": 3, "seed": 5,
             "carry_over": True, "rank": 0, "world_size": 1}


@pytest.mark.parametrize("make", [lambda: PlainBatchSampler(40, 3, seed=5),
                                  lambda: ClassPairBatchSampler(40, 3, seed=5, labels=torch.arange(40) % 4)],
                         ids=["plain", "class_pair"])
def test_every_sampler_resumes_from_a_state_saved_in_the_older_format(make):
    resumed, full = make(), make()
    resumed.load_state_dict(dict(OLD_STATE))
    assert (resumed.epoch, resumed.step) == (1, 2)
    list(full)  # epoch 0
    assert [list(b) for b in resumed] == [list(b) for b in full][2:]
    assert set(resumed.state_dict()) == set(OLD_STATE) - {"carry_over"}


def test_dlb_resumes_from_a_state_saved_in_the_older_format():
    s = DLBBatchSampler(40, 3, seed=5)
    s.load_state_dict(dict(OLD_STATE))
    first = next(iter(s))
    assert first.repeated == [5, 6, 7] and s.state_dict() == {**OLD_STATE, "step": 3, "last_fresh": first.fresh}


def test_plain_sampler_has_same_fresh_chunks_and_no_repeats():
    plain, dlb = PlainBatchSampler(20, 4, seed=2), DLBBatchSampler(20, 4, seed=2)
    for p, d in zip(list(plain), list(dlb)):
        assert p.num_repeated == 0 and list(p) == d.fresh


def test_ranks_get_disjoint_fresh_samples_and_keep_their_own_overlap():
    ranks = [DLBBatchSampler(40, 4, seed=0, rank=r, world_size=2) for r in range(2)]
    fresh = [[i for b in s for i in b.fresh] for s in ranks]
    assert not set(fresh[0]) & set(fresh[1])
    assert len(fresh[0]) == len(fresh[1]) == 20
    for s in ranks:
        batches = list(s)
        assert all(b.repeated == a.fresh for a, b in zip(batches, batches[1:]))


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_samples=10, batch_size=0), "batch_size"),
    (dict(num_samples=10, batch_size=11), "batch_size"),
    (dict(num_samples=0, batch_size=1), "num_samples"),
    (dict(num_samples=10, batch_size=2, rank=2, world_size=2), "rank"),
])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DLBBatchSampler(**kwargs)


class Recorder(Dataset):
    """Returns each index with a fresh random number: two loads of one index differ, like two augmentations."""
    def __len__(self):
        return 12

    def __getitem__(self, i):
        return i, torch.rand(())


def test_works_as_batch_sampler_of_a_dataloader_with_fresh_augmentation():
    loader = DataLoader(Recorder(), batch_sampler=DLBBatchSampler(12, 3, seed=0))
    batches = list(loader)
    assert [len(idx) for idx, _ in batches] == [3, 6, 6, 6]
    for (prev_idx, prev_aug), (idx, aug) in zip(batches, batches[1:]):
        assert idx[:3].tolist() == prev_idx[-3:].tolist()      # repeated half = previous fresh half
        assert not torch.equal(aug[:3], prev_aug[-3:])          # loaded (augmented) anew
