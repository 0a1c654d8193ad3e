"""Continuous batching: one thread runs the model, and requests join the running batch between
steps.

Each turn of the loop admits the queued jobs that fit (at most ``max_batch`` rows in all), frees
the rows of jobs whose clients left or stopped reading, then runs one step of
:class:`gpt2_edge.runtime.steps.TokenSteps`: the new rows' prefill and one token for every other
row. A row's tokens never depend on what else is in the batch: the decoder computes each row as
if alone, every row has its own sampler settings and random generator, and rows with equal
settings are only picked in one call. A job's events go back to its coroutine through
:class:`.jobs.Job`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from gpt2_edge.runtime.decoder import open_decoder
from gpt2_edge.runtime.generate import Generator, RowState
from gpt2_edge.runtime.sampling import Sampler
from gpt2_edge.runtime.scoring import score_ids
from gpt2_edge.runtime.settings import SamplingSettings
from gpt2_edge.runtime.steps import Step, TokenSteps
from gpt2_edge.runtime.stream import RowText

from .config import DEFAULT_STALL_TIMEOUT_S
from .jobs import Failed, Job, Piece, Scored
from .metrics import Metrics

log = logging.getLogger("gpt2_edge.serve")

# Positions per row the KV buffers start with; they grow (doubling) when a row needs more, so a
# short request does not pay for the whole context.
CAPACITY_HINT = 256


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already."""


class ShuttingDown(Exception):
    """The scheduler no longer takes requests."""


@dataclass
class _Active:
    job: Job
    choice: int
    state: RowState


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
        self._active: dict[int, _Active] = {}  # row id in the steps -> its job and text
        self._rows = 0  # len(self._active), for the event loop's thread
        self._steps = self._new_steps()
        self._running = False
        self._thread: threading.Thread | None = None

    def _new_steps(self) -> TokenSteps:
        gen = self._gen
        decoder = open_decoder(gen.session, gen.pad_id, CAPACITY_HINT)
        # Every job brings its own sampler; this one is never used.
        return TokenSteps(decoder, Sampler(SamplingSettings(temperature=0.0)), [], [])

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
            free -= job.generating_rows
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
                    self._fail({a.job for a in self._active.values()} | set(admitted))
                    self._active.clear()
                    self._count_rows()
                    self._steps = self._new_steps()
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

    def _admit(self) -> list[Job]:
        """Take the queued jobs that fit, in order (under the lock)."""
        admitted: list[Job] = []
        free = self.max_batch - len(self._active)
        while self._queue:
            job = self._queue[0]
            if job.cancelled.is_set():
                self._queue.popleft()
                continue
            if job.generating_rows > free:
                break  # first come, first served: later jobs wait behind it
            free -= job.generating_rows
            admitted.append(self._queue.popleft())
        self._metrics.queue_depth.set(len(self._queue))
        return admitted

    def _turn(self, admitted: list[Job]) -> None:
        """Join the admitted jobs, drop the gone ones, run one step and hand out its tokens."""
        for job in admitted:
            if not job.cancelled.is_set():
                self._join(job)
        self._drop_gone()
        self._count_rows()
        if not self._active:
            return
        step = next(self._steps)
        self._metrics.step_rows.observe(len(step.tokens))
        self._deliver(step)

    def _join(self, job: Job) -> None:
        gen = self._gen
        if job.score:
            job.post(Scored(self._score(job)))
        self._metrics.prompt_tokens.inc(
            sum({id(r.prompt): r.prompt.size for r in job.rows}.values())
        )
        rows = [(i, r) for i, r in enumerate(job.rows) if r.budget > 0]
        empty = [
            Piece(i, None, "", None, r.budget_reason)
            for i, r in enumerate(job.rows)
            if not r.budget
        ]
        if empty:  # max_tokens 0: nothing to generate
            job.post(empty)
        if not rows:
            self._metrics.latency.observe(time.monotonic() - job.submitted)
            return
        ids = self._steps.add(
            [r.prompt for _, r in rows],
            [r.budget for _, r in rows],
            [r.rng for _, r in rows],
            job.sampler,
            job.logprobs,
        )
        for row_id, (choice, r) in zip(ids, rows, strict=True):
            state = RowState(
                r.prompt.size, r.budget, r.budget_reason, RowText(gen.tokenizer, job.stop)
            )
            self._active[row_id] = _Active(job, choice, state)

    def _score(self, job: Job) -> list[list]:
        """The prompts' own log-probabilities, each token after the ones before it."""
        gen, top = self._gen, job.logprobs.top if job.logprobs is not None else 0
        prompts = list({id(r.prompt): r.prompt for r in job.rows}.values())  # once per prompt
        bos = gen.bos_id
        pairs = []
        # The start token conditions the first token, unless the prompt fills the context.
        after_bos = [bos is not None and p.size < gen.context_length for p in prompts]
        for p, first in zip(prompts, after_bos, strict=True):
            context = np.array([bos], dtype=np.int64) if first else p[:1]
            pairs.append((context, p if first else p[1:]))
        scorable = [i for i, (_, target) in enumerate(pairs) if target.size]
        results = score_ids(
            gen.session, [pairs[i] for i in scorable], top, gen.tokenizer, gen.pad_id
        )
        out: list[list] = [[None] for _ in prompts]  # a lone token with no start token
        for i, result in zip(scorable, results, strict=True):
            out[i] = ([] if after_bos[i] else [None]) + list(result.logprobs)
        return out

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
        positions = [p for p, r in enumerate(self._steps.rows) if self._active[r].job in gone]
        self._steps.drop(positions)
        for row in [r for r, a in self._active.items() if a.job in gone]:
            del self._active[row]
        self._metrics.cancelled_rows.inc(len(positions))
        for job in gone:  # a stalled stream's coroutine is still there, waiting for events
            job.cancel()
            job.post(Failed(408, "The client stopped reading the stream; generation stopped."))

    def _deliver(self, step: Step) -> None:
        """Turn the step's tokens into text pieces per job; drop the rows that finished."""
        now = time.monotonic()
        pieces: dict[Job, list[Piece]] = {}
        done: list[int] = []
        count = 0
        for position, (row, tokens) in enumerate(zip(self._steps.rows, step.tokens, strict=True)):
            active = self._active[row]
            job, state = active.job, active.state
            reports = step.logprobs[position] if step.logprobs is not None else None
            for k, token in enumerate(tokens):
                count += 1
                text, reason = state.add(token, job.eos)
                logprob = reports[k] if reports is not None else None
                pieces.setdefault(job, []).append(
                    Piece(active.choice, token, text, logprob, reason)
                )
                if reason is not None:
                    done.append(position)
                    break
        self._metrics.generated_tokens.inc(count)
        for job, items in pieces.items():
            if job.first_token is None:
                job.first_token = now
                self._metrics.ttft.observe(now - job.submitted)
            job.post(items)
        if done:
            finished = [self._steps.rows[p] for p in done]
            self._steps.drop(done)
            for row in finished:
                job = self._active.pop(row).job
                if not any(a.job is job for a in self._active.values()):
                    self._metrics.latency.observe(now - job.submitted)
        self._count_rows()

    def _count_rows(self) -> None:
        # The gauge follows every change: after the last rows finish the loop sleeps, and a
        # gauge set only before a step would show them forever.
        self._rows = len(self._active)
        self._metrics.batch_rows.set(self._rows)
