"""``--workers N`` on one machine: N processes, each with its own loaded generator and running
batch, and this machine's CPUs shared out between them as onnxruntime threads.

The driver (this process) sends each worker requests over a pipe, keeping as many in flight as
fill its batch, always to the worker with the fewest; a reader thread per worker hands the
answers back to the driver's event loop. A worker ignores Ctrl-C (the driver ends it) and ends
by itself when the driver's end of the pipe closes, so a driver killed with ``kill -9`` leaves no
worker behind.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import signal
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from gpt2_edge.runtime import EdgeError, load

from .engine import BodyRunner
from .pools import WorkerLost, available_cpus, plural

STOP_TIMEOUT_S = 10.0  # for a worker to finish its step and exit before it is killed


@dataclass
class _Worker:
    number: int
    process: Any  # multiprocessing's SpawnProcess
    conn: Connection
    pending: dict[int, asyncio.Future] = field(default_factory=dict)
    lost: str | None = None  # the sentence once it stopped


class WorkerPool:
    """Worker processes on this machine, each with a generator.

    Args:
        path: the bundle.
        model_id: the name request bodies may give as ``model``.
        workers: processes.
        threads: onnxruntime threads per process (None: this machine's CPUs shared out).
        max_batch: most rows each process decodes together.
        provider: ``cpu``, ``cuda`` or ``auto``.
    """

    def __init__(
        self,
        path: Path,
        model_id: str,
        workers: int,
        threads: int | None,
        max_batch: int,
        provider: str,
    ):
        self.path, self.model_id, self.count = path, model_id, workers
        self.threads = threads if threads is not None else max(1, available_cpus() // workers)
        self.max_batch, self.provider = max_batch, provider
        self.slots = 0
        self.notices: list[str] = []
        self._per_worker = 0
        self._workers: list[_Worker] = []
        self._keys = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    def describe(self) -> str:
        return (
            f"{self.count} worker processes ({plural(self.threads, 'thread')} each, up to "
            f"{plural(self.max_batch, 'row')} a step each)"
        )

    def open(self) -> None:
        context = multiprocessing.get_context("spawn")  # no copy of this process's threads
        for number in range(1, self.count + 1):
            mine, theirs = context.Pipe()
            args = (theirs, self.path, self.model_id, self.threads, self.max_batch, self.provider)
            process = context.Process(
                target=serve_requests, args=args, name=f"gpt2-batch-worker-{number}", daemon=True
            )
            process.start()
            theirs.close()
            self._workers.append(_Worker(number, process, mine))
        for worker in self._workers:  # every model loaded before any request
            self._per_worker = self._ready(worker)
        self.slots = self._per_worker * self.count
        for worker in self._workers:
            threading.Thread(target=self._read, args=(worker,), daemon=True).start()

    def _ready(self, worker: _Worker) -> int:
        try:
            kind, value, notices = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join(STOP_TIMEOUT_S)
            raise EdgeError(
                f"Worker {worker.number} stopped while loading the model (exit code "
                f"{worker.process.exitcode})."
            ) from None
        if kind == "error":
            raise EdgeError(value)
        self.notices = [n for n in notices if n not in self.notices]
        return int(value)

    async def run(self, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._loop = asyncio.get_running_loop()
        lost = next((w.lost for w in self._workers if w.lost), None)
        if lost:
            raise WorkerLost(lost)
        worker = min(self._workers, key=lambda w: len(w.pending))
        key = next(self._keys)
        future = self._loop.create_future()
        worker.pending[key] = future
        try:
            worker.conn.send((key, url, body))
        except OSError:  # the worker is gone; its reader thread says so too
            worker.pending.pop(key, None)
            self._lost(worker)
            raise WorkerLost(worker.lost or "") from None
        return await future

    def _read(self, worker: _Worker) -> None:
        """The reader thread: answers back to the event loop, until the worker ends."""
        while True:
            try:
                key, status, body = worker.conn.recv()
            except (EOFError, OSError):
                self._call(self._lost, worker)
                return
            self._call(self._answer, worker, key, status, body)

    def _call(self, function: Any, *args: Any) -> None:
        if self._closing:
            return
        if self._loop is None:  # no run yet: nothing waits on a loop
            function(*args)
            return
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the run is over and its loop closed
            pass

    def _answer(self, worker: _Worker, key: int, status: int, body: dict[str, Any]) -> None:
        future = worker.pending.pop(key)
        if not future.done():
            future.set_result((status, body))

    def _lost(self, worker: _Worker) -> None:
        if self._closing or worker.lost:
            return
        worker.process.join(STOP_TIMEOUT_S)
        worker.lost = (
            f"Worker {worker.number} stopped (exit code {worker.process.exitcode}); OUTPUT holds "
            "every request finished before it: run the same command again to go on."
        )
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(WorkerLost(worker.lost))
        worker.pending.clear()

    def close(self) -> None:
        self._closing = True
        for worker in self._workers:
            try:
                worker.conn.send(None)  # finish: the worker drops what it still runs
            except OSError:
                pass
        for worker in self._workers:
            worker.process.join(STOP_TIMEOUT_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()


def serve_requests(
    conn: Connection,
    path: Path,
    model_id: str,
    threads: int,
    max_batch: int,
    provider: str,
) -> None:
    """A worker process: load the model, say so, answer requests until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it ends the workers
    try:
        gen = load(path, provider, threads)
    except EdgeError as exc:
        conn.send(("error", str(exc), []))
        return
    runner = BodyRunner(gen, model_id, max_batch)
    runner.start()
    conn.send(("ready", runner.slots, [n for n in gen.notices if n]))
    try:
        asyncio.run(_answer_requests(conn, runner))
    finally:
        runner.stop()


async def _answer_requests(conn: Connection, runner: BodyRunner) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def read() -> None:  # a thread: recv() blocks
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the driver is gone
                message = None
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if message is None:
                return

    async def answer(key: int, url: str, body: dict[str, Any]) -> None:
        status, answer = await runner.run(url, body)
        conn.send((key, status, answer))

    threading.Thread(target=read, daemon=True).start()
    tasks: set[asyncio.Task[None]] = set()
    while (message := await inbox.get()) is not None:
        task = asyncio.create_task(answer(*message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
