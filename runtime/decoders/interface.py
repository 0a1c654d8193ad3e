"""One decoder interface over the two KV-cache backends, so that the loops need not know which.

A :class:`Decoder` is a running batch: the graph, its KV cache, and where each row stands. The
generation loop (``generation/steps.py``), beam search (``generation/beam.py``) and a server's
scheduler drive it through
the same calls; :func:`open_decoder` picks the backend the bundle's graph wants:

- :class:`.shared_cache.SharedKVDecoder`: the fused GroupQueryAttention graph (the exporter's
  default) on preallocated buffers written in place, right-padded;
- :class:`.cache.PastDecoder`: a plain Optimum graph, whose past grows by concatenation each call,
  left-padded.

(mlx-lm's cache classes and onnxruntime-genai's KeyValueCache play this role there.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..graph.session import Session
from .past import PastDecoder
from .shared import SharedKVDecoder


class Decoder(Protocol):
    """A running batch of rows, addressed by batch position ``0..batch-1``.

    Logits come back as float32 and may be a view of a buffer that the next call overwrites; a
    caller that keeps them copies them. A row computes the same logits whatever else shares the
    batch, and whenever it joined.
    """

    @property
    def batch(self) -> int:
        """Rows in the batch."""
        ...

    @property
    def lengths(self) -> np.ndarray:
        """(B,) tokens cached per row, which is the position of each row's next token."""
        ...

    def prefill(self, prompts: Sequence[np.ndarray]) -> np.ndarray:
        """Start an empty batch with one row per prompt; returns each one's last logits (B, V)."""
        ...

    def add(self, prompts: Sequence[np.ndarray]) -> np.ndarray:
        """Append rows for ``prompts`` to the running batch (a server joins requests between
        steps); returns their last logits (n, V). The other rows are unaffected."""
        ...

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Feed K tokens to every row (B, K); returns the logits at each of them (B, K, V)."""
        ...

    def drop(self, rows: Sequence[int]) -> None:
        """Remove the rows at these batch positions; the others keep their order."""
        ...

    def reorder(self, index: Sequence[int] | np.ndarray) -> None:
        """Row j becomes a copy of old row ``index[j]`` (beam search; rows may repeat)."""
        ...

    def rollback(self, counts: Sequence[int] | np.ndarray) -> None:
        """Forget the last ``counts[i]`` tokens cached by row i (rejected draft tokens)."""
        ...


def open_decoder(session: Session, pad_id: int, capacity: int) -> Decoder:
    """An empty decoder for ``session``'s graph.

    Args:
        session: the model.
        pad_id: token id fed on padding (never attended).
        capacity: positions per row the batch will likely need (prompt plus new tokens); the
            shared buffers are allocated to it and grow if a row needs more.
    """
    if session.shared_kv:
        return SharedKVDecoder(session, pad_id, capacity)
    return PastDecoder(session, pad_id)
