"""What generation returns: per-prompt results, their timings, and per-token stream events."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

FinishReason = Literal["eos", "stop", "length", "context"]


@dataclass(frozen=True)
class Timings:
    """Wall-clock timings of one generation.

    Attributes:
        prefill_ms: time to the first new token (the prompt's forward and the first pick).
        decode_ms: time from the first new token to the last.
        decode_tokens: tokens produced in that time (all but the first).
    """

    prefill_ms: float
    decode_ms: float
    decode_tokens: int

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode speed of this sequence (0.0 when only one token was generated)."""
        return self.decode_tokens / self.decode_ms * 1000.0 if self.decode_ms > 0 else 0.0

    def to_json(self) -> dict[str, float]:
        return {**asdict(self), "decode_tokens_per_s": self.decode_tokens_per_s}


@dataclass(frozen=True)
class GenerationResult:
    """One prompt's outcome.

    Attributes:
        text: the generated text (prompt excluded; ends before a stop string; no EOS text).
        tokens: the generated token ids, prompt excluded; includes the EOS token or the tokens
            of a stop string when those ended generation.
        finish_reason: ``eos``, ``stop``, ``length`` (max_new_tokens) or ``context`` (the
            model's context is full).
        prompt_tokens: tokens fed as the prompt (after truncation; 1 for an empty prompt).
        timings: see :class:`Timings`.
    """

    text: str
    tokens: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    timings: Timings

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": list(self.tokens),
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "timings": self.timings.to_json(),
        }


@dataclass(frozen=True)
class StreamEvent:
    """One token of one row, as :func:`stream_generate` yields it.

    Attributes:
        row: index of the prompt in the batch.
        text: text this token releases ("" while a character or possible stop string is held).
        token: the token id.
        result: the row's final result when this token ended it, else None.
    """

    row: int
    text: str
    token: int
    result: GenerationResult | None = None
