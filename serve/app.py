"""The ASGI app: OpenAI's routes, the page, health, metrics and tokenizer routes, the API key
check and CORS, and every error in OpenAI's shape.

Middleware, outermost first: request counting (so that every answer counts), CORS (so that a
preflight is answered before the key check, and errors carry CORS headers), the key check.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from gpt2_edge.runtime import EdgeError, Generator
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .access import RequestRecorder
from .browser import ISOLATION, BrowserFiles
from .config import ServeConfig
from .errors import ApiError, error_body
from .metrics import Metrics
from .service import Service
from .wire.chat import transcript
from .wire.protocol import parse_json

log = logging.getLogger("gpt2_edge.serve")
PUBLIC_PATHS = frozenset({"/", "/health"})  # no key needed: the page asks for it, probes don't
# The browser runtime's code (browser.py): a module import cannot send a key, and it holds none.
PUBLIC_PREFIXES = ("/browser/",)
# How /metrics labels the routes with a path parameter (one label each, whatever the path).
PREFIX_LABELS = {
    "/v1/models/": "/v1/models/{model}",
    "/bundle/": "/bundle/{name}",
    "/browser/": "/browser/{path}",
}
# The page loads nothing from elsewhere; the policy makes the browser hold it to that. Its "in
# this browser" mode imports the runtime's modules from this server and compiles WebAssembly.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; "
    "style-src 'unsafe-inline'"
)


class KeyCheck:
    """ASGI middleware: every non-public route needs ``Authorization: Bearer <key>``; a CORS
    preflight (``OPTIONS``) never does."""

    def __init__(self, app: ASGIApp, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] != "OPTIONS"
            and scope["path"] not in PUBLIC_PATHS
            and not scope["path"].startswith(PUBLIC_PREFIXES)
            and not self._allowed(dict(scope["headers"]).get(b"authorization", b""))
        ):
            error = ApiError(
                401,
                "A valid API key is needed: send 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, header: bytes) -> bool:
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.key)


class Api:
    """The route handlers, around the server's :class:`.service.Service`."""

    def __init__(self, gen: Generator, config: ServeConfig, metrics: Metrics):
        self.gen, self.config, self.metrics = gen, config, metrics
        self.service = Service(gen, config, metrics)
        self.scheduler, self.generation = self.service.scheduler, self.service.generation

    async def body(self, request: Request) -> dict[str, Any]:
        """The request's JSON object, read up to the size limit (a 413 beyond it)."""
        limit = self.config.max_body_bytes
        too_big = ApiError(
            413, f"The request body is larger than {limit:,} bytes.", code="request_too_large"
        )
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise ApiError(
                415,
                f"The request body is {encoding[:40]!r}-encoded; this server reads only "
                "unencoded bodies (no Content-Encoding).",
                code="unsupported_encoding",
            )
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise too_big
        data = bytearray()
        try:
            async for chunk in request.stream():
                data += chunk
                if len(data) > limit:
                    raise too_big
        except ClientDisconnect:  # nobody will read the answer; no traceback for it
            raise ApiError(400, "The client left before sending the whole body.") from None
        body = await run_in_threadpool(parse_json, bytes(data))  # off the loop: 4 MiB take ~60 ms
        self.service.model_name(body.get("model"))  # every route refuses a model it lacks
        return body

    async def generate(self, request: Request) -> Response:
        """``/v1/completions`` and ``/v1/chat/completions``."""
        body = await self.body(request)
        req, model = await self.service.checked(request.url.path, body)
        return await self.generation.answer(request, req, model)

    async def models(self, request: Request) -> Response:
        data = [self._model(name) for name in self.config.listed]
        return JSONResponse({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        return JSONResponse(self._model(self.service.model_name(request.path_params["model"])))

    def _model(self, name: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "gpt2-edge",
            "max_model_len": self.gen.context_length,  # vLLM's field: clients size windows by it
        }

    async def tokenizer_info(self, request: Request) -> Response:
        """vLLM's ``/tokenizer_info``: the tokenizer's configuration, as transformers'
        ``tokenizer_config.json`` has it (lm-evaluation-harness's remote tokenizer asks)."""
        return JSONResponse(self._tokenizer_info)

    @functools.cached_property
    def _tokenizer_info(self) -> dict[str, Any]:
        tokenizer, special = self.gen.tokenizer.backend, self.gen.manifest.special_tokens

        def token(role: str) -> str | None:
            index = special.get(role)
            return None if index is None else tokenizer.id_to_token(int(index))

        return {
            "tokenizer_class": "GPT2TokenizerFast",
            "model_max_length": self.gen.context_length,
            "bos_token": token("bos") or token("eos"),
            "eos_token": token("eos"),
            "unk_token": token("eos"),
            "pad_token": token("pad"),
            "add_bos_token": False,  # GPT-2 adds no start token when it encodes
            "add_prefix_space": False,
            "clean_up_tokenization_spaces": False,
            "errors": "replace",
        }

    async def health(self, request: Request) -> Response:
        if self.scheduler.alive:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable"}, status_code=503)

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.text(), media_type="text/plain; version=0.0.4")

    async def tokenize(self, request: Request) -> Response:
        """``{"prompt": text}`` or ``{"messages": [...]}`` (the chat template) to token ids."""
        body = await self.body(request)
        text = transcript(body["messages"]) if "messages" in body else body.get("prompt")
        if not isinstance(text, str):
            raise ApiError(400, "prompt must be a string (or give messages).", "prompt")
        # Off the event loop, as all work that grows with the request (tokenizing, checking,
        # decoding, rendering): 16 large /detokenize requests stalled /health for 5.75 s.
        return await run_in_threadpool(self._tokenized, text)

    def _tokenized(self, text: str) -> Response:
        try:
            tokens = self.gen.tokenizer.encode(text).tolist()
        except EdgeError as exc:
            raise ApiError(400, str(exc), "prompt") from None
        return JSONResponse(
            {"tokens": tokens, "count": len(tokens), "max_model_len": self.gen.context_length}
        )

    async def detokenize(self, request: Request) -> Response:
        """``{"tokens": [ids]}`` to ``{"prompt": text}``."""
        body = await self.body(request)
        return await run_in_threadpool(self._detokenized, body.get("tokens"))

    def _detokenized(self, tokens: Any) -> Response:
        vocab = self.gen.session.arch.vocab_size
        if not isinstance(tokens, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in tokens
        ):
            raise ApiError(
                400, f"tokens must be a list of token ids from 0 to {vocab - 1}.", "tokens"
            )
        # decode() works in pieces, so that the event loop's thread gets the GIL between them.
        return JSONResponse({"prompt": self.gen.tokenizer.decode(tokens)})

    async def page(self, request: Request) -> Response:
        html = resources.files(__package__).joinpath("static/index.html").read_text("utf-8")
        # Cross-origin isolated (ISOLATION), so that "in this browser" runs on WASM threads.
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_POLICY, **ISOLATION})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {
        404: f"There is no route {request.url.path[:200]!r}.",
        405: f"{request.url.path[:200]!r} does not take {request.method}.",
    }.get(exc.status_code, str(exc.detail))
    return JSONResponse(
        error_body(exc.status_code, message), status_code=exc.status_code, headers=exc.headers
    )


