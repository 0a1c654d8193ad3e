"""The running batch: the one generation engine that the command line, the Python API, gpt2-serve
and gpt2-batch drive.

Rows join between steps (:meth:`Engine.add`; they are prefilled at the next step) and leave when
they finish or their caller cancels them (:meth:`Engine.cancel`). Each :meth:`Engine.step` gives
every live row its next token (several when drafted tokens were accepted), turns it into text
through the row's detokenizer and stop strings, keeps its log-probability when the row asked for
them, and ends the row on end-of-text, a stop string, its token budget or the context's end, with
a :class:`~.results.GenerationResult` that carries the row's own timings.

A row computes the same tokens whatever else shares the batch and whenever it joined: the decoder
computes each row as if alone, every row has its own sampler settings and random generator, and
rows with equal settings are only picked in one call (``steps.py``).

:meth:`Engine.score` is the one rule for the log-probabilities of given tokens (``echo``).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from ..contract.tokenizer import Tokenizer
from ..decoders.interface import open_decoder
from ..errors import EdgeError
from ..graph.session import Session
from ..sampling.sampler import Sampler, sequence_rng
from ..settings.options import GenerationOptions
from ..settings.sampling import SamplingSettings
from .results import FinishReason, GenerationResult, StreamEvent, Timings, TokenLogprob
from .scoring import score_ids, scored_pair
from .steps import Logprobs, TokenSteps
from .text import RowText

# Positions per row the shared KV buffers start with; they grow (doubling) when a row needs more,
# so a short request does not pay for the whole context.
CAPACITY_HINT = 256
_GREEDY = SamplingSettings(temperature=0.0)


def budget(prompt_len: int, context: int, options: GenerationOptions) -> tuple[int, FinishReason]:
    """New tokens allowed after a prompt, and the finish reason when they run out."""
    room = context - prompt_len  # positions left for new tokens
    wanted = options.budget(prompt_len)
    return (wanted, "length") if wanted <= room else (room, "context")


class RowState:
    """One row's progress: its tokens, its text through the detokenizer and stop strings, its
    log-probabilities, and whether EOS, a stop string or the budget ended it.

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


@dataclass
class _Row:
    state: RowState
    eos: int | None  # None: the row ignores end-of-text
    reports: bool  # whether the row asked for log-probabilities
    joined: float  # perf_counter() when it was added
    first: float | None = None  # when its first token came out


