"""``runtime/graph/pageout.py``: the mapped pages of a weight file leave the process's resident
memory
and their data stays what the file holds."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest
from gpt2_edge.runtime.graph.pageout import release_file_pages

SIZE = 8 << 20


def resident_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
            inside = len(head) == 6 and head[5] == str(path.resolve())
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux's")
def test_released_pages_leave_memory_and_read_back_the_same(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 255, SIZE, dtype=np.uint8)
    path = tmp_path / "model.onnx.data"
    path.write_bytes(data.tobytes())
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as mapped:
        view = np.frombuffer(mapped, dtype=np.uint8)
        assert int(view[:: mmap.PAGESIZE].sum()) >= 0  # touch every page
        before = resident_kib(path)
        assert before >= SIZE // 1024 * 0.9
        released = release_file_pages([path, tmp_path / "not-mapped"])
        if released == 0:
            pytest.skip("this kernel refuses madvise on the mapping (a sandbox)")
        assert released == SIZE
        assert resident_kib(path) < before / 2
        np.testing.assert_array_equal(view, data)  # read back from the file
        del view


def test_nothing_mapped_releases_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    assert release_file_pages([tmp_path / "a"]) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux's")
def test_pages_the_process_wrote_are_kept(tmp_path: Path) -> None:
    """A written (copy-on-write) page of a private mapping must keep what was written there."""
    path = tmp_path / "model.onnx.data"
    path.write_bytes(bytes(SIZE // 8))
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as mapped:
        mapped[100] = 7  # this page is now the process's own copy
        release_file_pages([path])
        assert mapped[100] == 7 and path.read_bytes()[100] == 0
