"""Continuous batching in ``gpt2-serve``: concurrent requests share steps yet each answer equals
the same request alone; clients that disconnect (also during a prefill) or stop reading free
their rows; a full queue answers 503 and the server recovers; a failing step fails only its
requests. Plus the runtime's part: :class:`TokenSteps` rows with their own sampler and logprobs.

The model is the random 2-layer fused bundle; the batching and a request joining a running
batch also run on the bundles gpt2-export ships (the trained fixture, fp32 and int8:
``shipped_bundles``). Where a client must act mid-generation the model runs behind a session
slowed to the pace of a big model (``serve_support.slowed``).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from gpt2_edge.runtime import (
    GenerationOptions,  # noqa: E402
    Generator,  # noqa: E402
)
from gpt2_edge.runtime.decoders.interface import open_decoder  # noqa: E402
from gpt2_edge.runtime.generation.steps import Logprobs, TokenSteps  # noqa: E402
from gpt2_edge.runtime.sampling.sampler import Sampler, sequence_rng  # noqa: E402
from gpt2_edge.runtime.settings.sampling import SamplingSettings  # noqa: E402
from gpt2_edge.serve.jobs import Job, RowSpec  # noqa: E402
from gpt2_edge.serve.metrics import Metrics  # noqa: E402
from gpt2_edge.serve.scheduler import Scheduler  # noqa: E402
from serve_support import Server, openai_client, running, slowed  # noqa: E402

WORDS = "the a of city river music old new light stone".split()
ROWS = "gpt2_serve_batch_rows"
CANCELLED = "gpt2_serve_cancelled_rows_total"
GENERATED = "gpt2_serve_generated_tokens_total"


def request(i: int) -> dict[str, Any]:
    """Request i of 16: prompts and budgets differ; a third sample with their own settings."""
    prompt = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 5))
    settings: dict[str, Any] = {"temperature": 0}
    if i % 3 == 1:
        settings = {"temperature": 0.9, "top_k": 40, "seed": i}
    elif i % 3 == 2:
        settings = {"temperature": 1.2, "top_p": 0.9, "seed": 100 + i, "presence_penalty": 0.5}
    return {"prompt": prompt, "max_tokens": 6 + (i * 7) % 25, **settings}


def alone(gen: Generator, body: dict[str, Any]) -> str:
    settings = {k: v for k, v in body.items() if k not in ("prompt", "max_tokens")}
    return gen.generate(body["prompt"], max_new_tokens=body["max_tokens"], **settings).text


def ask(client: Any, body: dict[str, Any], stream: bool) -> str:
    extra = {k: body[k] for k in ("top_k",) if k in body}
    plain = {k: v for k, v in body.items() if k not in extra}
    if not stream:
        return client.completions.create(model="tiny", extra_body=extra, **plain).choices[0].text
    chunks = client.completions.create(model="tiny", extra_body=extra, stream=True, **plain)
    return "".join(c.choices[0].text for c in chunks)


@pytest.fixture(params=["hand-built-fp32", "shipped-fp32", "shipped-int8"])
def model(request: pytest.FixtureRequest, gen: Generator) -> Generator:
    """The random fused bundle of conftest.py, or a bundle gpt2-export ships."""
    if request.param.startswith("shipped-"):
        shipped = request.getfixturevalue("shipped_bundles")
        return shipped.load(request.param.removeprefix("shipped-"))
    return gen


def test_sixteen_concurrent_clients_each_equal_the_request_alone(model: Generator) -> None:
    gen = model
    bodies = [request(i) for i in range(16)]
    expected = [alone(gen, b) for b in bodies]
    with running(slowed(gen, 0.01), max_batch=16) as server:
        client = openai_client(server)
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: ask(client, bodies[i], i % 2 == 0), range(16)))
        # The steps really were shared: some step decoded more than four rows at once.
        text = server.get("/metrics")
        steps = float(_sample(text, "gpt2_serve_step_batch_size_count"))
        upto4 = float(_sample(text, 'gpt2_serve_step_batch_size_bucket{le="4.0"}'))
    assert answers == expected
    assert steps - upto4 > 0, "no step had more than four rows"


def _sample(text: str, name: str) -> str:
    return next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " "))


def test_a_request_joining_a_running_batch_equals_itself_alone(model: Generator) -> None:
    gen = model
    first, second = request(4), request(7)
    with running(slowed(gen, 0.01)) as server:
        client = openai_client(server)
        with ThreadPoolExecutor(2) as pool:
            late = pool.submit(lambda: (time.sleep(0.15), ask(client, second, True))[1])
            assert ask(client, {**first, "max_tokens": 40}, True) == alone(
                gen, {**first, "max_tokens": 40}
            )
            assert late.result() == alone(gen, second)
        text = server.get("/metrics")
    steps = float(_sample(text, "gpt2_serve_step_batch_size_count"))
    one_row = float(_sample(text, 'gpt2_serve_step_batch_size_bucket{le="1.0"}'))
    assert steps - one_row > 0, "the second request never shared a step with the first"


def open_stream(server: Server, body: dict[str, Any], cut: bool = False) -> socket.socket:
    """A raw HTTP request whose answer is left unread; returns the socket. ``cut``: send only
    the first half of the body."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    data = json.dumps(body).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + (data[: len(data) // 2] if cut else data)
    )
    return sock


