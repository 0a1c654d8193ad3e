"""Log-probabilities name byte-level tokens as OpenAI's API does: a token that is not whole UTF-8
characters (part of an emoji or of a curly quote) is ``bytes:\\xe2\\x80``, not its decoded text
U+FFFD, so several such tokens stay apart as ``top_logprobs`` keys and a chosen one is found in
its own list; chat's ``bytes`` are each token's own bytes, which join to the text."""

from __future__ import annotations

import json
import urllib.request

import pytest

pytest.importorskip("starlette")

from gpt2_edge.runtime import Generator, TokenLogprob
from gpt2_edge.runtime.generation.results import TopLogprob
from gpt2_edge.serve.wire.responses import Entry, chat_logprobs, completion_logprobs
from serve_support import running

PARTS = {447: b"\xe2\x80", 246: b"\x98", 247: b"\x99", 222: b"\x80"}  # GPT-2's byte tokens


def test_partial_tokens_keep_apart_as_keys(gen: Generator) -> None:
    top = tuple(TopLogprob(i, "\ufffd", -1.0 - n) for n, i in enumerate(PARTS))
    chosen = TokenLogprob(246, "\ufffd", -2.0, top)
    shown = completion_logprobs([Entry.of(chosen, 0, gen.tokenizer)])
    keys = list(shown["top_logprobs"][0])
    assert keys == ["bytes:\\xe2\\x80", "bytes:\\x98", "bytes:\\x99", "bytes:\\x80"]
    assert shown["tokens"] == ["bytes:\\x98"] and shown["tokens"][0] in keys
    chat = chat_logprobs([Entry.of(chosen, 0, gen.tokenizer)])["content"][0]
    assert chat["bytes"] == [0x98] and [t["bytes"] for t in chat["top_logprobs"]] == [
        list(b) for b in PARTS.values()
    ]


def test_whole_tokens_keep_their_text(gen: Generator) -> None:
    ids = gen.tokenizer.encode(" café")
    entry = Entry.of(TokenLogprob(int(ids[0]), " café", -1.0), 0, gen.tokenizer)
    assert completion_logprobs([entry])["tokens"] == [" café"]


def post(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_an_echoed_prompt_names_its_byte_tokens(gen: Generator) -> None:
    prompt = "😀 ‘x’"
    with running(gen) as server:
        body = {"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 2}
        shown = post(server.url, "/v1/completions", body)["choices"][0]["logprobs"]
        chat = post(
            server.url,
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": prompt}], "max_tokens": 8, "seed": 1,
             "temperature": 1, "logprobs": True, "top_logprobs": 3},
        )["choices"][0]  # fmt: skip
    assert shown["tokens"] == [
        "bytes:\\xf0\\x9f\\x98", "bytes:\\x80", "bytes:\\x20\\xe2\\x80", "bytes:\\x98", "x",
        "bytes:\\xe2\\x80", "bytes:\\x99",
    ]  # fmt: skip
    for entry in chat["logprobs"]["content"]:
        assert len({t["token"] for t in entry["top_logprobs"]}) == len(entry["top_logprobs"])
    joined = bytes(b for entry in chat["logprobs"]["content"] for b in entry["bytes"])
    assert joined.decode("utf-8", "replace").lstrip(" ") == chat["message"]["content"]
