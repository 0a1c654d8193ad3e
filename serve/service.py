"""gpt2-serve's work without the HTTP: one model, its running batch (the scheduler on the
runtime's engine) and the OpenAI wire format's checks and answers.

The HTTP app (``app.py``) adds reading bodies, streaming, disconnects and the routes; ``gpt2-batch``
answers its lines through :meth:`Service.respond`, so a batch line gets exactly what a ``POST``
gets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gpt2_edge.runtime import Generator
from starlette.concurrency import run_in_threadpool

from .config import ServeConfig
from .errors import ApiError, error_body
from .generation import Generation
from .metrics import Metrics
from .scheduler import Scheduler
from .wire.protocol import GenerationRequest, chat_request, completion_request

log = logging.getLogger("gpt2_edge.serve")

# The generation routes and the check of each one's body.
CHECKS: dict[str, Callable[..., GenerationRequest]] = {
    "/v1/completions": completion_request,
    "/v1/chat/completions": chat_request,
}
ROUTES = tuple(CHECKS)


class Service:
    """The server's model, scheduler and request handling.

    Args:
        gen: the loaded model.
        config: the server's settings.
        metrics: where to count (default: a registry of its own).
    """

    def __init__(self, gen: Generator, config: ServeConfig, metrics: Metrics | None = None):
        self.gen, self.config = gen, config
        self.metrics = metrics or Metrics()
        self.scheduler = Scheduler(
            gen, config.max_batch, config.max_queue, self.metrics, config.stall_timeout
        )
        self.generation = Generation(gen, self.scheduler, config)

    def start(self) -> None:
        """Start the model thread."""
        self.scheduler.start()

    def stop(self) -> None:
        """Stop the model thread after its current step; requests left fail with a 503."""
        self.scheduler.stop()

    def model_name(self, model: object) -> str:
        """The name to answer with for a body's ``model`` (absent: the first served name).

        Raises:
            ApiError: not a string (400), or a name this server does not serve (404).
        """
        if model is not None and not isinstance(model, str):
            raise ApiError(400, "model must be a string.", "model")
        name = self.config.answer_name(model)
        if name is None:
            raise self.unknown_model(str(model))
        return name

    def unknown_model(self, model: str) -> ApiError:
        served = ", ".join(repr(n) for n in self.config.listed)
        return ApiError(
            404,
            f"The model {model[:100]!r} does not exist; this server serves {served} (any name "
            "is taken when it runs with --served-model-name '*').",
            "model",
            "model_not_found",
        )

    async def checked(self, route: str, body: dict[str, Any]) -> tuple[GenerationRequest, str]:
        """``body`` POSTed to ``route`` (one of :data:`ROUTES`) checked, and the model name to
        answer with. Tokenizing a long prompt takes a while: off the event loop."""
        model = self.model_name(body.get("model"))
        check = CHECKS[route]
        return await run_in_threadpool(check, body, self.gen), model

    async def respond(self, route: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The status code and whole response body that ``body`` POSTed to ``route`` gets; an
        error is OpenAI's error object with its 4xx or 5xx status. A streamed request is
        answered whole."""
        try:
            req, model = await self.checked(route, body)
            return 200, await self.generation.whole(req, model)
        except ApiError as exc:
            return exc.status, exc.body()
        except Exception:  # a bug: answered as the server answers it, with a 500 and a log
            log.exception("the server failed on a request")
            return 500, error_body(500, "The server failed on this request.")
