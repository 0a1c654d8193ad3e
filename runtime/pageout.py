"""Give back the memory of weight files that onnxruntime has finished reading.

onnxruntime maps a bundle's external weights (``model.onnx.data``) into memory and, when a session
starts, repacks the weights of its matrix products into buffers of its own (prepacking). The
mapped pages it read stay resident afterwards although nothing reads most of them again: 39 MiB of
the 124M int8 bundle's 124 MiB (the LM head that the 8-bit ``MatMulNBits`` repacked) and most of an
fp32 bundle. ``madvise(MADV_PAGEOUT)`` (Linux 5.4+) asks the kernel to reclaim exactly those pages;
a page that is read again (an embedding row for a new token) comes back from the file on its
first use. It changes no data: the pages are clean copies of the file, and pages a process wrote
(anonymous memory) are never reclaimed without swap. Where the call is missing (another OS, an
older kernel, a sandbox) nothing happens.

Nobody provides this: onnxruntime has no option to drop its own mapping after prepacking.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterable
from pathlib import Path

MADV_PAGEOUT = 21  # linux/mman-common.h


def release_file_pages(files: Iterable[Path]) -> int:
    """Ask the kernel to reclaim this process's mapped pages of ``files``; returns the bytes of
    the mappings it accepted the request for (0 where unsupported)."""
    if not sys.platform.startswith("linux"):
        return 0
    names = {str(Path(f).resolve()) for f in files}
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
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
    return released
