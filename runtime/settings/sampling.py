"""How each next token is picked (:class:`SamplingSettings`), validated on construction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..errors import EdgeError
from .values import (
    DEFAULT_FREQUENCY_PENALTY,
    DEFAULT_MIN_P,
    DEFAULT_NO_REPEAT_NGRAM_SIZE,
    DEFAULT_PRESENCE_PENALTY,
    DEFAULT_REPETITION_PENALTY,
    DEFAULT_SEED,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    INT_RULES,
    REAL_RULES,
    first_given,
    int_in,
    real_in,
)


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
        seed: Seed of the random generators (one per sequence, see :func:`.sampling.sequence_rng`);
            None draws fresh entropy. Default None.
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
        for name, (rule, ok) in REAL_RULES.items():
            object.__setattr__(self, name, real_in(name, getattr(self, name), rule, ok))
        for name, rule in INT_RULES.items():
            value = getattr(self, name)
            if not (name == "seed" and value is None):
                object.__setattr__(self, name, int_in(name, value, 0, None, rule))

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

        Raises:
            EdgeError: An override names no sampling setting, or a resolved value is invalid.
        """
        unknown = sorted(set(overrides) - set(SAMPLING_NAMES))
        if unknown:
            raise EdgeError(
                f"Unknown sampling setting {unknown[0]!r}; the settings are "
                f"{', '.join(SAMPLING_NAMES)}.",
                field=unknown[0],
            )
        return cls(**first_given(SAMPLING_NAMES, overrides, bundle_defaults))

    @property
    def greedy(self) -> bool:
        """True when temperature is 0: the next token is the argmax."""
        return self.temperature == 0.0


SAMPLING_NAMES = tuple(f.name for f in fields(SamplingSettings))
