"""The KV cache of one batch between decode steps, with its attention mask and position ids.

Rows are left-padded to a common length, so that every row's next token sits in the same last
column. Padding is masked out by ``mask`` and skipped by the position ids, which count each row's
real tokens only, so a padded row computes what it would compute alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .session import FlatPast, Session

MASK_DTYPE = np.int64  # what Optimum's GPT-2 graph takes for attention_mask and position_ids


def left_pad(prompts: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack prompts of different lengths, padding on the left.

    Args:
        prompts: B non-empty (T_i,) int64 arrays.
        pad_id: the token id written into padding (masked out, so any valid id works).

    Returns:
        input_ids (B, T) and mask (B, T), 0 on padding and 1 on real tokens.
    """
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, dtype=np.int64)  # (B, T)
    mask = np.zeros((len(prompts), width), dtype=MASK_DTYPE)  # (B, T)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    return ids, mask


class KVCache:
    """Past keys and values of a batch, the attention mask over them, and each row's next position.

    Args:
        session: the session whose runner holds the tensors (numpy on CPU, OrtValues on CUDA).
        batch: number of rows.

    Attributes:
        past: flat [k0, v0, k1, ...], each (B, nh, L, hs); length 0 before the first step.
        mask: (B, L) 1 where a cached position is a real token, 0 on padding.
        next_position: (B,) the position id of each row's next token (its count of real tokens).
    """

    def __init__(self, session: Session, batch: int):
        self._session = session
        self.past: FlatPast = session.new_past(batch)
        self.mask = np.zeros((batch, 0), dtype=MASK_DTYPE)  # (B, 0)
        self.next_position = np.zeros(batch, dtype=np.int64)  # (B,)
        self._ones = np.ones((batch, 1), dtype=MASK_DTYPE)  # (B, 1) the mask of one decode step
        # Without padding every mask is all ones: hand out reshaped prefixes of one flat buffer
        # (contiguous for any B) instead of concatenating a new mask each step.
        self._all_ones = np.ones(batch * (session.arch.context_length + 1), dtype=MASK_DTYPE)
        self._padded = True

    @property
    def length(self) -> int:
        """Cached positions per row, padding included."""
        return int(self.mask.shape[1])

    def prefill_inputs(self, new_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mask and position ids for feeding several tokens per row (prefill).

        Args:
            new_mask: (B, T) mask of the tokens about to be fed (0 on left padding).

        Returns:
            attention_mask (B, L + T) and position_ids (B, T); padding gets position 0, which
            the mask makes irrelevant.
        """
        full = np.concatenate([self.mask, new_mask], axis=1)  # (B, L + T)
        positions = self.next_position[:, None] + np.cumsum(new_mask, axis=1) - 1  # (B, T)
        return full, np.maximum(positions, 0)

    def decode_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """Mask (B, L + 1) and position ids (B, 1) for feeding one real token per row."""
        batch, width = self.mask.shape[0], self.mask.shape[1] + 1
        if not self._padded and batch * width <= self._all_ones.size:
            full = self._all_ones[: batch * width].reshape(batch, width)  # (B, L + 1)
        else:
            full = np.concatenate([self.mask, self._ones], axis=1)  # (B, L + 1)
        return full, self.next_position[:, None]

    def update(self, present: FlatPast, attention_mask: np.ndarray) -> None:
        """Keep the graph's present tensors as the next past.

        Args:
            present: flat present tensors, each (B, nh, L + T, hs).
            attention_mask: the (B, L + T) mask that was fed with them.
        """
        fed = int(attention_mask.shape[1]) - self.length
        if self._padded:
            self.next_position = self.next_position + attention_mask[:, -fed:].sum(axis=1)
            self._padded = not attention_mask.all()
        else:
            self.next_position = self.next_position + fed
        self.past, self.mask = present, attention_mask

    def select(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in this order), and drop leading columns that are padding in all.

        Used when rows finish, so the rest of the batch stops paying for them. This copies the
        cache once (through the host on CUDA); it happens at most once per finished row.
        """
        index = np.asarray(rows, dtype=np.int64)
        mask = self.mask[index]  # (B', L)
        live = np.flatnonzero(mask.any(axis=0))
        start = int(live[0]) if live.size else mask.shape[1]
        runner = self._session.runner
        arrays = [a[index, :, start:] for a in runner.to_host(self.past)]  # (B', nh, L', hs)
        self.past = runner.from_host(arrays)
        self.mask = np.ascontiguousarray(mask[:, start:])
        self.next_position = self.next_position[index]
        self._ones = self._ones[: len(index)]
        self._padded = not self.mask.all()
