"""OpenAI's response objects: whole completions, streamed chunks, logprobs and usage.

A choice's text is built by one :class:`ChoiceText` whether it is streamed or not, so the
streamed pieces join to exactly the text of the same request answered whole.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from gpt2_edge.runtime import Tokenizer, TokenLogprob

from ..jobs import Piece

# The runtime's finish reasons in OpenAI's words: a full context ends a choice as its length.
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}


@dataclass(frozen=True)
class Named:
    """A token as OpenAI's API shows it: its name (:func:`token_name`) and its bytes."""

    name: str
    raw: bytes | None

    @classmethod
    def of(cls, tokenizer: Tokenizer, token_id: int) -> Named:
        raw = tokenizer.token_bytes(token_id)
        return cls(token_name(token_id, raw), raw)


@dataclass(frozen=True)
class Entry:
    """One token's log-probability as a response shows it: the token, its value (None where
    nothing precedes it), the likeliest tokens at its position with theirs, and where it starts
    in the choice's text (``text_offset``)."""

    token: Named
    logprob: float | None
    top: list[tuple[Named, float]]
    offset: int = 0

    @classmethod
    def of(cls, token: TokenLogprob, offset: int, tokenizer: Tokenizer) -> Entry:
        top = [(Named.of(tokenizer, t.token), t.logprob) for t in token.top]
        return cls(Named.of(tokenizer, token.token), token.logprob, top, offset)

    @classmethod
    def unscored(cls, tokenizer: Tokenizer, token_id: int, offset: int) -> Entry:
        """A token with no log-probability (an echoed prompt's first)."""
        return cls(Named.of(tokenizer, token_id), None, [], offset)


def token_name(token_id: int, raw: bytes | None) -> str:
    """A token's text, as OpenAI's API names tokens in ``tokens`` and as ``top_logprobs`` keys.

    A byte-level token that is not whole UTF-8 characters (part of an emoji, say) would decode
    to U+FFFD, so that several such tokens collapsed into one key and a chosen one could go
    missing from its own list: OpenAI names those ``bytes:\\xe2\\x80`` (their bytes, escaped).
    An id the tokenizer lacks (a padded vocabulary) is ``token_id:N``, vLLM's name for a token
    by its id.
    """
    if raw is None:
        return f"token_id:{token_id}"
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


class Offsets:
    """Where each token of a sequence starts in its text: the length of the whole characters
    the tokens before it decode to (a character split over tokens counts once, when whole; a
    token's own ``text`` would count U+FFFD for each of its parts). Streamed and whole answers
    count alike, from the tokens alone.

    Args:
        tokenizer: the bundle's tokenizer.
        base: the length of the text before the first token (the echoed prompt).
    """

    def __init__(self, tokenizer: Tokenizer, base: int = 0):
        self._tokenizer, self._base = tokenizer, base
        self._decoded = tokenizer.stream()  # releases whole tokens, once their characters are
        self._held: list[int] = []  # tokens since its last release: an incomplete character

    def next(self, token: int) -> int:
        """The offset of ``token``, which comes next."""
        # The held tokens' whole characters count; their incomplete tail decodes to U+FFFD.
        held = self._tokenizer.decode_unchecked(self._held).rstrip("\ufffd") if self._held else ""
        offset = self._base + len(self._decoded.text) + len(held)
        if self._decoded.push(token):
            self._held.clear()
        else:
            self._held.append(token)
        return offset


@dataclass
class ChoiceText:
    """One choice as it is produced.

    Attributes:
        text: the text so far (after the prefix, when there is one).
        tokens: tokens generated.
        entries: log-probabilities, when asked (the echoed prompt's first).
        finish: OpenAI's finish reason once the choice ended.
        strip_space: drop one leading space from the first text (chat replies; see ``chat.py``).
        offsets: gives the entries' ``text_offset`` (completions with logprobs), else None.
        tokenizer: the bundle's, to name the tokens of log-probabilities (:class:`Named`).
    """

    text: str = ""
    tokens: int = 0
    entries: list[Entry] = field(default_factory=list)
    finish: str | None = None
    strip_space: bool = False
    offsets: Offsets | None = None
    tokenizer: Tokenizer | None = None  # names the tokens of log-probabilities

    def add(self, piece: Piece) -> tuple[str, Entry | None]:
        """Record one token; returns the text it adds and its log-probability entry."""
        self.tokens += piece.token is not None
        text = piece.text
        if self.strip_space and text:
            text, self.strip_space = text.removeprefix(" "), False
        self.text += text
        offset = 0
        if self.offsets is not None and piece.token is not None:
            offset = self.offsets.next(piece.token)
        entry = None
        if piece.logprob is not None:
            assert self.tokenizer is not None, "log-probabilities need the tokenizer"
            entry = Entry.of(piece.logprob, offset, self.tokenizer)
        if entry is not None:
            self.entries.append(entry)
        if piece.finish is not None:
            self.finish = FINISH_REASONS[piece.finish]
        return text, entry


