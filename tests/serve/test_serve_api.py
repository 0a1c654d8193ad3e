"""``gpt2-serve`` through OpenAI's own Python client and raw HTTP: completions (plain, streamed,
``n``, seeds, logprobs, echo), chat completions, the other routes, and every error in OpenAI's
shape. Each answer is checked against the runtime answering the same request directly.

The server is real (uvicorn on a free 127.0.0.1 port); the model is the random 2-layer fused
bundle of ``fused_bundle.py``.
"""

from __future__ import annotations

import gzip
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

import numpy as np  # noqa: E402
from gpt2_edge.runtime import (
    Engine,  # noqa: E402
    Generator,  # noqa: E402
)
from gpt2_edge.runtime.sampling.sampler import Sampler  # noqa: E402
from gpt2_edge.serve.server import exposure_warning  # noqa: E402
from gpt2_edge.serve.wire.chat import TURN_STOPS, transcript
from serve_support import Server, openai_client, running  # noqa: E402

GREEDY = {"temperature": 0}
PROMPTS = ["Hello world", "The quick brown fox jumps over", "One two three"]


@pytest.fixture(scope="module")
def server(gen: Generator) -> Server:
    with running(gen, max_batch=8) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    return openai_client(server)


def post(server: Server, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    if body is not None:
        kwargs["content"] = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, timeout=30, **kwargs)


def sse(response: httpx.Response) -> list[Any]:
    """The data of each server-sent event, JSON-decoded ("[DONE]" as is)."""
    events = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


# --- Completions ----------------------------------------------------------------------------------


def test_completions_equal_the_runtime(client: Any, gen: Generator) -> None:
    for prompt in PROMPTS:
        expected = gen.generate(prompt, max_new_tokens=12, **GREEDY)
        answer = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, **GREEDY)
        assert answer.choices[0].text == expected.text
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage.prompt_tokens == expected.prompt_tokens
        assert (
            answer.usage.completion_tokens == 12
            and answer.usage.total_tokens == 12 + expected.prompt_tokens
        )
    listed = client.completions.create(model="tiny", prompt=PROMPTS, max_tokens=5, **GREEDY)
    expected = gen.generate_batch(PROMPTS, max_new_tokens=5, **GREEDY)
    assert [c.text for c in listed.choices] == [r.text for r in expected]
    assert [c.index for c in listed.choices] == [0, 1, 2]


def test_token_id_prompts_are_prompts(client: Any, gen: Generator) -> None:
    ids = gen.encode(PROMPTS[1]).tolist()
    answer = client.completions.create(model="tiny", prompt=ids, max_tokens=6, echo=True, **GREEDY)
    expected = gen.generate(PROMPTS[1], max_new_tokens=6, **GREEDY)
    assert answer.choices[0].text == PROMPTS[1] + expected.text


def test_streamed_pieces_join_to_the_whole_text_and_finish_once(
    client: Any, gen: Generator
) -> None:
    whole = gen.generate(PROMPTS[1], max_new_tokens=20, **GREEDY)
    stop = gen.tokenizer.decode(whole.tokens[5:7])  # a stop string made of two tokens
    settings = {"model": "tiny", "prompt": PROMPTS[1], "max_tokens": 20, "stop": stop, **GREEDY}
    plain = client.completions.create(**settings)
    chunks = list(client.completions.create(stream=True, **settings))
    pieces = [c.choices[0].text for c in chunks]
    assert "".join(pieces) == plain.choices[0].text == whole.text[: whole.text.index(stop)]
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]


class ScriptedSampler(Sampler):
    """Picks the tokens of :data:`SCRIPT` in order, whatever the logits say."""

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.bare_argmax = False  # so that each row's history is its tokens so far

    def __call__(self, logits: Any, prompts: Any, generated: Any, rngs: Any = None) -> np.ndarray:
        return np.array([SCRIPT[len(g)] for g in generated], dtype=np.int64)


SCRIPT_TEXT = " caf\u00e9 \U0001f600 and \u4e2d\u6587 STOP there"
SCRIPT: list[int] = []


