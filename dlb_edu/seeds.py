"""One rule for every random stream of a run: its seed is a function of the run's seed and the stream's coordinates.

A resumed run must replay the randomness of the steps it has not trained yet, so no stream may depend on how many
numbers another stream has drawn. Each one is seeded on its own, from ``derive_seed(seed, *coordinates)``: the order
of epoch ``e`` from ``(seed, e)``, the crops and flips of step ``s`` of epoch ``e`` from ``(seed, e, s)``, and so on.
"""
from __future__ import annotations

_PRIME = 1_000_003
_MODULUS = 2 ** 63  # torch.Generator.manual_seed takes any seed in [0, 2^63)


def derive_seed(seed: int, *coordinates: int) -> int:
    """``seed`` folded with each coordinate in turn, ``h -> (h * 1_000_003 + c) mod 2^63``: a seed in [0, 2^63).

    ``derive_seed(seed)`` is ``seed`` itself (for a seed in range), so the model's initialization and the probe set
    keep the plain seed.
    """
    h = seed % _MODULUS
    for c in coordinates:
        h = (h * _PRIME + c) % _MODULUS
    return h
