"""Two ``gpt2-serve`` replicas behind Debian's nginx, run with the configuration the docs give
(``docs/nginx-replicas.conf``, only its three ports changed), under 16 concurrent clients.

A replica killed with SIGKILL mid-run: every non-streamed request still succeeds with the right
answer (nginx retries it on the other replica), and every stream either ends complete or ends
in a way the client sees (a cut chunked body), never as a shorter stream that looks whole. A
replica stopped with SIGTERM mid-run: non-streamed requests succeed again, and its streams end
with a clean error event. nginx runs as the test's user with its own prefix, on 127.0.0.1; the
test's own main configuration around the docs' file adds the replica's address to the access log
and to each response (``X-Upstream``), so that the test knows which replica answered what.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "docs" / "nginx-replicas.conf"
DOC = ROOT / "docs" / "scale-out.md"
DOC_PORTS = {"balancer": 8000, "a": 8001, "b": 8002}  # as the docs' file has them
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
CLIENTS, ROUNDS, MAX_TOKENS = 16, 6, 100
START_TIMEOUT_S = 60.0
PROMPTS = ["The history of the city", "A river runs", "Music of the old", "Stone and light"]


def test_the_docs_show_the_tested_configuration() -> None:
    """docs/scale-out.md shows docs/nginx-replicas.conf whole, so the two cannot drift apart."""
    shown = re.search(r"```nginx\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert shown is not None, "docs/scale-out.md shows no nginx block"
    assert shown.group(1) == CONFIG.read_text(encoding="utf-8")


@dataclass
class Outcome:
    """One client request: how it ended."""

    stream: bool
    status: int | None = None
    text: str = ""
    complete: bool = False  # the whole answer came ([DONE] for a stream)
    error_event: str | None = None  # a stream's error event
    cut: str | None = None  # the transport error the client saw
    whole_events: bool = True  # every event that came was whole JSON
    upstream: str = ""  # the replica that answered (nginx's $upstream_addr)


def body(i: int, stream: bool) -> dict[str, Any]:
    return {
        "prompt": PROMPTS[i % len(PROMPTS)],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


def ask(http: Any, i: int, stream: bool, watched: int, streaming: threading.Event) -> Outcome:
    """Request ``i``; ``streaming`` is set once a stream from the replica on port ``watched``
    has brought two events (its answer has begun: nginx can no longer retry it)."""
    import httpx

    out = Outcome(stream)
    try:
        if not stream:
            response = http.post("/v1/completions", json=body(i, False))
            out.status = response.status_code
            if response.status_code == 200:
                choice = response.json()["choices"][0]
                out.text, out.complete = choice["text"], choice["finish_reason"] == "length"
            return out
        with http.stream("POST", "/v1/completions", json=body(i, True)) as response:
            out.status = response.status_code
            out.upstream = response.headers.get("x-upstream", "")
            events = 0
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                events += 1
                if events == 2 and out.upstream == f"127.0.0.1:{watched}":
                    streaming.set()
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    out.complete = True
                    continue
                try:
                    event = json.loads(data)
                except ValueError:
                    out.whole_events = False
                    continue
                if "error" in event:
                    out.error_event = event["error"]["message"]
                else:
                    out.text += event["choices"][0]["text"]
    except httpx.HTTPError as exc:
        out.cut = f"{type(exc).__name__}: {exc}"
    return out


class Replica:
    """A ``gpt2-serve`` process on 127.0.0.1 (port 0: a free one)."""

    def __init__(self, bundle: Path, port: int = 0):
        command = [sys.executable, "-m", "gpt2_edge.serve", "--model", str(bundle)]
        command += ["--port", str(port), "--threads", "1", "--max-batch", "8", "--provider", "cpu"]
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            self.port = self._started()
            self.warm()
        except BaseException:
            self.stop()
            raise

    def _started(self) -> int:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        for line in self.proc.stderr:
            if "http://" in line:
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drained
                return int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
            assert time.monotonic() < deadline
        raise AssertionError(f"gpt2-serve did not start (exit code {self.proc.wait()})")

    def warm(self) -> None:
        """One short request straight to the replica: its first steps take a second or more (as
        a deploy's health check would, before the balancer sends it work)."""
        import httpx

        short = {**body(0, False), "max_tokens": 2}
        url = f"http://127.0.0.1:{self.port}/v1/completions"
        httpx.post(url, json=short, timeout=START_TIMEOUT_S).raise_for_status()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nginx_config(work: Path, ports: dict[str, int]) -> Path:
    """The docs' file with the three ports changed, inside a main configuration of the test's
    own (prefix, pid, logs and temporary files in ``work``; the access log names each request's
    replicas, and so does a response header, which the docs' server and location inherit)."""
    site = CONFIG.read_text(encoding="utf-8")
    for name, port in DOC_PORTS.items():
        site, count = re.subn(rf"\b127\.0\.0\.1:{port}\b", f"127.0.0.1:{ports[name]}", site)
        assert count == 1, name
    (work / "gpt2-serve.conf").write_text(site)
    temp = "\n".join(
        f"    {kind}_temp_path {work}/{kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers need the test's folders
    main = f"""daemon off;
{user}worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format replicas '$request_method $status "$upstream_addr" "$upstream_status"';
    access_log {work}/access.log replicas;
    add_header X-Upstream $upstream_addr always;
{temp}
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {work}/gpt2-serve.conf;
}}
"""
    conf = work / "nginx.conf"
    conf.write_text(main)
    return conf


def start_nginx(work: Path, conf: Path, port: int) -> subprocess.Popen:
    assert NGINX is not None
    proc = subprocess.Popen(
        [NGINX, "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)


def phase(base: str, port: int, stop: Any) -> list[Outcome]:
    """CLIENTS clients, ROUNDS requests each, streamed and not in turn; ``stop()`` runs as soon
    as a stream is under way on the replica on ``port``."""
    import httpx

    streaming = threading.Event()

    def client(c: int) -> list[Outcome]:
        with httpx.Client(base_url=base, timeout=60) as http:
            return [ask(http, c + r, (c + r) % 2 == 0, port, streaming) for r in range(ROUNDS)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, c) for c in range(CLIENTS)]
        assert streaming.wait(START_TIMEOUT_S), "no stream ran on the replica"
        stop()
        return [o for f in futures for o in f.result()]


def served_by(work: Path, port: int, after: int = 0) -> list[str]:
    """Access log lines (from line ``after``) of requests that went to the replica on ``port``
    first."""
    lines = (work / "access.log").read_text().splitlines()[after:]
    return [line for line in lines if f'"127.0.0.1:{port}' in line]


@pytest.mark.nginx
def test_replicas_behind_nginx_survive_a_replica_that_dies(
    bundle: Path, gen: Any, tmp_path: Path
) -> None:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    pytest.importorskip("httpx")
    expected = {
        p: gen.generate(p, max_new_tokens=MAX_TOKENS, temperature=0, ignore_eos=True).text
        for p in PROMPTS
    }
    replicas: list[Replica] = []

    def replica(port: int = 0) -> Replica:
        replicas.append(Replica(bundle, port))
        return replicas[-1]

    with ExitStack() as running:  # whatever started is stopped, however the test ends
        running.callback(lambda: [r.stop() for r in replicas])
        a, b = replica(), replica()
        ports = {"balancer": free_port(), "a": a.port, "b": b.port}
        nginx = start_nginx(tmp_path, nginx_config(tmp_path, ports), ports["balancer"])
        running.callback(lambda: (nginx.terminate(), nginx.wait(timeout=30)))
        base = f"http://127.0.0.1:{ports['balancer']}"

        # 1. SIGKILL: a crash. Requests in flight on it are retried on b; its streams are cut.
        crashed = phase(base, a.port, a.stop)
        check_answers(crashed, expected)
        assert any(o.cut for o in crashed)
        assert {o.upstream for o in crashed if o.cut} == {f"127.0.0.1:{a.port}"}
        assert not any(o.error_event for o in crashed)
        retried = [x for x in served_by(tmp_path, a.port) if f"127.0.0.1:{b.port}" in x]
        assert any(x.startswith("POST 200") for x in retried), "no request was retried on b"

        # 2. SIGTERM: a clean stop. Once nginx sends to the new a again, stop b.
        a = replica(a.port)
        logged = len((tmp_path / "access.log").read_text().splitlines())
        wait_until_used(base, tmp_path, a.port, logged)
        stopped = phase(base, b.port, lambda: b.proc.send_signal(signal.SIGTERM))
        check_answers(stopped, expected)
        assert not any(o.cut for o in stopped), [o.cut for o in stopped if o.cut]
        ended = [o.error_event for o in stopped if o.error_event]
        assert ended and set(ended) == {"The server is shutting down."}
        # uvicorn ends by re-raising the signal once its graceful shutdown is done
        assert b.proc.wait(timeout=30) in (0, -signal.SIGTERM)


def check_answers(outcomes: list[Outcome], expected: dict[str, str]) -> None:
    assert len(outcomes) == CLIENTS * ROUNDS
    texts = set(expected.values())
    for o in outcomes:
        assert o.whole_events, o  # never half an event
        if not o.stream:
            assert o.status == 200 and o.complete and o.text in texts, o
        elif o.complete:
            assert o.text in texts and o.cut is None and o.error_event is None, o
        else:  # a stream that did not finish says so
            assert o.cut or o.error_event, o


def wait_until_used(base: str, work: Path, port: int, after: int) -> None:
    """Send requests until nginx has sent one to the replica on ``port`` (after its
    fail_timeout, nginx tries a failed replica again)."""
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    short = {**body(0, False), "max_tokens": 2}
    with httpx.Client(base_url=base, timeout=60) as http:
        while not [x for x in served_by(work, port, after) if x.startswith("POST 200")]:
            assert time.monotonic() < deadline, "nginx never sent to the restarted replica"
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda _: http.post("/v1/completions", json=short), range(4)))
            time.sleep(0.2)
