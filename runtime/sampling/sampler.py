"""The next-token sampler: penalties, then filters, then argmax or a seeded categorical draw.

A :class:`Sampler` turns the last position's logits ``(B, V)`` into next tokens ``(B,)`` in
transformers' order (``GenerationMixin._get_logits_processor``): penalties (repetition,
presence/frequency, no-repeat n-gram; :mod:`.penalties`), then temperature, top-k, top-p, min-p
(:mod:`.filters`), then argmax (temperature 0) or a categorical draw. It composes only the steps a
setting turns on, so greedy decoding without penalties is a bare argmax. The settings themselves
live in :mod:`.settings`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..settings.sampling import SamplingSettings
from .filters import apply_min_p, apply_temperature, apply_top_k, apply_top_p, sample_categorical
from .penalties import (
    apply_no_repeat_ngram,
    apply_presence_frequency_penalty,
    apply_repetition_penalty,
)
from .rng import LazyRng

LogitsProcessor = Callable[[np.ndarray, Sequence[np.ndarray], Sequence[np.ndarray]], np.ndarray]
"""(logits (B, V), prompts, generated) -> logits (B, V)."""


def sequence_rng(seed: int | None, index: int = 0) -> np.random.Generator:
    """The random generator of sequence ``index`` of one prompt.

    Seeded by ``seed`` for the first sequence and by ``(seed, index)`` for the others: a prompt's
    samples are the same whatever else shares the batch, and its ``num_return_sequences``
    samples differ from each other. None draws fresh entropy.
    """
    return LazyRng(None if seed is None else seed if index == 0 else [seed, index])


class Sampler:
    """Picks the next token of each row from the last position's logits.

    Args:
        settings: The validated settings; the processor list is built once from them.
    """

    def __init__(self, settings: SamplingSettings) -> None:
        self.settings = settings
        self._rng = sequence_rng(settings.seed)
        self._penalties = penalties(settings)
        self._filters = [] if settings.greedy else filters(settings)
        # Greedy without penalties is a bare argmax: no copy, no softmax.
        self.bare_argmax = settings.greedy and not self._penalties

    def penalize(
        self, logits: np.ndarray, prompts: Sequence[np.ndarray], generated: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Only the penalties: beam search applies them to log-probabilities."""
        x = logits
        for step in self._penalties:
            x = step(x, prompts, generated)
        return x

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
        x = self.penalize(np.asarray(logits, dtype=np.float32), prompts, generated)
        for step in self._filters:
            x = step(x, prompts, generated)
        return x

    def __call__(
        self,
        logits: np.ndarray,
        prompts: Sequence[np.ndarray],
        generated: Sequence[np.ndarray],
        rngs: Sequence[np.random.Generator] | None = None,
    ) -> np.ndarray:
        """Returns the next token of every row.

        Args:
            logits: (B, V) float32 scores at the last position; not modified.
            prompts: B arrays, each row's prompt ids (without padding).
            generated: B arrays, each row's generated ids so far.
            rngs: one generator per row (default: the sampler's own, seeded by the settings).

        Returns:
            (B,) int64 next tokens: the argmax when greedy, else a draw.
        """
        if self.bare_argmax:
            return np.argmax(logits, axis=-1).astype(np.int64, copy=False)
        x = self.process(logits, prompts, generated)
        if self.settings.greedy:
            return np.argmax(x, axis=-1).astype(np.int64, copy=False)
        return sample_categorical(x, self._rng if rngs is None else rngs)


def penalties(s: SamplingSettings) -> list[LogitsProcessor]:
    """The penalty steps the settings turn on, in transformers' order."""
    steps: list[LogitsProcessor] = []
    if s.repetition_penalty != 1.0:
        steps.append(
            lambda x, p, g: apply_repetition_penalty(x, histories(p, g), s.repetition_penalty)
        )
    if s.presence_penalty != 0.0 or s.frequency_penalty != 0.0:
        steps.append(
            lambda x, p, g: apply_presence_frequency_penalty(
                x, g, s.presence_penalty, s.frequency_penalty
            )
        )
    if s.no_repeat_ngram_size > 0:
        steps.append(
            lambda x, p, g: apply_no_repeat_ngram(x, histories(p, g), s.no_repeat_ngram_size)
        )
    return steps


def filters(s: SamplingSettings) -> list[LogitsProcessor]:
    """The filter steps the settings turn on; they only shape what is sampled, never the argmax."""
    steps: list[LogitsProcessor] = []
    if s.temperature != 1.0:
        steps.append(lambda x, p, g: apply_temperature(x, s.temperature))
    if s.top_k > 0:
        steps.append(lambda x, p, g: apply_top_k(x, s.top_k))
    if s.top_p < 1.0:
        steps.append(lambda x, p, g: apply_top_p(x, s.top_p))
    if s.min_p > 0.0:
        steps.append(lambda x, p, g: apply_min_p(x, s.min_p))
    return steps


def histories(prompts: Sequence[np.ndarray], generated: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per row, prompt then generated ids as one int64 array."""
    return [
        np.concatenate([np.asarray(p, dtype=np.int64), np.asarray(g, dtype=np.int64)])
        for p, g in zip(prompts, generated, strict=True)
    ]
