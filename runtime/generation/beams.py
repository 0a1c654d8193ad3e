"""Beam search's results for the :class:`~.generator.Generator`: the search (``beam.py``) over a
batch of prompts, its beams turned into :class:`~.results.GenerationResult` s with text,
log-probabilities and the search's timings."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..contract.tokenizer import Tokenizer
from ..decoders.interface import open_decoder
from ..graph.session import Session
from ..sampling.sampler import Sampler
from ..settings.options import GenerationOptions
from ..settings.sampling import SamplingSettings
from .beam import Hypothesis, beam_search
from .engine import budget
from .results import FinishReason, GenerationResult, Timings, TokenLogprob, TopLogprob


def search(
    session: Session,
    tokenizer: Tokenizer,
    prompts: Sequence[np.ndarray],
    sampling: SamplingSettings,
    options: GenerationOptions,
    eos_id: int | None,
    pad_id: int,
) -> list[GenerationResult]:
    """``num_return_sequences`` best beams per prompt (fitted ids), grouped by prompt."""
    limits = [budget(p.size, session.arch.context_length, options) for p in prompts]
    width = max(p.size for p in prompts) + max(b for b, _ in limits)
    eos = None if options.ignore_eos else eos_id
    start = time.perf_counter()
    found, first = beam_search(
        open_decoder(session, pad_id, width), Sampler(sampling), prompts,
        [b for b, _ in limits], options.num_beams, options.length_penalty,
        options.early_stopping, eos, options.logprobs,
    )  # fmt: skip
    clock = ((first - start) * 1e3, (time.perf_counter() - first) * 1e3)
    results = []
    for prompt, (_, reason), beams in zip(prompts, limits, found, strict=True):
        for beam in beams[: options.num_return_sequences]:
            ended = "eos" if eos is not None and beam.tokens[-1:] == [eos] else reason
            results.append(_result(tokenizer, prompt.size, beam, ended, clock, options))
    return results


def _result(
    tokenizer: Tokenizer, prompt_len: int, beam: Hypothesis, reason: FinishReason,
    clock: tuple[float, float], options: GenerationOptions,
) -> GenerationResult:  # fmt: skip
    shown = beam.tokens[:-1] if reason == "eos" else beam.tokens
    decode = tokenizer.decode_unchecked
    logprobs = None
    if options.logprobs is not None:
        logprobs = []
        for token, (logprob, ids, values) in zip(beam.tokens, beam.logprobs, strict=True):
            top = [
                TopLogprob(int(i), decode([int(i)]), float(v))
                for i, v in zip(ids, values, strict=True)
            ]
            logprobs.append(TokenLogprob(token, decode([token]), logprob, tuple(top)))
    # The search's time, shared by its beams: prefill, then the steps after the first.
    timings = Timings(clock[0], clock[1], len(beam.tokens) - 1)
    text = decode([int(t) for t in shown])
    return GenerationResult(
        text, list(beam.tokens), reason, prompt_len, timings, logprobs, beam.score
    )
