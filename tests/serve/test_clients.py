"""What existing clients expect of a local OpenAI-compatible server: no Nagle delay on a kept-alive
connection, the model names they send, a log line per request, vLLM's ``/tokenizer_info``,
``n > 1`` at temperature 0, and requests with more rows than the batch holds.

The server is real (uvicorn on a free 127.0.0.1 port; the ``gpt2-serve`` command where its flags
are what is tested).
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from gpt2_edge.runtime import Generator
from serve_support import openai_client, running

GREEDY = {"temperature": 0}
ROUNDS = 20
# A kept-alive request may take this much longer than one on a new connection (the bar;
# Nagle's algorithm against a delayed ACK added ~40 ms).
KEEP_ALIVE_SLACK_MS = 2.0


def _medians_ms(kept: httpx.Client, fresh: httpx.Client, url: str, **request: Any) -> tuple:
    """Median times of the same request on a kept-alive connection and on new ones, the two
    alternating so that a busy machine slows both alike."""
    times: dict[str, list[float]] = {"kept": [], "fresh": []}
    for _ in range(ROUNDS):
        for name, client in (("kept", kept), ("fresh", fresh)):
            start = time.perf_counter()
            response = client.request(url=url, **request)
            times[name].append((time.perf_counter() - start) * 1e3)
            assert response.status_code == 200, response.text
    return statistics.median(times["kept"]), statistics.median(times["fresh"])


def test_a_kept_alive_connection_answers_as_fast_as_a_new_one(gen: Generator) -> None:
    """Nagle's algorithm against the client's delayed ACK added ~40 ms to each non-streamed
    answer on a kept-alive connection, as the openai SDK, langchain and ``llm`` keep them."""
    body = {"prompt": "Hello", "max_tokens": 1, **GREEDY}
    new_each_time = httpx.Limits(max_keepalive_connections=0)
    with (
        running(gen) as server,
        httpx.Client(timeout=30) as kept,
        httpx.Client(timeout=30, limits=new_each_time) as fresh,
    ):
        completions = server.url + "/v1/completions"
        kept.post(completions, json=body)  # opens the kept connection, warms the model
        alive, new = _medians_ms(kept, fresh, completions, method="POST", json=body)
        health_alive, health_new = _medians_ms(kept, fresh, server.url + "/health", method="GET")
    assert alive <= new + KEEP_ALIVE_SLACK_MS, (alive, new)
    assert health_alive <= health_new + KEEP_ALIVE_SLACK_MS, (health_alive, health_new)


def test_served_model_names_are_listed_and_answered_by(gen: Generator) -> None:
    with running(gen, model_names=("gpt-3.5-turbo", "mine")) as server:
        client = openai_client(server)
        assert [m.id for m in client.models.list().data] == ["gpt-3.5-turbo", "mine"]
        assert client.models.retrieve("mine").max_model_len == gen.context_length
        for name in ("gpt-3.5-turbo", "mine"):
            answer = client.completions.create(model=name, prompt="Hi", max_tokens=2, **GREEDY)
            assert answer.model == name
        plain = httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1})
        assert plain.json()["model"] == "gpt-3.5-turbo"  # the first name answers when none is sent
        with pytest.raises(openai.NotFoundError) as caught:
            client.completions.create(model="tiny", prompt="Hi", max_tokens=1)
        assert "'gpt-3.5-turbo', 'mine'" in caught.value.body["message"]


def test_a_star_takes_whatever_name_a_client_sends(gen: Generator) -> None:
    with running(gen, model_names=("tiny", "*")) as server:
        client = openai_client(server)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        for name in ("gpt-4o-mini", "llama3", "tiny"):
            answer = client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )
            assert answer.model == name


def test_n_above_one_at_temperature_zero_gives_equal_choices(gen: Generator) -> None:
    """langchain's ``ChatOpenAI(n=2)`` sends n without a temperature; OpenAI accepts it."""
    with running(gen) as server:
        client = openai_client(server)
        answer = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], n=2, max_tokens=4,
            **GREEDY,
        )  # fmt: skip
    texts = [c.message.content for c in answer.choices]
    assert len(texts) == 2 and texts[0] == texts[1]