@pytest.mark.parametrize("stop", [None, "STOP"])
def test_streaming_never_splits_a_character_or_leaks_a_stop(
    server: Server, gen: Generator, monkeypatch: pytest.MonkeyPatch, stop: str | None
) -> None:
    """Tokens that split characters (an emoji is three GPT-2 tokens) stream as whole
    characters, and a stop string split over tokens never shows."""
    SCRIPT[:] = gen.tokenizer.encode(SCRIPT_TEXT).tolist()
    assert any("\ufffd" in gen.tokenizer.decode([t]) for t in SCRIPT)  # some token splits one
    monkeypatch.setattr(Engine, "_sampler", lambda self, settings: ScriptedSampler(settings))
    body = {
        "prompt": "x",
        "max_tokens": len(SCRIPT),
        "stream": True,
        "stop": stop,
        "ignore_eos": True,
    }
    pieces = [e["choices"][0]["text"] for e in sse(post(server, "/v1/completions", body))[:-1]]
    expected = SCRIPT_TEXT if stop is None else SCRIPT_TEXT[: SCRIPT_TEXT.index(stop)]
    assert "".join(pieces) == expected
    assert not any("\ufffd" in p for p in pieces) and len(pieces) > 5
    whole = post(server, "/v1/completions", {**body, "stream": False}).json()
    assert whole["choices"][0]["text"] == expected


def test_n_samples_are_the_runtimes_and_reproducible(client: Any, gen: Generator) -> None:
    settings = {"temperature": 1.0, "top_k": 50, "seed": 7}
    expected = gen.generate_batch(
        [PROMPTS[0]], max_new_tokens=8, num_return_sequences=3, **settings
    )
    body = {"model": "tiny", "prompt": PROMPTS[0], "max_tokens": 8, "n": 3}
    answer = client.completions.create(**body, temperature=1.0, seed=7, extra_body={"top_k": 50})
    again = client.completions.create(**body, temperature=1.0, seed=7, extra_body={"top_k": 50})
    texts = [c.text for c in answer.choices]
    assert texts == [r.text for r in expected] == [c.text for c in again.choices]
    assert len(set(texts)) == 3  # each sample has its own generator


def test_logprobs_are_the_runtimes(client: Any, gen: Generator) -> None:
    expected = gen.generate(PROMPTS[2], max_new_tokens=6, logprobs=2, **GREEDY)
    answer = client.completions.create(
        model="tiny", prompt=PROMPTS[2], max_tokens=6, logprobs=2, **GREEDY
    )
    lp = answer.choices[0].logprobs
    assert lp.tokens == [t.text for t in expected.logprobs]
    assert lp.token_logprobs == pytest.approx([t.logprob for t in expected.logprobs], abs=1e-5)
    assert all(len(top) == 2 for top in lp.top_logprobs)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]


def test_n_above_one_under_greedy_decoding_gives_equal_choices(client: Any) -> None:
    """OpenAI accepts n > 1 at any temperature (langchain's ChatOpenAI(n=2) sends it)."""
    answer = client.completions.create(model="tiny", prompt="Hello", max_tokens=5, n=3, **GREEDY)
    texts = [c.text for c in answer.choices]
    assert (
        len(texts) == 3 and len(set(texts)) == 1 and [c.index for c in answer.choices] == [0, 1, 2]
    )


def test_echo_with_logprobs_scores_the_prompt(client: Any, gen: Generator) -> None:
    """What evaluation harnesses send: max_tokens 0, echo, logprobs. The prompt's own
    log-probabilities as sent: the first token's is null, as OpenAI and vLLM report it."""
    text = " The quick brown fox"
    scored = gen.score(text, logprobs=1)  # the first token conditions the rest
    answer = client.completions.create(
        model="tiny", prompt=text, max_tokens=0, echo=True, logprobs=1
    )
    lp = answer.choices[0].logprobs
    assert answer.choices[0].text == text
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] in (None, {})
    assert lp.token_logprobs[1:] == pytest.approx([t.logprob for t in scored.logprobs], abs=1e-4)
    greedy = all(
        max(top, key=top.get) == token
        for top, token in zip(lp.top_logprobs[1:], lp.tokens[1:], strict=True)
    )
    assert greedy == scored.greedy
    started = gen.score(text, logprobs=1, start=True)  # the documented extra field asks for it
    after = client.completions.create(
        model="tiny", prompt=text, max_tokens=0, echo=True, logprobs=1,
        extra_body={"echo_start_token": True},
    )  # fmt: skip
    assert after.choices[0].logprobs.token_logprobs == pytest.approx(
        [t.logprob for t in started.logprobs], abs=1e-4
    )
    assert answer.usage.completion_tokens == 0
    both = client.completions.create(
        model="tiny", prompt=text, max_tokens=3, echo=True, logprobs=0, **GREEDY
    )
    generated = gen.generate(text, max_new_tokens=3, **GREEDY)
    assert both.choices[0].text == text + generated.text
    assert len(both.choices[0].logprobs.tokens) == len(scored.tokens) + 1 + 3


