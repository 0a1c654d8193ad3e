"""Random generators that exist only once something draws from them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # it stands in for one, as far as its users can tell
    from numpy.random import Generator as _StandIn
else:
    _StandIn = object


class LazyRng(_StandIn):
    """``np.random.default_rng(seed)``, made when first used.

    Greedy decoding never draws, and ``numpy.random`` takes ~17 ms to import: a fifth of the time
    from a loaded model to the first token of ``gpt2-generate``.
    """

    def __init__(self, seed: int | list[int] | None):
        self._seed = seed
        self._rng: np.random.Generator | None = None

    def __getattr__(self, name: str) -> Any:  # only for what the instance itself lacks
        if name in ("_seed", "_rng"):  # a copy being built has neither yet
            raise AttributeError(name)
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return getattr(self._rng, name)
