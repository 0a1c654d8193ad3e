"""Listening: bind the socket first (so a busy port is one sentence and ``--port 0`` can say
which port it got), warn when the server is reachable from other machines without a key, then
run uvicorn on that socket."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn
from gpt2_edge.runtime import EdgeError, Terminated
from starlette.applications import Starlette

# After Ctrl-C the scheduler stops and open streams end; a client that stopped reading gets
# this long before its connection is cut.
GRACEFUL_SHUTDOWN_S = 5


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: any free port), with Nagle's
    algorithm off for every connection it accepts.

    ``socket.create_server`` makes a socket of protocol 0, and asyncio turns TCP_NODELAY on only
    for accepted sockets whose protocol is IPPROTO_TCP; without it a kept-alive connection waited
    ~40 ms per non-streamed response (Nagle's algorithm meeting the client's delayed ACK), and
    the openai SDK, langchain and ``llm`` all keep connections alive. The socket is made with
    IPPROTO_TCP, and the listener carries TCP_NODELAY too (Linux passes it on to accepted ones).

    Raises:
        EdgeError: the host does not resolve, or the address cannot be bound.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise EdgeError(f"Cannot listen on {host!r}: {exc.strerror}.") from None
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as create_server does
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address[:2])
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise EdgeError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    return sock


def url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_loopback(sock: socket.socket) -> bool:
    """Whether only this machine can reach the socket."""
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


def exposure_warning(sock: socket.socket, api_key: str | None) -> str | None:
    """A warning when other machines can reach the server and it needs no key."""
    if api_key or is_loopback(sock):
        return None
    return (
        f"Warning: {url(sock)} can be reached from other machines and needs no API key; "
        "anyone who can reach it can use it (set --api-key)."
    )


class EndingServer(uvicorn.Server):
    """A uvicorn server that ends the app's work first when it shuts down.

    uvicorn waits for open responses before it runs the lifespan's shutdown, so a stream would
    run on until the graceful timeout cancels it mid-event (a traceback, and no last event for
    the client). Stopping the work first (``app.state.end_work``: the scheduler fails its jobs
    with "shutting down") lets every open stream send its last event and end at once.
    """

    def __init__(self, config: uvicorn.Config, end_work: Callable[[], None] | None):
        super().__init__(config)
        self._end_work = end_work
        self.stopped_by: int | None = None  # the first signal that stopped it

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stopped_by is None:
            self.stopped_by = sig
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._end_work is not None:
            await asyncio.to_thread(self._end_work)  # waits for the step in progress
        await super().shutdown(sockets)


def make_server(app: Starlette, log_level: str = "warning") -> EndingServer:
    """The uvicorn server for ``app``; ``.run(sockets=[sock])`` serves until Ctrl-C or SIGTERM."""
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return EndingServer(config, getattr(app.state, "end_work", None))


def serve(app: Starlette, sock: socket.socket, log_level: str = "warning") -> None:
    """Run ``app`` on ``sock`` until Ctrl-C or SIGTERM (blocks), then end as that signal ends a
    command: KeyboardInterrupt (exit 130) or :class:`Terminated` (128 + its number).

    uvicorn re-raises the signal it caught once it has shut down, but from inside
    ``asyncio.run``, whose own SIGINT handler then only cancels the main task: when the task
    has no await left the cancel is lost and the process exited 0 (a race, seen in about one
    run in ten). The server notes the signal, and it is raised here, outside the loop.
    """
    server = make_server(app, log_level)
    server.run(sockets=[sock])
    if server.stopped_by == signal.SIGINT:
        raise KeyboardInterrupt
    if server.stopped_by is not None:
        raise Terminated(server.stopped_by)
