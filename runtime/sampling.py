"""Sampling settings and the next-token sampler.

A `Sampler` turns the last position's logits `(B, V)` into next tokens `(B,)` in transformers'
order (`GenerationMixin._get_logits_processor`): penalties (repetition, presence/frequency,
no-repeat n-gram), then temperature, top-k, top-p, min-p, then argmax (temperature 0) or a seeded
categorical draw. Each step is a small pure function that takes a `(B, V)` float32 array and returns
one, with filtered tokens set to -inf; the sampler composes only the steps a setting turns on, so
greedy decoding without penalties is a bare argmax.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import EdgeError

# Built-in defaults, the last rung after the caller's overrides and the bundle's defaults. Each one
# turns its step off, so default settings sample from the model's own distribution.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_K = 0
DEFAULT_TOP_P = 1.0
DEFAULT_MIN_P = 0.0
DEFAULT_REPETITION_PENALTY = 1.0
DEFAULT_PRESENCE_PENALTY = 0.0
DEFAULT_FREQUENCY_PENALTY = 0.0
DEFAULT_NO_REPEAT_NGRAM_SIZE = 0
DEFAULT_SEED: int | None = None

# OpenAI's bound for the presence and frequency penalties.
MAX_ABS_OPENAI_PENALTY = 2.0

_NEG_INF = np.float32(-np.inf)
_KEEP_OR_DROP = np.array([-np.inf, 0.0], dtype=np.float32)  # indexed by a keep mask
# Block length of the two-level running sum (see _cumsum_search), and how many of the most likely
# tokens top-p ranks first before widening.
_BLOCK = 512
_TOP_P_FIRST_HEAD = 256

# What each field accepts, as the sentence an error states, and the test for it.
_REAL_RULES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "temperature": ("a number >= 0 (0 means greedy)", lambda v: v >= 0.0),
    "top_p": ("a number in (0, 1] (1 turns it off)", lambda v: 0.0 < v <= 1.0),
    "min_p": ("a number in [0, 1] (0 turns it off)", lambda v: 0.0 <= v <= 1.0),
    "repetition_penalty": ("a number > 0 (1 turns it off)", lambda v: v > 0.0),
    "presence_penalty": (
        "a number in [-2, 2] (0 turns it off)",
        lambda v: abs(v) <= MAX_ABS_OPENAI_PENALTY,
    ),
    "frequency_penalty": (
        "a number in [-2, 2] (0 turns it off)",
        lambda v: abs(v) <= MAX_ABS_OPENAI_PENALTY,
    ),
}
_INT_RULES: dict[str, str] = {
    "top_k": "an integer >= 0 (0 turns it off)",
    "no_repeat_ngram_size": "an integer >= 0 (0 turns it off)",
    "seed": "None or an integer >= 0",
}


def _invalid(name: str, rule: str, value: object) -> EdgeError:
    shown = repr(value) if isinstance(value, str) else str(value)
    return EdgeError(f"{name} must be {rule}, got {shown}.")


def _is_bool(value: object) -> bool:
    # bool is an int subclass, and np.bool_ passes numbers checks on some numpy versions.
    return isinstance(value, (bool, np.bool_))


def first_given(
    names: Sequence[str], overrides: Mapping[str, Any], defaults: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Per name, the override, else the default; None counts as not given, and a name given by
    neither is left out (so the dataclass's built-in default applies)."""
    defaults = defaults or {}
    values: dict[str, Any] = {}
    for name in names:
        if overrides.get(name) is not None:
            values[name] = overrides[name]
        elif defaults.get(name) is not None:
            values[name] = defaults[name]
    return values


