"""The one adapter between ``gpt2-batch`` and the server's and runtime's insides: everything that
runs one request body, and the model choice ``gpt2-serve`` makes.

A batch line's body goes through exactly what a ``POST`` to ``gpt2-serve`` goes through, without
the HTTP: the same field checks (``protocol``), the same continuous-batching scheduler, the same
response builder (``Generation``'s whole-answer path) and the same error objects. This is the
only module of the package that imports anything but the runtime's public names; when the server
offers a public function for running a body, :meth:`BodyRunner.run` becomes a call to it.

What it takes from ``gpt2_edge.serve`` today: ``protocol.completion_request`` and
``protocol.chat_request`` (check a body), ``scheduler.Scheduler`` (the running batch),
``generation.Generation._job`` and ``._collect`` (a checked request as a job, and its events as
one response body), ``errors.ApiError``/``error_body`` (OpenAI's error object),
``app.Api`` (it builds the scheduler and ``Generation`` as the server does, and words an unknown
``model``), ``metrics.Metrics``, ``config.ServeConfig``, ``DEFAULT_MAX_BATCH`` and
``DEFAULT_MAX_BODY_BYTES``, and ``cli.MAX_BATCH_LIMIT``. ``Api.body`` checks the body's ``model``
field while it reads the HTTP body, so its two-line rule is repeated in :meth:`_check_model`.
From the runtime beyond its public names: ``contract.models_dir`` (``--model`` as a folder or a
name in ``models/``, and the default), ``graph.providers.resolve_provider`` and
``api.DEFAULT_PROVIDER``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from gpt2_edge.runtime import Generator
from gpt2_edge.runtime.api import DEFAULT_PROVIDER
from gpt2_edge.runtime.contract.models_dir import (
    MODELS_DIR,
    choice_notice,
    default_model,
    named_model,
)
from gpt2_edge.runtime.graph.providers import resolve_provider
from gpt2_edge.serve.app import Api
from gpt2_edge.serve.cli import MAX_BATCH_LIMIT
from gpt2_edge.serve.config import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, ServeConfig
from gpt2_edge.serve.errors import ApiError, error_body
from gpt2_edge.serve.metrics import Metrics
from gpt2_edge.serve.protocol import chat_request, completion_request

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
# The routes a batch line may name, and the server's check of each one's body.
CHECKS = {"/v1/completions": completion_request, "/v1/chat/completions": chat_request}
URLS = tuple(CHECKS)
# Requests queued beyond the rows of the batch, so that a finished row is refilled at the next
# step instead of after a round trip to the driver (and, for workers, a pipe or network hop).
QUEUED_PER_ROW = 1


def model_path(model: Path | None, provider: str) -> tuple[Path, str | None]:
    """The bundle ``--model`` names (a folder, or a name in ``models/``), or gpt2-serve's
    default when it is None; with the notice saying which one was taken, if any."""
    if model is not None:
        return named_model(model), None
    cuda = resolve_provider(provider).name == "cuda"
    path = default_model(MODELS_DIR, cuda)
    return path, choice_notice(path)


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
        config = ServeConfig(model_id, max_batch=max_batch, max_queue=self.slots)
        self._api = Api(gen, config, Metrics())
        self._scheduler, self._generation = self._api.scheduler, self._api.generation

    def start(self) -> None:
        """Start the model thread."""
        self._scheduler.start()

    def stop(self) -> None:
        """Stop the model thread after its current step; requests left fail with a 503."""
        self._scheduler.stop()

    async def run(self, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The status code and response body gpt2-serve gives ``body`` POSTed to ``url``
        (one of :data:`URLS`); an error is OpenAI's error object with its 4xx or 5xx status."""
        try:
            return 200, await self._answer(url, body)
        except ApiError as exc:
            return exc.status, exc.body()
        except Exception:  # a bug: the server answers it with a 500 and logs the traceback
            log.exception("gpt2-batch failed on a request")
            return 500, error_body(500, "The server failed on this request.")

    async def _answer(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check_model(body.get("model"))
        if body.get("stream") is True:  # other values: the server's own sentence
            raise ApiError(
                400,
                "stream is not available in a batch: each output line holds a whole response.",
                "stream",
            )
        check = CHECKS[url]
        # Tokenizing a long prompt takes a while; the server does it off the event loop too.
        req = await asyncio.to_thread(check, body, self.gen, self.max_batch)
        generation = self._generation
        job = generation._job(req)
        self._scheduler.submit(job)  # never full: the driver keeps at most `slots` in flight
        try:
            return await generation._collect(job, req)
        finally:
            job.cancel()  # frees the rows if the driver gave up on it (Ctrl-C)

    def _check_model(self, model: object) -> None:
        """gpt2-serve's rule for ``model``: absent, or the served bundle's name."""
        if model is not None and not isinstance(model, str):
            raise ApiError(400, "model must be a string.", "model")
        if model is not None and model != self.model_id:
            raise self._api.unknown_model(model)
