"""A request as the scheduler sees it: its rows, how to pick their tokens, and the channel that
carries what they produce from the scheduler's thread to the request's coroutine.

The scheduler thread :meth:`Job.post`\\ s events; the event loop :meth:`Job.next`\\ s them. The
coroutine sets :attr:`Job.cancelled` when its client goes away, and the scheduler frees the
job's rows at the next step boundary. A job whose events sit unread for too long (a client that
stopped reading a stream) counts as gone too (:meth:`Job.stalled`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from gpt2_edge.runtime.results import FinishReason, TokenLogprob
from gpt2_edge.runtime.sampling import Sampler
from gpt2_edge.runtime.steps import Logprobs


@dataclass(frozen=True)
class RowSpec:
    """One choice to generate: a prompt's ids, its budget and its random generator.

    Attributes:
        prompt: (T,) int64 prompt ids, already fitted to the context.
        budget: most new tokens (0: generate nothing, as ``max_tokens=0`` with ``echo`` asks).
        budget_reason: the finish reason when the budget runs out (``length`` or ``context``).
        rng: the row's own random generator, so its samples never depend on other rows.
    """

    prompt: np.ndarray
    budget: int
    budget_reason: FinishReason
    rng: np.random.Generator


@dataclass(frozen=True)
class Piece:
    """One generated token of one choice.

    Attributes:
        choice: index of the choice in the request (prompt ``i``, sample ``j``: ``i * n + j``).
        token: the token id; None for the end of a choice that generates nothing.
        text: the text it releases ("" while a character or a possible stop string is held).
        logprob: its log-probability when asked, else None.
        finish: the finish reason when this token ended the choice, else None.
    """

    choice: int
    token: int | None
    text: str
    logprob: TokenLogprob | None
    finish: FinishReason | None


@dataclass(frozen=True)
class Scored:
    """The prompts' own token log-probabilities (``echo`` with ``logprobs``), one list per
    prompt; an entry is None where nothing came before the token to condition on."""

    prompts: list[list[TokenLogprob | None]]


@dataclass(frozen=True)
class Failed:
    """The job cannot finish: an HTTP status and one sentence."""

    status: int
    message: str


Event = list[Piece] | Scored | Failed


class Job:
    """One request's rows and the channel back to its coroutine.

    Args:
        loop: the event loop the request's coroutine runs on.
        rows: the choices, in order.
        sampler: picks every row's tokens (settings are per request).
        logprobs: what to report per token (None: nothing).
        stop: stop strings.
        eos: the end-of-text id, or None to ignore it.
        score: report the prompts' own log-probabilities first (``echo`` with ``logprobs``).
        stream: the client reads the events as they come (only such jobs can stall).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rows: list[RowSpec],
        sampler: Sampler,
        logprobs: Logprobs | None,
        stop: tuple[str, ...],
        eos: int | None,
        score: bool,
        stream: bool,
    ):
        self.rows, self.sampler, self.logprobs = rows, sampler, logprobs
        self.stop, self.eos, self.score, self.stream = stop, eos, score, stream
        self.cancelled = threading.Event()
        self.submitted = time.monotonic()
        self.first_token: float | None = None  # set by the scheduler
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._unread_since: float | None = None  # oldest moment an event waited unread
        self._posted = self._taken = 0
        self.on_cancel: Callable[[], None] | None = None  # wakes the scheduler

    @property
    def generating_rows(self) -> int:
        """Rows this job takes in the batch (choices with a budget)."""
        return sum(1 for r in self.rows if r.budget > 0)

    def post(self, event: Event) -> None:
        """Hand an event to the coroutine (from the scheduler's thread)."""
        if self._posted == self._taken:
            self._unread_since = time.monotonic()
        self._posted += 1
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop has closed: nobody is left to read it
            self.cancelled.set()

    async def next(self) -> Event:
        """The next event (on the event loop)."""
        event = await self._queue.get()
        self._taken += 1
        self._unread_since = None if self._taken == self._posted else time.monotonic()
        return event

    def cancel(self) -> None:
        """The client is gone: free the rows at the next step (from any thread)."""
        if not self.cancelled.is_set():
            self.cancelled.set()
            if self.on_cancel is not None:
                self.on_cancel()

    def stalled(self, now: float, timeout: float) -> bool:
        """Whether a streamed event has waited unread for more than ``timeout`` seconds."""
        since = self._unread_since
        return self.stream and since is not None and now - since > timeout