@dataclass(frozen=True)
class SamplingSettings:
    """How to pick each next token; validated on construction.

    Attributes:
        temperature: Divides the logits; 0 means greedy (argmax). Default 1.0.
        top_k: Keep the k most likely tokens (ties with the k-th kept, as transformers); 0 is off.
            Default 0.
        top_p: Keep the smallest set of most likely tokens whose probability reaches top_p (always
            at least one); 1 is off. Default 1.0.
        min_p: Drop tokens less likely than min_p times the most likely one; 0 is off. Default 0.0.
        repetition_penalty: Divides positive and multiplies negative logits of every token in the
            prompt and the generated text (transformers/CTRL); 1 is off. Default 1.0.
        presence_penalty: Subtracted once from the logit of each token already generated (OpenAI);
            0 is off. Default 0.0.
        frequency_penalty: Subtracted from a token's logit once per time it was generated (OpenAI);
            0 is off. Default 0.0.
        no_repeat_ngram_size: Forbid any n-gram of this size from occurring twice in prompt plus
            generated text; 0 is off. Default 0.
        seed: Seed of the sampler's random generator; None draws fresh entropy. Default None.
    """

    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    min_p: float = DEFAULT_MIN_P
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    presence_penalty: float = DEFAULT_PRESENCE_PENALTY
    frequency_penalty: float = DEFAULT_FREQUENCY_PENALTY
    no_repeat_ngram_size: int = DEFAULT_NO_REPEAT_NGRAM_SIZE
    seed: int | None = DEFAULT_SEED

    def __post_init__(self) -> None:
        """Checks every field and stores it as a plain float or int.

        Raises:
            EdgeError: A field has the wrong type, is NaN or infinite, or is out of its range; the
                message names the field, the value and the allowed range.
        """
        for name, (rule, ok) in _REAL_RULES.items():
            value = getattr(self, name)
            if (
                _is_bool(value)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
                or not ok(float(value))
            ):
                raise _invalid(name, rule, value)
            object.__setattr__(self, name, float(value))
        for name, rule in _INT_RULES.items():
            value = getattr(self, name)
            if name == "seed" and value is None:
                continue
            if _is_bool(value) or not isinstance(value, numbers.Integral) or value < 0:
                raise _invalid(name, rule, value)
            object.__setattr__(self, name, int(value))

    @classmethod
    def from_defaults(
        cls, bundle_defaults: Mapping[str, Any] | None, **overrides: Any
    ) -> SamplingSettings:
        """Resolves settings: overrides, then the bundle's defaults, then the built-in constants.

        Args:
            bundle_defaults: The bundle's generation defaults, keyed by field name; keys that are
                not sampling settings (e.g. `max_new_tokens`) and None values are ignored. May be
                None.
            **overrides: Field values from the caller; None means "not given".

        Returns:
            The validated settings.

        Raises:
            EdgeError: An override names no sampling setting, or a resolved value is invalid.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise EdgeError(
                f"Unknown sampling setting {unknown[0]!r}; the settings are {', '.join(names)}."
            )
        return cls(**first_given(names, overrides, bundle_defaults))

    @property
    def greedy(self) -> bool:
        """True when temperature is 0: the next token is the argmax."""
        return self.temperature == 0.0


# --- Penalties: (B, V) logits plus per-row token histories -> (B, V) logits --------------------


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
            seen = row[ids]
            row[ids] = np.where(seen < 0, seen * penalty, seen / penalty)
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
        row[banned_ngram_tokens(history, size)] = _NEG_INF
    return out


# --- Warpers: (B, V) logits -> (B, V) logits ------------------------------------------------------


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Divides the logits by `temperature` (> 0); 1 returns the input unchanged."""
    if temperature == 1.0:
        return logits
    return logits / np.float32(temperature)


