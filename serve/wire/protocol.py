"""Request bodies of ``/v1/completions`` and ``/v1/chat/completions``, checked field by field
into a :class:`GenerationRequest`.

The sampling settings and stop strings are validated by the runtime itself
(:meth:`gpt2_edge.runtime.Generator.resolve`), so the server accepts what ``gpt2-generate``
accepts and says so in the same sentences (naming the wire field each is about), and also
settings the decoding mode
ignores (``top_p`` with temperature 0), as OpenAI's API does; this module checks the wire
format's own fields (``prompt``, ``n``, ``stream``, ``echo``, ``logprobs``...). Unknown fields are
ignored, as local OpenAI-compatible servers do, but a known OpenAI feature this server does not
have (``suffix``, ``logit_bias``, ``best_of``, tools), or a runtime setting the HTTP API does not
take (``num_beams``, ``draft``, ``truncate``...), is refused rather than silently dropped.
"""

from __future__ import annotations

import codecs
import json
import sys
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np
from gpt2_edge.runtime import (
    GENERATOR_NAMES,
    MAX_LOGPROBS,
    MAX_SEQUENCES,
    SAMPLING_NAMES,
    EdgeError,
    GenerationOptions,
    Generator,
    PromptTooLong,
    SamplingSettings,
    SettingError,
)

from ..config import MAX_REQUEST_ROWS
from ..errors import ApiError
from .chat import TURN_STOPS, transcript

MAX_COMPLETION_LOGPROBS = 5  # OpenAI's bound for /v1/completions
# The JSON type of each wire field that has no check of its own (n, max_tokens, stream, echo,
# logprobs... check theirs with their range; the sampling settings the runtime checks), so that
# every field's type is held to one rule (_check_types), even where its value is then ignored.
_KINDS = {str: "a string", int: "an integer", bool: "true or false", dict: "an object"}
_KINDS[list] = "an array"
COMMON_TYPES: dict[str, type] = {"user": str, "stream_options": dict}
COMPLETION_TYPES = {**COMMON_TYPES, "suffix": str, "best_of": int, "logit_bias": dict}
CHAT_TYPES = {**COMMON_TYPES, "logit_bias": dict, "tools": list, "functions": list}
CHAT_TYPES.update(response_format=dict, parallel_tool_calls=bool)
# An extra field of /v1/completions: echo's log-probabilities condition the prompt's first token
# on the start token (<|endoftext|>), as lm-evaluation-harness's hf backend scores a text with no
# context. Without it the first token's log-probability is null, as OpenAI's and vLLM's are.
START_FIELD = "echo_start_token"
# Settings the runtime has beyond OpenAI's, taken as extra body fields under the same names.
EXTRA_SETTINGS = ("top_k", "min_p", "repetition_penalty", "no_repeat_ngram_size", "ignore_eos")
# The runtime's names for the settings whose wire names differ.
RUNTIME_NAMES = {"max_new_tokens": "max_tokens", "num_return_sequences": "n"}
# The runtime's settings that the HTTP API does not take (beams, drafting, truncation, its own
# names for max_tokens and n): refused by name, so that nobody believes they took effect.
RUNTIME_ONLY = tuple(n for n in GENERATOR_NAMES if n not in ("stop", "ignore_eos", "logprobs"))


