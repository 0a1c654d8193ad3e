"""How much memory this process may use: the machine's, or less under a memory cgroup (a
container, a systemd unit, ``tests/memcg.py``).

:func:`gpt2_edge.runtime.load` opens the graph and reads the tokenizer at the same time when memory
is plentiful: the tokenizer then costs no time on a second core, but the two peaks add up (GPT-2
124M int8 needed a 204 MiB cgroup instead of 192). On a device with little memory it does one after
the other.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 60  # cgroup v1 writes a huge number for "no limit"


def memory_limit() -> int | None:
    """Bytes this process may use (the least of the machine's memory and its memory cgroups'
    limits), or None where that cannot be read (not Linux)."""
    limits = [_physical()] + [_cgroup_limit(path) for path in _cgroup_paths()]
    known = [n for n in limits if n is not None and 0 < n < UNLIMITED]
    return min(known) if known else None


def _physical() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_paths() -> list[Path]:
    """This process's memory cgroup folder and the folders above it (v1 and v2)."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            base = CGROUP
        elif "memory" in controllers.split(","):
            base = CGROUP / "memory"
        else:
            continue
        folder = base / path.lstrip("/")
        found += [folder, *[p for p in folder.parents if p.is_relative_to(base)]]
    return found


def _cgroup_limit(folder: Path) -> int | None:
    for name in ("memory.max", "memory.limit_in_bytes"):
        try:
            text = (folder / name).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        return int(text) if text.isdigit() else None  # "max": no limit
    return None