def test_a_client_that_disconnects_mid_stream_frees_its_row(gen: Generator) -> None:
    with running(slowed(gen, 0.02)) as server:
        sock = open_stream(server, {"prompt": "Hello", "max_tokens": 100, "stream": True})
        assert b"data: " in sock.recv(4096) + sock.recv(4096)  # streaming has begun
        server.wait_for(lambda: server.metric(ROWS) == 1, what="the row")
        sock.close()
        server.wait_for(lambda: server.metric(CANCELLED) == 1, what="the row to be freed")
        assert server.metric(ROWS) == 0
        made = server.metric(GENERATED)
        time.sleep(0.2)
        assert server.metric(GENERATED) == made < 100  # nothing more is generated for it


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_gone_during_its_prefill_is_freed_at_the_next_step(
    gen: Generator, stream: bool
) -> None:
    """The prefill cannot be interrupted, but the row leaves right after it: one token made."""
    with running(slowed(gen, 1.0)) as server:
        sock = open_stream(server, {"prompt": "Hello", "max_tokens": 50, "stream": stream})
        server.wait_for(lambda: server.metric(ROWS) == 1, what="the prefill")  # it takes 1 s
        sock.close()
        server.wait_for(lambda: server.metric(CANCELLED) == 1, what="the row to be freed")
        assert server.metric(GENERATED) == 1 and server.metric(ROWS) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_shutdown_ends_running_requests_at_once(gen: Generator, stream: bool) -> None:
    """Ctrl-C mid-generation: the request ends with a 503 "shutting down" (as its stream's last
    event) well before the graceful timeout would cut it, and the server stops."""
    with running(slowed(gen, 0.1)) as server:
        body = {"prompt": "Hi", "max_tokens": 100, "stream": stream, "ignore_eos": True}
        url = server.url + "/v1/completions"
        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(1) as pool:
            if stream:
                with client.stream("POST", url, json=body) as response:
                    lines = response.iter_lines()
                    assert next(line for line in lines if line.startswith("data: "))
                    started = time.monotonic()
                    server.uvicorn.should_exit = True  # what uvicorn's SIGINT handler does
                    events = [line[6:] for line in lines if line.startswith("data: ")]
                last = json.loads(events[-1])
            else:
                answer = pool.submit(client.post, url, json=body)
                server.wait_for(lambda: server.metric(GENERATED) > 0, what="generation")
                started = time.monotonic()
                server.uvicorn.should_exit = True
                response = answer.result()
                assert response.status_code == 503
                last = response.json()
        assert time.monotonic() - started < 3
        assert last["error"]["message"] == "The server is shutting down.", last
        server.wait_for(lambda: server.uvicorn.started and not server.app.state.api.scheduler.alive)


def test_the_rows_gauge_is_zero_once_every_request_has_finished(gen: Generator) -> None:
    """Rows that end by themselves (not dropped) leave the gauge too; the loop sleeps after."""
    with running(gen) as server:
        assert ask(openai_client(server), {"prompt": "Hi", "max_tokens": 4}, False)
        server.wait_for(lambda: server.metric(ROWS) == 0, timeout=2, what="the gauge to drop")


def test_clients_that_come_and_go_at_random_leave_nothing_behind(gen: Generator) -> None:
    """24 raw clients with random prompts, budgets, n and streaming, that hang up at random
    times (some before their body is complete): afterwards no row or queued request is left,
    and the server answers the next request."""
    rng = random.Random(0)
    with running(slowed(gen, 0.005), max_batch=4, max_queue=8) as server:

        def client() -> None:
            body = {
                "prompt": "x " * rng.randint(1, 50), "max_tokens": rng.randint(1, 60),
                "stream": rng.random() < 0.5, "n": rng.choice([1, 2]), "temperature": 1,
            }  # fmt: skip
            sock = open_stream(server, body, cut=rng.random() < 0.3)
            time.sleep(rng.random() * 0.3)
            sock.close()

        with ThreadPoolExecutor(24) as pool:
            for future in [pool.submit(client) for _ in range(24)]:
                future.result()
        server.wait_for(
            lambda: server.metric(ROWS) == 0 and server.metric("gpt2_serve_queue_depth") == 0,
            timeout=20,
            what="every row to be freed",
        )
        assert server.metric("gpt2_serve_requests_total", path="/v1/completions", status="500") == 0
        client_ = openai_client(server)
        assert ask(client_, {"prompt": "Hi", "max_tokens": 3, "temperature": 0}, False)


