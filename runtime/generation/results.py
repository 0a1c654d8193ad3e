"""What generation returns: per-sequence results, their timings, log-probabilities, scores, and
per-token stream events."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

FinishReason = Literal["eos", "stop", "length", "context"]


@dataclass(frozen=True)
class TopLogprob:
    """One of the most likely tokens at a position: id, text and log-probability."""

    token: int
    text: str
    logprob: float

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "text": self.text, "logprob": self.logprob}


@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability under the model, as OpenAI's API reports it.

    Attributes:
        token: the token id.
        text: its text alone (a token holding part of a UTF-8 character shows U+FFFD).
        logprob: log-softmax of the raw logits at this token, before penalties and temperature.
        top: the most likely tokens at this position, most likely first (as many as asked).
    """

    token: int
    text: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "text": self.text,
            "logprob": self.logprob,
            "top_logprobs": [t.to_json() for t in self.top],
        }


@dataclass(frozen=True)
class ScoreResult:
    """The log-likelihood of a text (or of a continuation given a context) under the model.

    Attributes:
        tokens: the scored token ids.
        logprobs: one entry per scored token.
        context_tokens: tokens it was conditioned on before the first scored one (the start
            token when no context was given).
        greedy: whether every scored token was the most likely one at its position (what
            evaluation harnesses call ``is_greedy``).
    """

    tokens: list[int]
    logprobs: list[TokenLogprob]
    context_tokens: int
    greedy: bool

    @property
    def logprob(self) -> float:
        """The sum of the scored tokens' log-probabilities."""
        return float(sum(t.logprob for t in self.logprobs))

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": list(self.tokens),
            "logprob": self.logprob,
            "greedy": self.greedy,
            "context_tokens": self.context_tokens,
            "logprobs": [t.to_json() for t in self.logprobs],
        }


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
        logprobs: one entry per generated token when ``logprobs`` was asked, else None.
        score: beam search's score of the sequence (its log-probability after the penalties,
            divided by its length to the power ``length_penalty``); None without beams.
    """

    text: str
    tokens: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    timings: Timings
    logprobs: list[TokenLogprob] | None = None
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "text": self.text,
            "tokens": list(self.tokens),
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "timings": self.timings.to_json(),
        }
        if self.logprobs is not None:
            data["logprobs"] = [t.to_json() for t in self.logprobs]
        if self.score is not None:
            data["score"] = self.score
        return data


@dataclass(frozen=True)
class StreamEvent:
    """One token of one row, as :func:`stream_generate` yields it.

    Attributes:
        row: index of the sequence in the batch (prompt index when one sequence per prompt).
        text: text this token releases ("" while a character or possible stop string is held).
        token: the token id.
        result: the row's final result when this token ended it, else None.
        logprob: the token's log-probability when ``logprobs`` was asked, else None.
    """

    row: int
    text: str
    token: int
    result: GenerationResult | None = None
    logprob: TokenLogprob | None = None