def test_more_rows_than_the_batch_run_in_parts_in_order(gen: Generator) -> None:
    prompts = [f"Number {i} is" for i in range(17)]
    with running(gen, max_batch=4) as server:
        answer = openai_client(server).completions.create(
            model="tiny", prompt=prompts, max_tokens=5, **GREEDY
        )
        assert server.metric("gpt2_serve_batch_rows") == 0
    assert [c.index for c in answer.choices] == list(range(17))
    expected = [gen.generate(p, max_new_tokens=5, **GREEDY).text for p in prompts]
    assert [c.text for c in answer.choices] == expected


def test_tokenizer_info_is_vllms(gen: Generator) -> None:
    with running(gen) as server:
        info = httpx.get(server.url + "/tokenizer_info", timeout=30).json()
    assert info["tokenizer_class"] == "GPT2TokenizerFast"
    assert info["eos_token"] == info["bos_token"] == "<|endoftext|>"
    assert info["model_max_length"] == gen.context_length and info["add_bos_token"] is False


@contextmanager
def serving(bundle: Path, *flags: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``gpt2-serve`` on a free port with ``flags``; yields its URL and process."""
    command = [
        sys.executable, "-m", "gpt2_edge.serve", "--model", str(bundle), "--port", "0",
        "--threads", "1", "--provider", "cpu", *flags,
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline, line = time.monotonic() + 60, ""
        while "http://" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line or process.poll() is None, "the server exited"
        yield "http://" + line.split("http://", 1)[1].split("/ ", 1)[0], process
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def _requests(base: str) -> None:
    httpx.post(base + "/v1/completions", json={"prompt": "Hi", "max_tokens": 3}, timeout=30)
    httpx.post(base + "/v1/completions", json={"prompt": "Hi", "top_p": 7}, timeout=30)
    httpx.post(base + "/v1/completions", json={"model": "nope", "prompt": "Hi"}, timeout=30)
    body = {"prompt": "Hi", "max_tokens": 2, "stream": True}
    with httpx.stream("POST", base + "/v1/completions", json=body, timeout=30) as stream:
        stream.read()


def test_a_json_line_per_request_with_tokens_times_and_errors(bundle: Path) -> None:
    with serving(bundle, "--log-format", "json") as (base, process):
        _requests(base)
        time.sleep(0.3)  # the last line is written once its response has ended
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    ok, bad, unknown, streamed = [x for x in lines if x["path"] == "/v1/completions"]
    assert ok["status"] == 200 and ok["method"] == "POST" and ok["level"] == "INFO"
    assert ok["prompt_tokens"] == 1 and ok["completion_tokens"] == 3
    assert 0 < ok["ttft_ms"] <= ok["latency_ms"]
    assert bad["status"] == 400 and bad["level"] == "WARNING" and "top_p" in bad["error"]
    assert unknown["status"] == 404 and "does not exist" in unknown["error"]
    assert streamed["status"] == 200 and streamed["completion_tokens"] == 2


def test_log_level_warning_keeps_only_the_errors_as_text(bundle: Path) -> None:
    with serving(bundle, "--log-level", "warning") as (base, process):
        _requests(base)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    logged = [x for x in err.splitlines() if "/v1/completions" in x]
    assert len(logged) == 2 and all(" WARNING POST /v1/completions 40" in x for x in logged)
    assert 'error="top_p must be' in logged[0]


@pytest.mark.parametrize(
    ("flags", "sentence"),
    [
        (["--log-format", "xml"], "--log-format must be one of text, json"),
        (["--log-level", "loud"], "--log-level must be one of"),
        (["--served-model-name", ""], "--served-model-name must be printable text"),
    ],
)
def test_bad_log_and_name_flags_are_one_sentence(flags: list[str], sentence: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gpt2_edge.serve", *flags], capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr.strip().startswith("Error: " + sentence)
    assert len(done.stderr.strip().splitlines()) == 1
