"""The one adapter between ``gpt2-batch`` and the server: a batch line's body goes through
exactly what a ``POST`` to ``gpt2-serve`` goes through, without the HTTP, by the server's own
:class:`gpt2_edge.serve.service.Service` (the same field checks, the same continuous-batching
scheduler on the runtime's engine, the same response builder and error objects).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gpt2_edge.runtime import DEFAULT_PROVIDER, Generator, pick_model
from gpt2_edge.serve.cli import MAX_BATCH_LIMIT
from gpt2_edge.serve.config import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, ServeConfig
from gpt2_edge.serve.errors import ApiError
from gpt2_edge.serve.service import ROUTES, Service

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_PROVIDER",
    "MAX_BATCH_LIMIT",
    "MAX_BODY_BYTES",
    "URLS",
    "BodyRunner",
    "model_path",
]

log = logging.getLogger("gpt2_edge.batch")

MAX_BODY_BYTES = DEFAULT_MAX_BODY_BYTES  # the largest body gpt2-serve reads
URLS = ROUTES  # the routes a batch line may name
# Requests queued beyond the rows of the batch, so that a finished row is refilled at the next
# step instead of after a round trip to the driver (and, for workers, a pipe or network hop).
QUEUED_PER_ROW = 1


def model_path(model: Path | None, provider: str) -> tuple[Path, str | None]:
    """The bundle ``--model`` names (a folder, or a name in ``models/``), or gpt2-serve's
    default when it is None; with the notice saying which one was taken, if any."""
    path, _, notice = pick_model(model, provider)
    return path, notice


class BodyRunner:
    """Answers request bodies as ``gpt2-serve`` would, through one running batch.

    Args:
        gen: the loaded model.
        model_id: the name a body's ``model`` may give (the bundle folder's name).
        max_batch: most rows decoded together (gpt2-serve's ``--max-batch``).
    """

    def __init__(self, gen: Generator, model_id: str, max_batch: int = DEFAULT_MAX_BATCH):
        self.gen, self.model_id, self.max_batch = gen, model_id, max_batch
        self.slots = max_batch * (1 + QUEUED_PER_ROW)  # requests worth having in flight
        config = ServeConfig((model_id,), max_batch=max_batch, max_queue=self.slots)
        self._service = Service(gen, config)

    def start(self) -> None:
        """Start the model thread."""
        self._service.start()

    def stop(self) -> None:
        """Stop the model thread after its current step; requests left fail with a 503."""
        self._service.stop()

    async def run(self, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The status code and response body gpt2-serve gives ``body`` POSTed to ``url``
        (one of :data:`URLS`); an error is OpenAI's error object with its 4xx or 5xx status."""
        if body.get("stream") is True:  # other values: the server's own sentence
            error = ApiError(
                400,
                "stream is not available in a batch: each output line holds a whole response.",
                "stream",
            )
            return error.status, error.body()
        # Never a full queue: the driver keeps at most `slots` requests in flight.
        return await self._service.respond(url, body)
