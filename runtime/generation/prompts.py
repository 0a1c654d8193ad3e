"""Prompts to token ids: type checks, the start token for an empty prompt, and the context bound."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..contract.tokenizer import Tokenizer, token_id_array
from ..errors import EdgeError, PromptTooLong
from ..settings.options import GenerationOptions
from .scoring import scored_pair


def prompt_list(prompts: object) -> list[str]:
    """A non-empty list (or tuple) of strings, as a list; EdgeError otherwise."""
    if isinstance(prompts, (list, tuple)) and prompts:
        for index, item in enumerate(prompts):
            if not isinstance(item, str):
                raise EdgeError(
                    f"Every prompt must be a string, but item {index} is a {type(item).__name__}."
                )
        return list(prompts)
    shown = "an empty list" if isinstance(prompts, (list, tuple)) else type(prompts).__name__
    raise EdgeError(f"Prompts must be a non-empty list of strings, got {shown}.")


class PromptFitter:
    """Encodes prompts and fits them to the model's context.

    Args:
        tokenizer: the bundle's tokenizer.
        context: the model's context length.
        bos_id: the start token, fed for an empty prompt (None: an empty prompt is an error).
        vocab: ids the model has (the embedding's rows).
    """

    def __init__(self, tokenizer: Tokenizer, context: int, bos_id: int | None, vocab: int):
        self.tokenizer, self.context, self.bos_id, self.vocab = tokenizer, context, bos_id, vocab

    def prompt_ids(
        self, prompt: str, options: GenerationOptions, room: int | None = None
    ) -> np.ndarray:
        """A prompt's ids fitted to the context (:meth:`ids`) for ``options``; ``room`` as in
        :meth:`fit_ids`."""
        _check_options("prompt_ids", options)
        if not isinstance(prompt, str):
            raise EdgeError(f"A prompt must be a string, got {type(prompt).__name__}.")
        return self.ids(prompt, options.truncate, self.room(options, room))

    def fit_ids(
        self, ids: np.ndarray | Sequence[int], options: GenerationOptions, room: int | None = None
    ) -> np.ndarray:
        """Given prompt ids fitted to the context for ``options``.

        ``room``: positions to leave free for new tokens; default what ``options`` need (1, or
        ``max_new_tokens`` with ``truncate="left"``); 0 for a prompt that is only scored.

        Raises:
            EdgeError: ``ids`` is not a non-empty list or 1-D array of ids the model has, or
                ``options`` is not a :class:`GenerationOptions`, or the ids do not fit.
        """
        _check_options("fit", options)
        rule = f"Prompt ids must be a non-empty list of integers from 0 to {self.vocab - 1}"
        array = token_id_array(ids, self.vocab, rule)
        if not array.size:
            raise EdgeError(f"{rule}, got none.")
        return self.fit(array, options.truncate, self.room(options, room))

    def room(self, options: GenerationOptions, room: int | None = None) -> int:
        """Positions a prompt leaves free: ``room`` when given; else, left-truncated,
        ``max_new_tokens`` of them, so that they all fit (1 without truncation, which never cuts
        a prompt that fits)."""
        if room is not None:
            return room
        if options.truncate != "left":
            return 1
        if options.max_length is not None:  # prompt plus new tokens: no room to cut the prompt to
            raise EdgeError(
                "Left truncation needs max_new_tokens (the room to leave for new tokens), not "
                "max_length.",
                field="truncate",
            )
        if options.max_new_tokens >= self.context:
            raise EdgeError(
                "Left truncation keeps the last (context - max_new_tokens) prompt tokens, so "
                f"max_new_tokens must be below the model's context of {self.context} tokens, "
                f"got {options.max_new_tokens}.",
                field="max_new_tokens",
            )
        return options.max_new_tokens

    def fitted(self, prompt: str, options: GenerationOptions) -> np.ndarray:
        """:meth:`prompt_ids` with room for ``options``'s ``max_length``."""
        ids = self.prompt_ids(prompt, options)
        if options.max_length is not None and options.max_length <= ids.size:
            raise EdgeError(
                f"max_length {options.max_length} leaves no room for new tokens after a "
                f"{ids.size}-token prompt; raise it or give max_new_tokens instead.",
                field="max_length",
            )
        return ids

    @property
    def max_chars(self) -> int | None:
        """Characters beyond which a prompt surely holds more tokens than the context.

        ``context * Tokenizer.max_token_chars`` (131,072 for GPT-2 at 1,024 tokens); None when
        the tokenizer gives no such bound. A longer prompt is refused (or, with
        ``truncate="left"``, cut to that many last characters) before it is tokenized, so a huge
        prompt costs no more time or memory than one that fills the context.
        """
        per_token = self.tokenizer.max_token_chars
        return None if per_token is None else self.context * per_token

    def encode(self, prompt: str) -> np.ndarray:
        """Prompt token ids; an empty prompt becomes the start token, as GPT-2 was trained."""
        if not isinstance(prompt, str):
            raise EdgeError(f"A prompt must be a string, got {type(prompt).__name__}.")
        ids = self.tokenizer.encode(prompt)
        if ids.size:
            return ids
        if self.bos_id is None:
            raise EdgeError("The prompt is empty and the bundle names no start token to use.")
        return np.array([self.bos_id], dtype=np.int64)

    def ids(self, prompt: str, truncate: str | None, room: int = 1) -> np.ndarray:
        """The prompt's token ids, fitted to the context by :meth:`fit`.

        A prompt longer than :attr:`max_chars` is refused without tokenizing it, or with
        ``truncate="left"`` only its tail (:meth:`Tokenizer.tail`) is tokenized and the tail's
        first token, which the cut may have split, is dropped.
        """
        # max_chars is at least the context (a token stands for one character or more), so a
        # prompt that short needs no bound, nor the vocabulary scan that gives it.
        limit = None if len(prompt) <= self.context else self.max_chars
        if limit is None or len(prompt) <= limit:
            return self.fit(self.encode(prompt), truncate, room)
        if truncate is None:
            raise PromptTooLong(
                f"The prompt is {len(prompt):,} characters long, more than the model's context "
                f"of {self.context} tokens can hold (at most {max(self.context - room, 1)} fit)"
            )
        return self.fit(self.encode(self.tokenizer.tail(prompt, limit))[1:], truncate, room)

    def fit(self, ids: np.ndarray, truncate: str | None, room: int = 1) -> np.ndarray:
        """Apply the context bound to prompt ids: keep them, keep the last ones, or refuse.

        A prompt keeps at most ``context - room`` tokens. Without truncation ``room`` is 1, so
        that one new token fits, and one that fits is never cut: the budget shrinks instead, and
        generation ends with finish reason ``context``; a prompt that is only scored needs no
        room (0). With ``truncate="left"`` a prompt keeps its last ``context - room`` tokens, so
        that ``room`` new tokens fit (transformers' text-generation pipeline cuts so, its
        ``handle_long_generation="hole"``).

        Args:
            ids: the prompt's token ids.
            truncate: None or ``"left"``.
            room: positions the prompt leaves for new tokens, 0 to context - 1 (default 1).
        """
        keep = max(self.context - room, 1)
        if ids.size <= keep:
            return ids
        if truncate == "left":
            return ids[ids.size - keep :]
        raise PromptTooLong(
            f"The prompt is {ids.size} tokens long but the model's context is {self.context}, "
            f"so at most {keep} fit"
        )

    def score_row(
        self, text: str, context: str | None, start: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(context ids, text ids) to score, by :func:`.scoring.scored_pair`'s rule: after the
        context (if any), after the start token too when ``start``."""
        if not isinstance(text, str):
            raise EdgeError(
                f"A text to score must be a string, got {type(text).__name__}.", field="text"
            )
        target = self.tokenizer.encode(text)
        if not target.size:
            raise EdgeError("Nothing to score: the text is empty.", field="text")
        if start and self.bos_id is None:
            raise EdgeError("The bundle names no start token to score after.", field="start")
        before = self.tokenizer.encode(context) if context else np.zeros(0, dtype=np.int64)
        return scored_pair(before, target, self.bos_id if start else None, self.context)


def _check_options(method: str, options: object) -> None:
    if not isinstance(options, GenerationOptions):
        raise EdgeError(
            f"{method}() takes GenerationOptions as its options, got {type(options).__name__}."
        )
