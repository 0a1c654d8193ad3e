"""Answering a checked completion or chat request: queue it as a job, then stream its events as
server-sent events or collect them into one response, and free its rows when the client goes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from gpt2_edge.runtime import Generator, sequence_rng
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .access import note
from .config import RETRY_AFTER_S, ServeConfig
from .errors import ApiError, error_body
from .jobs import Failed, Job, Piece, RowSpec, Scored
from .scheduler import QueueFull, Scheduler, ShuttingDown
from .wire.protocol import GenerationRequest
from .wire.responses import (
    ChoiceText,
    Entry,
    Offsets,
    chat_body,
    chat_chunk,
    chat_logprobs,
    completion_body,
    completion_chunk,
    completion_logprobs,
    new_id,
    usage_chunk,
)

T = TypeVar("T")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class JobStream(StreamingResponse):
    """A streamed answer that frees its job's rows however the stream ends (finished, client
    gone, or the task cancelled)."""

    def __init__(self, content: AsyncIterator[str], job: Job):
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self.job = job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


class Generation:
    """Runs requests through the scheduler and answers them in OpenAI's format.

    Args:
        gen: the loaded model.
        scheduler: the running batch.
        config: the server's settings.
    """

    def __init__(self, gen: Generator, scheduler: Scheduler, config: ServeConfig):
        self.gen, self.scheduler, self.config = gen, scheduler, config

    async def answer(self, request: Request, req: GenerationRequest, model: str) -> Response:
        """Queue ``req`` and answer it as ``model``: streamed, or whole unless the client leaves
        first (a 503 with ``Retry-After`` when the queue is full)."""
        if req.stream:
            job = self.submit(req)
            return JobStream(self._stream(job, req, model, request.scope), job)
        body = await _unless_disconnected(request.receive, self.whole(req, model, request.scope))
        if body is None:
            return Response(status_code=499)
        return await run_in_threadpool(JSONResponse, body)  # rendering grows with the answer too

    async def whole(
        self, req: GenerationRequest, model: str, scope: Scope | None = None
    ) -> dict[str, Any]:
        """Queue ``req`` and collect its answer as one response body."""
        job = self.submit(req)
        try:
            return await self._collect(job, req, model, scope)
        finally:
            job.cancel()  # frees the rows if the client left or the handler was cancelled

    def submit(self, req: GenerationRequest) -> Job:
        """``req`` queued as a job.

        Raises:
            ApiError: 503 when the queue is full (with ``Retry-After``) or the server stops.
        """
        job = self._job(req)
        try:
            self.scheduler.submit(job)
        except QueueFull:
            raise ApiError(
                503,
                f"The server is busy: {self.config.max_queue} requests are waiting already; "
                "retry in a moment.",
                code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        except ShuttingDown:
            raise ApiError(503, "The server is shutting down.", code="shutting_down") from None
        return job

    def _job(self, req: GenerationRequest) -> Job:
        # The runtime's seeds: a choice's sample is its own whatever else shares the batch.
        rows = [
            RowSpec(prompt, sequence_rng(req.sampling.seed, j))
            for prompt in req.prompts
            for j in range(req.n)
        ]
        score = req.echo and req.logprobs is not None
        loop = asyncio.get_running_loop()
        return Job(
            loop, rows, req.sampling, req.options, req.max_tokens != 0, score, req.start,
            req.stream,
        )  # fmt: skip

    def _choices(self, req: GenerationRequest) -> list[ChoiceText]:
        def offsets(i: int) -> Offsets | None:
            if req.chat or req.logprobs is None:
                return None
            return Offsets(self.gen.tokenizer, len(req.prompt_texts[i // req.n]) if req.echo else 0)

        tokenizer = self.gen.tokenizer
        return [
            ChoiceText(strip_space=req.chat, offsets=offsets(i), tokenizer=tokenizer)
            for i in range(req.rows)
        ]

    async def _events(self, job: Job, req: GenerationRequest) -> AsyncIterator[Scored | Piece]:
        """The job's events one by one until every choice has finished."""
        left = req.rows
        while left:
            event = await job.next()
            if isinstance(event, Failed):
                raise ApiError(event.status, event.message)
            if isinstance(event, Scored):
                yield event
                continue
            for piece in event:
                left -= piece.finish is not None
                yield piece

    def _prompt_entries(self, req: GenerationRequest, scored: Scored) -> list[list[Entry]]:
        tokenizer = self.gen.tokenizer
        entries = []
        for tokens, prompt in zip(scored.prompts, req.prompts, strict=True):
            offsets = Offsets(tokenizer)
            entries.append(
                [
                    Entry.of(t, offsets.next(int(i)), tokenizer)
                    if t is not None
                    else Entry.unscored(tokenizer, int(i), offsets.next(int(i)))
                    for t, i in zip(tokens, prompt, strict=True)
                ]
            )
        return entries

    async def _collect(
        self, job: Job, req: GenerationRequest, model: str, scope: Scope | None
    ) -> dict[str, Any]:
        choices = self._choices(req)
        async for event in self._events(job, req):
            if isinstance(event, Scored):
                entries = self._prompt_entries(req, event)
                for i, choice in enumerate(choices):
                    choice.entries[:0] = entries[i // req.n]
            else:
                choices[event.choice].add(event)
        rid = new_id("chatcmpl" if req.chat else "cmpl")
        prompt_tokens = sum(p.size for p in req.prompts)
        _note_usage(scope, job, prompt_tokens, sum(c.tokens for c in choices))
        logprobs = req.logprobs is not None
        if req.chat:
            return await run_in_threadpool(chat_body, rid, model, choices, prompt_tokens, logprobs)
        prefixes = [req.prompt_texts[i // req.n] if req.echo else "" for i in range(req.rows)]
        # Off the event loop: an answer's size grows with its rows, tokens and log-probabilities.
        return await run_in_threadpool(
            completion_body, rid, model, choices, prefixes, prompt_tokens, logprobs
        )

    async def _stream(
        self, job: Job, req: GenerationRequest, model: str, scope: Scope
    ) -> AsyncIterator[str]:
        """Server-sent events: a chunk per released piece, the finish reason in each choice's
        last chunk, then the usage (if asked) and ``[DONE]``."""
        rid = new_id("chatcmpl" if req.chat else "cmpl")
        usage = req.include_usage
        prompt_tokens = sum(p.size for p in req.prompts)
        choices = self._choices(req)
        logprobs = req.logprobs is not None
        for i in range(req.rows):
            if req.chat:
                yield _sse(
                    chat_chunk(
                        rid, model, i, {"role": "assistant", "content": ""}, None, None, usage
                    )
                )
            elif req.echo and not logprobs:  # with logprobs, the prompt comes when scored
                yield _sse(
                    completion_chunk(rid, model, i, req.prompt_texts[i // req.n], None, None, usage)
                )
        try:
            async for event in self._events(job, req):
                if isinstance(event, Scored):
                    entries = self._prompt_entries(req, event)
                    for i in range(req.rows):
                        shown: dict[str, Any] | None = completion_logprobs(entries[i // req.n])
                        text = req.prompt_texts[i // req.n]
                        yield _sse(completion_chunk(rid, model, i, text, shown, None, usage))
                    continue
                text, entry = choices[event.choice].add(event)
                finish = choices[event.choice].finish
                if not text and entry is None and finish is None:
                    continue  # held back: part of a character or of a possible stop string
                i = event.choice
                if req.chat:
                    delta = {"content": text} if text else {}
                    shown = chat_logprobs([entry]) if entry is not None else None
                    yield _sse(chat_chunk(rid, model, i, delta, shown, finish, usage))
                else:
                    shown = completion_logprobs([entry]) if entry is not None else None
                    yield _sse(completion_chunk(rid, model, i, text, shown, finish, usage))
        except ApiError as exc:
            _note_usage(scope, job, prompt_tokens, sum(c.tokens for c in choices))
            note(scope, error=exc.message)
            yield _sse(error_body(exc.status, exc.message, exc.param, exc.code))
            return
        completion = sum(c.tokens for c in choices)
        _note_usage(scope, job, prompt_tokens, completion)
        if usage:
            yield _sse(usage_chunk(rid, model, req.chat, prompt_tokens, completion))
        yield "data: [DONE]\n\n"


def _note_usage(scope: Scope | None, job: Job, prompt_tokens: int, completion_tokens: int) -> None:
    """What the request's log line says of its tokens and its time to the first token."""
    if scope is None:  # not an HTTP request (gpt2-batch)
        return
    ttft = None if job.first_token is None else round((job.first_token - job.submitted) * 1e3, 2)
    note(scope, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, ttft_ms=ttft)


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has closed the connection."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(receive: Receive, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None if the client disconnects first (``work`` is cancelled)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        watch.cancel()
    return task.result() if task in done else None
