"""The :class:`Generator`: text generation from one loaded bundle, for the command line and the
Python API, in three layers as in mlx-lm:

1. :class:`.steps.TokenSteps` drives a :class:`.decoders.interface.Decoder` and the samplers, and
   yields the new tokens of every live row per step.
2. :class:`.engine.Engine`, the running batch, adds detokenization, EOS, stop strings, the token
   budget, the context bound, log-probabilities and timing, and yields one
   :class:`~.results.StreamEvent` per row and token; the server drives the same engine.
3. :class:`Generator` resolves settings (once, into typed objects) and prompts, and offers
   ``generate()``, ``generate_batch()``, ``stream()`` and ``score()``.

A list of prompts runs through one engine; rows that finish leave it, and more join while there
are more rows than one batch's logits may hold. Beam search (``beams.py``) drives the same
decoder and returns whole sequences only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..contract.manifest import Manifest
from ..contract.tokenizer import Tokenizer
from ..errors import EdgeError
from ..graph.session import Session
from ..sampling.sampler import sequence_rng
from ..settings.options import GenerationOptions
from ..settings.resolve import resolve_settings, resolve_user_settings
from ..settings.sampling import SamplingSettings
from . import beams
from .draft import DRAFT_TOKENS
from .engine import CAPACITY_HINT, Engine, budget
from .prompts import PromptFitter, prompt_list
from .results import GenerationResult, ScoreResult, StreamEvent
from .scoring import score_ids

# Logits one model call may hold (rows x positions x vocabulary, float32): 256 MiB, as scoring.
# A longer list of prompts runs at most :func:`batch_rows` rows at a time; each row has its own
# random generator, so the results equal one big batch's.
BATCH_LOGITS_BUDGET = 1 << 26
Settings = tuple[SamplingSettings, GenerationOptions]


def batch_rows(vocab: int, positions: int = 1) -> int:
    """Most rows one batch runs, for logits of ``positions`` positions per row."""
    return max(1, BATCH_LOGITS_BUDGET // (vocab * positions))


class Generator:
    """Text generation from one loaded bundle; a context manager that closes it.

    Settings (keyword arguments of :meth:`generate`, :meth:`generate_batch` and :meth:`stream`):
    ``max_new_tokens``, ``max_length``, ``temperature`` (0 = greedy), ``top_k``, ``top_p``,
    ``min_p``, ``repetition_penalty``, ``presence_penalty``, ``frequency_penalty``,
    ``no_repeat_ngram_size``, ``seed``, ``stop``, ``truncate``, ``ignore_eos``, ``num_beams``,
    ``length_penalty``, ``early_stopping``, ``num_return_sequences``, ``logprobs`` and ``draft``
    (see :class:`.SamplingSettings` and :class:`.GenerationOptions`). Each one left out (or None)
    comes from the bundle's generation defaults, else from the built-in constants.

    Args:
        session: the model's onnxruntime session.
        tokenizer: the bundle's tokenizer.
    """

    def __init__(self, session: Session, tokenizer: Tokenizer):
        self._session: Session | None = session
        self.tokenizer = tokenizer
        self.manifest: Manifest = session.bundle.manifest
        special = self.manifest.special_tokens
        self.eos_id: int | None = special.get("eos")
        self.bos_id: int | None = special.get("bos", self.eos_id)
        pad = special.get("pad")
        self.pad_id: int = pad if pad is not None else (self.eos_id or 0)
        arch = session.arch
        self._prompts = PromptFitter(tokenizer, arch.context_length, self.bos_id, arch.vocab_size)

    @property
    def session(self) -> Session:
        """The model's onnxruntime session.

        Raises:
            EdgeError: the generator was closed.
        """
        if self._session is None:
            raise EdgeError("This generator is closed; load the bundle again to generate.")
        return self._session

    def close(self) -> None:
        """Release the model (onnxruntime's session and its memory); the generator is unusable
        afterwards. Closing twice is harmless."""
        self._session = None

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def context_length(self) -> int:
        """Most tokens (prompt plus generated) the model can attend to."""
        return self.manifest.architecture.context_length

    @property
    def notices(self) -> list[str]:
        """One-line messages for the user from loading (CPU fallback, int8 on CUDA)."""
        return list(self.session.notices)

    @property
    def max_prompt_chars(self) -> int | None:
        """Characters beyond which a prompt surely holds more tokens than the context (see
        :attr:`.prompts.PromptFitter.max_chars`)."""
        return self._prompts.max_chars

    def resolve(self, strict: bool = True, **settings: Any) -> Settings:
        """Settings (keyword arguments, None meaning "not given") resolved once into the typed
        objects the other methods take: the caller's, else the bundle's defaults, else the
        built-in constants.

        Args:
            strict: refuse a setting the decoding mode ignores (``top_p`` when greedy), as the
                command line and the Python API do (default); the HTTP server passes False, as
                OpenAI's API accepts them.

        Raises:
            EdgeError: an unknown setting, a value out of its range, or settings that do not go
                together; the error's ``field`` names the setting.
        """
        if strict:
            return resolve_user_settings(self.manifest.generation, **settings)
        return resolve_settings(self.manifest.generation, **settings)

    def engine(self, capacity: int = CAPACITY_HINT, draft: bool = False) -> Engine:
        """A new, empty running batch over this model (see :class:`.engine.Engine`)."""
        return Engine(
            self.session, self.tokenizer, self.eos_id, self.pad_id, self.bos_id, capacity, draft
        )

    def generate(self, prompt: str, **settings: Any) -> GenerationResult:
        """Generate one continuation of ``prompt`` (the best beam with ``num_beams``).

        Raises:
            EdgeError: an invalid setting or prompt, ``num_return_sequences`` > 1 (use
                :meth:`generate_batch`), a prompt that does not fit the context, or text that is
                not valid UTF-8; all checked before any model call.
        """
        if not isinstance(prompt, str):
            raise EdgeError(
                f"generate() takes one prompt string, got {type(prompt).__name__}; "
                "generate_batch() takes a list of prompts."
            )
        return self.generate_batch([prompt], **_one_sequence("generate", settings))[0]

    def generate_batch(self, prompts: Sequence[str], **settings: Any) -> list[GenerationResult]:
        """Generate for a list of prompts as one batch.

        Returns:
            ``num_return_sequences`` results per prompt, grouped by prompt, in order.

        Raises:
            EdgeError: as :meth:`generate`.
        """
        prompts = prompt_list(prompts)
        return self.complete(prompts, *self.resolve(**settings))

    def complete(
        self, prompts: Sequence[str], sampling: SamplingSettings, options: GenerationOptions
    ) -> list[GenerationResult]:
        """:meth:`generate_batch` with settings resolved already (:meth:`resolve`)."""
        ids = [self._prompts.fitted(p, options) for p in prompt_list(prompts)]
        if options.beam_search:
            size = max(1, batch_rows(self.manifest.architecture.vocab_size) // options.num_beams)
            results = []
            for start in range(0, len(ids), size):
                chunk = ids[start : start + size]
                results.extend(
                    beams.search(
                        self.session, self.tokenizer, chunk, sampling, options, self.eos_id,
                        self.pad_id,
                    )
                )  # fmt: skip
            return results
        found: list[GenerationResult | None] = [None] * (len(ids) * options.num_return_sequences)
        for event in self._events(ids, sampling, options):
            if event.result is not None:
                found[event.row] = event.result
        return [r for r in found if r is not None]

    def stream(self, prompt: str, **settings: Any) -> Iterator[str]:
        """Yield text pieces of one prompt's continuation as they are decoded.

        The pieces join to the ``text`` that :meth:`generate` returns. Settings are validated
        when this is called, not at the first ``next()``.

        Raises:
            EdgeError: as :meth:`generate`, ``prompt`` is not one string, or beams or several
                sequences were asked (which have no single stream).
        """
        if not isinstance(prompt, str):
            raise EdgeError(
                f"stream() takes one prompt string, got {type(prompt).__name__}; "
                "generate_batch() takes a list of prompts."
            )
        events = self.stream_events([prompt], **_one_sequence("stream", settings))
        return (event.text for event in events if event.text)

    def stream_events(self, prompts: Sequence[str], **settings: Any) -> Iterator[StreamEvent]:
        """Per-token events for a batch of prompts; validates everything before returning.

        With ``num_return_sequences`` n, event rows count sequences: row ``i * n + j`` is sample
        ``j`` of prompt ``i``.
        """
        if isinstance(prompts, str):
            raise EdgeError("stream_events() takes a list of prompt strings, got one string.")
        prompts = prompt_list(prompts)
        return self.events(prompts, *self.resolve(**settings))

    def events(
        self, prompts: Sequence[str], sampling: SamplingSettings, options: GenerationOptions
    ) -> Iterator[StreamEvent]:
        """:meth:`stream_events` with settings resolved already (:meth:`resolve`)."""
        if options.beam_search:
            raise EdgeError("Beam search returns whole sequences only; use generate_batch().")
        ids = [self._prompts.fitted(p, options) for p in prompt_list(prompts)]
        return self._events(ids, sampling, options)

    def _events(
        self, prompts: list[np.ndarray], sampling: SamplingSettings, options: GenerationOptions
    ) -> Iterator[StreamEvent]:
        """Every row (``n`` per prompt) through one engine, at most one batch's rows at a time;
        an event's ``row`` is the row's index."""
        n = options.num_return_sequences
        rows = [p for p in prompts for _ in range(n)]
        rngs = [sequence_rng(sampling.seed, j) for _ in prompts for j in range(n)]
        positions = 1 + DRAFT_TOKENS if options.draft else 1  # a draft's verify call
        size = batch_rows(self.manifest.architecture.vocab_size, positions)
        context = self.context_length
        width = max(r.size for r in rows) + max(budget(r.size, context, options)[0] for r in rows)
        engine = self.engine(min(width, context), draft=options.draft is not None)
        return _drive(engine, rows, rngs, size, sampling, options)

    def score(
        self, text: str, context: str | None = None, logprobs: int = 0, start: bool = False
    ) -> ScoreResult:
        """The log-probability of each token of ``text``, after ``context`` if given.

        Context and text are tokenized apart and joined, so ``text`` usually starts with a
        space. Without a context the text's first token has nothing before it to condition it,
        so it is not scored (the result's ``context_tokens`` counts it), unless ``start``: then
        the start token (``<|endoftext|>`` for GPT-2) comes first and every token is scored,
        as lm-evaluation-harness's hf backend scores a text with no context. The server's
        ``echo`` follows the same rule (:meth:`.engine.Engine.score`).

        Args:
            text: what to score (at least one token; two without a context or ``start``).
            context: what it follows (default: nothing).
            logprobs: alternatives to report per token, 0 to 20 (default 0).
            start: put the start token before everything (default False).

        Raises:
            EdgeError: an empty text, an argument of the wrong type, nothing left to score, or
                start token, context and text longer than the model's context.
        """
        for name, value in (("text", text), ("context", context)):
            if not isinstance(value, str) and not (name == "context" and value is None):
                raise EdgeError(
                    f"The {name} to score must be a string, got {type(value).__name__}.",
                    field=name,
                )
        contexts = None if context is None else [context]
        return self.score_batch([text], contexts, logprobs, start)[0]

    def score_batch(
        self,
        texts: Sequence[str],
        contexts: Sequence[str] | None = None,
        logprobs: int = 0,
        start: bool = False,
    ) -> list[ScoreResult]:
        """:meth:`score` for several texts at once (one model call per batch that fits)."""
        if not isinstance(start, bool):
            raise EdgeError(f"start must be True or False, got {start!r}.", field="start")
        texts = prompt_list(texts)
        given = [None] * len(texts) if contexts is None else prompt_list(contexts)
        if len(given) != len(texts):
            raise EdgeError(f"Got {len(texts)} texts but {len(given)} contexts.", "contexts")
        GenerationOptions(logprobs=logprobs)  # the same rule as generation's logprobs
        rows = [self._prompts.score_row(t, c, start) for t, c in zip(texts, given, strict=True)]
        return score_ids(self.session, rows, logprobs, self.tokenizer, self.pad_id)

    def encode(self, prompt: str) -> np.ndarray:
        """Prompt token ids; an empty prompt becomes the start token, as GPT-2 was trained."""
        return self._prompts.encode(prompt)

    def prompt_ids(
        self, prompt: str, options: GenerationOptions, room: int | None = None
    ) -> np.ndarray:
        """The prompt's token ids fitted to the context (:meth:`.prompts.PromptFitter.ids`);
        ``room`` as in :meth:`fit`."""
        return self._prompts.prompt_ids(prompt, options, room)

    def fit(
        self, ids: np.ndarray | Sequence[int], options: GenerationOptions, room: int | None = None
    ) -> np.ndarray:
        """Apply the context bound to prompt ids (:meth:`.prompts.PromptFitter.fit_ids`).

        ``room``: positions to leave free for new tokens; default what ``options`` need (1, or
        ``max_new_tokens`` with ``truncate="left"``); 0 for a prompt that is only scored.

        Raises:
            EdgeError: ``ids`` is not a non-empty list or 1-D array of ids the model has, or
                ``options`` is not a :class:`.GenerationOptions`, or the ids do not fit.
        """
        return self._prompts.fit_ids(ids, options, room)


def _drive(
    engine: Engine,
    rows: list[np.ndarray],
    rngs: list[np.random.Generator],
    size: int,
    sampling: SamplingSettings,
    options: GenerationOptions,
) -> Iterator[StreamEvent]:
    """Run ``rows`` through ``engine``, at most ``size`` at a time: a row that finishes makes
    room for the next. Events are renumbered to each row's index in ``rows``."""
    index: dict[int, int] = {}  # the engine's row id -> index in rows
    admitted = 0
    while admitted < len(rows) or len(engine):
        take = min(size - len(engine), len(rows) - admitted)
        if take > 0:
            ids = engine.add(
                rows[admitted : admitted + take], sampling, options,
                rngs[admitted : admitted + take],
            )  # fmt: skip
            index.update((row, admitted + k) for k, row in enumerate(ids))
            admitted += take
        for event in engine.step():
            row = index.pop(event.row) if event.result is not None else index[event.row]
            yield dataclasses.replace(event, row=row)


def _one_sequence(method: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` for a method that returns one sequence (whatever the bundle's defaults say);
    EdgeError when the caller asked for more."""
    if settings.get("num_return_sequences") not in (None, 1):
        raise EdgeError(
            f"{method}() gives one sequence; use generate_batch() for num_return_sequences.",
            field="num_return_sequences",
        )
    return {**settings, "num_return_sequences": 1}