def new_id(prefix: str) -> str:
    """A fresh response id (``cmpl-...``, ``chatcmpl-...``)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_logprobs(entries: list[Entry]) -> dict[str, list[Any]]:
    """The legacy completions ``logprobs`` object."""
    return {
        "tokens": [e.token.name for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [
            None if e.logprob is None else {t.name: v for t, v in e.top} for e in entries
        ],
        "text_offset": [e.offset for e in entries],
    }


def chat_logprobs(entries: list[Entry]) -> dict[str, list[dict[str, Any]]]:
    """The chat ``logprobs`` object: ``{"content": [...]}`` with each token's own bytes (those
    of part of a character too, which its decoded text would show as U+FFFD)."""

    def one(token: Named, logprob: float | None) -> dict[str, Any]:
        raw = None if token.raw is None else list(token.raw)
        return {"token": token.name, "logprob": logprob, "bytes": raw}

    return {
        "content": [
            {**one(e.token, e.logprob), "top_logprobs": [one(t, v) for t, v in e.top]}
            for e in entries
        ]
    }


def completion_body(
    rid: str,
    model: str,
    choices: list[ChoiceText],
    prefixes: list[str],
    prompt_tokens: int,
    logprobs: bool,
) -> dict[str, Any]:
    """A whole ``text_completion``; ``prefixes`` are the echoed prompts (or "")."""
    return {
        "id": rid,
        "object": "text_completion",
        "created": now(),
        "model": model,
        "choices": [
            {
                "index": i,
                "text": prefix + c.text,
                "logprobs": completion_logprobs(c.entries) if logprobs else None,
                "finish_reason": c.finish,
            }
            for i, (c, prefix) in enumerate(zip(choices, prefixes, strict=True))
        ],
        "usage": usage(prompt_tokens, sum(c.tokens for c in choices)),
    }


def chat_body(
    rid: str, model: str, choices: list[ChoiceText], prompt_tokens: int, logprobs: bool
) -> dict[str, Any]:
    """A whole ``chat.completion``."""
    return {
        "id": rid,
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": chat_logprobs(c.entries) if logprobs else None,
                "finish_reason": c.finish,
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, sum(c.tokens for c in choices)),
    }


def completion_chunk(
    rid: str,
    model: str,
    index: int,
    text: str,
    logprobs: dict[str, Any] | None,
    finish: str | None,
    include_usage: bool,
) -> dict[str, Any]:
    choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
    return _chunk(rid, model, False, [choice], include_usage)


def chat_chunk(
    rid: str,
    model: str,
    index: int,
    delta: dict[str, Any],
    logprobs: dict[str, Any] | None,
    finish: str | None,
    include_usage: bool,
) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    return _chunk(rid, model, True, [choice], include_usage)


def usage_chunk(rid: str, model: str, chat: bool, prompt_tokens: int, completion: int) -> dict:
    """The last chunk of a stream with ``include_usage``: no choices, the usage."""
    return {**_chunk(rid, model, chat, [], False), "usage": usage(prompt_tokens, completion)}


def _chunk(
    rid: str, model: str, chat: bool, choices: list[dict[str, Any]], include_usage: bool
) -> dict[str, Any]:
    """A stream chunk; with ``include_usage`` every chunk before the last says ``usage: null``."""
    chunk: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": now(),
        "model": model,
        "choices": choices,
    }
    if include_usage:
        chunk["usage"] = None
    return chunk