def test_text_offsets_count_characters_split_over_tokens_once(
    server: Server, gen: Generator
) -> None:
    """A token's offset is the length of the text the tokens before it decode to: the bytes of
    an emoji split over two tokens are one character, not three U+FFFD."""
    text = "caf\u00e9 \U0001f600 ok"
    ids = gen.tokenizer.encode(text).tolist()
    assert "\ufffd" in gen.tokenizer.decode(ids[3:4])  # the emoji is split over two tokens
    body = {"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0}
    offsets = post(server, "/v1/completions", body).json()["choices"][0]["logprobs"]["text_offset"]
    expected = [len(gen.tokenizer.decode(ids[:k]).rstrip("\ufffd")) for k in range(len(ids))]
    assert offsets == expected and offsets[-1] == text.index(" ok")


@pytest.mark.parametrize("echo", [False, True])
def test_streamed_text_offsets_equal_the_whole_answers(server: Server, echo: bool) -> None:
    body = {
        "prompt": "\U0001f600" * 3,
        "max_tokens": 30,
        "temperature": 1.5,
        "seed": 6,  # the tiny model splits a character over two tokens
        "logprobs": 0,
        "echo": echo,
    }
    whole = post(server, "/v1/completions", body).json()["choices"][0]
    events = sse(post(server, "/v1/completions", {**body, "stream": True}))
    streamed = [
        o for e in events[:-1] if e["choices"][0]["logprobs"]
        for o in e["choices"][0]["logprobs"]["text_offset"]
    ]  # fmt: skip
    assert streamed == whole["logprobs"]["text_offset"]
    # some character was split: OpenAI names its tokens by their bytes
    assert any(t.startswith("bytes:") for t in whole["logprobs"]["tokens"])
    assert streamed == sorted(streamed) and streamed[-1] <= len(whole["text"])


@pytest.mark.parametrize("logprobs", [None, 1])
def test_streamed_echo_and_usage(server: Server, gen: Generator, logprobs: int | None) -> None:
    body = {
        "prompt": PROMPTS[0],
        "max_tokens": 4,
        "echo": True,
        "logprobs": logprobs,
        "stream": True,
        "stream_options": {"include_usage": True},
        **GREEDY,
    }
    events = sse(post(server, "/v1/completions", body))
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    text = "".join(e["choices"][0]["text"] for e in events[:-2])
    assert text == PROMPTS[0] + gen.generate(PROMPTS[0], max_new_tokens=4, **GREEDY).text
    whole = post(server, "/v1/completions", {**body, "stream": False, "stream_options": None})
    assert whole.json()["choices"][0]["text"] == text
    if logprobs:  # the prompt's tokens first, then each generated token, as answered whole
        streamed = [t for e in events[:-2] for t in e["choices"][0]["logprobs"]["token_logprobs"]]
        expected = whole.json()["choices"][0]["logprobs"]["token_logprobs"]
        assert streamed == pytest.approx(expected) and len(streamed) == 2 + 4


# --- Chat -----------------------------------------------------------------------------------------


MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "How are "}, {"type": "text", "text": "you?"}],
    },
]


def test_chat_template_is_the_documented_transcript() -> None:
    assert transcript(MESSAGES) == (
        "You answer briefly.\n\nUser: Hello\nAssistant: Hi.\nUser: How are you?\nAssistant:"
    )


