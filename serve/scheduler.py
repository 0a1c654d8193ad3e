"""Continuous batching: one thread runs the runtime's engine (the running batch), and requests
join it between steps.

Each turn of the loop admits the queued jobs that fit (at most ``max_batch`` rows in all), frees
the rows of jobs whose clients left or stopped reading, then runs one step of the engine: the new
rows' prefill and one token for every other row, each turned into text, stop strings and
log-probabilities by the engine itself. This module adds only the queue, the jobs' channels and
the metrics. A row's tokens never depend on what else is in the batch (the engine's promise). A
job's events go back to its coroutine through :class:`.jobs.Job`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from gpt2_edge.runtime import Engine, Generator, StreamEvent

from .config import DEFAULT_STALL_TIMEOUT_S
from .jobs import Failed, Job, Piece, Scored
from .metrics import Metrics

log = logging.getLogger("gpt2_edge.serve")


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already."""


class ShuttingDown(Exception):
    """The scheduler no longer takes requests."""


@dataclass(frozen=True)
class _Active:
    job: Job
    choice: int


class Scheduler:
    """Runs a :class:`Generator`'s model on one thread for every request.

    Args:
        generator: the loaded model.
        max_batch: most rows (choices) decoded together.
        max_queue: most requests waiting for rows; more are refused (:class:`QueueFull`).
        metrics: where to count what happens.
        stall_timeout: seconds a streamed event may wait unread before the job is dropped.
    """

    def __init__(
        self,
        generator: Generator,
        max_batch: int,
        max_queue: int,
        metrics: Metrics,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT_S,
    ):
        self._gen, self.max_batch, self.max_queue = generator, max_batch, max_queue
        self._metrics, self._stall_timeout = metrics, stall_timeout
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._active: dict[int, _Active] = {}  # the engine's row id -> its job and choice
        self._rows = 0  # len(self._active), for the event loop's thread
        self._engine: Engine = generator.engine()
        self._running = False
        self._thread: threading.Thread | None = None

    # --- the event loop's side ------------------------------------------------------------------

    def start(self) -> None:
        """Start the model thread."""
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="gpt2-serve-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests, end the thread after its current step, fail what is left."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the model thread runs (``/health``)."""
        return self._running and self._thread is not None and self._thread.is_alive()

    def submit(self, job: Job) -> None:
        """Queue a job; it joins the batch at the next step with room for its rows.

        Raises:
            QueueFull: ``max_queue`` requests wait already.
            ShuttingDown: the server is stopping.
        """
        with self._cond:
            if not self.alive:
                raise ShuttingDown
            if self._waiting([*self._queue, job]) > self.max_queue:
                raise QueueFull
            job.on_cancel = self._wake
            self._queue.append(job)
            self._metrics.queue_depth.set(len(self._queue))
            self._cond.notify()

    def _waiting(self, queue: list[Job]) -> int:
        """Jobs of ``queue`` that will not find rows at the next step (the others are only
        passing through the queue)."""
        free = self.max_batch - self._rows
        for count, job in enumerate(queue):
            free -= job.rows_to_join
            if free < 0:
                return len(queue) - count
        return 0

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # --- the model thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._running and not self._queue and not self._active:
                        self._cond.wait()
                    if not self._running:
                        break
                    admitted = self._admit()
                try:
                    self._turn(admitted)
                except Exception:  # a bug: fail the jobs in flight, start again with no rows
                    log.exception("the scheduler failed a step; failing the requests in it")
                    gone = {a.job for a in self._active.values()} | {j for j, _ in admitted}
                    self._fail(gone)
                    self._active.clear()
                    self._count_rows()
                    self._engine = self._gen.engine()
        finally:
            with self._cond:
                self._running = False
                queued, self._queue = list(self._queue), deque()
            self._fail({a.job for a in self._active.values()} | set(queued), shutdown=True)
            self._active.clear()
            self._metrics.queue_depth.set(0)
            self._metrics.batch_rows.set(0)

    def _fail(self, jobs: set[Job], shutdown: bool = False) -> None:
        message = "The server is shutting down." if shutdown else "The server failed this request."
        for job in jobs:
            job.post(Failed(503 if shutdown else 500, message))

    def _admit(self) -> list[tuple[Job, int]]:
        """Take the queued jobs that fit, in order, each with how many of its rows join now
        (under the lock). A job with more rows than the batch has room for joins in parts:
        its first rows now, the next ones as rows come free; it keeps the head of the queue
        meanwhile (first come, first served)."""
        admitted: list[tuple[Job, int]] = []
        free = self.max_batch - len(self._active)
        while self._queue:
            job = self._queue[0]
            if job.cancelled.is_set():
                self._queue.popleft()
                continue
            take = min(free, job.rows_to_join)
            if job.rows_to_join and not take:
                break  # no room: later jobs wait behind it
            admitted.append((job, take))
            free -= take
            if take < job.rows_to_join:
                break  # the rest of it joins later
            self._queue.popleft()
        self._metrics.queue_depth.set(len(self._queue))
        return admitted

    def _turn(self, admitted: list[tuple[Job, int]]) -> None:
        """Join the admitted jobs, drop the gone ones, run one step and hand out its tokens."""
        for job, take in admitted:
            if not job.cancelled.is_set():
                self._join(job, take)
        self._drop_gone()
        self._count_rows()
        if not self._active:
            return
        events = self._engine.step()
        self._metrics.step_rows.observe(len({e.row for e in events}))
        self._deliver(events)

    def _join(self, job: Job, take: int) -> None:
        """Add ``take`` more of ``job``'s rows to the batch (its scoring comes with the first)."""
        engine = self._engine
        if not job.joined:
            prompts = list({id(r.prompt): r.prompt for r in job.rows}.values())  # once each
            if job.score:
                top = job.options.logprobs or 0
                job.post(Scored(engine.score(prompts, top, job.start)))
            self._metrics.prompt_tokens.inc(sum(p.size for p in prompts))
        if not job.generate:  # max_tokens 0: nothing to generate
            job.post([Piece(i, None, "", None, "length") for i in range(len(job.rows))])
            self._metrics.latency.observe(time.monotonic() - job.submitted)
            return
        first = job.joined
        rows = job.rows[first : first + take]
        ids = engine.add([r.prompt for r in rows], job.sampling, job.options, [r.rng for r in rows])
        job.joined += take
        for k, row_id in enumerate(ids):
            self._active[row_id] = _Active(job, first + k)

    def _drop_gone(self) -> None:
        """Free the rows of jobs whose client left or stopped reading."""
        now = time.monotonic()
        gone = {
            a.job
            for a in self._active.values()
            if a.job.cancelled.is_set() or a.job.stalled(now, self._stall_timeout)
        }
        if not gone:
            return
        rows = [r for r, a in self._active.items() if a.job in gone]
        self._engine.cancel(rows)
        for row in rows:
            del self._active[row]
        self._metrics.cancelled_rows.inc(len(rows))
        for job in gone:  # a stalled stream's coroutine is still there, waiting for events
            job.cancel()
            job.post(Failed(408, "The client stopped reading the stream; generation stopped."))

    def _deliver(self, events: list[StreamEvent]) -> None:
        """Hand the step's events to their jobs; forget the rows that finished."""
        now = time.monotonic()
        pieces: dict[Job, list[Piece]] = {}
        for event in events:
            active = self._active[event.row]
            finish = event.result.finish_reason if event.result is not None else None
            piece = Piece(active.choice, event.token, event.text, event.logprob, finish)
            pieces.setdefault(active.job, []).append(piece)
            if finish is not None:
                del self._active[event.row]
                job = active.job
                if not job.rows_to_join and not any(a.job is job for a in self._active.values()):
                    self._metrics.latency.observe(now - job.submitted)
        self._metrics.generated_tokens.inc(len(events))
        for job, items in pieces.items():
            if job.first_token is None:
                job.first_token = now
                self._metrics.ttft.observe(now - job.submitted)
            job.post(items)
        self._count_rows()

    def _count_rows(self) -> None:
        # The gauge follows every change: after the last rows finish the loop sleeps, and a
        # gauge set only before a step would show them forever.
        self._rows = len(self._active)
        self._metrics.batch_rows.set(self._rows)
