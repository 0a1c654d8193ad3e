"""Pure filters on a ``(B, V)`` float32 logits array, and the categorical draw after them.

Each filter takes logits and returns logits with the tokens it removes at -inf, as transformers'
warpers do (``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``,
``MinPLogitsWarper``); none of them changes the argmax, so greedy decoding never runs them. The
log-softmax here is what the logprobs and scores report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from .rng import LazyRng

NEG_INF = np.float32(-np.inf)
# The largest float32: penalised logits are clipped to it, so no +inf (inf - inf = NaN) appears.
F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32
_KEEP_OR_DROP = np.array([-np.inf, 0.0], dtype=np.float32)  # indexed by a keep mask
# Block length of the two-level running sum (see _cumsum_search), and how many of the most likely
# tokens top-p ranks first before widening.
_BLOCK = 512
_TOP_P_FIRST_HEAD = 256


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log(softmax(logits))`` over the last axis in float32, as ``torch.log_softmax`` computes it.

    Args:
        logits: (..., V) scores; -inf entries stay -inf.
    """
    x = np.asarray(logits, dtype=np.float32)
    top = x.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0).astype(np.float32)
    shifted = x - top
    with np.errstate(divide="ignore"):  # a row of -inf only: log(0)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Divides the logits by `temperature` (> 0); 1 returns the input unchanged.

    When a row's largest logit divided by `temperature` would overflow float32 (a temperature
    like 1e-40), the row is divided after subtracting its largest logit instead: the same
    softmax, computed without inf - inf = NaN. The most likely tokens then get 0 and the others
    a huge negative number or -inf, which is the limit of sampling as the temperature goes to 0.
    """
    if temperature == 1.0:
        return logits
    if temperature > 1.0:  # shrinks every logit: nothing can overflow
        return logits / np.float32(min(temperature, F32_MAX))
    top = logits.max(axis=-1, keepdims=True)  # (B, 1)
    peak = np.abs(top[np.isfinite(top)])
    if temperature >= _F32_TINY and (peak.size == 0 or peak.max() <= F32_MAX * temperature):
        with np.errstate(over="ignore"):  # a logit far below the top may still go to -inf
            return logits / np.float32(temperature)
    shift = np.where(np.isfinite(top), top, 0.0)  # rows without a finite logit stay -inf
    with np.errstate(over="ignore"):
        return ((logits - shift).astype(np.float64) / temperature).astype(np.float32)


def _mask_below(logits: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """A new array: logits below their row's threshold (B, 1) at -inf, the rest unchanged."""
    keep = logits >= thresholds
    if np.count_nonzero(keep) * 16 < keep.size:
        # Few survivors (top-k, a peaked top-p): fill with -inf and copy them over.
        out = np.full_like(logits, NEG_INF)
        np.copyto(out, logits, where=keep)
        return out
    # Many: add 0 or -inf looked up per token. np.where branches per element and is several
    # times slower on a mixed mask.
    return logits + _KEEP_OR_DROP.take(keep.view(np.uint8))


def _cumsum_search(weights: np.ndarray, target: float, side: Literal["left", "right"]) -> int:
    """`searchsorted(cumsum(weights), target, side)` without a running sum over every weight.

    np.cumsum is sequential and slow on a 50k vocabulary; summing fixed blocks first and taking a
    float64 running sum only inside the block that crosses `target` is several times faster.
    """
    if weights.size <= _BLOCK:
        return int(np.searchsorted(np.cumsum(weights, dtype=np.float64), target, side))
    # Block sums by reshaping (np.add.reduceat with a float64 accumulator is ~10x slower here).
    whole = weights.size - weights.size % _BLOCK
    sums = weights[:whole].reshape(-1, _BLOCK).sum(axis=1, dtype=np.float64)
    if whole < weights.size:
        sums = np.append(sums, weights[whole:].sum(dtype=np.float64))
    ends = np.cumsum(sums)  # running sum at the end of each block
    block = int(np.searchsorted(ends, target, side))
    if block == ends.size:
        return weights.size
    start = block * _BLOCK
    base = ends[block - 1] if block else 0.0
    inner = base + np.cumsum(weights[start : start + _BLOCK], dtype=np.float64)
    return start + int(np.searchsorted(inner, target, side))