async def _bug(request: Request, exc: Exception) -> Response:
    return JSONResponse(error_body(500, "The server failed on this request."), status_code=500)


def create_app(gen: Generator, config: ServeConfig) -> Starlette:
    """The server for one loaded model; its scheduler runs while the app's lifespan does.

    Args:
        gen: the model, loaded once.
        config: the server's settings.
    """
    metrics = Metrics()
    api = Api(gen, config, metrics)
    files = BrowserFiles(gen)
    routes = [
        Route("/", api.page),
        Route("/health", api.health),
        Route("/metrics", api.metrics_text),
        Route("/v1/models", api.models),
        Route("/v1/models/{model:path}", api.model),
        Route("/v1/completions", api.generate, methods=["POST"]),
        Route("/v1/chat/completions", api.generate, methods=["POST"]),
        Route("/tokenizer_info", api.tokenizer_info),
        Route("/tokenize", api.tokenize, methods=["POST"]),
        Route("/detokenize", api.detokenize, methods=["POST"]),
        Route("/bundle/{name:path}", files.bundle_file),
        Route("/browser/{path:path}", files.runtime_file),
    ]
    fixed = frozenset(r.path for r in routes if "{" not in r.path)

    def label(path: str) -> str:
        if path in fixed:
            return path
        return next((shown for p, shown in PREFIX_LABELS.items() if path.startswith(p)), "other")

    middleware = [Middleware(RequestRecorder, metrics=metrics, label=label)]
    if config.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    if config.api_key:
        middleware.append(Middleware(KeyCheck, key=config.api_key))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        api.scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(api.scheduler.stop)

    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _bug},
        lifespan=lifespan,
    )
    app.state.api = api
    app.state.end_work = api.scheduler.stop  # the server's first step on shutdown (server.py)
    return app
