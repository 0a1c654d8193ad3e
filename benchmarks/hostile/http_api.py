"""Hostile requests to a running ``gpt2-serve``: bodies of every wrong shape, type and size,
routes and methods it does not have, HTTP it cannot parse, a disconnect storm, a full queue.

Each 4xx answer must be OpenAI's error object; after each case /health must still answer, and a
prober thread times /health throughout: any answer slower than :data:`LOOP_STALL_S` marks the
case that ran then as a defect (a blocked event loop).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from typing import Any

from .common import Case, Fixtures, Outcome

H = "HTTP API"
LOOP_STALL_S = 1.0
OK, ANY = (200,), (200, 400, 404, 405, 413, 415, 422)
CHAT = [{"role": "user", "content": "hi"}]


class Server:
    """The gpt2-serve under test: its address, and the prober's worst /health time."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)
        self._thread.start()

    def _probe(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                request(self, "GET", "/health", None, timeout=30)
            except OSError:
                pass
            self.worst = max(self.worst, time.perf_counter() - started)
            time.sleep(0.05)

    def take_worst(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    def stop(self) -> None:
        self._stop.set()


def request(
    server: Server,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _error_shape(status: int, raw: bytes) -> str | None:
    if status < 400:
        return None
    try:
        error = json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        return f"{status} without OpenAI's error object: {raw[:120]!r}"
    if set(error) != {"message", "type", "param", "code"} or not error["message"]:
        return f"error object of another shape: {error}"
    if "\n" in error["message"] or "Traceback" in error["message"]:
        return f"error message of several lines: {error['message'][:120]!r}"
    return None


def _case(name: str, method: str, path: str, body: Any, want: tuple[int, ...], headers=None):
    def go(fx: Fixtures) -> Outcome:
        server: Server = fx.server
        status, _, raw = request(server, method, path, body, headers)
        problem = _error_shape(status, raw)
        if status not in want:
            problem = f"status {status}, wanted {want}: {raw[:160]!r}"
        if status >= 500:
            problem = f"status {status}: {raw[:160]!r}"
        return Outcome("defect", problem) if problem else _ok_or_error(status, raw)

    return Case(H, name, go)


def _ok_or_error(status: int, raw: bytes) -> Outcome:
    if status >= 400:
        return Outcome("clean error", json.loads(raw)["error"]["message"][:160])
    return Outcome("accepted", raw[:80].decode("utf-8", "replace"))


def _completion(name: str, body: Any, want: tuple[int, ...] = (400,), **kw) -> Case:
    return _case(name, "POST", "/v1/completions", body, want, **kw)


def _chat(name: str, body: dict, want: tuple[int, ...] = (400,)) -> Case:
    return _case(name, "POST", "/v1/chat/completions", body, want)


P = {"prompt": "Hello", "max_tokens": 2}
M = {"messages": CHAT, "max_tokens": 2}
BODIES = [
    ("body empty", b""), ("body truncated", b"{"), ("body a list", b"[]"), ("body null", b"null"),
    ("body a string", b'"x"'), ("body 1e999", b"1e999"),
    ("body nested 100k", b"[" * 100_000 + b"]" * 100_000),
    ("body integer of 5000 digits", b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}"),
    ("body NaN", b'{"prompt": "x", "temperature": NaN}'),
    ("body duplicate key", b'{"prompt": "a", "prompt": 5}'),
    ("body utf-16", json.dumps(P).encode("utf-16")),
    ("body trailing garbage", json.dumps(P).encode() + b"}}"),
    ("body 5 MiB", b'{"prompt": "' + b"x" * (5 << 20) + b'"}'),
    ("temperature 1e400", b'{"prompt": "x", "temperature": 1e400}'),
]  # fmt: skip
FIELDS = [
    ("prompt a number", {"prompt": 5}),
    ("prompt empty list", {"prompt": []}),
    ("prompt empty id list", {"prompt": [[]]}),
    ("prompt mixed list", {"prompt": [1, "a"]}),
    ("prompt id past vocabulary", {"prompt": [50257]}),
    ("prompt negative id", {"prompt": [-1]}),
    ("prompt boolean ids", {"prompt": [True, False]}),
    ("prompt float ids", {"prompt": [1.0, 2.0]}),
    ("prompt over the context", {"prompt": "word " * 40_000}),
    ("prompt lone surrogate", b'{"prompt": "\\ud800 x"}'),
    ("prompt 2000 strings", {"prompt": ["a"] * 2000}),
    ("n zero", {**P, "n": 0}), ("n 65", {**P, "n": 65}), ("n 2**40", {**P, "n": 2**40}),
    ("n true", {**P, "n": True}), ("best_of true", {**P, "best_of": True}),
    ("best_of 1.0", {**P, "best_of": 1.0}), ("best_of 3", {**P, "best_of": 3}),
    ("max_tokens -1", {**P, "max_tokens": -1}), ("max_tokens 0 no echo", {**P, "max_tokens": 0}),
    ("max_tokens 2.0", {**P, "max_tokens": 2.0}),
    ("logprobs 6", {**P, "logprobs": 6}), ("logprobs -1", {**P, "logprobs": -1}),
    ("seed -1", {**P, "seed": -1}), ("seed string", {**P, "seed": "1"}),
    ("stop empty", {**P, "stop": ""}), ("stop list with empty", {**P, "stop": ["a", ""]}),
    ("stop a number", {**P, "stop": 5}), ("stream yes", {**P, "stream": "yes"}),
    ("stream_options without stream", {**P, "stream_options": {"include_usage": True}}),
    ("suffix given", {**P, "suffix": "x"}), ("logit_bias given", {**P, "logit_bias": {"1": 5}}),
    ("user a number", {**P, "user": 5}),
    ("presence_penalty 2.0000001", {**P, "presence_penalty": 2.0000001}),
    ("top_p zero", {**P, "top_p": 0}), ("min_p true", {**P, "min_p": True}),
    ("num_beams runtime-only", {**P, "num_beams": 2}),
    ("truncate runtime-only", {**P, "truncate": "left"}),
    ("ignore_eos string", {**P, "ignore_eos": "true"}),
    ("echo_start_token alone", {**P, "echo_start_token": True}),
    ("model a number", {**P, "model": 5}),
]  # fmt: skip
FIELDS_OK = [
    ("prompt ids", {"prompt": [[464, 3290], [50256]], "max_tokens": 1}),
    ("prompt NUL and emoji", {"prompt": "\u0000😀\u202e", "max_tokens": 2}),
    ("prompt 20 strings in parts", {"prompt": ["a"] * 20, "max_tokens": 1}),
    ("max_tokens 10**20", {**P, "max_tokens": 10**20}),
    ("echo scoring", {"prompt": "The city", "max_tokens": 0, "echo": True, "logprobs": 5}),
    ("echo start token", {"prompt": "The city", "max_tokens": 0, "echo": True, "logprobs": 1,
                          "echo_start_token": True}),
    ("temperature -0.0", {**P, "temperature": -0.0}),
    ("seed 2**64", {**P, "seed": 2**64, "temperature": 1}),
    ("stop 1000 strings", {**P, "stop": [f"s{i}" for i in range(1000)]}),
    ("top_k 10**30", {**P, "top_k": 10**30, "temperature": 1}),
    ("repetition_penalty 1e-300", {**P, "repetition_penalty": 1e-300}),
    ("n 16 at temperature 0", {**P, "n": 16, "temperature": 0}),
    ("logprobs 5 stream", {**P, "logprobs": 5, "stream": True}),
    ("unknown fields ignored", {**P, "frobnicate": {"x": [1]}}),
]  # fmt: skip
CHATS = [
    ("messages missing", {"max_tokens": 2}), ("messages empty", {"messages": []}),
    ("messages a string", {"messages": "hi"}),
    ("role robot", {"messages": [{"role": "robot", "content": "x"}]}),
    ("content null", {"messages": [{"role": "user", "content": None}]}),
    ("content image", {"messages": [{"role": "user", "content": [{"type": "image_url",
                                                                  "image_url": {"url": "x"}}]}]}),
    ("tools given", {**M, "tools": [{"type": "function", "function": {"name": "f"}}]}),
    ("tools a string", {**M, "tools": "f"}),
    ("response_format json", {**M, "response_format": {"type": "json_object"}}),
    ("top_logprobs 21", {**M, "logprobs": True, "top_logprobs": 21}),
    ("top_logprobs alone", {**M, "top_logprobs": 2}), ("echo on chat", {**M, "echo": True}),
    ("max_completion_tokens 0", {**M, "max_completion_tokens": 0}),
    ("logprobs 1 (not a bool)", {**M, "logprobs": 1}),
    ("10k messages", {"messages": CHAT * 10_000}),
]  # fmt: skip
CHATS_OK = [
    ("content text parts", {"messages": [{"role": "user", "content": [{"type": "text",
                                                                       "text": "hi"}]}]}),
    ("logprobs top 20", {**M, "logprobs": True, "top_logprobs": 20}),
    ("system and assistant turns", {"messages": [{"role": "system", "content": "be brief"},
                                                 *CHAT, {"role": "assistant", "content": "ok"},
                                                 *CHAT], "max_tokens": 2}),
]  # fmt: skip
ROUTES = [
    ("GET completions", "GET", "/v1/completions", None, (405,)),
    ("PUT models", "PUT", "/v1/models", None, (405,)),
    ("unknown model path", "GET", "/v1/models/gpt-4", None, (404,)),
    ("model path NUL", "GET", "/v1/models/%00", None, (404,)),
    ("path traversal", "GET", "/../../etc/passwd", None, (404,)),
    ("tokenize a number", "POST", "/tokenize", {"prompt": 5}, (400,)),
    ("tokenize messages", "POST", "/tokenize", {"messages": CHAT}, OK),
    ("detokenize past vocabulary", "POST", "/detokenize", {"tokens": [50257]}, (400,)),
    ("detokenize empty", "POST", "/detokenize", {"tokens": []}, OK),
    ("detokenize a string", "POST", "/detokenize", {"tokens": "abc"}, (400,)),
    ("detokenize 500k ids", "POST", "/detokenize", {"tokens": [464, 3290] * 250_000}, OK),
    ("tokenize 4 MiB prompt", "POST", "/tokenize", {"prompt": "ab " * 1_300_000}, OK),
    ("OPTIONS without CORS", "OPTIONS", "/v1/completions", None, (405,)),
    ("metrics", "GET", "/metrics", None, OK),
    ("tokenizer_info", "GET", "/tokenizer_info", None, OK),
    ("models", "GET", "/v1/models", None, OK),
]  # fmt: skip


def _encoded(fx: Fixtures) -> Outcome:
    return _case("gzip", "POST", "/v1/completions", json.dumps(P).encode(), (415,),
                 {"Content-Encoding": "gzip"}).run(fx)  # fmt: skip


def _raw(name: str, data: bytes, want: tuple[int, ...], hold: float = 0.0):
    """Bytes straight onto a socket (HTTP the client library would not send)."""

    def go(fx: Fixtures) -> Outcome:
        server: Server = fx.server
        with socket.create_connection((server.host, server.port), timeout=30) as sock:
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):  # it stopped reading: fine
                pass
            time.sleep(hold)
            if hold:
                sock.shutdown(socket.SHUT_WR)
            reply = b""
            try:
                while chunk := sock.recv(65536):
                    reply += chunk
            except (TimeoutError, ConnectionResetError):
                pass
        status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else None
        if status is None and None in want:
            return Outcome("clean error", "connection closed")
        if status not in want:
            return Outcome("defect", f"status {status}, wanted {want}: {reply[:120]!r}")
        return Outcome("clean error" if status >= 400 else "accepted", str(status))

    return go


def _disconnect_storm(fx: Fixtures) -> Outcome:
    """32 streaming clients that leave after their first chunk; the server frees their rows."""
    server: Server = fx.server
    body = json.dumps({"prompt": "Once", "max_tokens": 100, "stream": True, "ignore_eos": True})

    def leave() -> None:
        try:
            with socket.create_connection((server.host, server.port), timeout=30) as sock:
                sock.sendall(
                    f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    f"\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
                )
                sock.recv(1024)
        except OSError:
            pass

    threads = [threading.Thread(target=leave) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status, _, raw = request(server, "POST", "/v1/completions", P)
    return (
        Outcome("accepted", "served after")
        if status == 200
        else Outcome("defect", f"after the storm: {status} {raw[:100]!r}")
    )


def _full_queue(fx: Fixtures) -> Outcome:
    """More concurrent requests than rows and queue: some 503 with Retry-After, none 5xx else."""
    server: Server = fx.server
    statuses: list[tuple[int, dict]] = []
    body = {"prompt": "Once", "max_tokens": 40, "ignore_eos": True}

    def send() -> None:
        status, headers, _ = request(server, "POST", "/v1/completions", body)
        statuses.append((status, headers))

    threads = [threading.Thread(target=send) for _ in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted({s for s, _ in statuses})
    bad = [s for s, h in statuses if s not in (200, 503) or (s == 503 and "retry-after" not in
                                                              {k.lower() for k in h})]  # fmt: skip
    if bad or 503 not in codes:
        return Outcome("defect", f"statuses {codes}, bad {bad[:5]}")
    return Outcome("clean error", f"statuses {codes}")


def cases() -> list[Case]:
    found = [_completion(n, b) for n, b in BODIES if n != "body 5 MiB"]
    found.append(_completion("body 5 MiB", BODIES[12][1], (413,)))
    found += [_completion(n, b) for n, b in FIELDS]
    found += [_completion(n, b, OK) for n, b in FIELDS_OK]
    found += [_chat(n, b) for n, b in CHATS]
    found += [_chat(n, b, OK) for n, b in CHATS_OK]
    found += [_case(*r) for r in ROUTES]
    found += [
        Case(H, "Content-Encoding gzip", _encoded),
        Case(H, "not HTTP at all", _raw("garbage", b"\x16\x03\x01 hello\r\n\r\n", (400,))),
        Case(H, "header of 100 KB", _raw("big header", b"GET /health HTTP/1.1\r\nHost: x\r\nX: "
                                         + b"a" * 100_000 + b"\r\n\r\n", (200,))),
        Case(H, "header of 2 MB", _raw("huge header", b"GET /health HTTP/1.1\r\nHost: x\r\nX: "
                                       + b"a" * 2_000_000 + b"\r\n\r\n", (400, 431, None))),
        Case(H, "100,000 headers", _raw("many headers", b"GET /health HTTP/1.1\r\nHost: x\r\n"
                                        + b"".join(b"X%d: a\r\n" % i for i in range(100_000))
                                        + b"\r\n", (400, 431, None))),
        Case(H, "body shorter than its length", _raw(
            "short", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
            (400, None), hold=0.5)),  # None: the client left, nobody to answer
        Case(H, "chunked body", _raw("chunked", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                     + _chunked(json.dumps(P).encode()), (200,))),
        Case(H, "disconnect storm (32 streams)", _disconnect_storm),
        Case(H, "full queue (60 at once)", _full_queue),
    ]  # fmt: skip
    return found


def _chunked(data: bytes) -> bytes:
    parts = [data[i : i + 7] for i in range(0, len(data), 7)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
