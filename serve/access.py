"""One line per request on stderr, and the request counter: what happened to each request, so
that an error can be found by its line.

A line holds the method, the path, the status, the prompt and generated tokens, the time to the
first token and the latency, and for a 4xx or 5xx the error's sentence; as text (default) or as
one JSON object (``--log-format json``). Successful requests log at INFO, 4xx at WARNING and 5xx
at ERROR, so ``--log-level warning`` keeps only the errors.

The route handlers leave what they know in the request's state (:func:`note`); the middleware
writes the line when the response has ended, streams included.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL
from .metrics import Metrics

LOGGER = "gpt2_edge.serve"
ACCESS = logging.getLogger(f"{LOGGER}.access")
_NOTES = "gpt2_edge"  # the key of this module's notes in the request's state
_PATH_CHARS = 200  # a path is the client's: logged up to this long
_ORDER = ("prompt_tokens", "completion_tokens", "ttft_ms", "latency_ms", "error")


def note(scope: Scope, **facts: Any) -> None:
    """Record facts about the request whose ASGI ``scope`` this is, for its log line
    (``prompt_tokens``, ``completion_tokens``, ``ttft_ms``, ``error``)."""
    scope.setdefault("state", {}).setdefault(_NOTES, {}).update(facts)


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, "access", None)
        stamp = _stamp(record.created)
        if fields is None:  # the server's other messages (a failed step's traceback)
            return f"{stamp} {record.levelname} {super().format(record)}"
        head = f"{stamp} {record.levelname} {fields['method']} {fields['path']} {fields['status']}"
        rest = [f"{k}={json.dumps(fields[k], ensure_ascii=False)}" for k in _ORDER if k in fields]
        return " ".join([head, *rest])


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "access", None) or {"message": super().format(record)}
        return json.dumps({"time": _stamp(record.created), "level": record.levelname, **fields})


def _stamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def configure_logging(level: str = DEFAULT_LOG_LEVEL, fmt: str = DEFAULT_LOG_FORMAT) -> None:
    """Send the server's log (access lines and failures) to stderr at ``level``, as ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json() if fmt == "json" else _Text())
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


class RequestRecorder:
    """ASGI middleware: counts each HTTP response by route and status code, and logs it.

    Args:
        app: the wrapped application.
        metrics: where to count.
        label: a request path's route label (a few fixed values, so that unknown paths cannot
            grow the metric without bound).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, label: Callable[[str], str]):
        self.app, self.metrics, self.label = app, metrics, label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope.setdefault("state", {})
        status = 500  # what the client gets if the app fails before it starts a response
        error = bytearray()  # an error response's body, for its sentence

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400:
                error.extend(message.get("body", b"")[:4096])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.requests.labels(self.label(scope["path"]), str(status)).inc()
            self._log(scope, status, bytes(error), time.perf_counter() - started)

    def _log(self, scope: Scope, status: int, error: bytes, seconds: float) -> None:
        level = (
            logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        )
        if not ACCESS.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "method": scope.get("method", ""),
            "path": scope.get("path", "")[:_PATH_CHARS],
            "status": status,
            **scope["state"].get(_NOTES, {}),
            "latency_ms": round(seconds * 1e3, 2),
        }
        if status >= 400 and "error" not in fields:
            fields["error"] = _sentence(error)
        ACCESS.log(level, "request", extra={"access": fields})


def _sentence(body: bytes) -> str:
    """The message of an OpenAI-shaped error body (what the client was told)."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:300]
