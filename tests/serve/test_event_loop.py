"""Work that grows with a request runs off the server's event loop (parsing a body, checking and
decoding /detokenize's ids, tokenizing and rendering /tokenize's), and a long decode holds the
GIL only in short pieces: large requests no longer stall /health or another client's stream."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("starlette")

from gpt2_edge.runtime import Generator
from serve_support import running

REQUESTS = 4
IDS = 400_000  # about 2.6 MB of body each, under the 4 MiB limit


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
        return response.status


def test_large_detokenize_requests_leave_health_answering(gen: Generator) -> None:
    ids = np.random.default_rng(0).integers(0, 50_000, IDS).tolist()
    body = json.dumps({"tokens": ids}).encode()
    gen.tokenizer.decode(ids[:10_000])  # builds the tokenizer's tables before timing anything
    with running(gen) as server:
        statuses: list[int] = []
        senders = [
            threading.Thread(target=lambda: statuses.append(post(server.url + "/detokenize", body)))
            for _ in range(REQUESTS)
        ]
        for sender in senders:
            sender.start()
        worst = 0.0
        while any(s.is_alive() for s in senders):
            started = time.perf_counter()
            server.get("/health")
            worst = max(worst, time.perf_counter() - started)
            time.sleep(0.01)
        for sender in senders:
            sender.join()
    assert statuses == [200] * REQUESTS
    assert worst < 1.0, f"/health waited {worst:.2f} s behind {REQUESTS} large requests"


def test_a_large_tokenize_leaves_health_answering(gen: Generator) -> None:
    """One call to the tokenizer held the GIL for all of a long text (seconds for 4 MiB)."""
    body = json.dumps({"prompt": "ab " * 400_000}).encode()
    with running(gen) as server:
        statuses: list[int] = []
        sender = threading.Thread(
            target=lambda: statuses.append(post(server.url + "/tokenize", body))
        )
        sender.start()
        worst = 0.0
        while sender.is_alive():
            started = time.perf_counter()
            server.get("/health")
            worst = max(worst, time.perf_counter() - started)
            time.sleep(0.01)
    assert statuses == [200]
    assert worst < 0.75, f"/health waited {worst:.2f} s behind a large /tokenize"


def test_a_long_decode_is_the_same_text_in_pieces(gen: Generator) -> None:
    parts = [447, 246, 247, 222, 564, 50256]  # partial characters and the end-of-text token
    ids = np.random.default_rng(1).integers(0, 50_257, 50_000)
    ids[::7] = np.resize(parts, ids[::7].size)
    whole = gen.tokenizer.backend.decode(ids.tolist(), skip_special_tokens=False)
    assert gen.tokenizer.decode(ids) == whole
