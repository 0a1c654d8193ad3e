"""Layer 1 of generation: a :class:`.decoder.Decoder` and a sampler, one step per ``next()``.

Each step feeds every live row its last token (or its last token and drafted ones, see
``draft.py``), picks what follows, and yields the new tokens per row. Rows can join between
steps (:meth:`TokenSteps.add`: they are prefilled at the start of the next step) and leave
(:meth:`TokenSteps.drop`), which is what a server's scheduler needs. A row may bring its own
sampler and its own logprobs request, so requests with different settings share one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from ..contract.tokenizer import Tokenizer
from ..decoders.interface import Decoder
from ..sampling.sampler import Sampler, sequence_rng
from ..settings.sampling import SamplingSettings
from .draft import DRAFT_TOKENS, accept_greedy, accept_sampled, next_limit, pad_drafts, propose
from .results import TokenLogprob
from .scoring import token_logprobs


@dataclass(frozen=True)
class Step:
    """What one step produced for each live row, in batch order (:attr:`TokenSteps.rows`).

    Attributes:
        tokens: per row, its new tokens (one, or more when drafted tokens were accepted).
        logprobs: None when no row asked for log-probabilities; else per row one entry per new
            token, or None for a row that did not ask.
    """

    tokens: list[list[int]]
    logprobs: list[list[TokenLogprob] | None] | None = None


@dataclass(frozen=True)
class Logprobs:
    """What to report per token: ``top`` alternatives, named through ``tokenizer``."""

    top: int
    tokenizer: Tokenizer


class _Waiting:
    def __init__(
        self, row: int, prompt: np.ndarray, budget: int, rng: np.random.Generator,
        sampler: Sampler, report: Logprobs | None,
    ):  # fmt: skip
        self.row, self.prompt, self.budget, self.rng = row, prompt, budget, rng
        self.sampler, self.report = sampler, report


class TokenSteps:
    """Prefill, then one decode step per ``next()``; yields a :class:`Step`.

    The forward for a step runs only when the next tokens are asked for, so the caller can
    :meth:`drop` finished rows first and no step is computed that nobody needs.

    Args:
        decoder: an empty decoder for the model.
        sampler: picks a token per row from (B, V) logits (rows added with their own sampler
            use theirs).
        prompts: non-empty (T_i,) int64 token arrays, the first rows (may be none).
        budgets: most tokens each row may generate (each within the context after its prompt).
        rngs: one random generator per row (default: ``sequence_rng(seed)`` each).
        logprobs: report each token's log-probability (default None: do not); rows added with
            their own request use theirs.
        draft: propose tokens by prompt lookup and verify them (default False).

    Attributes:
        rows: the id of each live row, in batch order; ids count up from 0 in order of joining.
    """

    def __init__(
        self,
        decoder: Decoder,
        sampler: Sampler,
        prompts: Sequence[np.ndarray],
        budgets: Sequence[int],
        rngs: Sequence[np.random.Generator] | None = None,
        logprobs: Logprobs | None = None,
        draft: bool = False,
    ):
        self._decoder, self._sampler, self._logprobs = decoder, sampler, logprobs
        self._draft = draft
        self._draft_limit = DRAFT_TOKENS  # proposals per call, adapted to how many are accepted
        self.rows: list[int] = []
        self._prompts: list[np.ndarray] = []
        self._generated: list[np.ndarray] = []  # per row, a (budget,) buffer
        self._counts: list[int] = []  # per row, tokens generated so far
        self._rngs: list[np.random.Generator] = []
        self._samplers: list[Sampler] = []  # per row
        self._reports: list[Logprobs | None] = []  # per row
        self._last = np.zeros(0, dtype=np.int64)  # (B,) each row's last token, not yet fed
        self._waiting: list[_Waiting] = []
        self._next_id = 0
        self.add(prompts, budgets, rngs)

    def __iter__(self) -> TokenSteps:
        return self

    def add(
        self,
        prompts: Sequence[np.ndarray],
        budgets: Sequence[int],
        rngs: Sequence[np.random.Generator] | None = None,
        sampler: Sampler | None = None,
        logprobs: Logprobs | None = None,
    ) -> list[int]:
        """Queue rows that join at the next step; returns their row ids.

        Args:
            prompts: non-empty (T_i,) int64 token arrays.
            budgets: most tokens each row may generate.
            rngs: one random generator per row (default: ``sequence_rng(seed)`` each, with the
                seed of the rows' sampler).
            sampler: picks these rows' tokens (default: the one given at construction). Rows
                whose samplers have equal settings are picked together, and a row's tokens never
                depend on the other rows.
            logprobs: what to report for these rows (default: what was given at construction).
        """
        sampler = self._sampler if sampler is None else sampler
        report = self._logprobs if logprobs is None else logprobs
        seed = sampler.settings.seed
        rngs = [sequence_rng(seed) for _ in prompts] if rngs is None else list(rngs)
        ids = list(range(self._next_id, self._next_id + len(prompts)))
        self._next_id += len(prompts)
        for row, prompt, budget, rng in zip(ids, prompts, budgets, rngs, strict=True):
            prompt = np.asarray(prompt, dtype=np.int64)
            self._waiting.append(_Waiting(row, prompt, budget, rng, sampler, report))
        return ids

    def __next__(self) -> Step:
        if not self.rows and not self._waiting:
            raise StopIteration
        tokens: list[list[int]] = []
        raw: list[np.ndarray | None] = []  # per row, the raw logits (n, V) of its new tokens
        if self.rows:
            drafts = self._proposals() if self._draft else None
            if drafts is None:
                logits = self._decoder.decode(self._last[:, None])[:, 0]  # (B, V)
                picked = self._pick(logits, 0, self._histories())
                tokens = [[t] for t in picked.tolist()]
                raw = self._reported(logits[:, None])
            else:
                tokens, raw = self._verify(drafts)
        if self._waiting:
            # add() may reuse the logits buffer
            raw = [None if r is None else r.copy() for r in raw]
            joined, joined_raw = self._join()
            tokens, raw = tokens + joined, raw + joined_raw
        for row, new in enumerate(tokens):
            count = self._counts[row]
            self._generated[row][count : count + len(new)] = new
            self._counts[row] = count + len(new)
        self._last = np.array([new[-1] for new in tokens], dtype=np.int64)
        return Step(tokens, self._describe(raw, tokens))

    def _histories(self) -> list[np.ndarray]:
        # A bare argmax reads no history, so it skips the slicing.
        return [
            g if s.bare_argmax else g[:n]
            for g, n, s in zip(self._generated, self._counts, self._samplers, strict=True)
        ]

    def _pick(self, logits: np.ndarray, first: int, histories: list[np.ndarray]) -> np.ndarray:
        """Next token (n,) of rows ``first..`` from their logits (n, V), each row by its own
        sampler; rows whose samplers have equal settings are picked in one call."""
        samplers, prompts, rngs = self._samplers[first:], self._prompts[first:], self._rngs[first:]
        if all(s is samplers[0] for s in samplers):
            return samplers[0](logits, prompts, histories, rngs)
        groups: dict[SamplingSettings, list[int]] = {}
        for i, sampler in enumerate(samplers):
            groups.setdefault(sampler.settings, []).append(i)
        picked = np.empty(len(samplers), dtype=np.int64)  # (n,)
        for index in groups.values():
            picked[index] = samplers[index[0]](
                logits[index], [prompts[i] for i in index], [histories[i] for i in index],
                [rngs[i] for i in index],
            )  # fmt: skip
        return picked

    def _reported(self, logits: np.ndarray, first: int = 0) -> list[np.ndarray | None]:
        """Per row from ``first``, its logits (n, K, V) when it reports logprobs, else None."""
        reports = self._reports[first:]
        return [logits[i] if r is not None else None for i, r in enumerate(reports)]

    def _join(self) -> tuple[list[list[int]], list[np.ndarray | None]]:
        """Prefill the waiting rows into the batch; returns their first tokens and logits."""
        waiting, self._waiting = self._waiting, []
        logits = self._decoder.add([w.prompt for w in waiting])  # (n, V)
        for w in waiting:
            self.rows.append(w.row)
            self._prompts.append(w.prompt)
            self._generated.append(np.zeros(w.budget, dtype=np.int64))
            self._counts.append(0)
            self._rngs.append(w.rng)
            self._samplers.append(w.sampler)
            self._reports.append(w.report)
        first = len(self.rows) - len(waiting)
        empty = [g[:0] for g in self._generated[first:]]
        picked = self._pick(logits, first, empty)
        return [[t] for t in picked.tolist()], self._reported(logits[:, None], first)

    def _proposals(self) -> list[np.ndarray] | None:
        """Prompt-lookup proposals per row, all of one length K within every row's budget."""
        room = min(b.size - n - 1 for b, n in zip(self._generated, self._counts, strict=True))
        limit = min(self._draft_limit, room)
        if limit <= 0:
            return None
        drafts = [
            propose(np.concatenate([p, g[:n]]), limit)
            for p, g, n in zip(self._prompts, self._generated, self._counts, strict=True)
        ]
        return drafts if any(d.size for d in drafts) else None

    def _verify(self, drafts: list[np.ndarray]) -> tuple[list[list[int]], list[np.ndarray | None]]:
        """Feed each row's last token and proposals at once; keep what the sampler agrees with."""
        fed = pad_drafts(drafts, self._last)  # (B, 1 + K)
        logits = self._decoder.decode(fed)  # (B, 1 + K, V)
        width = fed.shape[1]
        tokens, rejected = [], []
        for row in range(fed.shape[0]):
            proposals = fed[row, 1:]
            position = self._position(row, logits[row], proposals)
            if self._samplers[row].settings.greedy:
                new = accept_greedy(position, proposals)
            else:
                new = accept_sampled(position, proposals, self._rngs[row])
            tokens.append(new)
            rejected.append(width - len(new))  # fed but not kept: all after the accepted ones
        self._decoder.rollback(rejected)
        self._draft_limit = next_limit(self._draft_limit, not any(rejected))
        raw = self._reported(logits)
        return tokens, [
            None if r is None else r[: len(new)] for r, new in zip(raw, tokens, strict=True)
        ]

    def _position(
        self, row: int, logits: np.ndarray, proposals: np.ndarray
    ) -> Callable[[int], np.ndarray]:
        """``position(j)``: the row's logits after the last token (0) or proposal j, processed
        with the history up to there; computed only when asked."""
        sampler = self._samplers[row]
        if sampler.bare_argmax:
            return logits.__getitem__
        prompt, grown = self._prompts[row], self._generated[row][: self._counts[row]]

        def position(j: int) -> np.ndarray:
            history = np.concatenate([grown, proposals[:j]])
            return sampler.process(logits[j : j + 1], [prompt], [history])[0]

        return position

    def _describe(
        self, raw: list[np.ndarray | None], tokens: list[list[int]]
    ) -> list[list[TokenLogprob] | None] | None:
        if all(r is None for r in self._reports):
            return None
        return [
            None if r is None or report is None
            else token_logprobs(r, t, report.top, report.tokenizer)
            for r, t, report in zip(raw, tokens, self._reports, strict=True)
        ]  # fmt: skip

    def forget(self, ids: Collection[int]) -> None:
        """Remove rows by id, live or still waiting to join."""
        self._waiting = [w for w in self._waiting if w.row not in ids]
        positions = [p for p, row in enumerate(self.rows) if row in ids]
        if positions:
            self.drop(positions)

    def drop(self, positions: Sequence[int]) -> None:
        """Remove the rows at these batch positions (indices into :attr:`rows`)."""
        gone = set(positions)
        keep = [j for j in range(len(self.rows)) if j not in gone]
        self._decoder.drop(sorted(gone))
        self.rows = [self.rows[j] for j in keep]
        self._prompts = [self._prompts[j] for j in keep]
        self._generated = [self._generated[j] for j in keep]
        self._counts = [self._counts[j] for j in keep]
        self._rngs = [self._rngs[j] for j in keep]
        self._samplers = [self._samplers[j] for j in keep]
        self._reports = [self._reports[j] for j in keep]
        self._last = self._last[keep]
