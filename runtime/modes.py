"""Which settings each decoding mode reads: a setting the caller gave that the mode ignores is
refused by ``gpt2-generate`` and the Python API (the HTTP server accepts it, as OpenAI's API does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import EdgeError
from .settings import GenerationOptions, SamplingSettings, resolve_settings

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
                    f"{name} out."
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
            raise EdgeError(f"{name} has no effect with {mode}; {advice.format(name)}.")