def test_a_full_queue_is_503_with_retry_after_and_the_server_recovers(gen: Generator) -> None:
    with running(slowed(gen, 0.02), max_batch=1, max_queue=1) as server:
        client = openai_client(server)
        with ThreadPoolExecutor(2) as pool:
            busy = pool.submit(
                ask, client, {"prompt": "A", "max_tokens": 100, "temperature": 0}, False
            )
            server.wait_for(lambda: server.metric(ROWS) == 1, what="the first row")
            queued = pool.submit(
                ask, client, {"prompt": "B", "max_tokens": 3, "temperature": 0}, False
            )
            server.wait_for(lambda: server.metric("gpt2_serve_queue_depth") == 1, what="the queue")
            refused = httpx.post(server.url + "/v1/completions", json={"prompt": "C"}, timeout=10)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "queue_full"
            with pytest.raises(openai.InternalServerError):
                ask(client, {"prompt": "C", "max_tokens": 2}, False)
            assert busy.result() and queued.result()
        assert ask(client, {"prompt": "D", "max_tokens": 2, "temperature": 0}, False)
        assert server.metric("gpt2_serve_requests_total", path="/v1/completions", status="503") == 2


def test_a_failing_step_fails_its_requests_and_the_server_goes_on(
    gen: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, calls = TokenSteps.__next__, []

    def flaky(self: TokenSteps) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("a bug in a step")
        return original(self)

    monkeypatch.setattr(TokenSteps, "__next__", flaky)
    with running(gen) as server:
        client = openai_client(server)
        with pytest.raises(openai.InternalServerError):
            ask(client, {"prompt": "Hello", "max_tokens": 10}, False)
        assert ask(client, {"prompt": "Hello", "max_tokens": 4, "temperature": 0}, False)
        assert server.get("/health") == '{"status":"ok"}'


def test_a_stream_left_unread_is_dropped_after_the_stall_timeout(gen: Generator) -> None:
    """A client that stops reading: its events wait unread, and its rows are freed."""
    metrics = Metrics()
    scheduler = Scheduler(slowed(gen, 0.02), 4, 4, metrics, stall_timeout=0.2)
    loop = asyncio.new_event_loop()  # never run: nothing reads the job's events
    prompt = gen.encode("Hello")
    rows = [RowSpec(prompt, sequence_rng(0))]
    options = GenerationOptions(max_new_tokens=100)
    greedy = SamplingSettings(temperature=0)
    job = Job(loop, rows, greedy, options, generate=True, score=False, start=False, stream=True)
    scheduler.start()
    try:
        scheduler.submit(job)
        deadline = time.monotonic() + 10
        while not job.cancelled.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (
            job.cancelled.is_set()
            and metrics.registry.get_sample_value("gpt2_serve_cancelled_rows_total") == 1
        )
        time.sleep(0.05)
        assert metrics.registry.get_sample_value("gpt2_serve_batch_rows") == 0
    finally:
        scheduler.stop()
        loop.close()


# --- The runtime's part: rows with their own sampler and logprobs ---------------------------------


def test_token_steps_rows_with_their_own_sampler_equal_each_alone(gen: Generator) -> None:
    settings = [
        SamplingSettings(temperature=0),
        SamplingSettings(temperature=0.8, top_k=20, seed=3),
        SamplingSettings(temperature=1.3, top_p=0.8, seed=4, frequency_penalty=1.0),
        SamplingSettings(temperature=0, repetition_penalty=1.3),
    ]
    prompts = [gen.encode(p) for p in ("Hello there", "One", "The river and the city", "a b a b")]
    reports = [None, Logprobs(2, gen.tokenizer), None, Logprobs(0, gen.tokenizer)]

    def run(rows: list[int]) -> tuple[dict[int, list[int]], dict[int, list[Any]]]:
        """Rows ``rows`` through one TokenSteps, one joining per step, 12 tokens each."""
        steps = TokenSteps(open_decoder(gen.session, gen.pad_id, 64), Sampler(settings[0]), [], [])
        index_of: dict[int, int] = {}  # row id -> which of the four
        tokens: dict[int, list[int]] = {i: [] for i in rows}
        logprobs: dict[int, list[Any]] = {i: [] for i in rows}
        waiting = list(rows)
        while waiting or steps.rows:
            if waiting:
                i = waiting.pop(0)
                sampler = Sampler(settings[i])
                rng = sequence_rng(settings[i].seed)
                (row,) = steps.add([prompts[i]], [12], [rng], sampler, reports[i])
                index_of[row] = i
            step = next(steps)
            done = []
            for position, row in enumerate(steps.rows):
                i = index_of[row]
                tokens[i].extend(step.tokens[position])
                entries = step.logprobs[position] if step.logprobs is not None else None
                assert (entries is None) == (reports[i] is None)
                logprobs[i].extend(entries or [])
                if len(tokens[i]) >= 12:
                    done.append(position)
            steps.drop(done)
        return tokens, logprobs

    tokens, logprobs = run([0, 1, 2, 3])
    for i in range(4):
        single_tokens, single_logprobs = run([i])
        assert tokens[i] == single_tokens[i], i
        assert [t.logprob for t in logprobs[i]] == pytest.approx(
            [t.logprob for t in single_logprobs[i]]
        )
        assert len(logprobs[i]) == (12 if reports[i] else 0)
        assert [t.token for t in logprobs[i]] == (tokens[i] if reports[i] else [])