def test_chat_equals_the_runtime_on_the_transcript(client: Any, gen: Generator) -> None:
    expected = gen.generate(
        transcript(MESSAGES), max_new_tokens=10, stop=list(TURN_STOPS), **GREEDY
    )
    answer = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=10, **GREEDY
    )
    message = answer.choices[0].message
    assert message.role == "assistant"
    assert message.content == expected.text.removeprefix(" ")
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=10, stream=True, **GREEDY
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == message.content
    reasons = [c.choices[0].finish_reason for c in chunks]
    assert reasons == [None] * (len(chunks) - 1) + [answer.choices[0].finish_reason]


def test_chat_stops_at_the_next_turn(server: Server, gen: Generator) -> None:
    """The model's own next 'User:' line ends the reply, and none of it is shown."""
    whole = gen.generate(transcript(MESSAGES), max_new_tokens=30, **GREEDY).text
    answer = post(
        server, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 30, **GREEDY}
    ).json()
    content = answer["choices"][0]["message"]["content"]
    assert "User:" not in content and whole.removeprefix(" ").startswith(content)


# --- Other routes ---------------------------------------------------------------------------------


def test_models_health_tokenize(server: Server, client: Any, gen: Generator) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    assert json.loads(server.get("/health")) == {"status": "ok"}
    tokens = post(server, "/tokenize", {"prompt": PROMPTS[1]}).json()
    assert tokens["tokens"] == gen.encode(PROMPTS[1]).tolist() and tokens["max_model_len"] == 128
    back = post(server, "/detokenize", {"tokens": tokens["tokens"]}).json()
    assert back == {"prompt": PROMPTS[1]}
    chat = post(server, "/tokenize", {"messages": MESSAGES}).json()
    assert chat["tokens"] == gen.encode(transcript(MESSAGES)).tolist()


def test_page_is_offline(server: Server) -> None:
    response = httpx.get(server.url + "/")
    assert response.status_code == 200 and "<textarea" in response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]
    for external in ("http://", "https://", "//cdn", "@import", "fonts."):
        assert external not in response.text


# --- Errors through the client --------------------------------------------------------------------


BAD_SETTINGS = [
    ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n"),
    ({"logprobs": 6}, "logprobs"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"seed": -3}, "seed"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"stop": ""}, "stop"),
    ({"stop": [1, 2]}, "stop"),
    ({"best_of": 3}, "best_of"),
    ({"suffix": "end"}, "suffix"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"extra_body": {"top_k": "x"}}, "top_k"),
    ({"extra_body": {"min_p": 2}}, "min_p"),
    ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty"),
    ({"extra_body": {"no_repeat_ngram_size": 1.5}}, "no_repeat_ngram_size"),
    ({"extra_body": {"ignore_eos": "yes"}}, "ignore_eos"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"echo": 1}, "echo"),
    ({"n": 64, "temperature": 1, "extra_body": {"prompt": ["x"] * 17}}, "n"),  # 1088 rows
]


@pytest.mark.parametrize(("settings", "param"), BAD_SETTINGS, ids=[p for _, p in BAD_SETTINGS])
def test_bad_settings_are_400_naming_the_field(client: Any, settings: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="Hi", **settings)
    error = caught.value.body
    assert caught.value.status_code == 400 and error["param"] == param, error
    assert error["type"] == "invalid_request_error" and error["message"].endswith(".")


BAD_PROMPTS = [[], [[]], [1, "a"], [-1], [50257], 3, None, [[1], "a"], {"text": "x"}]


@pytest.mark.parametrize("prompt", BAD_PROMPTS, ids=[repr(p) for p in BAD_PROMPTS])
def test_bad_prompts_are_400(client: Any, prompt: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt=prompt, max_tokens=2)
    assert caught.value.body["param"] == "prompt"