def _mask_below(logits: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """A new array: logits below their row's threshold (B, 1) at -inf, the rest unchanged."""
    keep = logits >= thresholds
    if np.count_nonzero(keep) * 16 < keep.size:
        # Few survivors (top-k, a peaked top-p): fill with -inf and copy them over.
        out = np.full_like(logits, _NEG_INF)
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
    alive = row[row > _NEG_INF]  # after top-k only k candidates remain to rank
    if alive.size == 0:
        return _NEG_INF
    top = alive.max()
    target = top_p * float(np.exp(alive - top).sum(dtype=np.float64))
    # Rank only the head of the distribution: partition out the k largest, sort those, and widen
    # k only when they do not reach top_p yet; a peaked distribution never sorts the vocabulary.
    k = min(alive.size, _TOP_P_FIRST_HEAD)
    while True:
        head = alive if k == alive.size else np.partition(alive, alive.size - k)[-k:]
        ranked = np.sort(head)[::-1]  # (k,) descending
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


# --- Choosing the token ---------------------------------------------------------------------------


def sample_categorical(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws one token per row from softmax(logits), one uniform number per row.

    Inverse CDF over the finite logits only, so filtered tokens (-inf) are never drawn and a top-k
    row costs O(k) after one O(V) scan. A row with no finite logit falls back to its argmax.

    Args:
        logits: (B, V) scores, filtered tokens at -inf.
        rng: The generator to draw from; rows draw in order.

    Returns:
        (B,) int64 token ids.
    """
    tokens = np.empty(logits.shape[0], dtype=np.int64)
    for b, row in enumerate(logits):
        alive = row > _NEG_INF
        ids = None if alive.all() else np.flatnonzero(alive)  # None: every token is a candidate
        values = row if ids is None else row[ids]
        if values.size == 0:
            tokens[b] = int(np.argmax(row))
            continue
        weights = np.exp(values - values.max())
        total = float(weights.sum(dtype=np.float64))
        j = min(_cumsum_search(weights, rng.random() * total, "right"), values.size - 1)
        if weights[j] == 0.0:  # rounding at a block edge or the total: step back to a real token
            before = np.flatnonzero(weights[: j + 1])
            j = int(before[-1]) if before.size else int(np.argmax(weights))
        tokens[b] = j if ids is None else ids[j]
    return tokens


LogitsProcessor = Callable[[np.ndarray, Sequence[np.ndarray], Sequence[np.ndarray]], np.ndarray]
"""(logits (B, V), prompts, generated) -> logits (B, V)."""


class Sampler:
    """Picks the next token of each row from the last position's logits.

    Args:
        settings: The validated settings; the processor list is built once from them.
    """

    def __init__(self, settings: SamplingSettings) -> None:
        self.settings = settings
        self._rng = np.random.default_rng(settings.seed)
        self._processors = self._build(settings)
        # Greedy without penalties is a bare argmax: no copy, no softmax.
        self._bare_argmax = settings.greedy and not self._processors

    @staticmethod
    def _build(s: SamplingSettings) -> list[LogitsProcessor]:
        steps: list[LogitsProcessor] = []
        # Penalties apply to greedy decoding too (transformers applies them before argmax).
        if s.repetition_penalty != 1.0:
            steps.append(
                lambda x, p, g: apply_repetition_penalty(x, _histories(p, g), s.repetition_penalty)
            )
        if s.presence_penalty != 0.0 or s.frequency_penalty != 0.0:
            steps.append(
                lambda x, p, g: apply_presence_frequency_penalty(
                    x, g, s.presence_penalty, s.frequency_penalty
                )
            )
        if s.no_repeat_ngram_size > 0:
            steps.append(
                lambda x, p, g: apply_no_repeat_ngram(x, _histories(p, g), s.no_repeat_ngram_size)
            )
        # Warpers only shape the distribution to sample from; the argmax never depends on them.
        if not s.greedy:
            if s.temperature != 1.0:
                steps.append(lambda x, p, g: apply_temperature(x, s.temperature))
            if s.top_k > 0:
                steps.append(lambda x, p, g: apply_top_k(x, s.top_k))
            if s.top_p < 1.0:
                steps.append(lambda x, p, g: apply_top_p(x, s.top_p))
            if s.min_p > 0.0:
                steps.append(lambda x, p, g: apply_min_p(x, s.min_p))
        return steps

    def process(
        self,
        logits: np.ndarray,
        prompts: Sequence[np.ndarray],
        generated: Sequence[np.ndarray],
    ) -> np.ndarray:
        """Applies the penalties and filters, returning the logits the token is chosen from.

        Args:
            logits: (B, V) scores at the last position; not modified.
            prompts: B arrays, each row's prompt ids (without padding).
            generated: B arrays, each row's generated ids so far.

        Returns:
            (B, V) float32 logits, filtered tokens at -inf (the input itself when no step is on).
        """
        if logits.ndim != 2 or len(prompts) != logits.shape[0] or len(generated) != len(prompts):
            raise ValueError(
                f"expected (B, V) logits with B prompts and B histories, got {logits.shape}, "
                f"{len(prompts)} prompts and {len(generated)} histories"
            )
        x = np.asarray(logits, dtype=np.float32)
        for step in self._processors:
            x = step(x, prompts, generated)
        return x

    def __call__(
        self,
        logits: np.ndarray,
        prompts: Sequence[np.ndarray],
        generated: Sequence[np.ndarray],
    ) -> np.ndarray:
        """Returns the next token of every row.

        Args:
            logits: (B, V) float32 scores at the last position; not modified.
            prompts: B arrays, each row's prompt ids (without padding).
            generated: B arrays, each row's generated ids so far.

        Returns:
            (B,) int64 next tokens: the argmax when greedy, else a draw from the seeded generator.
        """
        if self._bare_argmax:
            return np.argmax(logits, axis=-1).astype(np.int64, copy=False)
        x = self.process(logits, prompts, generated)
        if self.settings.greedy:
            return np.argmax(x, axis=-1).astype(np.int64, copy=False)
        return sample_categorical(x, self._rng)


def _histories(prompts: Sequence[np.ndarray], generated: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per row, prompt then generated ids as one int64 array."""
    return [
        np.concatenate([np.asarray(p, dtype=np.int64), np.asarray(g, dtype=np.int64)])
        for p, g in zip(prompts, generated, strict=True)
    ]
