"""The shared-buffer decoder for fused GroupQueryAttention graphs (the exporter's default).

One preallocated buffer per layer and kind (``decoders/buffers.py``) is bound as both past and
present,
so GroupQueryAttention writes each call's key/values in place at each row's own length: nothing is
re-allocated or copied per step (the Optimum graph concatenates the whole cache every step, an
O(past) copy per layer per token).

GroupQueryAttention reads each row's length from ``sum(attention_mask)`` and the total from the
mask's width, so batches are right-padded: a row holds its ``L_i`` real tokens at positions
``0..L_i-1``, and its next token goes to position ``L_i``. Only the mask's row sums matter, which
is why the mask can be built as "zeros first, then ones" over the current width.

Rows live in slots of the buffers. A dropped row frees its slot (length 0; it is fed a pad token
and its logits are ignored) instead of copying the cache; when half the slots are free the live
rows are packed into smaller buffers. :meth:`add` fills free slots first. Rolling back is only a
shorter length: the next call overwrites the forgotten positions.

onnxruntime's GroupQueryAttention takes several new tokens per row after a past only for a batch
of one, so :meth:`decode` with K > 1 runs each row alone on a view of its slot (CPU buffers), or K
one-token calls (device buffers, which have no views).

A prompt longer than ``prefill_chunk`` is prefilled the same way, row by row in chunks: the
activations of one call (the attention's scores grow with the square of its length) then stay
those of a ``prefill_chunk``-token call, and onnxruntime's arena, which keeps its largest size
for the life of the session, stays small. The chunks compute exactly what one call would (each
position attends to the same keys; int8 activations are quantized per row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from onnxruntime import OrtValue

from ..graph.names import ORT_RUN_ERRORS
from ..graph.session import Session
from .buffers import KVBuffers
from .past import MASK_DTYPE

# Tokens per prefill call for long prompts (see the module doc). GPT-2 124M int8, an 880-token
# prompt, 2 threads: chunks of 512 / 256 / 128 gave a peak RSS of 345 / 304 / 286 MiB and the same
# prefill time within noise (427-466 ms).
PREFILL_CHUNK = 128


def right_pad(prompts: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack prompts padded on the right; returns input_ids (B, T) and lengths (B,)."""
    lengths = np.array([len(p) for p in prompts], dtype=np.int64)  # (B,)
    ids = np.full((len(prompts), int(lengths.max())), pad_id, dtype=np.int64)  # (B, T)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = prompt
    return ids, lengths


def right_mask(width: int, totals: np.ndarray) -> np.ndarray:
    """A (B, width) mask whose row sums are ``totals`` (zeros first, then ones)."""
    return (np.arange(width) >= (width - totals)[:, None]).astype(MASK_DTYPE)


