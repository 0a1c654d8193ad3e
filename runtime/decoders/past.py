"""The growing-past decoder for plain Optimum graphs: the past grows by the tokens of each call.

Rows are left-padded to a common length, so that every row's next token sits in the same last
column. Padding is masked out by ``mask`` and skipped by the position ids, which count each row's
real tokens only, so a padded row computes what it would compute alone. The invariant is "zeros,
then ones" per row of the mask: a row's real tokens are its last ``lengths[i]`` columns, which
is what :meth:`PastDecoder.rollback` and :meth:`PastDecoder.add` keep by re-padding.

This is one of the two backends of :class:`.decoder.Decoder`; the other is ``decoders/shared.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..graph.names import FlatPast
from ..graph.session import Session
from .runners import runner_for

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


def _as_float32(logits: np.ndarray) -> np.ndarray:
    return logits if logits.dtype == np.float32 else logits.astype(np.float32)  # fp16 graphs


class PastDecoder:
    """Past keys and values of a batch, their mask, and each row's length; see the module doc.

    Args:
        session: the model; the decoder's runner holds the tensors (numpy on CPU, OrtValues on
            CUDA).
        pad_id: token id fed on padding (masked out).

    Attributes:
        past: flat [k0, v0, k1, ...], each (B, nh, L, hs); length 0 before the first call.
        mask: (B, L) 1 where a cached column is a real token, 0 on padding.
    """

    def __init__(self, session: Session, pad_id: int):
        self._session, self._pad_id = session, pad_id
        self._runner = runner_for(session)
        self.past: FlatPast = []
        self.mask = np.zeros((0, 0), dtype=MASK_DTYPE)  # (B, L)
        self._next = np.zeros(0, dtype=np.int64)  # (B,) position of each row's next token
        self._padded = False  # whether any mask entry is 0
        # Without padding every mask is all ones: hand out reshaped prefixes of one flat buffer
        # (contiguous for any B) instead of concatenating a new mask each step.
        self._all_ones = np.ones(0, dtype=MASK_DTYPE)

    @property
    def batch(self) -> int:
        """Rows in the batch."""
        return int(self._next.size)

    @property
    def lengths(self) -> np.ndarray:
        """(B,) tokens cached per row (each row's next position)."""
        return self._next.copy()

    def prefill(self, prompts: Sequence[np.ndarray]) -> np.ndarray:
        """Start the batch with ``prompts``; returns each one's last logits (B, V)."""
        assert self.batch == 0, "prefill() starts a batch; add() joins a running one"
        return self.add(prompts)

    def add(self, prompts: Sequence[np.ndarray]) -> np.ndarray:
        """Append rows for ``prompts`` (run alone, then joined); returns their last logits."""
        ids, new_mask = left_pad(prompts, self._pad_id)  # (n, T) each
        positions = np.maximum(np.cumsum(new_mask, axis=1) - 1, 0)  # padding gets 0 (masked)
        arch = self._session.arch
        shape = (len(prompts), arch.heads, 0, arch.head_size)  # (n, nh, 0, hs): no past yet
        past = self._runner.empty_past(shape, self._session.kv_dtype)
        logits, present = self._runner.run(ids, new_mask, positions, past)  # (n, T, V)
        lengths = new_mask.sum(axis=1)
        if self.batch == 0:
            self.past, self.mask, self._next = present, new_mask, lengths
        else:
            self._join(present, new_mask, lengths)
        self._padded = not self.mask.all()
        return _as_float32(logits[:, -1, :])

    def _join(self, present: FlatPast, mask: np.ndarray, lengths: np.ndarray) -> None:
        """Stack new rows under the batch, left-padding the narrower side (through the host)."""
        runner = self._runner
        width = max(self.length, mask.shape[1])
        old = [_pad_left(a, width) for a in runner.to_host(self.past)]
        new = [_pad_left(a, width) for a in runner.to_host(present)]
        self.past = runner.from_host(
            [np.concatenate(p, axis=0) for p in zip(old, new, strict=True)]
        )
        self.mask = np.concatenate([_pad_left(self.mask, width), _pad_left(mask, width)])
        self._next = np.concatenate([self._next, lengths])

    @property
    def length(self) -> int:
        """Cached columns per row, padding included."""
        return int(self.mask.shape[1])

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Feed K tokens per row (B, K); returns the logits at each of them (B, K, V)."""
        batch, count = tokens.shape
        width = self.length + count
        if count == 1 and not self._padded:
            if self._all_ones.size < batch * width:  # grown in doublings, so rarely rebuilt
                self._all_ones = np.ones(2 * batch * width, dtype=MASK_DTYPE)
            mask = self._all_ones[: batch * width].reshape(batch, width)  # (B, L + 1)
            positions = self._next[:, None]  # (B, 1)
        else:
            ones = np.ones((batch, count), dtype=MASK_DTYPE)
            mask = np.concatenate([self.mask, ones], axis=1)  # (B, L + K)
            positions = self._next[:, None] + np.arange(count)  # (B, K)
        logits, present = self._runner.run(tokens, mask, positions, self.past)
        self.past, self.mask = present, mask
        self._next = self._next + count
        return _as_float32(logits)

    def drop(self, rows: Sequence[int]) -> None:
        """Remove the rows at these batch positions; the others keep their order."""
        gone = set(int(r) for r in rows)
        self._select([j for j in range(self.batch) if j not in gone])

    def reorder(self, index: Sequence[int] | np.ndarray) -> None:
        """Row j becomes a copy of old row ``index[j]`` (beam search); the batch may change size."""
        index = np.asarray(index, dtype=np.int64)
        if index.size == self.batch and np.array_equal(index, np.arange(self.batch)):
            return
        self._select(index)

    def _select(self, rows: Sequence[int] | np.ndarray) -> None:
        """Keep ``rows`` (in this order), and drop leading columns that are padding in all.

        This copies the cache once (through the host on CUDA).
        """
        index = np.asarray(rows, dtype=np.int64)
        mask = self.mask[index]  # (B', L)
        live = np.flatnonzero(mask.any(axis=0))
        start = int(live[0]) if live.size else mask.shape[1]
        runner = self._runner
        arrays = [a[index, :, start:] for a in runner.to_host(self.past)]  # (B', nh, L', hs)
        self.past = runner.from_host(arrays)
        self.mask = np.ascontiguousarray(mask[:, start:])
        self._next = self._next[index]
        self._padded = not self.mask.all()

    def rollback(self, counts: Sequence[int] | np.ndarray) -> None:
        """Forget the last ``counts[i]`` tokens of each row i (rejected drafts)."""
        counts = np.asarray(counts, dtype=np.int64)
        if not counts.any():
            return
        keep = self._next - counts  # (B,) tokens each row keeps
        width, old = int(keep.max()), self.length
        runner = self._runner
        arrays = []
        for a in runner.to_host(self.past):  # (B, nh, L, hs) -> (B, nh, W, hs), re-padded
            out = np.zeros((a.shape[0], a.shape[1], width, a.shape[3]), dtype=a.dtype)
            for i, (k, c) in enumerate(zip(keep.tolist(), counts.tolist(), strict=True)):
                out[i, :, width - k :] = a[i, :, old - c - k : old - c]
            arrays.append(out)
        self.past = runner.from_host(arrays)
        self.mask = (np.arange(width) >= (width - keep)[:, None]).astype(MASK_DTYPE)
        self._next = keep
        self._padded = not self.mask.all()


def _pad_left(array: np.ndarray, width: int) -> np.ndarray:
    """``array`` (B, ..., L[, hs]) with zeros on the left of its column axis up to ``width``.

    The column axis is the last one of a (B, L) mask and the third of a (B, nh, L, hs) tensor.
    """
    axis = 1 if array.ndim == 2 else 2
    missing = width - array.shape[axis]
    if missing == 0:
        return array
    pad = [(0, 0)] * array.ndim
    pad[axis] = (missing, 0)
    return np.pad(array, pad)
