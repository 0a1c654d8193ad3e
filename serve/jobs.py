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
from gpt2_edge.runtime import FinishReason, GenerationOptions, SamplingSettings, TokenLogprob


@dataclass(frozen=True)
class RowSpec:
    """One choice to generate: a prompt's ids and its random generator.

    Attributes:
        prompt: (T,) int64 prompt ids, already fitted to the context.
        rng: the row's own random generator, so its samples never depend on other rows.
    """

    prompt: np.ndarray
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
        sampling: how every row's tokens are picked (settings are per request).
        options: budget, stop strings, ``ignore_eos`` and ``logprobs``, as the runtime takes them.
        generate: whether the rows generate at all (``max_tokens`` 0 with ``echo`` only scores).
        score: report the prompts' own log-probabilities first (``echo`` with ``logprobs``).
        start: score each prompt's first token after the start token too.
        stream: the client reads the events as they come (only such jobs can stall).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rows: list[RowSpec],
        sampling: SamplingSettings,
        options: GenerationOptions,
        generate: bool,
        score: bool,
        start: bool,
        stream: bool,
    ):
        self.rows, self.sampling, self.options = rows, sampling, options
        self.generate, self.score, self.start, self.stream = generate, score, start, stream
        self.joined = 0  # rows added to the batch so far (set by the scheduler's thread)
        self.cancelled = threading.Event()
        self.submitted = time.monotonic()
        self.first_token: float | None = None  # set by the scheduler
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._unread_since: float | None = None  # oldest moment an event waited unread
        self._posted = self._taken = 0
        self.on_cancel: Callable[[], None] | None = None  # wakes the scheduler

    @property
    def rows_to_join(self) -> int:
        """Rows of this job still to join the batch (none when it only scores)."""
        return len(self.rows) - self.joined if self.generate else 0

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
