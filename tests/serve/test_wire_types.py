"""One rule for the JSON type of every field the server reads: a value of another type is a 400
naming the field, before its value is looked at, whichever field it is. Python's ``True == 1``
and ``1.0 == 1`` had let ``"best_of": true`` (and 1.0) through as 1 where ``"n": true`` was
refused."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")

from gpt2_edge.runtime import Generator
from gpt2_edge.serve.errors import ApiError
from gpt2_edge.serve.wire.protocol import chat_request, completion_request

PROMPT = {"prompt": "hi"}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}
# (endpoint body, field, a value of the field's type that the server accepts)
INTEGERS = [(PROMPT, "best_of"), (PROMPT, "n"), (PROMPT, "max_tokens"), (PROMPT, "logprobs"),
            (PROMPT, "seed"), (PROMPT, "top_k"), (CHAT, "max_completion_tokens")]  # fmt: skip
BOOLEANS = [(PROMPT, "stream"), (PROMPT, "echo"), (PROMPT, "ignore_eos"), (CHAT, "logprobs"),
            (CHAT, "parallel_tool_calls")]  # fmt: skip
OBJECTS = [(PROMPT, "logit_bias"), (PROMPT, "stream_options"), (CHAT, "response_format"),
           (CHAT, "logit_bias")]  # fmt: skip
STRINGS = [(PROMPT, "suffix"), (PROMPT, "user"), (CHAT, "user")]
ARRAYS = [(CHAT, "tools"), (CHAT, "functions")]


def refused(gen: Generator, body: dict, field: str, value: object) -> ApiError:
    check = chat_request if "messages" in body else completion_request
    with pytest.raises(ApiError) as caught:
        check({**body, field: value}, gen)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(("body", "field"), INTEGERS, ids=[f for _, f in INTEGERS])
@pytest.mark.parametrize("value", [True, False, 1.0, "1", [1], {"a": 1}], ids=repr)
def test_an_integer_field_takes_integers_only(
    gen: Generator, body: dict, field: str, value: object
) -> None:
    error = refused(gen, body, field, value)
    assert error.message.startswith(f"{field} must be"), error.message


@pytest.mark.parametrize(
    ("body", "field", "values"),
    [(b, f, [1, 1.0, "true", [True]]) for b, f in BOOLEANS]
    + [(b, f, [True, 1, "{}", [{}]]) for b, f in OBJECTS]
    + [(b, f, [True, 1, 1.5, ["x"], {"a": "x"}]) for b, f in STRINGS]
    + [(b, f, [True, 1, "[]", {"a": 1}]) for b, f in ARRAYS],
    ids=[f for _, f in BOOLEANS + OBJECTS + STRINGS + ARRAYS],
)
def test_every_other_field_holds_to_its_type(
    gen: Generator, body: dict, field: str, values: list
) -> None:
    for value in values:
        error = refused(gen, body, field, value)
        assert error.message.startswith(f"{field} must be"), error.message


def test_the_values_of_the_right_type_still_pass(gen: Generator) -> None:
    completion_request({**PROMPT, "best_of": 1, "suffix": "", "user": "me", "logit_bias": {}}, gen)
    chat_request({**CHAT, "tools": [], "parallel_tool_calls": False, "user": "me"}, gen)
