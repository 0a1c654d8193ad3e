"""Give back the memory of weight files that onnxruntime has finished reading.

onnxruntime maps a bundle's external weights (``model.onnx.data``) into memory and, when a session
starts, repacks the weights of its matrix products into buffers of its own (prepacking). The
mapped pages it read stay resident afterwards although nothing reads most of them again: 39 MiB of
the 124M int8 bundle's 124 MiB (the LM head that the 8-bit ``MatMulNBits`` repacked) and most of an
fp32 bundle. ``madvise(MADV_DONTNEED)`` unmaps those pages from this process; they stay in the
kernel's page cache, so a page read again (an embedding row for a new token) comes back with a
minor fault, not a disk read. (``MADV_PAGEOUT`` also evicts them from the cache: the first prompt
after loading then paid ~50 ms of disk reads for its embedding rows.)

DONTNEED on a private mapping would also discard pages the process wrote (copy-on-write copies),
so it is used only on mappings with no such page (``Anonymous: 0 kB`` in ``/proc/self/smaps``);
onnxruntime never writes to its weights, so that is every one of them, but a written mapping gets
``MADV_PAGEOUT``, which never discards data. Where the call is missing (another OS, an older
kernel, a sandbox) nothing happens.

Nobody provides this: onnxruntime has no option to drop its own mapping after prepacking.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterable
from pathlib import Path

MADV_DONTNEED = 4  # linux/mman-common.h
MADV_PAGEOUT = 21


def release_file_pages(files: Iterable[Path]) -> int:
    """Unmap this process's resident pages of ``files`` (see the module doc); returns the bytes
    of the mappings the kernel accepted the request for (0 where unsupported)."""
    if not sys.platform.startswith("linux"):
        return 0
    names = {str(Path(f).resolve()) for f in files}
    try:
        mappings = _mappings(names)
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    released = 0
    for start, end, written in mappings:
        if madvise(start, end - start, MADV_PAGEOUT if written else MADV_DONTNEED) == 0:
            released += end - start
    return released


def _mappings(names: set[str]) -> list[tuple[int, int, bool]]:
    """(start, end, has written pages) of every mapping of the files ``names``."""
    found: list[tuple[int, int, bool]] = []
    current: list | None = None
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
        for line in smaps:
            fields = line.split(maxsplit=5)
            if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header
                current = None
                if len(fields) == 6 and fields[5].rstrip("\n") in names:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    current = [start, end, False]
                    found.append(current)  # type: ignore[arg-type]
            elif current is not None and fields[0] == "Anonymous:" and int(fields[1]) > 0:
                current[2] = True
    return [tuple(m) for m in found]  # type: ignore[misc]
