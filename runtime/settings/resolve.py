"""Settings resolved from the caller, then the bundle's defaults, then the built-in constants,
into the typed objects generation takes; and which settings each decoding mode reads (a
setting the caller gave that the mode ignores is refused by ``gpt2-generate`` and the Python
API; the HTTP server accepts it, as OpenAI's API does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import EdgeError
from .options import GENERATOR_NAMES, GenerationOptions
from .sampling import SAMPLING_NAMES, SamplingSettings
from .values import first_given


def resolve_settings(
    bundle_defaults: Mapping[str, Any] | None, **overrides: Any
) -> tuple[SamplingSettings, GenerationOptions]:
    """Split and validate settings; an override of None means "not given".

    The caller's ``max_length`` replaces the bundle's ``max_new_tokens``; giving both is an
    error, and where the bundle gives both, ``max_new_tokens`` wins (as in transformers).

    Args:
        bundle_defaults: the manifest's ``generation`` map (may be None).
        **overrides: any of the sampling settings and the generator's options.

    Returns:
        The sampler's settings and the generator's options.

    Raises:
        EdgeError: a name that is no setting, a value out of its range, or settings that do not
            go together (greedy decoding asked for several sequences). Settings that the mode
            ignores pass: :func:`.modes.refuse_unused` refuses those.
    """
    unknown = sorted(set(overrides) - set(SAMPLING_NAMES) - set(GENERATOR_NAMES))
    if unknown:
        known = ", ".join((*GENERATOR_NAMES, *SAMPLING_NAMES))
        raise EdgeError(
            f"Unknown setting {unknown[0]!r}; the settings are {known}.", field=unknown[0]
        )
    sampling = SamplingSettings.from_defaults(
        bundle_defaults, **{k: v for k, v in overrides.items() if k in SAMPLING_NAMES}
    )
    given = first_given(GENERATOR_NAMES, overrides, bundle_defaults)
    caller = {k for k in ("max_new_tokens", "max_length") if overrides.get(k) is not None}
    if len(caller) == 2:
        raise EdgeError("Give max_new_tokens or max_length, not both.", field="max_length")
    if caller == {"max_new_tokens"} or (not caller and "max_new_tokens" in given):
        given.pop("max_length", None)
    options = GenerationOptions(**given)
    _check_together(sampling, options)
    return sampling, options


def _check_together(sampling: SamplingSettings, options: GenerationOptions) -> None:
    if not options.beam_search and options.num_return_sequences > 1 and sampling.greedy:
        raise EdgeError(
            "Greedy decoding gives one sequence per prompt; sample (temperature > 0) or search "
            "beams (num_beams > 1) for num_return_sequences > 1.",
            field="num_return_sequences",
        )


# Per decoding mode, the settings it ignores, each with the value that turns it off: giving that
# value is harmless (transformers' GenerationConfig.validate does not warn about it either).
# A seed is not among them: greedy decoding and beams give the same tokens whatever the seed, so
# it cannot mislead, and scripts that always pass one should not break on temperature 0.
_SAMPLING_ONLY: dict[str, object] = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}
_BEAMS_ONLY: dict[str, object] = {"length_penalty": 1.0, "early_stopping": False}


def resolve_user_settings(
    bundle_defaults: Mapping[str, Any] | None, **overrides: Any
) -> tuple[SamplingSettings, GenerationOptions]:
    """:func:`resolve_settings`, then :func:`refuse_unused`: what ``gpt2-generate`` and the
    Python API take."""
    sampling, options = resolve_settings(bundle_defaults, **overrides)
    refuse_unused(sampling, options, overrides)
    return sampling, options


def refuse_unused(
    sampling: SamplingSettings, options: GenerationOptions, overrides: Mapping[str, Any]
) -> None:
    """Refuse a setting the caller gave that the decoding mode ignores: sampling's with greedy
    decoding or beam search, beam search's without beams.

    transformers' ``generate`` warns about the same ones; a refusal keeps a user from believing
    that, say, ``top_p`` shaped a greedy answer. Only the caller's ``overrides`` are checked,
    never the bundle's defaults, but the mode may come from the bundle (which the sentence then
    says). The HTTP server does not call this: OpenAI's API accepts ``top_p`` with temperature 0.

    Raises:
        EdgeError: one sentence naming the setting, the mode and the way out.
    """
    given = {name for name, value in overrides.items() if value is not None}
    if not options.beam_search:
        for name, off in _BEAMS_ONLY.items():
            if name in given and getattr(options, name) != off:
                raise EdgeError(
                    f"{name} has no effect without beam search; give num_beams > 1, or leave "
                    f"{name} out.",
                    field=name,
                )

    def by(name: str) -> str:
        return "" if name in given else ", the bundle's default"

    if options.beam_search:
        mode = f"beam search (num_beams {options.num_beams}{by('num_beams')}), which is "
        mode, advice = mode + "deterministic", "leave {} out"
        unused = {"temperature": 0.0, **_SAMPLING_ONLY}  # a temperature > 0 means sampling
    elif sampling.greedy:
        mode = f"greedy decoding (temperature 0{by('temperature')})"
        advice, unused = "sample with a temperature > 0, or leave {} out", _SAMPLING_ONLY
    else:
        return
    for name, off in unused.items():
        if name in given and getattr(sampling, name) != off:
            raise EdgeError(f"{name} has no effect with {mode}; {advice.format(name)}.", name)
