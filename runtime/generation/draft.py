"""Prompt-lookup drafting: guess the next tokens from the text itself, verify them in one call.

Text often repeats what came before (a quoted passage, code, a list). The drafter matches the
last n tokens (n from ``DRAFT_NGRAM`` down to 1) against earlier text, prompt included, and
proposes up to ``DRAFT_TOKENS`` tokens that followed the latest match. The model scores the
last token and all proposals in one call (``Decoder.decode`` with K tokens); the proposals are
accepted while they agree with what the sampler would have picked, and the cache is rolled back
past the first one that does not.

- Greedy: a proposal is accepted when it is the argmax, so the output is exactly the output
  without drafting (up to float rounding between one-token and several-token calls).
- Sampling: a proposal ``d`` is accepted with probability ``p(d)``, else the token is drawn from
  ``p`` without ``d``, renormalised: the rule of Leviathan et al. (2023, "Fast Inference from
  Transformers via Speculative Decoding") for a draft distribution that puts all its mass on
  ``d``. Each emitted token is then distributed exactly as without drafting (the draws differ).

Positions are processed (penalties, filters) only as far as proposals are accepted, and the
number proposed shrinks while they are rejected (:func:`next_limit`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..sampling.filters import NEG_INF, draw

DRAFT_TOKENS = 10  # proposals per call at most, as transformers' prompt_lookup_num_tokens
DRAFT_NGRAM = 3  # the longest n-gram matched (transformers' max_matching_ngram_size is 2)


def propose(history: np.ndarray, limit: int, ngram: int = DRAFT_NGRAM) -> np.ndarray:
    """Up to ``limit`` tokens that followed the latest earlier occurrence of the last n tokens.

    Args:
        history: (T,) int64 prompt and generated ids of one row.
        limit: most tokens to propose (0 proposes none).
        ngram: the longest suffix tried; shorter ones are tried when it does not match.

    Returns:
        (k,) int64 proposals, ``0 <= k <= limit``.
    """
    length = history.size
    for size in range(min(ngram, length - 1), 0, -1):
        if limit <= 0:
            break
        suffix = history[length - size :]
        windows = sliding_window_view(history[: length - 1], size)  # starts 0..T-1-size
        hits = np.flatnonzero(np.all(windows == suffix, axis=1))
        if hits.size:
            start = int(hits[-1]) + size  # the latest match: the nearest context repeats most
            return history[start : start + limit].copy()
    return history[:0].copy()


def accept_greedy(position: Callable[[int], np.ndarray], drafts: np.ndarray) -> list[int]:
    """The tokens greedy decoding emits from one verification call.

    Args:
        position: ``position(j)`` is the (V,) logits after the penalties at the last token
            (j = 0) or after proposal j; called only as far as proposals are accepted.
        drafts: (k,) the proposals.

    Returns:
        The accepted proposals, then the argmax where the first one failed (or after all).
    """
    out: list[int] = []
    for j, token in enumerate(drafts.tolist()):
        pick = int(np.argmax(position(j)))
        if pick != token:
            return [*out, pick]
        out.append(token)
    return [*out, int(np.argmax(position(len(out))))]


def accept_sampled(
    position: Callable[[int], np.ndarray], drafts: np.ndarray, rng: np.random.Generator
) -> list[int]:
    """The tokens sampling emits from one verification call (Leviathan et al.'s rule).

    Args:
        position: as for :func:`accept_greedy`, after the filters too (filtered tokens -inf).
        drafts: (k,) the proposals.
        rng: the row's generator.

    Returns:
        The accepted proposals, then one drawn token: from the residual distribution where a
        proposal was rejected, or from the last position when all were accepted.
    """
    out: list[int] = []
    for j, token in enumerate(drafts.tolist()):
        row = position(j)
        if row[token] > NEG_INF and rng.random() < _probability(row, token):
            out.append(token)
            continue
        residual = row.copy()
        residual[token] = NEG_INF  # max(0, p - q) with q all on the proposal, renormalised
        out.append(draw(residual, rng))
        return out
    out.append(draw(position(len(drafts)), rng))
    return out


def next_limit(limit: int, all_accepted: bool) -> int:
    """Proposals for the next call: two more after a call that accepted them all, one fewer
    otherwise (transformers' "heuristic" schedule for assistant tokens), within 1 to
    ``DRAFT_TOKENS``; so text that does not repeat costs little more than plain decoding."""
    return min(DRAFT_TOKENS, limit + 2) if all_accepted else max(1, limit - 1)


def _probability(row: np.ndarray, token: int) -> float:
    top = row.max()
    weights = np.exp((row - top).astype(np.float64))
    return float(weights[token] / weights.sum())


def pad_drafts(drafts: Sequence[np.ndarray], last: np.ndarray) -> np.ndarray:
    """Each row's last token then its proposals, as one (B, 1 + K) array.

    Rows with fewer proposals are filled with repeats of their last token, which are then
    verified like any proposal: any proposal keeps the output exact (greedy) or its distribution
    (sampling), so filling can only waste a little work. The caller keeps K within every row's
    room, since fillers are fed too.
    """
    width = 1 + max(d.size for d in drafts)
    out = np.repeat(last[:, None], width, axis=1)  # (B, 1 + K)
    for row, d in enumerate(drafts):
        out[row, 1 : 1 + d.size] = d
    return out
