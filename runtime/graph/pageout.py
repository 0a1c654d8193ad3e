"""Give back the memory of weight files that onnxruntime has finished reading.

onnxruntime maps a bundle's external weights (``model.onnx.data``) into memory and, when a session
starts, repacks the weights of its matrix products into buffers of its own (prepacking). The
mapped pages it read stay resident afterwards although nothing reads most of them again: 39 MiB of
the 124M int8 bundle's 124 MiB (the LM head that the 8-bit ``MatMulNBits`` repacked) and most of an
fp32 bundle. Two ``madvise`` calls per mapping (Linux):

- ``MADV_PAGEOUT`` (5.4+) asks the kernel to reclaim those pages. It changes no data: they are
  clean copies of the file, and a page the process wrote (a copy-on-write copy) is never
  reclaimed without swap. ``MADV_DONTNEED`` would only unmap them and keep the page cache's large
  folios, which the embedding's first lookups then mapped back whole: +40 MiB of RSS for an
  880-token prompt, where this gives +12.
- ``MADV_RANDOM``: a page read again (the embedding row of a token not seen yet) comes back alone,
  without read-ahead of its neighbours; the first 128-token prompt after loading took 70 ms
  against 67 (it took 112 with read-ahead).

Where the calls are missing (another OS, an older kernel, a sandbox) nothing happens. Nobody
provides this: onnxruntime has no option to drop its own mapping after prepacking.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterable
from pathlib import Path

MADV_RANDOM = 1  # linux/mman-common.h
MADV_PAGEOUT = 21


def release_file_pages(files: Iterable[Path]) -> int:
    """Reclaim this process's resident pages of ``files`` (see the module doc); returns the bytes
    of the mappings the kernel accepted the request for (0 where unsupported)."""
    if not sys.platform.startswith("linux"):
        return 0
    names = {str(Path(f).resolve()) for f in files}
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    released = 0
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5] not in names:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            released += end - start
        madvise(start, end - start, MADV_RANDOM)
    return released