def apply_top_k(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Keeps each row's `top_k` largest logits, plus any tied with the k-th (as transformers).

    A partition finds the k-th largest value in O(V) instead of sorting the vocabulary. 0, or a k
    at least the vocabulary size, returns the input unchanged.
    """
    vocab = logits.shape[-1]
    if top_k <= 0 or top_k >= vocab:
        return logits
    kth = np.partition(logits, vocab - top_k, axis=-1)[:, vocab - top_k, None]  # (B, 1)
    return _mask_below(logits, kth)


def _top_p_cutoff(row: np.ndarray, top_p: float) -> np.float32:
    """The smallest logit the nucleus of one row keeps."""
    alive = row[row > NEG_INF]  # after top-k only k candidates remain to rank
    if alive.size == 0:
        return NEG_INF
    top = alive.max()
    with np.errstate(over="ignore"):  # logits near -/+ the float32 limit: the gap goes to -inf
        target = top_p * float(np.exp(alive - top).sum(dtype=np.float64))
    # Rank only the head of the distribution: partition out the k largest, sort those, and widen
    # k only when they do not reach top_p yet; a peaked distribution never sorts the vocabulary.
    k = min(alive.size, _TOP_P_FIRST_HEAD)
    while True:
        head = alive if k == alive.size else np.partition(alive, alive.size - k)[-k:]
        ranked = np.sort(head)[::-1]  # (k,) descending
        with np.errstate(over="ignore"):
            weights = np.exp(ranked - top)
        # Token j is kept when the mass ranked above it is below target: j < 1 + #{prefix < target}.
        below = _cumsum_search(weights[:-1], target, "left")
        if below < k - 1 or k == alive.size:
            return ranked[below]
        k = min(alive.size, k * 16)


def apply_top_p(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Keeps the smallest set of most likely tokens whose probability reaches `top_p`.

    A token is kept when the probability of the tokens ranked above it is below `top_p`, so the
    most likely token always survives (transformers' TopPLogitsWarper). Only finite logits are
    ranked, so after top-k this sorts k values, not the vocabulary. Tokens tied with the last kept
    one are all kept (transformers keeps an arbitrary subset of them). 1 is a no-op.
    """
    if top_p >= 1.0:
        return logits
    cutoffs = np.array([[_top_p_cutoff(row, top_p)] for row in logits], dtype=logits.dtype)
    return _mask_below(logits, cutoffs)


def apply_min_p(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Drops tokens whose probability is below `min_p` times the row's top probability.

    p / p_max < min_p is exp(logit - max) < min_p, i.e. logit < max + log(min_p): the same test
    as transformers' MinPLogitsWarper, done on logits so it needs no exp. The top token always
    survives. 0 is a no-op.
    """
    if min_p <= 0.0:
        return logits
    top = logits.max(axis=-1, keepdims=True)  # (B, 1)
    return _mask_below(logits, top + np.float32(math.log(min_p)))


def sample_categorical(
    logits: np.ndarray, rng: np.random.Generator | Sequence[np.random.Generator]
) -> np.ndarray:
    """Draws one token per row from softmax(logits), one uniform number per row.

    Inverse CDF over the finite logits only, so filtered tokens (-inf) are never drawn and a top-k
    row costs O(k) after one O(V) scan. A row with no finite logit falls back to its argmax.

    Args:
        logits: (B, V) scores, filtered tokens at -inf.
        rng: The generator to draw from (rows draw in order), or one generator per row.

    Returns:
        (B,) int64 token ids.
    """
    if isinstance(rng, (LazyRng, np.random.Generator)):
        rngs = [rng] * logits.shape[0]
    else:
        rngs = list(rng)
    tokens = np.empty(logits.shape[0], dtype=np.int64)
    for b, (row, row_rng) in enumerate(zip(logits, rngs, strict=True)):
        tokens[b] = draw(row, row_rng)
    return tokens


def draw(row: np.ndarray, rng: np.random.Generator) -> int:
    """One token from softmax(row) (V,), by one uniform number of ``rng`` and the inverse CDF."""
    alive = row > NEG_INF
    ids = None if alive.all() else np.flatnonzero(alive)  # None: every token is a candidate
    values = row if ids is None else row[ids]
    if values.size == 0:
        return int(np.argmax(row))
    with np.errstate(over="ignore"):  # a gap beyond the float32 range is -inf: weight 0
        weights = np.exp(values - values.max())
    total = float(weights.sum(dtype=np.float64))
    j = min(_cumsum_search(weights, rng.random() * total, "right"), values.size - 1)
    if weights[j] == 0.0:  # rounding at a block edge or the total: step back to a real token
        before = np.flatnonzero(weights[: j + 1])
        j = int(before[-1]) if before.size else int(np.argmax(weights))
    return int(j if ids is None else ids[j])
