"""Generation in three layers, as in mlx-lm:

1. :class:`.steps.TokenSteps` drives a :class:`.decoder.Decoder` (whichever KV cache the graph
   has) and a sampler, and yields the new tokens of every live row per step.
2. :func:`stream_generate` adds detokenization, EOS, stop strings, the token budget, the context
   bound and timing, and yields one :class:`StreamEvent` per row and token.
3. :class:`Generator` resolves settings and prompts, and offers ``generate()``,
   ``generate_batch()``, ``stream()`` and ``score()``.

A list of prompts runs as one batch; rows that finish leave it. Beam search (``beam.py``) drives
the same decoder and returns whole sequences only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .beam import Hypothesis, beam_search
from .decoder import open_decoder
from .draft import DRAFT_TOKENS
from .errors import EdgeError
from .modes import resolve_user_settings
from .prompts import PromptFitter, prompt_list
from .results import (
    FinishReason,
    GenerationResult,
    ScoreResult,
    StreamEvent,
    Timings,
    TokenLogprob,
    TopLogprob,
)
from .sampling import Sampler, sequence_rng
from .scoring import score_ids
from .session import Session
from .settings import GenerationOptions, SamplingSettings
from .steps import Logprobs, TokenSteps
from .stream import RowText
from .tokenizer import Tokenizer, token_id_array

# Logits one model call may hold (rows x positions x vocabulary, float32): 256 MiB, as scoring.
# A larger list of prompts runs as consecutive batches of at most :func:`batch_rows` rows; each
# row has its own random generator, so the results equal one big batch's.
BATCH_LOGITS_BUDGET = 1 << 26


def batch_rows(vocab: int, positions: int = 1) -> int:
    """Most rows one batch runs, for logits of ``positions`` positions per row."""
    return max(1, BATCH_LOGITS_BUDGET // (vocab * positions))


class RowState:
    """One row's progress in layer 2 (and in a server's scheduler): its tokens, its text through
    the detokenizer and stop strings, and whether EOS, a stop string or the budget ended it.

    Args:
        prompt_len: tokens in the row's prompt.
        budget: most new tokens (see :func:`budget`).
        reason: the finish reason when the budget runs out (``length`` or ``context``).
        text: the row's detokenizer and stop filter.
    """

    def __init__(self, prompt_len: int, budget: int, reason: FinishReason, text: RowText):
        self.prompt_len, self.budget, self.budget_reason = prompt_len, budget, reason
        self.text = text
        self.tokens: list[int] = []
        self.logprobs: list[TokenLogprob] = []

    def add(self, token: int, eos: int | None) -> tuple[str, FinishReason | None]:
        """Record a new token; returns the text it releases and the finish reason if it ended
        the row (None: go on). ``eos`` None never stops on a token."""
        self.tokens.append(token)
        if token == eos:
            return self.text.finish(), "eos"
        piece = self.text.push(token)
        if self.text.stopped:
            return piece, "stop"
        if len(self.tokens) >= self.budget:
            return piece + self.text.finish(), self.budget_reason
        return piece, None


def budget(prompt_len: int, context: int, options: GenerationOptions) -> tuple[int, FinishReason]:
    """New tokens allowed after a prompt, and the finish reason when they run out."""
    room = context - prompt_len  # positions left for new tokens
    wanted = options.budget(prompt_len)
    return (wanted, "length") if wanted <= room else (room, "context")


def stream_generate(
    session: Session,
    tokenizer: Tokenizer,
    prompts: Sequence[np.ndarray],
    sampler: Sampler,
    options: GenerationOptions,
    eos_id: int | None,
    pad_id: int,
    rngs: Sequence[np.random.Generator] | None = None,
) -> Iterator[StreamEvent]:
    """Layer 2: run prompts (already fitted to the context) as one batch; yield per-token events.

    Args:
        session: the model.
        tokenizer: for detokenizing.
        prompts: B non-empty (T_i,) int64 token arrays, each shorter than the context.
        sampler: picks the tokens.
        options: budget, stop strings, ignore_eos, logprobs, drafting.
        eos_id: end-of-text id (None: never stops on a token).
        pad_id: id fed on padding.
        rngs: one random generator per row (default: each seeded by the settings' seed).
    """
    context = session.arch.context_length
    rows = []
    for p in prompts:
        allowed, reason = budget(len(p), context, options)
        rows.append(RowState(len(p), allowed, reason, RowText(tokenizer, options.stop)))
    eos = None if options.ignore_eos else eos_id
    width = max(len(p) for p in prompts) + max(r.budget for r in rows)
    decoder = open_decoder(session, pad_id, width)
    report = None if options.logprobs is None else Logprobs(options.logprobs, tokenizer)
    draft = options.draft == "prompt-lookup"
    budgets = [r.budget for r in rows]
    steps = TokenSteps(decoder, sampler, prompts, budgets, rngs, report, draft)
    start = time.perf_counter()
    first: float | None = None  # when the first tokens came out of prefill
    for step in steps:
        now = time.perf_counter()
        first = now if first is None else first
        done: list[int] = []
        for position, (index, tokens) in enumerate(zip(steps.rows, step.tokens, strict=True)):
            row = rows[index]
            for k, token in enumerate(tokens):
                logprob = step.logprobs[position][k] if step.logprobs is not None else None
                if logprob is not None:
                    row.logprobs.append(logprob)
                piece, reason = row.add(token, eos)
                result = None
                if reason is not None:
                    done.append(position)
                    result = _result(
                        row, reason, (first - start) * 1e3, (now - first) * 1e3, report
                    )
                yield StreamEvent(index, piece, token, result, logprob)
                if reason is not None:
                    break
        if done:
            steps.drop(done)


def _result(
    row: RowState,
    reason: FinishReason,
    prefill_ms: float,
    decode_ms: float,
    report: Logprobs | None,
) -> GenerationResult:
    timings = Timings(prefill_ms, decode_ms, len(row.tokens) - 1)
    logprobs = list(row.logprobs) if report is not None else None
    return GenerationResult(row.text.text, row.tokens, reason, row.prompt_len, timings, logprobs)


class Generator:
    """Text generation from one loaded bundle (layer 3).

    Settings (keyword arguments of :meth:`generate`, :meth:`generate_batch` and :meth:`stream`):
    ``max_new_tokens``, ``max_length``, ``temperature`` (0 = greedy), ``top_k``, ``top_p``,
    ``min_p``, ``repetition_penalty``, ``presence_penalty``, ``frequency_penalty``,
    ``no_repeat_ngram_size``, ``seed``, ``stop``, ``truncate``, ``ignore_eos``, ``num_beams``,
    ``length_penalty``, ``early_stopping``, ``num_return_sequences``, ``logprobs`` and ``draft``
    (see :class:`.settings.SamplingSettings` and :class:`.settings.GenerationOptions`). Each one
    left out (or None) comes from the bundle's generation defaults, else from the built-in
    constants.

    Args:
        session: the model's onnxruntime session.
        tokenizer: the bundle's tokenizer.
    """

    def __init__(self, session: Session, tokenizer: Tokenizer):
        self.session, self.tokenizer = session, tokenizer
        self.manifest = session.bundle.manifest
        special = self.manifest.special_tokens
        self.eos_id: int | None = special.get("eos")
        self.bos_id: int | None = special.get("bos", self.eos_id)
        pad = special.get("pad")
        self.pad_id: int = pad if pad is not None else (self.eos_id or 0)
        self._prompts = PromptFitter(tokenizer, session.arch.context_length, self.bos_id)

    @property
    def context_length(self) -> int:
        """Most tokens (prompt plus generated) the model can attend to."""
        return self.session.arch.context_length

    @property
    def notices(self) -> list[str]:
        """One-line messages for the user from loading (CPU fallback, int8 on CUDA)."""
        return list(self.session.notices)

    @property
    def max_prompt_chars(self) -> int | None:
        """Characters beyond which a prompt surely holds more tokens than the context (see
        :attr:`.prompts.PromptFitter.max_chars`)."""
        return self._prompts.max_chars

    def generate(self, prompt: str, **settings: Any) -> GenerationResult:
        """Generate one continuation of ``prompt`` (the best beam with ``num_beams``).

        Raises:
            EdgeError: an invalid setting or prompt, ``num_return_sequences`` > 1 (use
                :meth:`generate_batch`), a prompt that does not fit the context, or text that is
                not valid UTF-8; all checked before any model call.
        """
        if not isinstance(prompt, str):
            raise EdgeError(
                f"generate() takes one prompt string, got {type(prompt).__name__}; "
                "generate_batch() takes a list of prompts."
            )
        return self.generate_batch([prompt], **_one_sequence("generate", settings))[0]

    def generate_batch(self, prompts: Sequence[str], **settings: Any) -> list[GenerationResult]:
        """Generate for a list of prompts as one batch.

        Returns:
            ``num_return_sequences`` results per prompt, grouped by prompt, in order.

        Raises:
            EdgeError: as :meth:`generate`.
        """
        prompts = prompt_list(prompts)
        sampling, options = resolve_user_settings(self.manifest.generation, **settings)
        if options.beam_search:
            return self._beams(prompts, sampling, options)
        results: list[GenerationResult | None] = [None] * (
            len(prompts) * options.num_return_sequences
        )
        for event in self._events(prompts, Sampler(sampling), options):
            if event.result is not None:
                results[event.row] = event.result
        return [r for r in results if r is not None]

    def stream(self, prompt: str, **settings: Any) -> Iterator[str]:
        """Yield text pieces of one prompt's continuation as they are decoded.

        The pieces join to the ``text`` that :meth:`generate` returns. Settings are validated
        when this is called, not at the first ``next()``.

        Raises:
            EdgeError: as :meth:`generate`, ``prompt`` is not one string, or beams or several
                sequences were asked (which have no single stream).
        """
        if not isinstance(prompt, str):
            raise EdgeError(
                f"stream() takes one prompt string, got {type(prompt).__name__}; "
                "generate_batch() takes a list of prompts."
            )
        events = self.stream_events([prompt], **_one_sequence("stream", settings))
        return (event.text for event in events if event.text)

    def stream_events(self, prompts: Sequence[str], **settings: Any) -> Iterator[StreamEvent]:
        """Layer-2 events for a batch of prompts; validates everything before returning.

        With ``num_return_sequences`` n, event rows count sequences: row ``i * n + j`` is sample
        ``j`` of prompt ``i``.
        """
        if isinstance(prompts, str):
            raise EdgeError("stream_events() takes a list of prompt strings, got one string.")
        prompts = prompt_list(prompts)
        sampling, options = resolve_user_settings(self.manifest.generation, **settings)
        if options.beam_search:
            raise EdgeError("Beam search returns whole sequences only; use generate_batch().")
        return self._events(prompts, Sampler(sampling), options)

    def _events(
        self, prompts: list[str], sampler: Sampler, options: GenerationOptions
    ) -> Iterator[StreamEvent]:
        n = options.num_return_sequences
        ids = [self._fitted(p, options) for p in prompts]
        rows = [i for i in ids for _ in range(n)]
        rngs = [sequence_rng(sampler.settings.seed, j) for _ in ids for j in range(n)]
        positions = 1 + DRAFT_TOKENS if options.draft else 1  # a draft's verify call
        size = batch_rows(self.session.arch.vocab_size, positions)
        return self._batches(rows, rngs, size, sampler, options)

    def _batches(
        self,
        rows: list[np.ndarray],
        rngs: list[np.random.Generator],
        size: int,
        sampler: Sampler,
        options: GenerationOptions,
    ) -> Iterator[StreamEvent]:
        """:func:`stream_generate` over consecutive batches of ``size`` rows, rows numbered
        across all of them."""
        for start in range(0, len(rows), size):
            end = start + size
            for event in stream_generate(
                self.session, self.tokenizer, rows[start:end], sampler, options, self.eos_id,
                self.pad_id, rngs[start:end],
            ):  # fmt: skip
                yield dataclasses.replace(event, row=event.row + start) if start else event

    def _fitted(self, prompt: str, options: GenerationOptions) -> np.ndarray:
        ids = self.prompt_ids(prompt, options)
        if options.max_length is not None and options.max_length <= ids.size:
            raise EdgeError(
                f"max_length {options.max_length} leaves no room for new tokens after a "
                f"{ids.size}-token prompt; raise it or give max_new_tokens instead."
            )
        return ids

    def _beams(
        self, prompts: list[str], sampling: SamplingSettings, options: GenerationOptions
    ) -> list[GenerationResult]:
        ids = [self._fitted(p, options) for p in prompts]
        size = max(1, batch_rows(self.session.arch.vocab_size) // options.num_beams)
        results = []
        for start in range(0, len(ids), size):
            results.extend(self._beam_batch(ids[start : start + size], sampling, options))
        return results

    def _beam_batch(
        self, ids: list[np.ndarray], sampling: SamplingSettings, options: GenerationOptions
    ) -> list[GenerationResult]:
        limits = [budget(i.size, self.context_length, options) for i in ids]
        width = max(i.size for i in ids) + max(b for b, _ in limits)
        eos = None if options.ignore_eos else self.eos_id
        start = time.perf_counter()
        found, first = beam_search(
            open_decoder(self.session, self.pad_id, width), Sampler(sampling), ids,
            [b for b, _ in limits], options.num_beams, options.length_penalty,
            options.early_stopping, eos, options.logprobs,
        )  # fmt: skip
        clock = ((first - start) * 1e3, (time.perf_counter() - first) * 1e3)
        results = []
        for prompt, (_, reason), beams in zip(ids, limits, found, strict=True):
            for beam in beams[: options.num_return_sequences]:
                ended = "eos" if eos is not None and beam.tokens[-1:] == [eos] else reason
                results.append(self._beam_result(prompt.size, beam, ended, clock, options))
        return results

    def _beam_result(
        self, prompt_len: int, beam: Hypothesis, reason: FinishReason,
        clock: tuple[float, float], options: GenerationOptions,
    ) -> GenerationResult:  # fmt: skip
        shown = beam.tokens[:-1] if reason == "eos" else beam.tokens
        logprobs = None
        if options.logprobs is not None:
            decode = self.tokenizer.decode_unchecked
            logprobs = []
            for token, (logprob, ids, values) in zip(beam.tokens, beam.logprobs, strict=True):
                top = [
                    TopLogprob(int(i), decode([int(i)]), float(v))
                    for i, v in zip(ids, values, strict=True)
                ]
                logprobs.append(TokenLogprob(token, decode([token]), logprob, tuple(top)))
        # The search's time, shared by its beams: prefill, then the steps after the first.
        timings = Timings(clock[0], clock[1], len(beam.tokens) - 1)
        text = self.tokenizer.decode_unchecked([int(t) for t in shown])
        return GenerationResult(
            text, list(beam.tokens), reason, prompt_len, timings, logprobs, beam.score
        )

    def score(self, text: str, context: str | None = None, logprobs: int = 0) -> ScoreResult:
        """The log-probability of each token of ``text``, after ``context`` if given.

        Without a context the text is scored after the start token (``<|endoftext|>`` for
        GPT-2), as evaluation harnesses do, so its first token has a log-probability too. Context
        and text are tokenized apart and joined, so ``text`` usually starts with a space.

        Args:
            text: what to score (at least one token).
            context: what it follows (default: nothing).
            logprobs: alternatives to report per token, 0 to 20 (default 0).

        Raises:
            EdgeError: an empty text, an argument of the wrong type, or context plus text
                longer than the model's context.
        """
        for name, value in (("text", text), ("context", context)):
            if not isinstance(value, str) and not (name == "context" and value is None):
                raise EdgeError(
                    f"The {name} to score must be a string, got {type(value).__name__}."
                )
        return self.score_batch([text], None if context is None else [context], logprobs)[0]

    def score_batch(
        self, texts: Sequence[str], contexts: Sequence[str] | None = None, logprobs: int = 0
    ) -> list[ScoreResult]:
        """:meth:`score` for several texts at once (one model call per batch that fits)."""
        texts = prompt_list(texts)
        given = [None] * len(texts) if contexts is None else prompt_list(contexts)
        if len(given) != len(texts):
            raise EdgeError(f"Got {len(texts)} texts but {len(given)} contexts.")
        GenerationOptions(logprobs=logprobs)  # the same rule as generation's logprobs
        rows = [self._prompts.score_row(t, c) for t, c in zip(texts, given, strict=True)]
        return score_ids(self.session, rows, logprobs, self.tokenizer, self.pad_id)

    def encode(self, prompt: str) -> np.ndarray:
        """Prompt token ids; an empty prompt becomes the start token, as GPT-2 was trained."""
        return self._prompts.encode(prompt)

    def prompt_ids(
        self, prompt: str, options: GenerationOptions, room: int | None = None
    ) -> np.ndarray:
        """The prompt's token ids fitted to the context (:meth:`.prompts.PromptFitter.ids`);
        ``room`` as in :meth:`fit`."""
        _check_options("prompt_ids", options)
        if not isinstance(prompt, str):
            raise EdgeError(f"A prompt must be a string, got {type(prompt).__name__}.")
        return self._prompts.ids(prompt, options.truncate, self._room(options, room))

    def fit(
        self, ids: np.ndarray | Sequence[int], options: GenerationOptions, room: int | None = None
    ) -> np.ndarray:
        """Apply the context bound to prompt ids (:meth:`.prompts.PromptFitter.fit`).

        ``room``: positions to leave free for new tokens; default what ``options`` need (1, or
        ``max_new_tokens`` with ``truncate="left"``); 0 for a prompt that is only scored.

        Raises:
            EdgeError: ``ids`` is not a non-empty list or 1-D array of ids the model has, or
                ``options`` is not a :class:`.settings.GenerationOptions`, or the ids do not fit.
        """
        _check_options("fit", options)
        vocab = self.session.arch.vocab_size
        rule = f"Prompt ids must be a non-empty list of integers from 0 to {vocab - 1}"
        ids = token_id_array(ids, vocab, rule)
        if not ids.size:
            raise EdgeError(f"{rule}, got none.")
        return self._prompts.fit(ids, options.truncate, self._room(options, room))

    def _room(self, options: GenerationOptions, room: int | None = None) -> int:
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
                "max_length."
            )
        if options.max_new_tokens >= self.context_length:
            raise EdgeError(
                "Left truncation keeps the last (context - max_new_tokens) prompt tokens, so "
                f"max_new_tokens must be below the model's context of {self.context_length} "
                f"tokens, got {options.max_new_tokens}."
            )
        return options.max_new_tokens


def _check_options(method: str, options: object) -> None:
    if not isinstance(options, GenerationOptions):
        raise EdgeError(
            f"{method}() takes GenerationOptions as its options, got {type(options).__name__}."
        )


def _one_sequence(method: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` for a method that returns one sequence (whatever the bundle's defaults say);
    EdgeError when the caller asked for more."""
    if settings.get("num_return_sequences") not in (None, 1):
        raise EdgeError(
            f"{method}() gives one sequence; use generate_batch() for num_return_sequences."
        )
    return {**settings, "num_return_sequences": 1}
