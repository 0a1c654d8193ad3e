"""Generation in three layers, as in mlx-lm:

1. :class:`TokenSteps` owns the KV cache and yields the next token of every live row per step.
2. :func:`stream_generate` adds detokenization, EOS, stop strings, the token budget, the context
   bound and timing, and yields one :class:`StreamEvent` per row and token.
3. :class:`Generator` resolves settings and prompts, and offers ``generate()`` and ``stream()``.

A list of prompts runs as one batch, left-padded; rows that finish leave the batch. Fused GQA
bundles (``session.shared_kv``) run right-padded on one preallocated cache instead, where finished
rows stay in the batch, frozen, and their logits are ignored (see ``shared_cache.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .cache import KVCache, left_pad
from .errors import EdgeError
from .results import FinishReason, GenerationResult, StreamEvent, Timings
from .sampling import Sampler
from .session import Session
from .settings import GenerationOptions, resolve_settings
from .shared_cache import SharedKVCache
from .stream import RowText
from .tokenizer import Tokenizer


class TokenSteps:
    """Layer 1: prefill, then one decode step per ``next()``; yields (B_live,) int64 tokens.

    The forward for a step runs only when the next token is asked for, so the caller can
    :meth:`drop` finished rows first and no step is computed that nobody needs.

    Args:
        session: the model.
        prompts: B non-empty (T_i,) int64 token arrays.
        sampler: picks a token per row from (B, V) logits.
        pad_id: token id used for left padding.
        capacity: most steps to run.

    Attributes:
        rows: the index into ``prompts`` of each live row, in batch order.
    """

    def __init__(
        self,
        session: Session,
        prompts: Sequence[np.ndarray],
        sampler: Sampler,
        pad_id: int,
        capacity: int,
    ):
        self._session, self._sampler, self._pad_id = session, sampler, pad_id
        self._prompts = list(prompts)
        self.rows = list(range(len(prompts)))
        self._generated = np.zeros((len(prompts), capacity), dtype=np.int64)  # (B, N)
        self._count = 0
        self._cache: KVCache | None = None
        self._last = np.zeros(len(prompts), dtype=np.int64)  # (B,) tokens of the previous step
        self._shared: SharedKVCache | None = None
        if session.shared_kv:
            width = max(len(p) for p in self._prompts)
            self._shared = SharedKVCache(session, len(prompts), width + capacity)
            self._index = np.arange(len(prompts))  # (B_live,) batch row of each live row
            self._feed = np.zeros(len(prompts), dtype=np.int64)  # (B,) tokens fed, frozen too

    def __iter__(self) -> TokenSteps:
        return self

    def __next__(self) -> np.ndarray:
        if not self.rows or self._count >= self._generated.shape[1]:
            raise StopIteration
        if self._shared is not None:
            last = self._shared_step()  # (B, V)
        else:
            logits = self._prefill() if self._cache is None else self._decode()  # (B, T, V)
            last = logits[:, -1, :]  # (B, V)
        if last.dtype != np.float32:  # fp16 graphs
            last = last.astype(np.float32)
        n = self._count
        tokens = self._sampler(last, self._prompts, [g[:n] for g in self._generated])  # (B,)
        self._generated[:, n] = tokens
        self._count, self._last = n + 1, tokens
        return tokens

    def _prefill(self) -> np.ndarray:
        ids, new_mask = left_pad(self._prompts, self._pad_id)  # (B, T) each
        self._cache = cache = KVCache(self._session, len(self._prompts))
        mask, positions = cache.prefill_inputs(new_mask)
        logits, present = self._session.step(ids, mask, positions, cache.past)
        cache.update(present, mask)
        return logits

    def _decode(self) -> np.ndarray:
        cache = self._cache
        assert cache is not None
        mask, positions = cache.decode_inputs()  # (B, L + 1), (B, 1)
        logits, present = self._session.step(self._last[:, None], mask, positions, cache.past)
        cache.update(present, mask)
        return logits

    def _shared_step(self) -> np.ndarray:
        shared, index = self._shared, self._index
        assert shared is not None
        if self._count == 0:
            return shared.prefill(self._prompts, self._pad_id)  # (B, V)
        if index.size == self._feed.size:  # nobody finished: no gather, no scatter
            return shared.decode(self._last)
        self._feed[index] = self._last
        return shared.decode(self._feed)[index]  # (B_live, V)

    def drop(self, positions: Sequence[int]) -> None:
        """Remove the rows at these batch positions (indices into :attr:`rows`)."""
        gone = set(positions)
        keep = [j for j in range(len(self.rows)) if j not in gone]
        self.rows = [self.rows[j] for j in keep]
        if not keep:
            return
        if self._cache is not None:
            self._cache.select(keep)
        if self._shared is not None:
            self._shared.freeze(self._index[list(gone)])
            self._index = self._index[keep]
        self._prompts = [self._prompts[j] for j in keep]
        self._generated = self._generated[keep]
        self._last = self._last[keep]


class _Row:
    """Per-row bookkeeping for layer 2."""

    def __init__(self, prompt_len: int, budget: int, reason: FinishReason, text: RowText):
        self.prompt_len, self.budget, self.budget_reason = prompt_len, budget, reason
        self.text = text
        self.tokens: list[int] = []

    def add(self, token: int, eos: int | None) -> tuple[str, FinishReason | None]:
        self.tokens.append(token)
        if token == eos:
            return self.text.finish(), "eos"
        piece = self.text.push(token)
        if self.text.stopped:
            return piece, "stop"
        if len(self.tokens) >= self.budget:
            return piece + self.text.finish(), self.budget_reason
        return piece, None


def stream_generate(
    session: Session,
    tokenizer: Tokenizer,
    prompts: Sequence[np.ndarray],
    sampler: Sampler,
    options: GenerationOptions,
    eos_id: int | None,
    pad_id: int,
) -> Iterator[StreamEvent]:
    """Layer 2: run prompts (already fitted to the context) as one batch; yield per-token events.

    Args:
        session: the model.
        tokenizer: for detokenizing.
        prompts: B non-empty (T_i,) int64 token arrays, each shorter than the context.
        sampler: picks the tokens.
        options: budget, stop strings, ignore_eos.
        eos_id: end-of-text id (None: never stops on a token).
        pad_id: id used for left padding.
    """
    context = session.arch.context_length
    rows = [_make_row(len(p), context, options, tokenizer) for p in prompts]
    eos = None if options.ignore_eos else eos_id
    steps = TokenSteps(session, prompts, sampler, pad_id, max(r.budget for r in rows))
    start = time.perf_counter()
    first: float | None = None  # when the first tokens came out of prefill
    for tokens in steps:
        now = time.perf_counter()
        first = now if first is None else first
        done: list[int] = []
        for position, (index, token) in enumerate(zip(steps.rows, tokens.tolist(), strict=True)):
            row = rows[index]
            piece, reason = row.add(token, eos)
            result = None
            if reason is not None:
                done.append(position)
                timings = Timings((first - start) * 1e3, (now - first) * 1e3, len(row.tokens) - 1)
                result = GenerationResult(
                    row.text.text, row.tokens, reason, row.prompt_len, timings
                )
            yield StreamEvent(index, piece, token, result)
        if done:
            steps.drop(done)


def _make_row(
    prompt_len: int, context: int, options: GenerationOptions, tokenizer: Tokenizer
) -> _Row:
    room = context - prompt_len  # positions left for new tokens
    if options.max_new_tokens <= room:
        return _Row(prompt_len, options.max_new_tokens, "length", RowText(tokenizer, options.stop))
    return _Row(prompt_len, room, "context", RowText(tokenizer, options.stop))


class Generator:
    """Text generation from one loaded bundle (layer 3).

    Settings (keyword arguments of :meth:`generate` and :meth:`stream`): ``max_new_tokens``,
    ``temperature`` (0 = greedy), ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``,
    ``presence_penalty``, ``frequency_penalty``, ``no_repeat_ngram_size``, ``seed``, ``stop``,
    ``truncate`` and ``ignore_eos``. Each one left out (or None) comes from the bundle's
    generation defaults, else from the built-in constants (:mod:`.settings`, :mod:`.sampling`).

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
        """Characters beyond which a prompt surely holds more tokens than the context.

        ``context_length * Tokenizer.max_token_chars`` (131,072 for GPT-2 at 1,024 tokens); None
        when the tokenizer gives no such bound. A longer prompt is refused (or, with
        ``truncate="left"``, cut to that many last characters) before it is tokenized, so a huge
        prompt costs no more time or memory than one that fills the context.
        """
        per_token = self.tokenizer.max_token_chars
        return None if per_token is None else self.context_length * per_token

    def generate(
        self, prompt: str | Sequence[str], **settings: Any
    ) -> GenerationResult | list[GenerationResult]:
        """Generate a continuation of ``prompt``, or of each prompt in a list (one batch).

        Returns:
            One result for a string, a list of results (in order) for a list.

        Raises:
            EdgeError: an invalid setting or prompt type, a prompt that does not fit the context,
                or text that is not valid UTF-8; all checked before any model call.
        """
        prompts = _prompt_list(prompt)
        results: list[GenerationResult | None] = [None] * len(prompts)
        for event in self.stream_events(prompts, **settings):
            if event.result is not None:
                results[event.row] = event.result
        done = [r for r in results if r is not None]
        return done[0] if isinstance(prompt, str) else done

    def stream(self, prompt: str, **settings: Any) -> Iterator[str]:
        """Yield text pieces of one prompt's continuation as they are decoded.

        The pieces join to the ``text`` that :meth:`generate` returns. Settings are validated
        when this is called, not at the first ``next()``.

        Raises:
            EdgeError: as :meth:`generate`, or ``prompt`` is not one string.
        """
        if not isinstance(prompt, str):
            raise EdgeError(
                f"stream() takes one prompt string, got {type(prompt).__name__}; "
                "generate() takes a list of prompts."
            )
        events = self.stream_events([prompt], **settings)
        return (event.text for event in events if event.text)

    def stream_events(self, prompts: Sequence[str], **settings: Any) -> Iterator[StreamEvent]:
        """Layer-2 events for a batch of prompts; validates everything before returning."""
        if isinstance(prompts, str):
            raise EdgeError("stream_events() takes a list of prompt strings, got one string.")
        prompts = _prompt_list(prompts)
        sampling, options = resolve_settings(self.manifest.generation, **settings)
        ids = [self.prompt_ids(p, options) for p in prompts]
        return stream_generate(
            self.session, self.tokenizer, ids, Sampler(sampling), options, self.eos_id, self.pad_id
        )

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

    def prompt_ids(self, prompt: str, options: GenerationOptions) -> np.ndarray:
        """The prompt's token ids, fitted to the context by :meth:`fit`.

        A prompt longer than :attr:`max_prompt_chars` is refused without tokenizing it, or with
        ``truncate="left"`` only its tail (:meth:`Tokenizer.tail`) is tokenized and the tail's
        first token, which the cut may have split, is dropped.
        """
        limit = self.max_prompt_chars
        if limit is None or len(prompt) <= limit:
            return self.fit(self.encode(prompt), options)
        if options.truncate is None:
            context = self.context_length
            raise EdgeError(
                f"The prompt is {len(prompt):,} characters long, more than the model's context "
                f"of {context} tokens can hold (at most {context - 1} fit); shorten it or "
                "truncate it from the left."
            )
        return self.fit(self.encode(self.tokenizer.tail(prompt, limit))[1:], options)

    def fit(self, ids: np.ndarray, options: GenerationOptions) -> np.ndarray:
        """Apply the context bound to prompt ids: keep them, keep the last ones, or refuse.

        A prompt keeps at most ``context - 1`` tokens, so that one new token fits; with
        ``truncate="left"`` only the oldest tokens beyond that are dropped. A prompt that fits is
        never cut to make room for ``max_new_tokens``: the budget shrinks instead, and
        generation ends with finish reason ``context``.
        """
        context = self.context_length
        keep = max(context - 1, 1)
        if ids.size <= keep:
            return ids
        if options.truncate == "left":
            return ids[ids.size - keep :]
        raise EdgeError(
            f"The prompt is {ids.size} tokens long but the model's context is {context}, "
            f"so at most {keep} fit; shorten it or truncate it from the left."
        )


def _prompt_list(prompt: object) -> list[str]:
    """One prompt or a non-empty list (or tuple) of prompts, as a list; EdgeError otherwise."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt:
        for index, item in enumerate(prompt):
            if not isinstance(item, str):
                raise EdgeError(
                    f"Every prompt must be a string, but item {index} is a {type(item).__name__}."
                )
        return list(prompt)
    shown = "an empty list" if isinstance(prompt, (list, tuple)) else type(prompt).__name__
    raise EdgeError(f"A prompt must be a string or a non-empty list of strings, got {shown}.")
