"""The KV cache for fused GroupQueryAttention graphs: one preallocated buffer per layer and kind.

Each (B, heads, capacity, head_size) buffer is bound through IO binding as both the past input and
the present output, so GroupQueryAttention writes each step's key/values in place at each row's
own length: nothing is re-allocated or copied per step (the Optimum graph concatenates the whole
cache every step, an O(past) copy per layer per token).

GroupQueryAttention reads each row's length from ``sum(attention_mask)`` and the total from the
mask's width, so batches are right-padded: row ``i`` holds its ``L_i`` real tokens at positions
``0..L_i-1``, and its next token goes to position ``L_i``. Only the mask's row sums matter, which
is why the mask can be built as "zeros first, then ones" over the current width.

Rows that finish are not removed (that would copy the cache); they stay in the batch frozen:
their length stops advancing, so each step rewrites the same slot and they never run past the
buffer or the position table. Their logits are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from .cache import MASK_DTYPE
from .session import Session


def right_pad(prompts: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack prompts padded on the right; returns input_ids (B, T) and lengths (B,)."""
    lengths = np.array([len(p) for p in prompts], dtype=np.int64)  # (B,)
    ids = np.full((len(prompts), int(lengths.max())), pad_id, dtype=np.int64)  # (B, T)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = prompt
    return ids, lengths


class SharedKVCache:
    """Preallocated KV buffers bound as past and present, and each row's length.

    Args:
        session: a session whose graph is a fused GQA decoder (``session.shared_kv``).
        batch: number of rows (fixed for the life of the cache).
        capacity: positions per row to allocate; at most the model's context.

    Attributes:
        lengths: (B,) tokens cached per row (the position of each row's next token).
    """

    def __init__(self, session: Session, batch: int, capacity: int):
        arch, names = session.arch, session.names
        self._session, self._names = session, names
        self.capacity = min(int(capacity), arch.context_length)
        device = session.kv_device  # where the attention kernel that writes them runs
        shape = (batch, arch.heads, self.capacity, arch.head_size)  # (B, nh, C, hs)
        # Zeros, not uninitialised memory: positions past a row's length are never attended, but
        # garbage there could hold NaNs that a kernel multiplies by zero.
        self._buffers = [
            ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=session.kv_dtype), device, 0)
            for _ in names.past
        ]
        self._binding = binding = session.ort.io_binding()
        # Every call makes (B, 1, V) logits when the graph takes logits_index (a v1 fused graph
        # makes (B, T, V) at the prefill): one host buffer is bound once and reused. Logits are
        # bound first so that they are get_outputs()[0].
        self._step_logits = np.empty((batch, 1, arch.vocab_size), dtype=logits_dtype(session))
        self._last_index = np.zeros((batch, 1), dtype=np.int64)  # (B, 1): decode's only position
        if names.logits_index:
            self._bind_step_logits()
        else:
            binding.bind_output(names.outputs[0], "cpu")  # sized by onnxruntime at the prefill
        for name, value in zip(names.past, self._buffers, strict=True):
            binding.bind_ortvalue_input(name, value)
        for name, value in zip(names.outputs[1:], self._buffers, strict=True):
            binding.bind_ortvalue_output(name, value)
        self.lengths = np.zeros(batch, dtype=np.int64)  # (B,)
        self._live = np.ones(batch, dtype=bool)  # (B,) rows whose length still advances
        self._ones = np.ones(self.capacity + 1, dtype=MASK_DTYPE)  # batch-1 masks are its prefixes

    def _bind_step_logits(self) -> None:
        self._binding.bind_ortvalue_output(
            self._names.outputs[0], ort.OrtValue.ortvalue_from_numpy(self._step_logits)
        )

    def freeze(self, rows: Sequence[int]) -> None:
        """Stop advancing these rows (indices into the batch); they finished."""
        self._live[np.asarray(rows, dtype=np.int64)] = False

    def _mask(self, width: int, totals: np.ndarray) -> np.ndarray:
        """A (B, width) mask whose row sums are ``totals`` (zeros first, then ones)."""
        if totals.size == 1 and int(totals[0]) == width:
            return self._ones[:width].reshape(1, width)  # a contiguous view, no allocation
        return (np.arange(width) >= (width - totals)[:, None]).astype(MASK_DTYPE)

    def _run(
        self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, last: np.ndarray
    ) -> None:
        binding = self._binding
        for name, value in self._names.host_inputs(ids, mask, positions, last).items():
            binding.bind_cpu_input(name, value)
        self._session.ort.run_with_iobinding(binding)

    def prefill(self, prompts: Sequence[np.ndarray], pad_id: int) -> np.ndarray:
        """Run the right-padded prompts; return each row's logits at its last real token (B, V)."""
        ids, lengths = right_pad(prompts, pad_id)  # (B, T), (B,)
        batch, width = ids.shape
        positions = np.broadcast_to(np.arange(width, dtype=np.int64), (batch, width))
        last = (lengths - 1)[:, None]  # (B, 1)
        self._run(ids, self._mask(width, lengths), np.ascontiguousarray(positions), last)
        self.lengths = lengths.copy()
        if self._names.logits_index:
            return self._step_logits[:, 0]
        logits = self._binding.get_outputs()[0].numpy()  # (B, T, V): a v1 graph
        self._bind_step_logits()
        return logits[np.arange(batch), lengths - 1]  # (B, V)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row (B,); return the logits (B, V), finished rows included."""
        assert self.lengths.any(), "prefill() first"
        lengths, live = self.lengths, self._live
        totals = lengths + 1  # each row's length including this token
        mask = self._mask(int(totals.max()), totals)
        self._run(tokens.reshape(-1, 1), mask, lengths[:, None], self._last_index)
        self.lengths = np.where(live, totals, lengths)  # frozen rows rewrite the same slot
        return self._step_logits[:, 0]


def logits_dtype(session: Session) -> np.dtype:
    """The graph's logits element type (float32 unless an fp16 export made them float16)."""
    types = {o.name: o.type for o in session.ort.get_outputs()}
    return (
        np.dtype(np.float16)
        if "float16" in types[session.names.outputs[0]]
        else np.dtype(np.float32)
    )
