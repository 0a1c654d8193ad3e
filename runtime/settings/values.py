"""The settings' built-in defaults and bounds, and the checks every setting goes through: each
failure is one sentence that names the setting, the value given and what it accepts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

import numpy as np

from ..errors import SettingError

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
REAL_RULES: dict[str, tuple[str, Callable[[float], bool]]] = {
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
INT_RULES: dict[str, str] = {
    "top_k": "an integer >= 0 (0 turns it off)",
    "no_repeat_ngram_size": "an integer >= 0 (0 turns it off)",
    "seed": "an integer >= 0 (or not given)",
}


def shown(value: object) -> str:
    """Plain numbers (and numpy's) as written; anything else by repr, so that a wrong type shows:
    str(Decimal("0.5")) would read as the very number it is refused for not being."""
    plain = type(value) in (int, float, bool) or isinstance(value, np.generic)
    return str(value) if plain else repr(value)


def invalid(name: str, rule: str, value: object) -> SettingError:
    text = shown(value)
    if len(text) > 60:
        text = type(value).__name__
    return SettingError(name, rule, value, text)


def is_bool(value: object) -> bool:
    # bool is an int subclass, and np.bool_ passes numbers checks on some numpy versions.
    return isinstance(value, (bool, np.bool_))


def is_int(value: object) -> TypeGuard[numbers.Integral]:
    return not is_bool(value) and isinstance(value, numbers.Integral)


def real_in(name: str, value: object, rule: str, ok: Callable[[float], bool]) -> float:
    if (
        is_bool(value)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not ok(float(value))
    ):
        raise invalid(name, rule, value)
    return float(value)


def int_in(name: str, value: object, low: int, high: int | None, rule: str) -> int:
    """``value`` as an int in [low, high]; else "<name> must be <rule>, got <value>."."""
    if not is_int(value) or not low <= int(value) <= (high if high is not None else int(value)):
        raise invalid(name, rule, value)
    return int(value)


def early_stopping_rule(value: object) -> bool | str:
    if is_bool(value):
        return bool(value)
    if isinstance(value, str) and value == "never":
        return value
    raise invalid("early_stopping", "True, False or 'never'", value)


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
