"""The fused graph's preallocated key/value buffers, one (S, nh, C, hs) array per layer and kind.

Each buffer is bound through IO binding as both the past input and the present output, so
GroupQueryAttention writes each call's keys and values in place. On the CPU the buffers are numpy
arrays that the OrtValues share (``OrtValue.ortvalue_from_numpy`` keeps the array's memory), so
copying rows between slots is plain numpy; on a GPU they are device OrtValues, read and written
whole through the host (``numpy()`` and ``update_inplace``), which only beam reordering, joining
rows and resizing do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort


class KVBuffers:
    """The buffers of one shared KV cache.

    Args:
        arrays: the initial contents, one (S, nh, C, hs) array per past tensor, flat.
        device: onnxruntime device type that holds them (``cpu`` or ``cuda``).
        shared: keep ``arrays`` as the storage itself (CPU only); False copies them into
            OrtValues on ``device`` and reads them back through the host, as on a GPU (tests
            use it to exercise that path on a CPU).
    """

    def __init__(self, arrays: Sequence[np.ndarray], device: str, shared: bool):
        self.device, self.shared = device, shared and device == "cpu"
        self._arrays = [np.ascontiguousarray(a) for a in arrays] if self.shared else None
        source = self._arrays if self._arrays is not None else arrays
        self.values = [ort.OrtValue.ortvalue_from_numpy(a, device, 0) for a in source]

    @classmethod
    def zeros(cls, count: int, shape: tuple[int, ...], dtype: np.dtype, device: str,
              shared: bool) -> KVBuffers:  # fmt: skip
        """``count`` buffers of ``shape`` (S, nh, C, hs).

        Zeros, not uninitialised memory: positions past a row's length are never attended, but
        garbage there could hold NaNs that a kernel multiplies by zero.
        """
        return cls([np.zeros(shape, dtype=dtype) for _ in range(count)], device, shared)

    @property
    def shape(self) -> tuple[int, ...]:
        """(S, nh, C, hs) of every buffer."""
        return tuple(self.values[0].shape())

    def read(self) -> list[np.ndarray]:
        """The contents on the host: the storage itself when shared, else copies."""
        if self._arrays is not None:
            return self._arrays
        return [value.numpy() for value in self.values]

    def write(self, arrays: Sequence[np.ndarray]) -> None:
        """Store ``arrays`` (as :meth:`read` returned them, modified) back into the buffers."""
        if self._arrays is not None:
            if arrays is not self._arrays:
                for mine, new in zip(self._arrays, arrays, strict=True):
                    mine[...] = new
            return
        for value, new in zip(self.values, arrays, strict=True):
            value.update_inplace(np.ascontiguousarray(new))

    def rows(self, slot: int) -> list[Any] | None:
        """OrtValues viewing one slot (1, nh, C, hs) of each buffer, when shared; else None."""
        if self._arrays is None:
            return None
        return [ort.OrtValue.ortvalue_from_numpy(a[slot : slot + 1]) for a in self._arrays]

    def resized(self, keep: np.ndarray, slots: int, capacity: int, used: int) -> KVBuffers:
        """New buffers of ``slots`` x ``capacity`` holding old slots ``keep`` first, in order.

        Args:
            keep: (K,) old slot of each of the first K new slots.
            slots: new slot count (>= K); the rest start empty.
            capacity: new positions per slot.
            used: positions worth copying (the longest kept row).
        """
        old = self.read()
        shape = (slots, old[0].shape[1], capacity, old[0].shape[3])
        new = [np.zeros(shape, dtype=a.dtype) for a in old]
        for target, source in zip(new, old, strict=True):
            target[: keep.size, :, :used] = source[keep, :, :used]
        return KVBuffers(new, self.device, self.shared)
