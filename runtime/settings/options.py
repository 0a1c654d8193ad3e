"""What the generator decides besides how each token is sampled (:class:`GenerationOptions`:
budget, stop strings, beams, sequences, logprobs, drafting), validated on construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial

from ..errors import EdgeError, SettingError
from .values import (
    DEFAULT_LENGTH_PENALTY,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TRUNCATE,
    DRAFTERS,
    MAX_LOGPROBS,
    MAX_SEQUENCES,
    TRUNCATE_MODES,
    early_stopping_rule,
    int_in,
    invalid,
    is_bool,
    real_in,
)

# Beam search divides a finished beam's float32 score by length ** length_penalty. Past 8 that
# divisor overflows float32 for the longest beams; below -1 a long beam's score falls under the
# -1e9 that marks "no beam" (transformers' sentinel), and search returns nothing: 1,024 tokens at
# -3 nats each reach -3.1e6 at -1, -3.2e9 at -2.
MIN_LENGTH_PENALTY, MAX_LENGTH_PENALTY = -1.0, 8.0
LENGTH_PENALTY_RULE = (
    f"a number from {MIN_LENGTH_PENALTY:g} to {MAX_LENGTH_PENALTY:g} (1 ranks beams by mean "
    "log-probability)"
)


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
            int_in("max_new_tokens", self.max_new_tokens, 1, None, "an integer >= 1"),
        )
        if self.max_length is not None:
            rule = "an integer >= 2 (prompt plus new tokens)"
            store("max_length", int_in("max_length", self.max_length, 2, None, rule))
        truncate = self.truncate
        if truncate is not None and not (isinstance(truncate, str) and truncate in TRUNCATE_MODES):
            raise invalid("truncate", "'left' (or not given)", truncate)
        if not is_bool(self.ignore_eos):
            raise invalid("ignore_eos", "true or false", self.ignore_eos)
        store("ignore_eos", bool(self.ignore_eos))
        store("stop", _stop_strings(self.stop))
        sequences = f"an integer from 1 to {MAX_SEQUENCES}"
        for name in ("num_beams", "num_return_sequences"):
            store(name, int_in(name, getattr(self, name), 1, MAX_SEQUENCES, sequences))
        store(
            "length_penalty",
            real_in("length_penalty", self.length_penalty, LENGTH_PENALTY_RULE, _length_penalty),
        )
        store("early_stopping", early_stopping_rule(self.early_stopping))
        if self.logprobs is not None:
            rule = f"an integer from 0 to {MAX_LOGPROBS} (or not given)"
            store("logprobs", int_in("logprobs", self.logprobs, 0, MAX_LOGPROBS, rule))
        if not (self.draft is None or (isinstance(self.draft, str) and self.draft in DRAFTERS)):
            raise invalid("draft", "'prompt-lookup' (or not given)", self.draft)
        if self.num_beams > 1:
            self._check_beams()

    def _check_beams(self) -> None:
        if self.num_return_sequences > self.num_beams:
            raise EdgeError(
                f"num_return_sequences ({self.num_return_sequences}) cannot exceed "
                f"num_beams ({self.num_beams}).",
                field="num_return_sequences",
            )
        if self.stop:
            raise EdgeError(
                "Stop strings do not work with beam search (num_beams > 1).", field="stop"
            )
        if self.draft:
            raise EdgeError(
                "Drafting does not work with beam search (num_beams > 1).", field="draft"
            )

    @property
    def beam_search(self) -> bool:
        """True when more than one beam is searched."""
        return self.num_beams > 1

    def budget(self, prompt_len: int) -> int:
        """New tokens allowed after a prompt of ``prompt_len`` tokens, before the context bound."""
        if self.max_length is None:
            return self.max_new_tokens
        return self.max_length - prompt_len


def _length_penalty(value: float) -> bool:
    return MIN_LENGTH_PENALTY <= value <= MAX_LENGTH_PENALTY


def _stop_strings(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        items: tuple[object, ...] = (stop,)
    elif isinstance(stop, (list, tuple)):
        items = tuple(stop)
    else:  # bytes, numbers, sets (no order) and the like
        items = (stop,)
    strings = tuple(s for s in items if isinstance(s, str) and s)
    if len(strings) != len(items):
        shown = repr(stop) if len(repr(stop)) <= 60 else type(stop).__name__
        raise SettingError("stop", "a non-empty string or a list of them", stop, shown)
    return strings


GENERATOR_NAMES = tuple(f.name for f in fields(GenerationOptions))