class Engine:
    """A running batch over one model (see the module doc).

    Args:
        session: the model.
        tokenizer: for detokenizing and for naming tokens in log-probabilities.
        eos_id: the end-of-text id (None: nothing ends a row but its budget or a stop string).
        pad_id: the id fed on padding.
        bos_id: the start token that :meth:`score` puts before a prompt when asked (None: none).
        capacity: positions per row the KV buffers start with (they grow when a row needs more).
        draft: propose tokens by prompt lookup and verify them in one call (default False).
    """

    def __init__(
        self,
        session: Session,
        tokenizer: Tokenizer,
        eos_id: int | None,
        pad_id: int,
        bos_id: int | None = None,
        capacity: int = CAPACITY_HINT,
        draft: bool = False,
    ):
        self.session, self.tokenizer = session, tokenizer
        self.eos_id, self.pad_id, self.bos_id = eos_id, pad_id, bos_id
        decoder = open_decoder(session, pad_id, capacity)
        # Every row brings its own sampler; this one is never used.
        self._steps = TokenSteps(decoder, Sampler(_GREEDY), [], [], draft=draft)
        self._rows: dict[int, _Row] = {}  # row id -> its state, live or waiting to join
        self._samplers: dict[SamplingSettings, Sampler] = {}

    @property
    def context_length(self) -> int:
        """Most positions (prompt plus new tokens) a row can hold."""
        return self.session.arch.context_length

    def __len__(self) -> int:
        """Rows in the engine: live, or added and waiting for the next step."""
        return len(self._rows)

    def add(
        self,
        prompts: Sequence[np.ndarray],
        sampling: SamplingSettings,
        options: GenerationOptions,
        rngs: Sequence[np.random.Generator] | None = None,
    ) -> list[int]:
        """Queue rows that join at the next step; returns their row ids (the ``row`` of their
        events).

        Args:
            prompts: (T_i,) int64 prompt ids, each fitted to the context with room for at least
                one new token (:meth:`.generator.Generator.prompt_ids`).
            sampling: how the rows' tokens are picked.
            options: their budget, stop strings, ``ignore_eos`` and ``logprobs``.
            rngs: one random generator per row (default: ``sequence_rng(seed)`` each).

        Raises:
            EdgeError: a prompt leaves no room for a new token.
        """
        budgets = [budget(len(p), self.context_length, options) for p in prompts]
        for prompt, (allowed, _) in zip(prompts, budgets, strict=True):
            if allowed < 1:
                raise EdgeError(
                    f"A prompt of {len(prompt)} tokens leaves no room for a new token in the "
                    f"model's context of {self.context_length}."
                )
        if rngs is None:
            rngs = [sequence_rng(sampling.seed) for _ in prompts]
        report = None if options.logprobs is None else Logprobs(options.logprobs, self.tokenizer)
        sampler = self._sampler(sampling)
        ids = self._steps.add(prompts, [b for b, _ in budgets], rngs, sampler, report)
        eos = None if options.ignore_eos else self.eos_id
        now = time.perf_counter()
        for row, prompt, (allowed, reason) in zip(ids, prompts, budgets, strict=True):
            text = RowText(self.tokenizer, options.stop)
            state = RowState(len(prompt), allowed, reason, text)
            self._rows[row] = _Row(state, eos, report is not None, now)
        return ids

    def _sampler(self, settings: SamplingSettings) -> Sampler:
        # One sampler per settings: rows that share it are picked in one call.
        if settings not in self._samplers:
            self._samplers[settings] = Sampler(settings)
        return self._samplers[settings]

    def step(self) -> list[StreamEvent]:
        """Prefill the rows that joined, give every live row its next token(s), and return one
        event per token (the last of a row carries its result); finished rows leave."""
        if not self._rows:
            return []
        step = next(self._steps)
        now = time.perf_counter()
        events: list[StreamEvent] = []
        done: list[int] = []  # batch positions of the rows that finished
        for position, (row_id, tokens) in enumerate(
            zip(self._steps.rows, step.tokens, strict=True)
        ):
            row = self._rows[row_id]
            row.first = now if row.first is None else row.first
            reports = step.logprobs[position] if step.logprobs is not None else None
            for k, token in enumerate(tokens):
                logprob = reports[k] if reports is not None else None
                if logprob is not None:
                    row.state.logprobs.append(logprob)
                piece, reason = row.state.add(token, row.eos)
                result = None if reason is None else _result(row, reason, now)
                events.append(StreamEvent(row_id, piece, token, result, logprob))
                if reason is not None:
                    done.append(position)
                    break
        if done:
            finished = [self._steps.rows[p] for p in done]
            self._steps.drop(done)
            for row_id in finished:
                del self._rows[row_id]
        return events

    def cancel(self, rows: Collection[int]) -> None:
        """Remove rows now, live or still waiting to join (their caller has gone)."""
        gone = {r for r in rows if r in self._rows}
        if gone:
            self._steps.forget(gone)
            for row_id in gone:
                del self._rows[row_id]

    def score(
        self, prompts: Sequence[np.ndarray], top: int = 0, start: bool = False
    ) -> list[list[TokenLogprob | None]]:
        """Each prompt token's log-probability given the tokens before it (``echo``).

        Args:
            prompts: (T_i,) int64 ids, each at most the context long (one position less with
                ``start``).
            top: alternatives to report per token.
            start: condition the first token on the start token too (lm-evaluation-harness's
                rule for a text with no context); default False: the first token has nothing
                before it, so its entry is None, as OpenAI's and vLLM's ``echo`` report it.

        Returns:
            Per prompt, one entry per token.
        """
        start_id = self.bos_id if start else None
        empty = np.zeros(0, dtype=np.int64)
        # A lone token with nothing before it has nothing to score: its one entry is null.
        scorable = [i for i, p in enumerate(prompts) if start or p.size > 1]
        pairs = [scored_pair(empty, prompts[i], start_id, self.context_length) for i in scorable]
        results = score_ids(self.session, pairs, top, self.tokenizer, self.pad_id)
        out: list[list[TokenLogprob | None]] = [[None] for _ in prompts]
        for i, result in zip(scorable, results, strict=True):
            out[i] = ([] if start else [None]) + list(result.logprobs)
        return out


def _result(row: _Row, reason: FinishReason, now: float) -> GenerationResult:
    state = row.state
    first = row.first if row.first is not None else now
    timings = Timings((first - row.joined) * 1e3, (now - first) * 1e3, len(state.tokens) - 1)
    logprobs = list(state.logprobs) if row.reports else None
    return GenerationResult(
        state.text.text, state.tokens, reason, state.prompt_len, timings, logprobs
    )
