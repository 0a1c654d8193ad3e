"""Settings a user passes, validated into sentences, and resolved from the caller, then the
bundle's defaults, then the constants here: how each token is sampled (:class:`SamplingSettings`),
what the generator decides besides (:class:`GenerationOptions`: budget, stop strings, beams,
sequences, logprobs, drafting), and the thread count a session runs with.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import numpy as np

from .errors import EdgeError

# Built-in defaults, the last rung after the caller's overrides and the bundle's defaults. Each
# sampling default turns its step off, so default settings sample from the model's distribution.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_K = 0
DEFAULT_TOP_P = 1.0
DEFAULT_MIN_P = 0.0
DEFAULT_REPETITION_PENALTY = 1.0
DEFAULT_PRESENCE_PENALTY = 0.0
DEFAULT_FREQUENCY_PENALTY = 0.0
DEFAULT_NO_REPEAT_NGRAM_SIZE = 0
DEFAULT_SEED: int | None = None
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_TRUNCATE: str | None = None
DEFAULT_LENGTH_PENALTY = 1.0  # transformers' default: beams are scored by mean log-probability
TRUNCATE_MODES = (None, "left")
EARLY_STOPPING = (False, True, "never")  # transformers' three beam-search stopping rules
DRAFTERS = (None, "prompt-lookup")
# OpenAI's bound for the presence and frequency penalties, and for top logprobs per token.
MAX_ABS_OPENAI_PENALTY = 2.0
MAX_LOGPROBS = 20
# Beams and sequences per prompt each take a row of the batch (and its KV cache).
MAX_SEQUENCES = 64

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
    "seed": "an integer >= 0 (or not given)",
}


def _shown(value: object) -> str:
    """Plain numbers (and numpy's) as written; anything else by repr, so that a wrong type shows:
    str(Decimal("0.5")) would read as the very number it is refused for not being."""
    plain = type(value) in (int, float, bool) or isinstance(value, np.generic)
    return str(value) if plain else repr(value)


def _invalid(name: str, rule: str, value: object) -> EdgeError:
    shown = _shown(value)
    if len(shown) > 60:
        shown = type(value).__name__
    return EdgeError(f"{name} must be {rule}, got {shown}.")


def _is_bool(value: object) -> bool:
    # bool is an int subclass, and np.bool_ passes numbers checks on some numpy versions.
    return isinstance(value, (bool, np.bool_))


def _is_int(value: object) -> bool:
    return not _is_bool(value) and isinstance(value, numbers.Integral)


def _real(name: str, value: object, rule: str, ok: Callable[[float], bool]) -> float:
    if (
        _is_bool(value)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not ok(float(value))
    ):
        raise _invalid(name, rule, value)
    return float(value)


def _int_in(name: str, value: object, low: int, high: int | None, rule: str) -> int:
    """``value`` as an int in [low, high]; else "<name> must be <rule>, got <value>."."""
    if not _is_int(value) or not low <= value <= (high if high is not None else value):  # type: ignore[operator]
        raise _invalid(name, rule, value)
    return int(value)  # type: ignore[arg-type]


def _any(value: float) -> bool:
    return True


def _early_stopping(value: object) -> bool | str:
    if _is_bool(value):
        return bool(value)
    if isinstance(value, str) and value == "never":
        return value
    raise _invalid("early_stopping", "True, False or 'never'", value)


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
        for name, (rule, ok) in _REAL_RULES.items():
            object.__setattr__(self, name, _real(name, getattr(self, name), rule, ok))
        for name, rule in _INT_RULES.items():
            value = getattr(self, name)
            if not (name == "seed" and value is None):
                object.__setattr__(self, name, _int_in(name, value, 0, None, rule))

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
                f"{', '.join(SAMPLING_NAMES)}."
            )
        return cls(**first_given(SAMPLING_NAMES, overrides, bundle_defaults))

    @property
    def greedy(self) -> bool:
        """True when temperature is 0: the next token is the argmax."""
        return self.temperature == 0.0


SAMPLING_NAMES = tuple(f.name for f in fields(SamplingSettings))


@dataclass(frozen=True)
class GenerationOptions:
    """What the generator decides besides how each token is sampled; validated on construction.

    Attributes:
        max_new_tokens: most tokens to generate per sequence (default 128, or the bundle's).
        max_length: prompt plus new tokens, as transformers counts it (per prompt); when given,
            it replaces ``max_new_tokens`` (default None).
        stop: strings that end generation; the text returned ends before them (default none).
        truncate: ``None`` (default): a prompt that does not fit the context is an error, and
            one that fits is never cut: generation stops at the context's end instead (finish
            reason ``context``); ``"left"``: drop the oldest prompt tokens so that
            ``max_new_tokens`` new ones fit (the prompt keeps at most context - max_new_tokens
            tokens; needs ``max_new_tokens`` below the context, and not ``max_length``).
        ignore_eos: keep generating past the end-of-text token (default False; for benchmarks).
        num_beams: beams per prompt; 1 (default) is no beam search.
        length_penalty: beam search ranks a finished beam by its log-probability divided by its
            length to this power (default 1.0, transformers').
        early_stopping: beam search stops as soon as ``num_beams`` beams finished (True), when a
            heuristic says no better beam can come (False, default), or never before the budget
            ("never"): transformers' three rules.
        num_return_sequences: sequences per prompt (default 1): the best beams with beam search,
            else independent samples (sampling only).
        logprobs: None (default) or K in [0, 20]: report each generated token's log-probability
            under the model (log-softmax of the raw logits, before penalties and temperature)
            and its K most likely alternatives.
        draft: None (default) or ``"prompt-lookup"``: propose tokens by matching the last n-gram
            against the prompt and text so far, and verify them in one model call.
    """

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    max_length: int | None = None
    stop: tuple[str, ...] = ()
    truncate: str | None = DEFAULT_TRUNCATE
    ignore_eos: bool = False
    num_beams: int = 1
    length_penalty: float = DEFAULT_LENGTH_PENALTY
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    logprobs: int | None = None
    draft: str | None = None

    def __post_init__(self) -> None:
        """Checks every field and stores it as a plain type.

        Raises:
            EdgeError: a field of the wrong type or out of its range, or beam search asked
                together with stop strings, drafting, or more sequences than beams.
        """
        store = partial(object.__setattr__, self)
        store(
            "max_new_tokens",
            _int_in("max_new_tokens", self.max_new_tokens, 1, None, "an integer >= 1"),
        )
        if self.max_length is not None:
            rule = "an integer >= 2 (prompt plus new tokens)"
            store("max_length", _int_in("max_length", self.max_length, 2, None, rule))
        truncate = self.truncate
        if truncate is not None and not (isinstance(truncate, str) and truncate in TRUNCATE_MODES):
            raise _invalid("truncate", "'left' (or not given)", truncate)
        if not _is_bool(self.ignore_eos):
            raise _invalid("ignore_eos", "true or false", self.ignore_eos)
        store("ignore_eos", bool(self.ignore_eos))
        store("stop", _stop_strings(self.stop))
        sequences = f"an integer from 1 to {MAX_SEQUENCES}"
        for name in ("num_beams", "num_return_sequences"):
            store(name, _int_in(name, getattr(self, name), 1, MAX_SEQUENCES, sequences))
        penalty = "a finite number (1 ranks beams by mean log-probability)"
        store("length_penalty", _real("length_penalty", self.length_penalty, penalty, _any))
        store("early_stopping", _early_stopping(self.early_stopping))
        if self.logprobs is not None:
            rule = f"an integer from 0 to {MAX_LOGPROBS} (or not given)"
            store("logprobs", _int_in("logprobs", self.logprobs, 0, MAX_LOGPROBS, rule))
        if not (self.draft is None or (isinstance(self.draft, str) and self.draft in DRAFTERS)):
            raise _invalid("draft", "'prompt-lookup' (or not given)", self.draft)
        if self.num_beams > 1:
            self._check_beams()

    def _check_beams(self) -> None:
        if self.num_return_sequences > self.num_beams:
            raise EdgeError(
                f"num_return_sequences ({self.num_return_sequences}) cannot exceed "
                f"num_beams ({self.num_beams})."
            )
        if self.stop:
            raise EdgeError("Stop strings do not work with beam search (num_beams > 1).")
        if self.draft:
            raise EdgeError("Drafting does not work with beam search (num_beams > 1).")

    @property
    def beam_search(self) -> bool:
        """True when more than one beam is searched."""
        return self.num_beams > 1

    def budget(self, prompt_len: int) -> int:
        """New tokens allowed after a prompt of ``prompt_len`` tokens, before the context bound."""
        if self.max_length is None:
            return self.max_new_tokens
        return self.max_length - prompt_len


def _stop_strings(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        items: tuple[object, ...] = (stop,)
    elif isinstance(stop, (list, tuple)):
        items = tuple(stop)
    else:  # bytes, numbers, sets (no order) and the like
        items = (stop,)
    if not all(isinstance(s, str) and s for s in items):
        shown = repr(stop) if len(repr(stop)) <= 60 else type(stop).__name__
        raise EdgeError(f"stop must be a non-empty string or a list of them, got {shown}.")
    return items  # type: ignore[return-value]


GENERATOR_NAMES = tuple(f.name for f in fields(GenerationOptions))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_threads(threads: object) -> int | None:
    """Validate an intra-op thread count: None (onnxruntime decides) or 1 to the CPUs available.

    More threads than CPUs only makes the threads wait for each other (1000 ran 70x slower).

    Raises:
        EdgeError: not an integer, below 1, or more than the CPUs this process may use.
    """
    if threads is None:
        return None
    cpus = available_cpus()
    if not _is_int(threads):
        raise EdgeError(f"threads must be an integer from 1 to {cpus}, got {_shown(threads)}.")
    if not 1 <= threads <= cpus:  # type: ignore[operator]
        raise EdgeError(
            f"threads must be from 1 to {cpus} (the CPUs this process may use), got {threads}."
        )
    return int(threads)  # type: ignore[arg-type]


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
        raise EdgeError(f"Unknown setting {unknown[0]!r}; the settings are {known}.")
    sampling = SamplingSettings.from_defaults(
        bundle_defaults, **{k: v for k, v in overrides.items() if k in SAMPLING_NAMES}
    )
    given = first_given(GENERATOR_NAMES, overrides, bundle_defaults)
    caller = {k for k in ("max_new_tokens", "max_length") if overrides.get(k) is not None}
    if len(caller) == 2:
        raise EdgeError("Give max_new_tokens or max_length, not both.")
    if caller == {"max_new_tokens"} or (not caller and "max_new_tokens" in given):
        given.pop("max_length", None)
    options = GenerationOptions(**given)
    _check_together(sampling, options)
    return sampling, options


def _check_together(sampling: SamplingSettings, options: GenerationOptions) -> None:
    if not options.beam_search and options.num_return_sequences > 1 and sampling.greedy:
        raise EdgeError(
            "Greedy decoding gives one sequence per prompt; sample (temperature > 0) or search "
            "beams (num_beams > 1) for num_return_sequences > 1."
        )
