"""Penalties: ``(B, V)`` logits plus each row's token history in, ``(B, V)`` logits out.

They follow transformers' ``RepetitionPenaltyLogitsProcessor`` and
``NoRepeatNGramLogitsProcessor``, and OpenAI's presence and frequency penalties. Unlike the
filters they can change the argmax, so greedy decoding and beam search apply them too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .filters import F32_MAX, NEG_INF


def apply_repetition_penalty(
    logits: np.ndarray, histories: Sequence[np.ndarray], penalty: float
) -> np.ndarray:
    """Penalises every token already seen, as transformers' RepetitionPenaltyLogitsProcessor.

    Args:
        logits: (B, V) scores.
        histories: Per row, the token ids seen so far (prompt and generated).
        penalty: > 1 discourages repeats, < 1 encourages them; 1 is a no-op.

    Returns:
        A new (B, V) array: seen tokens' positive logits divided by `penalty`, negative ones
        multiplied, each token once however often it occurred.
    """
    out = logits.copy()
    for row, history in zip(out, histories, strict=True):
        ids = np.unique(np.asarray(history, dtype=np.int64))
        if ids.size:
            # float64 and a clip: a penalty near 0 or 1e300 would overflow float32 into inf/NaN.
            seen = row[ids].astype(np.float64)
            with np.errstate(over="ignore"):
                penalised = np.where(seen < 0, seen * penalty, seen / penalty)
            row[ids] = np.clip(penalised, -F32_MAX, F32_MAX)
    return out


def apply_presence_frequency_penalty(
    logits: np.ndarray, generated: Sequence[np.ndarray], presence: float, frequency: float
) -> np.ndarray:
    """Subtracts OpenAI's presence and frequency penalties over the generated tokens only.

    Args:
        logits: (B, V) scores.
        generated: Per row, the tokens generated so far (the prompt does not count).
        presence: Subtracted once from each generated token's logit.
        frequency: Subtracted once per occurrence of each generated token.

    Returns:
        A new (B, V) array with `logit -= presence * (count > 0) + frequency * count`.
    """
    out = logits.copy()
    for row, tokens in zip(out, generated, strict=True):
        ids, counts = np.unique(np.asarray(tokens, dtype=np.int64), return_counts=True)
        if ids.size:
            row[ids] -= (presence + frequency * counts).astype(out.dtype)
    return out


def banned_ngram_tokens(tokens: np.ndarray, size: int) -> np.ndarray:
    """Tokens that would complete an n-gram already present in `tokens` (may repeat).

    Args:
        tokens: (T,) ids of one row, prompt and generated.
        size: The n-gram length, >= 1.

    Returns:
        The ids that follow earlier occurrences of the last `size - 1` tokens.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    length = tokens.size
    if length < size:  # no complete n-gram yet
        return tokens[:0]
    if size == 1:  # every unigram seen is banned
        return tokens
    prefix = tokens[length - size + 1 :]  # (size-1,) what the next token would extend
    starts = sliding_window_view(tokens[:-1], size - 1)  # (T-size+1, size-1) every n-gram's head
    hits = np.all(starts == prefix, axis=1)
    return tokens[size - 1 :][hits]


def apply_no_repeat_ngram(
    logits: np.ndarray, histories: Sequence[np.ndarray], size: int
) -> np.ndarray:
    """Forbids repeating any n-gram, as transformers' NoRepeatNGramLogitsProcessor.

    Args:
        logits: (B, V) scores.
        histories: Per row, the token ids seen so far (prompt and generated).
        size: The n-gram length; 0 is a no-op.

    Returns:
        A new (B, V) array with the banned tokens at -inf.
    """
    if size <= 0:
        return logits
    out = logits.copy()
    for row, history in zip(out, histories, strict=True):
        row[banned_ngram_tokens(history, size)] = NEG_INF
    return out
