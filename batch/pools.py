"""Where a batch's requests run: the interface the driver sees, and the simplest pool, one loaded
generator in this process.

A pool is opened once (the model loads; a user's mistake is one sentence here, before any
work), answers request bodies concurrently (:meth:`Pool.run`, as many at once as
:attr:`Pool.slots`, so that every continuous batch stays full) and is closed at the end. The
other pools are :class:`.workers.WorkerPool` (processes on this machine) and
:class:`.ray_run.RayPool` (actors on a Ray cluster).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from gpt2_edge.runtime import load

from .engine import BodyRunner


class WorkerLost(Exception):
    """A worker stopped mid-run; its sentence says which and what to do."""


class Pool(Protocol):
    """Runs request bodies on loaded generators."""

    slots: int  # requests worth having in flight at once
    notices: list[str]  # what loading the model had to say (a provider fallback), once open

    def describe(self) -> str:
        """Where the requests run, for the log ("1 process", "2 worker processes ...")."""
        ...

    def open(self) -> None:
        """Load the model everywhere it runs.

        Raises:
            EdgeError: the model cannot be loaded, or the workers cannot be started.
        """
        ...

    async def run(self, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """gpt2-serve's status code and response body for ``body`` POSTed to ``url``.

        Raises:
            WorkerLost: the worker running it stopped.
        """
        ...

    def close(self) -> None:
        """Stop every worker (requests still running are dropped)."""
        ...


def plural(count: int, noun: str) -> str:
    """``1 thread``, ``2 threads``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def available_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class InProcessPool:
    """One generator, loaded in this process, with its scheduler on a thread.

    Args:
        path: the bundle.
        model_id: the name request bodies may give as ``model``.
        threads: onnxruntime intra-op threads (None: onnxruntime decides).
        max_batch: most rows decoded together.
        provider: ``cpu``, ``cuda`` or ``auto``.
    """

    def __init__(
        self, path: Path, model_id: str, threads: int | None, max_batch: int, provider: str
    ):
        self.path, self.model_id, self.threads = path, model_id, threads
        self.max_batch, self.provider = max_batch, provider
        self.slots = 0
        self.notices: list[str] = []
        self._runner: BodyRunner | None = None

    def describe(self) -> str:
        threads = plural(self.threads, "thread") if self.threads else "onnxruntime's threads"
        return f"this process ({threads}, up to {plural(self.max_batch, 'row')} a step)"

    def open(self) -> None:
        gen = load(self.path, self.provider, self.threads)
        self.notices = [n for n in gen.notices if n]
        self._runner = BodyRunner(gen, self.model_id, self.max_batch)
        self.slots = self._runner.slots
        self._runner.start()

    async def run(self, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert self._runner is not None, "open() the pool first"
        return await self._runner.run(url, body)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.stop()