class SharedKVDecoder:
    """A running batch on preallocated GQA buffers; see the module doc.

    Args:
        session: a session whose graph is a fused GQA decoder (``session.shared_kv``).
        pad_id: token id fed on padding and to free slots.
        capacity: positions per row to allocate at the first prefill (grown when needed, up to
            the model's context).
        shared_buffers: keep CPU buffers as numpy arrays shared with onnxruntime (default: where
            attention runs on the CPU); False takes the device path (tests).
        prefill_chunk: longest prompt prefilled in one call (CPU buffers; see the module doc).
    """

    def __init__(
        self,
        session: Session,
        pad_id: int,
        capacity: int,
        shared_buffers: bool | None = None,
        prefill_chunk: int = PREFILL_CHUNK,
    ):
        self._session, self._names, self._pad_id = session, session.names, pad_id
        self._context = session.arch.context_length
        self._hint = min(int(capacity), self._context)
        self._device = session.kv_device  # where the attention kernel that writes them runs
        self._shared = self._device == "cpu" if shared_buffers is None else shared_buffers
        self._buffers: KVBuffers | None = None
        self._slots = np.zeros(0, dtype=np.int64)  # (B,) slot of each row
        self._lengths = np.zeros(0, dtype=np.int64)  # (S,) tokens cached per slot; 0 when free
        self._dense = True  # rows are slots 0..S-1 in order: no gather, no scatter
        self._ones = np.ones(self._context + 1, dtype=MASK_DTYPE)  # batch-1 masks: its prefixes
        self._logits_dtype = logits_dtype(session)
        self._chunk = max(1, int(prefill_chunk))

    @property
    def batch(self) -> int:
        """Rows in the batch."""
        return int(self._slots.size)

    @property
    def lengths(self) -> np.ndarray:
        """(B,) tokens cached per row (each row's next position)."""
        return self._lengths[self._slots]

    @property
    def capacity(self) -> int:
        """Positions per row the buffers hold now."""
        return 0 if self._buffers is None else self._buffers.shape[2]

    # --- binding and running -------------------------------------------------------------------

    def _bind(self, buffers: KVBuffers) -> None:
        """Bind new buffers as past and present, and a reused host buffer for (S, 1, V) logits."""
        self._buffers, names = buffers, self._names
        slots = buffers.shape[0]
        self._binding = binding = self._session.ort.io_binding()
        self._step_logits = np.empty((slots, 1, self._session.arch.vocab_size), self._logits_dtype)
        self._last_index = np.zeros((slots, 1), dtype=np.int64)  # (S, 1): decode's one position
        # Logits are bound first so that they are get_outputs()[0].
        self._bind_step_logits()
        for name, value in zip(names.past, buffers.values, strict=True):
            binding.bind_ortvalue_input(name, value)
        for name, value in zip(names.outputs[1:], buffers.values, strict=True):
            binding.bind_ortvalue_output(name, value)
        self._row_bindings: dict[int, tuple[Any, list[Any]]] = {}

    def _bind_step_logits(self) -> None:
        value = OrtValue.ortvalue_from_numpy(self._step_logits)
        self._binding.bind_ortvalue_output(self._names.outputs[0], value)

    def _run(
        self,
        binding: Any,
        ids: np.ndarray,
        mask: np.ndarray,
        positions: np.ndarray,
        want: np.ndarray,
    ) -> np.ndarray:
        """One call; returns logits (B, K, V) at ``want`` (B, K), as float32.

        The (S, 1, V) logits of the main binding land in the reused buffer (valid until the
        next call); other shapes are allocated by onnxruntime.
        """
        names = self._names
        has_index = bool(names.logits_index)
        step = binding is self._binding and want.shape[1] == 1 and (has_index or ids.shape[1] == 1)
        if not step:
            binding.bind_output(names.outputs[0], "cpu")
        kept = names.bind_host_inputs(binding, ids, mask, positions, want)
        try:
            self._session.ort.run_with_iobinding(binding)
        except ORT_RUN_ERRORS as exc:
            raise self._session.run_failed(exc, positions) from None
        del kept  # the arrays they wrap had to live until the run
        if step:
            logits = self._step_logits
        else:
            logits = binding.get_outputs()[0].numpy()
            if binding is self._binding:
                self._bind_step_logits()
            if not has_index:  # a v1 fused graph computes every position
                logits = logits[np.arange(ids.shape[0])[:, None], want]
        return logits if logits.dtype == np.float32 else logits.astype(np.float32)

    def _mask(self, width: int, totals: np.ndarray) -> np.ndarray:
        if totals.size == 1 and int(totals[0]) == width:
            return self._ones[:width].reshape(1, width)  # a contiguous view, no allocation
        return right_mask(width, totals)

    # --- the Decoder protocol --------------------------------------------------------------------

    def prefill(self, prompts: Sequence[np.ndarray]) -> np.ndarray:
        """Start the batch with ``prompts``; returns each one's last logits (B, V)."""
        assert self.batch == 0, "prefill() starts a batch; add() joins a running one"
        batch, width = len(prompts), max(len(p) for p in prompts)
        capacity = max(self._hint, width)
        shape = (batch, self._session.arch.heads, capacity, self._session.arch.head_size)
        count = len(self._names.past)
        dtype = self._session.kv_dtype
        self._bind(KVBuffers.zeros(count, shape, dtype, self._device, self._shared))
        self._slots, self._dense = np.arange(batch), True
        if width > self._chunk and (self._shared or batch == 1):
            self._lengths = np.zeros(batch, dtype=np.int64)
            return np.concatenate(
                [self._prefill_chunked(p, slot) for slot, p in enumerate(prompts)]
            )
        ids, lengths = right_pad(prompts, self._pad_id)  # (B, T), (B,)
        positions = np.ascontiguousarray(np.broadcast_to(np.arange(width), (batch, width)))
        mask = self._mask(width, lengths)
        logits = self._run(self._binding, ids, mask, positions, (lengths - 1)[:, None])
        self._lengths = lengths.copy()
        return logits[:, 0]

    def _prefill_chunked(self, prompt: np.ndarray, slot: int) -> np.ndarray:
        """Feed one prompt into its (empty) slot ``prefill_chunk`` tokens at a time; (1, V)."""
        binding = self._binding if self._lengths.size == 1 else self._row_binding(slot)
        ids = np.asarray(prompt, dtype=np.int64)[None]
        for start in range(0, ids.shape[1], self._chunk):
            part = ids[:, start : start + self._chunk]
            # Only the last position's logits are used; an earlier chunk asks for one position
            # too (the graph needs one), which costs one row of the LM head.
            logits = self._decode_slot(binding, part, slot, want=np.array([[part.shape[1] - 1]]))
        return logits[:, 0].copy()

    def add(self, prompts: Sequence[np.ndarray]) -> np.ndarray:
        """Append rows for ``prompts``; returns their last logits (n, V).

        The prompts run alone (on buffers of their own) and are copied into free slots, so the
        running rows compute nothing for them and see no difference.
        """
        if self._buffers is None or self.batch == 0:
            self._buffers = None
            return self.prefill(prompts)
        alone = SharedKVDecoder(self._session, self._pad_id, 1, self._shared)
        logits = alone.prefill(prompts).copy()
        lengths = alone.lengths
        used = int(lengths.max())
        free = np.setdiff1d(np.arange(self._lengths.size), self._slots)
        if free.size < len(prompts) or used > self.capacity:
            slots = self.batch + max(free.size, len(prompts))
            self._resize(slots, min(self._context, max(self.capacity, used)))
            free = np.setdiff1d(np.arange(self._lengths.size), self._slots)
        free = free[: len(prompts)]
        assert self._buffers is not None and alone._buffers is not None
        mine, theirs = self._buffers.read(), alone._buffers.read()
        for target, source in zip(mine, theirs, strict=True):
            target[free, :, :used] = source[:, :, :used]
        self._buffers.write(mine)
        self._slots = np.concatenate([self._slots, free])
        self._lengths[free] = lengths
        self._dense = np.array_equal(self._slots, np.arange(self._lengths.size))
        return logits

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Feed K tokens per row (B, K); returns the logits at each of them (B, K, V).

        With K = 1 the result is a view of a buffer that the next call overwrites.
        """
        count = tokens.shape[1]
        need = int(self._lengths.max()) + count
        if need > self.capacity:
            self._resize(self._lengths.size, min(self._context, max(need, 2 * self.capacity)))
        if count == 1:
            return self._decode_one(tokens)
        if self._lengths.size == 1:
            return self._decode_slot(self._binding, tokens, 0)
        if self._shared:
            slots = self._slots.tolist()
            rows = [self._decode_slot(self._row_binding(s), tokens[j : j + 1], s)
                    for j, s in enumerate(slots)]  # fmt: skip
            return np.concatenate(rows)
        steps = [self._decode_one(tokens[:, j : j + 1]).copy() for j in range(count)]
        return np.concatenate(steps, axis=1)

    def _decode_one(self, tokens: np.ndarray) -> np.ndarray:
        """One token per row, all slots in one call (free slots fed a pad token)."""
        lengths = self._lengths
        feed = tokens
        if not self._dense:
            feed = np.full((lengths.size, 1), self._pad_id, dtype=np.int64)
            feed[self._slots] = tokens
        totals = lengths + 1  # each slot's length including this token
        mask = self._mask(int(totals.max()), totals)
        logits = self._run(self._binding, feed, mask, lengths[:, None], self._last_index)
        if self._dense:
            self._lengths = totals
            return logits
        self._lengths[self._slots] += 1
        return logits[self._slots]

    def _decode_slot(
        self, binding: Any, tokens: np.ndarray, slot: int, want: np.ndarray | None = None
    ) -> np.ndarray:
        """K tokens (1, K) for the one slot ``binding`` holds; returns (1, K', V): the logits
        at ``want`` (1, K') positions of the K (default: all of them)."""
        length, count = int(self._lengths[slot]), tokens.shape[1]
        mask = self._mask(length + count, np.array([length + count]))
        positions = (length + np.arange(count))[None]
        want = np.arange(count)[None] if want is None else want
        logits = self._run(binding, tokens, mask, positions, want)
        self._lengths[slot] = length + count
        return logits

    def _row_binding(self, slot: int) -> Any:
        """A batch-of-one binding on views of one slot (CPU buffers only), made once per slot."""
        if slot not in self._row_bindings:
            assert self._buffers is not None
            views = self._buffers.rows(slot)
            assert views is not None
            binding = self._session.ort.io_binding()
            binding.bind_output(self._names.outputs[0], "cpu")
            for name, value in zip(self._names.past, views, strict=True):
                binding.bind_ortvalue_input(name, value)
            for name, value in zip(self._names.outputs[1:], views, strict=True):
                binding.bind_ortvalue_output(name, value)
            self._row_bindings[slot] = (binding, views)  # the views must outlive the binding
        return self._row_bindings[slot][0]

    def drop(self, rows: Sequence[int]) -> None:
        """Remove the rows at these batch positions; their slots become free (no copy), and the
        live rows are packed into smaller buffers once half the slots are free."""
        gone = np.asarray(rows, dtype=np.int64)
        self._lengths[self._slots[gone]] = 0
        self._slots = np.delete(self._slots, gone)
        self._dense = np.array_equal(self._slots, np.arange(self._lengths.size))
        if self._slots.size and 2 * self._slots.size <= self._lengths.size:
            self._resize(self._slots.size, self.capacity)

    def reorder(self, index: Sequence[int] | np.ndarray) -> None:
        """Row j becomes a copy of old row ``index[j]`` (beam search; same batch size)."""
        index = np.asarray(index, dtype=np.int64)
        assert index.size == self.batch, "reorder() keeps the batch size; use drop() or add()"
        if np.array_equal(index, np.arange(index.size)):
            return
        assert self._buffers is not None
        source, target = self._slots[index], self._slots
        used = int(self._lengths[source].max())
        arrays = self._buffers.read()
        for a in arrays:
            a[target, :, :used] = a[source, :, :used]  # the right side is a copy: overlap is fine
        self._buffers.write(arrays)
        self._lengths[target] = self._lengths[source]

    def rollback(self, counts: Sequence[int] | np.ndarray) -> None:
        """Forget the last ``counts[i]`` tokens of each row i; the next call overwrites them."""
        self._lengths[self._slots] -= np.asarray(counts, dtype=np.int64)

    def _resize(self, slots: int, capacity: int) -> None:
        """Move the live rows, in batch order, into new buffers of ``slots`` x ``capacity``."""
        assert self._buffers is not None
        keep = self._slots
        used = int(self._lengths[keep].max()) if keep.size else 0
        self._bind(self._buffers.resized(keep, slots, capacity, used))
        lengths = np.zeros(slots, dtype=np.int64)
        lengths[: keep.size] = self._lengths[keep]
        self._slots, self._lengths = np.arange(keep.size), lengths
        self._dense = keep.size == slots


def logits_dtype(session: Session) -> np.dtype:
    """The graph's logits element type (float32 unless an fp16 export made them float16)."""
    types = {o.name: o.type for o in session.ort.get_outputs()}
    return (
        np.dtype(np.float16)
        if "float16" in types[session.names.outputs[0]]
        else np.dtype(np.float32)
    )