@dataclass(frozen=True)
class GenerationRequest:
    """A checked completion or chat request.

    Attributes:
        chat: a chat completion (else a plain one).
        prompts: each prompt's ids, fitted to the context.
        prompt_texts: each prompt's text (what ``echo`` returns).
        n: choices per prompt.
        sampling: how tokens are picked.
        options: budget, stop strings, ignore_eos and logprobs, as the runtime takes them.
        max_tokens: new tokens per choice, or None for the bundle's default; 0 generates nothing.
        stream: answer with server-sent events.
        include_usage: end a stream with a usage chunk.
        echo: the prompt's text (and with logprobs, its tokens' log-probabilities) comes first.
        start: echo's log-probabilities condition the first token on the start token too.
    """

    chat: bool
    prompts: list[np.ndarray]
    prompt_texts: list[str]
    n: int
    sampling: SamplingSettings
    options: GenerationOptions
    max_tokens: int | None
    stream: bool
    include_usage: bool
    echo: bool
    start: bool = False

    @property
    def logprobs(self) -> int | None:
        """Alternatives to report per token, or None for no log-probabilities."""
        return self.options.logprobs

    @property
    def rows(self) -> int:
        """Choices in all (each a row of the batch while it generates)."""
        return len(self.prompts) * self.n


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; a 400 otherwise."""
    text = _text(body)
    if not text.strip():
        raise ApiError(400, "The request body is empty; send a JSON object.")
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_int=_integer)
    except json.JSONDecodeError as exc:
        msg = exc.msg.removesuffix(" at")  # "Unterminated string starting at": at the position
        reason = f"{msg[:1].lower()}{msg[1:]} at line {exc.lineno}, column {exc.colno}"
        raise ApiError(400, f"The request body is not valid JSON: {reason}.") from None
    except _Refused as exc:
        raise ApiError(400, str(exc)) from None
    except RecursionError:
        raise ApiError(400, "The request body is not valid JSON: nested too deeply.") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"The request body must be a JSON object, got {_kind(data)}.")
    return data


def _text(body: bytes) -> str:
    """The body decoded: JSON between systems is UTF-8 (RFC 8259), a leading BOM ignored."""
    start = len(codecs.BOM_UTF8) if body.startswith(codecs.BOM_UTF8) else 0
    try:
        return body[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, f"The request body is not UTF-8 (bad byte at offset {start + exc.start})."
        ) from None


class _Refused(ValueError):
    """A JSON text Python parses but the server refuses; its message is the whole sentence."""


def _no_constant(name: str) -> Any:
    raise _Refused(f"The request body is not valid JSON: {name} is not a JSON number.")


def _integer(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # Python converts at most sys.get_int_max_str_digits() digits
        raise _Refused(
            f"The request body holds an integer of {len(digits.lstrip('-')):,} digits; this "
            f"server reads integers of at most {sys.get_int_max_str_digits():,} digits."
        ) from None


def completion_request(body: dict[str, Any], gen: Generator) -> GenerationRequest:
    """Check a ``/v1/completions`` body."""
    _check_types(body, COMPLETION_TYPES)
    for name, allowed in (
        ("suffix", (None, "")),
        ("best_of", (None, 1)),
        ("logit_bias", (None, {})),
    ):
        if body.get(name) not in allowed:
            raise ApiError(400, f"{name} is not supported by this server.", name)
    logprobs = body.get("logprobs")
    if logprobs is not None:
        logprobs = _int(body, "logprobs", 0, MAX_COMPLETION_LOGPROBS)
    texts, given_ids = _prompts(body.get("prompt"), gen)
    return _request(body, gen, False, texts, given_ids, logprobs, ())


def chat_request(body: dict[str, Any], gen: Generator) -> GenerationRequest:
    """Check a ``/v1/chat/completions`` body; the messages become one prompt (:mod:`.chat`)."""
    _check_types(body, CHAT_TYPES)
    for name in ("tools", "functions", "logit_bias"):
        if body.get(name) not in (None, [], {}):
            raise ApiError(400, f"{name} is not supported by this server.", name)
    form = body.get("response_format")
    if form is not None and not (isinstance(form, dict) and form.get("type") == "text"):
        raise ApiError(400, "response_format can only be text for this model.", "response_format")
    logprobs = None
    if _bool(body, "logprobs", False):
        logprobs = (
            0 if body.get("top_logprobs") is None else _int(body, "top_logprobs", 0, MAX_LOGPROBS)
        )
    elif body.get("top_logprobs") is not None:
        raise ApiError(400, "top_logprobs needs logprobs set to true.", "top_logprobs")
    # Chat has no echo, so at least one new token; the field's own name in the sentence.
    limit = "max_completion_tokens" if body.get("max_completion_tokens") is not None else None
    if limit or body.get("max_tokens") is not None:
        name = limit or "max_tokens"
        body = {**body, "max_tokens": _int(body, name, 1, None)}
    if body.get("echo") is not None:
        raise ApiError(400, "echo is for /v1/completions; chat completions do not echo.", "echo")
    text = transcript(body.get("messages"))
    return _request(body, gen, True, [text], None, logprobs, TURN_STOPS)


def _request(
    body: dict[str, Any],
    gen: Generator,
    chat: bool,
    texts: list[str],
    given_ids: list[np.ndarray] | None,
    logprobs: int | None,
    turn_stops: tuple[str, ...],
) -> GenerationRequest:
    for name in RUNTIME_ONLY:
        if body.get(name) is not None:
            wire = RUNTIME_NAMES.get(name)
            instead = f"; use {wire}" if wire else ""
            raise ApiError(
                400,
                f"{name} is a gpt2-edge runtime setting this server does not take{instead}.",
                name,
            )
    stream = _bool(body, "stream", False)
    include_usage = _stream_options(body, stream)
    echo = _bool(body, "echo", False)
    start = _bool(body, START_FIELD, False)
    if start and not (echo and logprobs is not None):
        raise ApiError(400, f"{START_FIELD} needs echo and logprobs.", START_FIELD)
    n = 1 if body.get("n") is None else _int(body, "n", 1, MAX_SEQUENCES)
    max_tokens = None if body.get("max_tokens") is None else _int(body, "max_tokens", 0, None)
    stop = _stop(body.get("stop"))
    settings = {name: body.get(name) for name in (*SAMPLING_NAMES, "ignore_eos")}
    settings.update(max_new_tokens=max_tokens or None, logprobs=logprobs, stop=stop + turn_stops)
    try:
        sampling, options = gen.resolve(strict=False, **settings)
    except EdgeError as exc:
        raise _from_edge(exc) from None
    if max_tokens == 0 and not echo:
        raise ApiError(400, "max_tokens 0 generates nothing; it needs echo.", "max_tokens")
    count = len(texts) if given_ids is None else len(given_ids)
    if count * n > MAX_REQUEST_ROWS:  # more than --max-batch run in parts through the queue
        raise ApiError(
            400,
            f"This request needs {count * n} rows ({count} prompts x n={n}) but the server "
            f"takes at most {MAX_REQUEST_ROWS} in one request; send several requests.",
            "n" if n > 1 else "prompt",
        )
    # Only scored (max_tokens 0 with echo), a prompt needs no position for a new token and may
    # fill the context, but for the start token when it is asked for.
    room = (1 if start else 0) if max_tokens == 0 else None
    try:
        if given_ids is None:
            ids = [_fitted(gen, t, options, room) for t in texts]
        else:
            ids = [_fitted(gen, i, options, room) for i in given_ids]
            texts = [gen.tokenizer.decode(i) for i in ids]
    except EdgeError as exc:
        raise _prompt_error(exc, "messages" if chat else "prompt") from None
    return GenerationRequest(
        chat, ids, texts, n, sampling, options, max_tokens, stream, include_usage, echo, start
    )


def _fitted(
    gen: Generator, prompt: str | np.ndarray, options: GenerationOptions, room: int | None
) -> np.ndarray:
    """A prompt's ids fitted to the context, leaving ``room`` positions (None: the runtime's
    rule, a position for a new token)."""
    if isinstance(prompt, np.ndarray):
        return gen.fit(prompt, options, room=room)
    return gen.prompt_ids(prompt, options, room=room)


def _prompts(prompt: Any, gen: Generator) -> tuple[list[str], list[np.ndarray] | None]:
    """``prompt`` as texts, or as token id arrays when it holds ids (OpenAI's four forms)."""
    if isinstance(prompt, str):
        return [prompt], None
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt), None
        if all(_is_int(t) for t in prompt):
            return [], [_ids(prompt, gen, "prompt")]
        if all(isinstance(p, list) for p in prompt):
            return [], [_ids(p, gen, f"prompt[{i}]") for i, p in enumerate(prompt)]
    raise ApiError(
        400,
        "prompt must be a string, a non-empty list of strings, a list of token ids, or a list "
        "of such lists.",
        "prompt",
    )


