"""The server's settings and their defaults, in one place (the CLI's flags map onto them)."""

from __future__ import annotations

from dataclasses import dataclass

from gpt2_edge.runtime import EdgeError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# 16 rows reach ~3.5x the tokens/s of one on two cores (benchmarks/bench_serve.py); past that a
# step's time grows about as fast as its rows.
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_QUEUE = 64
# A prompt fills GPT-2's context at 131,072 characters, up to 6 bytes each once JSON-escaped.
DEFAULT_MAX_BODY_BYTES = 4 << 20
RETRY_AFTER_S = 1  # what a 503 for a full queue tells the client to wait
# A streamed event unread this long means the client stopped reading: its rows are freed.
DEFAULT_STALL_TIMEOUT_S = 30.0
# Rows (prompts x n) one request may ask for: more than --max-batch run in parts through the
# queue, up to this many (each part holds the model for its turn; past it, send several requests).
MAX_REQUEST_ROWS = 1024
# A served model name that accepts whatever name a client sends (a one-model server, as
# llama.cpp's answers with its one model whatever the name).
ANY_MODEL = "*"
MAX_NAME_CHARS = 200  # a served model name
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL = "text", "info"


def check_api_key(key: str | None, name: str = "api_key") -> None:
    """Refuse a key that clients cannot send, however it was given (``--api-key``, the
    environment, ``ServeConfig``): an empty one would start an open server, and HTTP header
    values are bytes, of which only printable ASCII reads the same in every client's encoding
    (the key check strips spaces around it).

    Args:
        key: the key, or None for none.
        name: where it came from, for the message (the flag or the environment variable).
    """
    if key is None:
        return
    if not isinstance(key, str):
        raise EdgeError(f"{name} must be a string, got {type(key).__name__}.")
    if not key.strip():
        raise EdgeError(f"{name} is empty; give a key or leave it out.")
    if not all("!" <= c <= "~" for c in key):
        raise EdgeError(
            f"{name} must be printable ASCII without spaces, as clients send it in an HTTP header."
        )


@dataclass(frozen=True)
class ServeConfig:
    """What one server instance runs with.

    Attributes:
        model_names: the names clients may pass as ``model``, the first one listed first and used
            in answers to requests that name none (default: the bundle folder's name);
            ``*`` among them accepts any name.
        max_batch: most rows decoded together (default 16).
        max_queue: most requests waiting for rows; more get a 503 (default 64).
        api_key: when set, every API route needs ``Authorization: Bearer <key>`` (default None);
            printable ASCII without spaces (:func:`check_api_key`), never empty.
        cors_origins: origins allowed to call from a browser; none turns CORS off (default).
        max_body_bytes: largest request body; more is a 413 (default 4 MiB).
        stall_timeout: seconds a streamed event may wait unread before the request is dropped
            (default 30).
    """

    model_names: tuple[str, ...]
    max_batch: int = DEFAULT_MAX_BATCH
    max_queue: int = DEFAULT_MAX_QUEUE
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S

    def __post_init__(self) -> None:
        check_api_key(self.api_key)

    @property
    def listed(self) -> tuple[str, ...]:
        """The names ``/v1/models`` lists (all but ``*``)."""
        return tuple(n for n in self.model_names if n != ANY_MODEL)

    def answer_name(self, requested: str | None) -> str | None:
        """The name to answer a request with: the one it asked for when served (or any name is),
        the first listed name when it named none; None when the name is not served."""
        if requested is None:
            return self.listed[0]
        if requested in self.model_names or ANY_MODEL in self.model_names:
            return requested
        return None
