"""Generation settings: the generator's own (token budget, stop strings, truncation, ignore_eos),
resolved together with the sampler's from the caller, then the bundle's defaults, then constants.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .errors import EdgeError
from .sampling import SamplingSettings, first_given

# Built-in defaults, used when neither the caller nor the bundle gives a value.
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_TRUNCATE: str | None = None
TRUNCATE_MODES = (None, "left")

SAMPLING_NAMES = tuple(f.name for f in fields(SamplingSettings))
GENERATOR_NAMES = ("max_new_tokens", "stop", "truncate", "ignore_eos")


@dataclass(frozen=True)
class GenerationOptions:
    """What the generator itself decides, besides how each token is sampled.

    Attributes:
        max_new_tokens: most tokens to generate per prompt (default 128, or the bundle's).
        stop: strings that end generation; the text returned ends before them (default none).
        truncate: ``None`` (default): a prompt that does not fit the context is an error;
            ``"left"``: drop its oldest tokens so that it plus ``max_new_tokens`` fits.
        ignore_eos: keep generating past the end-of-text token (default False; for benchmarks).
    """

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    stop: tuple[str, ...] = ()
    truncate: str | None = DEFAULT_TRUNCATE
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise EdgeError(f"max_new_tokens must be an integer >= 1, got {n!r}.")
        object.__setattr__(self, "max_new_tokens", int(n))
        if self.truncate not in TRUNCATE_MODES:
            raise EdgeError(f"truncate must be None or 'left', got {self.truncate!r}.")
        if not isinstance(self.ignore_eos, bool):
            raise EdgeError(f"ignore_eos must be True or False, got {self.ignore_eos!r}.")
        object.__setattr__(self, "stop", _stop_strings(self.stop))


def _stop_strings(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = (stop,) if isinstance(stop, str) else tuple(stop)
    if not all(isinstance(s, str) and s for s in items):
        raise EdgeError(f"stop must be a non-empty string or a list of them, got {stop!r}.")
    return items


def resolve_settings(
    bundle_defaults: Mapping[str, Any] | None, **overrides: Any
) -> tuple[SamplingSettings, GenerationOptions]:
    """Split and validate settings; an override of None means "not given".

    Args:
        bundle_defaults: the manifest's ``generation`` map (may be None).
        **overrides: any of the sampling settings and ``max_new_tokens``, ``stop``,
            ``truncate``, ``ignore_eos``.

    Returns:
        The sampler's settings and the generator's options.

    Raises:
        EdgeError: a name that is no setting, or a value out of its range.
    """
    unknown = sorted(set(overrides) - set(SAMPLING_NAMES) - set(GENERATOR_NAMES))
    if unknown:
        known = ", ".join((*GENERATOR_NAMES, *SAMPLING_NAMES))
        raise EdgeError(f"Unknown setting {unknown[0]!r}; the settings are {known}.")
    sampling = SamplingSettings.from_defaults(
        bundle_defaults, **{k: v for k, v in overrides.items() if k in SAMPLING_NAMES}
    )
    options = GenerationOptions(**first_given(GENERATOR_NAMES, overrides, bundle_defaults))
    return sampling, options
