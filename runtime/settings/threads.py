"""The intra-op thread count a session runs with, checked once when a model is loaded."""

from __future__ import annotations

import os

from ..errors import SettingError
from .values import is_int, shown


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_threads(threads: object) -> int | None:
    """Validate an intra-op thread count: None (onnxruntime decides) or 1 to the CPUs available.

    More threads than CPUs only makes the threads wait for each other (1000 ran 70x slower).

    Raises:
        EdgeError: not an integer, below 1, or more than the CPUs this process may use.
    """
    if threads is None:
        return None
    cpus = available_cpus()
    if not is_int(threads):
        raise SettingError("threads", f"an integer from 1 to {cpus}", threads, shown(threads))
    if not 1 <= int(threads) <= cpus:
        rule = f"from 1 to {cpus} (the CPUs this process may use)"
        raise SettingError("threads", rule, threads, str(threads))
    return int(threads)
