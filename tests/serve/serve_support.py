"""Helpers for the server's tests: a real uvicorn server on a free 127.0.0.1 port in a thread of
the test process, and a model slowed down enough for a person (or a test) to act mid-generation.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from gpt2_edge.runtime import Generator
from gpt2_edge.serve import ServeConfig, create_app
from gpt2_edge.serve.server import bind, make_server, url

START_TIMEOUT_S = 20.0
POLL_S = 0.02


class Server:
    """A running server: its base ``url``, its app (for the scheduler's state) and the uvicorn
    server (``uvicorn.should_exit = True`` is what Ctrl-C does)."""

    def __init__(self, base: str, app: Any, server: uvicorn.Server):
        self.url, self.app, self.uvicorn = base, app, server

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics`` (0 when it has not been recorded yet)."""
        shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = "^" + re.escape(name + (f"{{{shown}}}" if shown else "")) + r" (\S+)$"
        found = re.search(pattern, self.get("/metrics"), re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def wait_for(self, condition: Any, timeout: float = 10.0, what: str = "") -> None:
        """Poll ``condition()`` until it is true; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or condition}")
            time.sleep(POLL_S)


@contextmanager
def running(gen: Generator, **config: Any) -> Iterator[Server]:
    """Serve ``gen`` on a free loopback port until the block ends."""
    config.setdefault("model_names", ("tiny",))
    app = create_app(gen, ServeConfig(**config))
    sock = bind("127.0.0.1", 0)
    server = make_server(app)  # as gpt2-serve runs it
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(POLL_S)
    try:
        yield Server(url(sock), app, server)
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
        sock.close()


class SlowOrt:
    """An onnxruntime session that waits ``delay`` seconds before each decoder call."""

    def __init__(self, inner: Any, delay: float):
        self._inner, self._delay = inner, delay

    def run_with_iobinding(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self._delay)
        return self._inner.run_with_iobinding(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def slowed(gen: Generator, delay: float) -> Generator:
    """``gen``'s model behind a session whose every step takes at least ``delay`` seconds: a
    tiny model run at the pace of a big one, so that a client can act mid-generation."""
    session = copy.copy(gen.session)
    session.ort = SlowOrt(gen.session.ort, delay)
    return Generator(session, gen.tokenizer)


def openai_client(server: Server, **kwargs: Any) -> Any:
    """OpenAI's own client on ``server``, without retries (a 503 must reach the test)."""
    from openai import OpenAI

    kwargs.setdefault("api_key", "unused")
    return OpenAI(base_url=server.url + "/v1", max_retries=0, timeout=30, **kwargs)