def test_a_prompt_longer_than_the_context_says_the_figures(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="hello" + " hello" * 199, max_tokens=2)
    message = caught.value.body["message"]
    assert "200 tokens long" in message and "context is 128" in message and "127 fit" in message


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/completions", {"prompt": "hello" + " hello" * 199}, "prompt"),  # tokens counted
        ("/v1/completions", {"prompt": "x" * 20_000}, "prompt"),  # refused before tokenizing
        ("/v1/completions", {"prompt": [[1] * 200]}, "prompt"),  # token ids
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi " * 200}]},
            "messages",
        ),
    ],
    ids=["tokens", "characters", "ids", "chat"],
)
def test_a_prompt_too_long_asks_only_for_what_the_api_offers(
    server: Server, path: str, body: dict, field: str
) -> None:
    """The HTTP API has no truncate setting: the sentence asks to shorten the field at fault."""
    error = assert_openai_error(post(server, path, {**body, "max_tokens": 2}), 400)
    assert error["param"] == field and "127 fit" in error["message"], error
    assert error["message"].endswith(f"; shorten the {field}.") and "trunc" not in error["message"]


@pytest.mark.parametrize("prompt", [[464] * 128, "hello" + " hello" * 127], ids=["ids", "text"])
def test_scoring_takes_a_prompt_filling_the_context(server: Server, prompt: Any) -> None:
    """max_tokens 0 with echo needs no position for a new token: all 128 may be prompt."""
    body = {"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 0}
    answer = post(server, "/v1/completions", body)
    assert answer.status_code == 200, answer.text
    logprobs = answer.json()["choices"][0]["logprobs"]["token_logprobs"]
    assert len(logprobs) == 128 and logprobs[0] is None and None not in logprobs[1:]
    generating = assert_openai_error(
        post(server, "/v1/completions", {**body, "max_tokens": 1}), 400
    )
    assert "127 fit" in generating["message"]
    longer = [464] * 129 if isinstance(prompt, list) else prompt + " hello"
    error = assert_openai_error(post(server, "/v1/completions", {**body, "prompt": longer}), 400)
    assert "129 tokens long" in error["message"] and "at most 128 fit" in error["message"]


BAD_MESSAGES = [
    [],
    "hi",
    [{"role": "tool", "content": "x"}],
    [{"role": "user"}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
    ["user: hi"],
]


@pytest.mark.parametrize("messages", BAD_MESSAGES, ids=[repr(m)[:30] for m in BAD_MESSAGES])
def test_bad_chat_messages_are_400(client: Any, messages: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=messages)
    assert caught.value.body["param"] == "messages"


def test_unknown_model_and_route_are_404(client: Any, server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="gpt-4", prompt="Hi")
    assert (
        caught.value.body["code"] == "model_not_found" and "'tiny'" in caught.value.body["message"]
    )
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    response = httpx.get(server.url + "/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
    wrong_method = httpx.get(server.url + "/v1/completions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


# --- Raw HTTP: bodies no client would send --------------------------------------------------------


MALFORMED = [
    b"{bad json",
    b"",
    b"[1, 2]",
    b'"a string"',
    b"null",
    b'{"prompt": NaN}',
    b'{"prompt": "x", "max_tokens": Infinity}',
    b"\xff\xfe{}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"prompt": "\\ud800", "messages": [{"role": "user", "content": "\\udfff"}]}',
    b'{"prompt": "x", "model": 5}',
]
WRONG_TYPES = [
    b'{"prompt": "x", "temperature": "0.5"}',
    b'{"prompt": "x", "max_tokens": 2.0}',
    b'{"prompt": "x", "temperature": true}',
    b'{"prompt": "x", "n": null, "seed": 1e400}',
    b'{"prompt": {"nested": ["x"]}}',
]


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_bodies_are_400_in_openais_shape(server: Server, body: bytes) -> None:
    for path in ("/v1/completions", "/v1/chat/completions", "/tokenize"):
        assert_openai_error(
            post(server, path, body, headers={"content-type": "application/json"}), 400
        )


BAD_JSON = "The request body is not valid JSON: "
NOT_UTF8 = "The request body is not UTF-8 (bad byte at offset 12)."
NOT_JSON = [
    (b'{"prompt": "\xff\xfe", "max_tokens": 2}', NOT_UTF8),
    (b'{"prompt": "\xed\xa0\x80"}', NOT_UTF8),  # an encoded surrogate is no character
    (b'{"prompt": "hi", "temperature": NaN}', BAD_JSON + "NaN is not a JSON number."),
    (b'{"prompt": "hi", "seed": Infinity}', BAD_JSON + "Infinity is not a JSON number."),
    (b'{"prompt": "hi", "stop": [-Infinity]}', BAD_JSON + "-Infinity is not a JSON number."),
    (
        b'{"prompt": "hi", "seed": ' + b"9" * 5000 + b"}",
        "The request body holds an integer of 5,000 digits; this server reads integers of at "
        "most 4,300 digits.",
    ),
    (b"[" * 100_000 + b"]" * 100_000, BAD_JSON + "nested too deeply."),
    (
        b'{"prompt": "hi",',
        BAD_JSON + "expecting property name enclosed in double quotes at line 1, column 17.",
    ),
    (b" \n", "The request body is empty; send a JSON object."),
]


@pytest.mark.parametrize(("body", "message"), NOT_JSON, ids=range(len(NOT_JSON)))
def test_a_body_that_is_not_json_says_why(server: Server, body: bytes, message: str) -> None:
    """Each reason its own sentence: bad UTF-8, NaN or Infinity, a huge integer, deep nesting."""
    response = post(server, "/v1/completions", body, headers={"content-type": "application/json"})
    assert assert_openai_error(response, 400)["message"] == message


@pytest.mark.parametrize(
    ("field", "value", "hint"),
    [
        ("num_beams", 4, ""),
        ("draft", "/some/bundle", ""),
        ("max_length", 20, ""),
        ("truncate", "left", ""),
        ("num_return_sequences", 2, "; use n"),
        ("max_new_tokens", 5, "; use max_tokens"),
    ],
)
def test_runtime_settings_the_api_lacks_are_refused(
    server: Server, field: str, value: Any, hint: str
) -> None:
    for path, body in (
        ("/v1/completions", {"prompt": "Hi"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
    ):
        error = assert_openai_error(post(server, path, {**body, field: value}), 400)
        assert error["param"] == field, error
        assert error["message"] == (
            f"{field} is a gpt2-edge runtime setting this server does not take{hint}."
        )


WIRE_MESSAGES = [
    ({"max_tokens": {"k" * 45: 1}}, "max_tokens must be an integer >= 0, got an object."),
    ({"temperature": True}, "temperature must be a number >= 0 (0 means greedy), got true."),
    ({"seed": "1"}, 'seed must be an integer >= 0 (or not given), got "1".'),
    ({"top_k": [1]}, "top_k must be an integer >= 0 (0 turns it off), got [1]."),
]


@pytest.mark.parametrize(("settings", "message"), WIRE_MESSAGES, ids=range(len(WIRE_MESSAGES)))
def test_messages_show_values_as_json(server: Server, settings: dict, message: str) -> None:
    error = assert_openai_error(post(server, "/v1/completions", {"prompt": "Hi", **settings}), 400)
    assert error["message"] == message


@pytest.mark.parametrize("value", [-1, 0, "5"])
def test_a_bad_max_completion_tokens_is_blamed_on_itself(server: Server, value: Any) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": value}
    error = assert_openai_error(post(server, "/v1/chat/completions", body), 400)
    assert error["param"] == "max_completion_tokens"
    assert error["message"].startswith("max_completion_tokens must be an integer >= 1, got ")


def test_a_truncated_body_says_where_its_string_starts(server: Server) -> None:
    response = post(server, "/v1/completions", b'{"prompt": "Hi')
    assert assert_openai_error(response, 400)["message"] == (
        BAD_JSON + "unterminated string starting at line 1, column 12."
    )


def test_an_encoded_body_is_415_naming_the_encoding(server: Server) -> None:
    body = gzip.compress(json.dumps({"prompt": "Hi", "max_tokens": 1}).encode())
    response = post(server, "/v1/completions", body, headers={"content-encoding": "gzip"})
    error = assert_openai_error(response, 415)
    assert "'gzip'" in error["message"] and error["code"] == "unsupported_encoding"


def test_a_utf8_bom_before_the_body_is_skipped(server: Server) -> None:
    body = json.dumps({"prompt": "caf\u00e9", "max_tokens": 1}).encode()
    assert post(server, "/v1/completions", b"\xef\xbb\xbf" + body).status_code == 200
    bad = post(server, "/v1/completions", b'\xef\xbb\xbf{"prompt": "\xff"}')
    assert assert_openai_error(bad, 400)["message"] == NOT_UTF8.replace("12", "15")


@pytest.mark.parametrize("body", WRONG_TYPES, ids=range(len(WRONG_TYPES)))
def test_wrong_types_are_400(server: Server, body: bytes) -> None:
    assert_openai_error(post(server, "/v1/completions", body), 400)


def test_oversized_bodies_are_413(gen: Generator) -> None:
    with running(gen, max_body_bytes=1000) as small:
        big = json.dumps({"prompt": "x" * 2000}).encode()
        assert post(small, "/v1/completions", big).status_code == 413

        def chunked():  # no Content-Length: the limit holds while reading
            yield big[:900]
            yield big[900:]

        response = httpx.post(small.url + "/v1/completions", content=chunked(), timeout=10)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        assert post(small, "/v1/completions", {"prompt": "x", "max_tokens": 1}).status_code == 200


def test_api_key_and_cors(gen: Generator) -> None:
    origin = "http://localhost:3000"
    with running(gen, api_key="s3cret", cors_origins=(origin,)) as locked:
        body = {"prompt": "Hi", "max_tokens": 2}
        with pytest.raises(openai.AuthenticationError):
            openai_client(locked).completions.create(model="tiny", **body)
        with pytest.raises(openai.AuthenticationError):
            openai_client(locked, api_key="wrong").completions.create(model="tiny", **body)
        answer = openai_client(locked, api_key="s3cret").completions.create(model="tiny", **body)
        assert answer.usage.completion_tokens == 2
        preflight = httpx.options(
            locked.url + "/v1/completions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        refused = post(locked, "/v1/completions", body, headers={"Origin": origin})
        assert (
            refused.status_code == 401 and refused.headers["access-control-allow-origin"] == origin
        )
        stranger = httpx.options(
            locked.url + "/v1/completions",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert stranger.status_code != 401 and "access-control-allow-origin" not in stranger.headers
        assert httpx.get(locked.url + "/health").status_code == 200  # probes need no key
        assert httpx.get(locked.url + "/metrics").status_code == 401
    with running(gen, api_key="s3cret") as no_cors:
        preflight = httpx.options(
            no_cors.url + "/v1/completions",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert (
            preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers
        )


def test_requests_are_counted_by_route_and_status(server: Server) -> None:
    before = server.metric("gpt2_serve_requests_total", path="/v1/completions", status="400")
    post(server, "/v1/completions", b"{")
    after = server.metric("gpt2_serve_requests_total", path="/v1/completions", status="400")
    assert after == before + 1
    httpx.get(server.url + "/no/such/path")
    assert server.metric("gpt2_serve_requests_total", path="other", status="404") >= 1


# --- The command ----------------------------------------------------------------------------------


def test_the_command_serves_and_says_where(bundle: Path) -> None:
    command = [
        sys.executable, "-m", "gpt2_edge.serve", "--model", str(bundle), "--port", "0",
        "--threads", "1", "--provider", "cpu",
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline, line = time.monotonic() + 60, ""
        while "http://" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line or process.poll() is None, "the server exited"
        base = "http://" + line.split("http://", 1)[1].split("/ ", 1)[0]
        assert base.startswith("http://127.0.0.1:")
        assert httpx.get(base + "/health", timeout=10).json() == {"status": "ok"}
        answer = httpx.post(
            base + "/v1/completions", json={"prompt": "Hi", "max_tokens": 3}, timeout=10
        )
        assert answer.json()["model"] == bundle.name
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop
        process.wait(30)
    assert process.returncode == 130  # the house's Ctrl-C exit code
    assert "Traceback" not in process.stderr.read()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--max-batch", "0"], "--max-batch must be from 1"),
        (["--max-queue", "-1"], "--max-queue must be 0 or more"),
        (["--port", "70000"], "--port must be from 0 to 65535"),
        (["--cors-origin", "localhost:3000/"], "--cors-origin must be an origin"),
        (["--api-key", " "], "--api-key is empty"),
        (["--model", "/no/such/bundle"], "/no/such/bundle"),
        (["--threads", "0"], "threads must be"),
    ],
)
def test_command_errors_are_one_sentence(args: list[str], fragment: str, bundle: Path) -> None:
    from gpt2_edge.serve import cli
    from typer.testing import CliRunner

    full = ["--model", str(bundle), *args] if "--model" not in args else args
    result = CliRunner().invoke(cli.app, full)
    assert result.exit_code == 1, result.output
    message = result.stderr.strip()
    assert message.startswith("Error: ") and "\n" not in message and fragment in message, message


UNSENDABLE_KEYS = [
    (["--api-key", "caf\u00e9"], {}, "--api-key"),
    (["--api-key", "two words"], {}, "--api-key"),
    (["--api-key", "key\x7f"], {}, "--api-key"),
    ([], {"GPT2_SERVE_API_KEY": "caf\u00e9"}, "GPT2_SERVE_API_KEY"),
]


@pytest.mark.parametrize(("args", "env", "name"), UNSENDABLE_KEYS, ids=range(len(UNSENDABLE_KEYS)))
def test_an_api_key_clients_cannot_send_is_refused_at_start(
    args: list[str], env: dict, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP headers are bytes: only printable ASCII without spaces reads the same everywhere."""
    from gpt2_edge.serve import cli
    from typer.testing import CliRunner

    def start(*args: Any) -> None:
        raise AssertionError("the server would start")

    monkeypatch.setattr(cli, "run", start)
    result = CliRunner().invoke(cli.app, args, env=env)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"Error: {name} must be printable ASCII without spaces, as clients send it in an HTTP "
        "header."
    )


def test_printable_ascii_api_keys_pass() -> None:
    from gpt2_edge.serve.config import check_api_key

    check_api_key("sk-proj_AZaz09!#$%&'*+./:;<=>?@[]^`{|}~", "--api-key")
    check_api_key(None, "--api-key")


def test_a_busy_port_is_one_sentence(bundle: Path) -> None:
    from gpt2_edge.serve import cli
    from typer.testing import CliRunner

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli.app, ["--model", str(bundle), "--port", str(port)])
    assert result.exit_code == 1 and f"Cannot listen on 127.0.0.1:{port}" in result.stderr


class _FakeSocket:
    def __init__(self, host: str):
        self.host = host

    def getsockname(self) -> tuple[str, int]:
        return (self.host, 8000)


def test_only_a_reachable_server_without_a_key_warns() -> None:
    assert exposure_warning(_FakeSocket("127.0.0.1"), None) is None  # type: ignore[arg-type]
    assert exposure_warning(_FakeSocket("::1"), None) is None  # type: ignore[arg-type]
    assert exposure_warning(_FakeSocket("0.0.0.0"), "key") is None  # type: ignore[arg-type]
    warning = exposure_warning(_FakeSocket("0.0.0.0"), None)  # type: ignore[arg-type]
    assert warning and "--api-key" in warning


BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r} or name.startswith({prefix!r}):
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, Block())
"""
SERVE_EXTRA = {"starlette", "uvicorn", "prometheus_client"}


def test_the_runtime_never_imports_the_server(bundle: Path) -> None:
    code = BLOCK.format(blocked=SERVE_EXTRA, prefix="gpt2_edge.serve") + (
        "import importlib, pkgutil, gpt2_edge.runtime as rt\n"
        "for m in pkgutil.iter_modules(rt.__path__):\n"
        "    if m.name != '__main__':\n"
        "        importlib.import_module('gpt2_edge.runtime.' + m.name)\n"
        f"g = rt.load({str(bundle)!r}, provider='cpu', threads=1)\n"
        "print(len(g.generate('Hi', max_new_tokens=3, temperature=0).tokens))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr


def test_without_the_serve_extra_the_command_says_how_to_get_it(bundle: Path) -> None:
    code = BLOCK.format(blocked=SERVE_EXTRA, prefix="-") + "from gpt2_edge.serve.cli import main\n"
    done = subprocess.run(
        [sys.executable, "-c", code + "main()\n", "--model", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "pip install 'gpt2-edge[serve]'" in done.stderr and done.stderr.count("\n") == 1
