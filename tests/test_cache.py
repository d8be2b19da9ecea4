import pytest
import torch

from dlb_edu.cache import SoftTargetCache
from dlb_edu.errors import ConfigError


def test_put_stores_detached_logits_and_get_returns_them():
    cache = SoftTargetCache()
    assert cache.get() is None and cache.nbytes == 0
    logits = torch.randn(4, 10, requires_grad=True) * 2  # part of a graph
    cache.put([3, 1, 4, 5], logits)
    got = cache.get([3, 1, 4, 5])
    assert not got.requires_grad and got.grad_fn is None
    assert torch.equal(got, logits.detach())


def test_nbytes_counts_logits_and_indices():
    cache = SoftTargetCache()
    cache.put(list(range(64)), torch.zeros(64, 100))
    assert cache.nbytes == 64 * 100 * 4 + 64 * 8


def test_half_precision_logits_are_cached_as_float32():
    # Under bf16 autocast the teacher would otherwise keep only ~3 significant digits.
    cache = SoftTargetCache()
    logits = torch.randn(64, 100).bfloat16()
    cache.put(list(range(64)), logits)
    assert cache.get().dtype == torch.float32 and torch.equal(cache.get(), logits.float())
    assert cache.nbytes == 64 * 100 * 4 + 64 * 8
    cache.put([0], torch.zeros(1, 3, dtype=torch.float64))
    assert cache.get().dtype == torch.float64  # reference computations in float64 keep their precision


def test_get_with_other_indices_is_refused():
    cache = SoftTargetCache()
    cache.put([1, 2], torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="cached indices"):
        cache.get([2, 1])


def test_put_checks_shapes():
    with pytest.raises(ConfigError, match="shape"):
        SoftTargetCache().put([1, 2, 3], torch.zeros(2, 3))


def test_state_dict_round_trip():
    cache = SoftTargetCache()
    cache.put([7, 8], torch.randn(2, 5))
    other = SoftTargetCache()
    other.load_state_dict(cache.state_dict())
    assert torch.equal(other.get([7, 8]), cache.get()) and other.nbytes == cache.nbytes