def _ids(tokens: list[Any], gen: Generator, where: str) -> np.ndarray:
    vocab = gen.session.arch.vocab_size
    if not tokens or not all(_is_int(t) and 0 <= t < vocab for t in tokens):
        raise ApiError(
            400, f"{where} must be a non-empty list of token ids from 0 to {vocab - 1}.", "prompt"
        )
    return np.asarray(tokens, dtype=np.int64)


def _prompt_error(exc: EdgeError, field: str) -> ApiError:
    """The runtime's sentence about a prompt; for one too long, without the runtime's offer to
    truncate it: the HTTP API has no truncate setting."""
    message = f"{exc.what}; shorten the {field}." if isinstance(exc, PromptTooLong) else str(exc)
    return ApiError(400, message, field)


def _stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "stop must be a non-empty string or a list of them.", "stop")
    return tuple(stop)


def _stream_options(body: dict[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise ApiError(400, "stream_options needs stream set to true.", "stream_options")
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object.", "stream_options")
    return _bool(options, "include_usage", False, "stream_options.include_usage")


def _bool(body: dict[str, Any], name: str, default: bool, shown: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{shown or name} must be true or false, got {_value(value)}.", name)
    return value


def _int(body: dict[str, Any], name: str, low: int, high: int | None) -> int:
    value = body.get(name)
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ApiError(400, f"{name} must be an integer {bound}, got {_value(value)}.", name)
    return int(value)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(body: dict[str, Any], types: dict[str, type]) -> None:
    """Each field of ``types`` that ``body`` gives must be of its JSON type (null is not
    given), before its value is looked at: Python's ``True == 1`` and ``1.0 == 1`` had let
    ``"best_of": true`` through as 1 where ``"n": true`` was refused."""
    for name, kind in types.items():
        value = body.get(name)
        if value is None or (isinstance(value, kind) and (kind is not int or _is_int(value))):
            continue
        raise ApiError(400, f"{name} must be {_KINDS[kind]}, got {_value(value)}.", name)


def _from_edge(exc: EdgeError) -> ApiError:
    """The runtime's refusal of a setting as a 400 naming the wire field it is about (the error
    carries the field), with a refused value shown as JSON, as the client sent it."""
    field = RUNTIME_NAMES.get(exc.field, exc.field) if exc.field else None
    if isinstance(exc, SettingError):
        message = f"{field} must be {exc.rule}, got {_value(exc.value)}."
    else:
        message = str(exc)
    known = {*SAMPLING_NAMES, *EXTRA_SETTINGS, "stop", "logprobs", "max_tokens", "n"}
    return ApiError(400, message, field if field in known else None)


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), "null" if value is None else "a number")


def _value(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (bytes, bytearray)) else repr(value)
    return text if len(text) <= 40 else _kind(value)
