"""Perplexity of a bundle on a text, torch-free, with the sliding window of the transformers guide.

The arithmetic follows https://huggingface.co/docs/transformers/perplexity exactly, so our figure
can be compared with a transformers run of the guide's loop to 4 significant digits:

- windows start at ``0, stride, 2*stride, ...``; a window is ``ids[begin:end]`` with
  ``end = min(begin + context, n)``; the loop stops after the window that reaches the end;
- only the last ``trg_len = end - prev_end`` tokens of a window are targets; transformers shifts
  labels by one, so the window's loss is the mean NLL over its targets that have a predecessor
  *inside the window* (``min(trg_len, window_len - 1)`` tokens);
- that mean is weighted by ``num_valid - 1`` where ``num_valid = min(trg_len, window_len)``: the
  guide subtracts one per window "for the label shift" even when the first target keeps its
  predecessor (every window but the first), so later windows carry one token less weight than
  they score. We reproduce that rather than "fix" it; ``scored_tokens`` is the guide's count.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..contract.files import MAX_TEXT_BYTES, mib, read_bounded
from ..contract.tokenizer import Tokenizer
from ..errors import EdgeError
from ..graph.session import Session

DEFAULT_STRIDE = 512  # the guide's stride for GPT-2
# Log-softmax this many rows at a time: a (16, 50257) float32 buffer is 3.2 MB, so the four passes
# over it (max, subtract, exp, sum) stay in cache; 4 to 16 rows measured alike, 64 rows 25% slower.
_ROWS_PER_CHUNK = 16


@dataclass(frozen=True)
class Window:
    begin: int
    end: int
    trg_len: int  # end - previous end: the new tokens this window is responsible for


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    mean_nll: float
    tokens: int  # tokens of the text that were evaluated (after --max-tokens)
    scored_tokens: int  # the guide's n_tokens: sum over windows of (valid targets - 1)
    windows: int
    context: int
    stride: int
    seconds: float  # wall time of the windows (forwards and log-softmax), not load or tokenize

    @property
    def tokens_per_second(self) -> float:
        """Scored tokens per second of :attr:`seconds`."""
        return self.scored_tokens / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second}


def plan_windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """The guide's windows over ``n_tokens`` ids, in order; validated ``context``/``stride``."""
    if context < 2:
        raise EdgeError(f"context must be at least 2 tokens, got {context}.")
    if stride < 2 or stride > context:
        # The guide weighs a later window by its stride minus one (see the module doc): with a
        # stride of 1 every window after the first would count for nothing.
        raise EdgeError(f"stride must be between 2 and the context ({context}), got {stride}.")
    if n_tokens < 2:
        raise EdgeError(f"The text has {n_tokens} token(s); perplexity needs at least 2.")
    windows: list[Window] = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        windows.append(Window(begin, end, end - prev_end))
        prev_end = end
        if end == n_tokens:
            break
    return windows


def negative_log_likelihood(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """NLL of ``targets[j]`` under the row of logits ``logits[j]`` (N, V); float64 (N,).

    The shifted logits and their exponentials are float32, summed in float64: 4.5x faster than a
    float64 log-softmax (27 against 121 ms for 512 rows of 50257, the NLL of one window at the
    guide's stride) and within 2e-8 nats of it, far inside the 6 significant digits of a
    perplexity. Summing in float32 too saves 5 ms more but drifts to 2e-7.
    """
    out = np.empty(len(targets), dtype=np.float64)
    rows_at_once = min(_ROWS_PER_CHUNK, len(targets))
    buffer = np.empty((rows_at_once, logits.shape[-1]), dtype=np.float32)  # (R, V)
    for start in range(0, len(targets), rows_at_once):
        stop = min(start + rows_at_once, len(targets))
        rows, shifted = logits[start:stop], buffer[: stop - start]  # (r, V)
        peak = rows.max(axis=-1)  # (r,): exp() of the shifted rows is at most 1, never overflows
        np.exp(np.subtract(rows, peak[:, None], out=shifted), out=shifted)
        log_z = np.log(shifted.sum(axis=-1, dtype=np.float64)) + peak  # (r,) float64
        out[start:stop] = log_z - rows[np.arange(stop - start), targets[start:stop]]
    return out


def target_nll(logits: np.ndarray, ids: np.ndarray, first: int) -> np.ndarray:
    """NLL of ``ids[j]`` under ``logits[j-1]`` for ``j`` in ``[first, len(ids))``; float64."""
    return negative_log_likelihood(logits[first - 1 : len(ids) - 1], ids[first:])


def window_logits(session: Session, ids: np.ndarray) -> np.ndarray:
    """Logits (T, V) of one window, computed from scratch (no past), batch 1."""
    return session.logits(np.asarray(ids, dtype=np.int64)[None, :])[0]


def window_loss(logits: np.ndarray, chunk: np.ndarray, window: Window) -> tuple[float, int, int]:
    """The guide's ``(mean NLL, weight)`` for one window, plus ``first``, the first target index.

    ``logits`` (T, V) are the window's logits; targets are ``chunk[first:]``, predicted by rows
    ``first - 1 .. T - 2``. A window with no target (length 1) returns a weight of 0.
    """
    first, weight = _targets(chunk, window)
    if first >= len(chunk):  # transformers' mean is NaN here, but its weight is 0
        return 0.0, 0, first
    return float(target_nll(logits, chunk, first).mean()), weight, first


def _targets(chunk: np.ndarray, window: Window) -> tuple[int, int]:
    """The first target index of a window's chunk, and the guide's weight for its mean."""
    first = max(len(chunk) - window.trg_len, 1)  # position 0 never has a predecessor
    return first, min(window.trg_len, len(chunk)) - 1  # the guide's num_valid - batch_size


def scored_window_loss(session: Session, chunk: np.ndarray, window: Window) -> tuple[float, int]:
    """:func:`window_loss` with logits computed only at the positions that predict a target.

    On a fused graph the LM head then runs for the new tokens of each window alone (half of
    them at the guide's stride), not for the overlap that only gives context.
    """
    first, weight = _targets(chunk, window)
    if first >= len(chunk):
        return 0.0, 0
    positions = np.arange(first - 1, len(chunk) - 1)[None, :]  # (1, n): rows predicting targets
    logits = session.logits(np.asarray(chunk, dtype=np.int64)[None, :], positions=positions)[0]
    return float(negative_log_likelihood(logits, chunk[first:]).mean()), weight


def perplexity(
    session: Session,
    ids: np.ndarray | list[int],
    context: int | None = None,
    stride: int | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> PerplexityResult:
    """Sliding-window perplexity of ``ids`` under ``session``'s model.

    Args:
        session: an open :class:`Session`.
        ids: the token ids of the whole text.
        context: window length; default the model's context length (1024 for GPT-2).
        stride: how far each window moves (default ``min(512, context)``, the guide's 512);
            must not exceed ``context``.
        on_window: called as ``on_window(done, total)`` after each window, for a progress bar.

    Each window asks the model for logits only at the positions that predict its targets
    (:func:`scored_window_loss`); the result's ``seconds`` times the windows alone.
    """
    ids = np.asarray(ids, dtype=np.int64)
    limit = session.arch.context_length
    context = limit if context is None else context
    if context > limit:
        raise EdgeError(f"context {context} exceeds the model's context length ({limit}).")
    stride = min(DEFAULT_STRIDE, context) if stride is None else stride
    windows = plan_windows(len(ids), context, stride)
    nll_sum, n_scored = 0.0, 0
    started = time.perf_counter()
    for done, w in enumerate(windows, 1):
        chunk = ids[w.begin : w.end]
        loss, weight = scored_window_loss(session, chunk, w)
        nll_sum += loss * weight
        n_scored += weight
        if on_window:
            on_window(done, len(windows))
    if n_scored == 0:
        raise EdgeError("The text is too short to score a single token; give it more text.")
    mean = nll_sum / n_scored
    return PerplexityResult(
        perplexity=math.exp(mean),
        mean_nll=mean,
        tokens=len(ids),
        scored_tokens=n_scored,
        windows=len(windows),
        context=context,
        stride=stride,
        seconds=time.perf_counter() - started,
    )


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file (``-``: standard input; a pipe or a device is read as a file
    is) of at most :data:`MAX_TEXT_BYTES`, or an :class:`EdgeError` sentence saying why not."""
    path = Path(path)
    stdin = str(path) == "-"
    too_long = (
        f"{'Standard input' if stdin else path} holds more than {mib(MAX_TEXT_BYTES)} of text, "
        f"the most gpt2-eval scores; score a part of it (head -c {MAX_TEXT_BYTES >> 20}M)."
    )
    try:
        if stdin:
            data = read_bounded(sys.stdin.buffer, MAX_TEXT_BYTES, too_long)
        elif path.is_dir():
            raise EdgeError(f"{path} is a folder, not a text file.")
        elif not path.exists():
            raise EdgeError(f"Text file {path} does not exist.")
        else:
            data = read_bounded(path, MAX_TEXT_BYTES, too_long)
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EdgeError(f"{path} is not UTF-8 text (bad byte at offset {exc.start}).") from None
    except OSError as exc:
        raise EdgeError(f"{path} cannot be read ({exc.strerror or exc}).") from None


def encode(tokenizer_path: str | Path, text: str) -> np.ndarray:
    """Token ids of ``text`` with a bundle's ``tokenizer.json``; no special tokens added.

    No special tokens, as ``GPT2TokenizerFast(text)`` encodes, so ids match transformers; a long
    text in pieces (:meth:`Tokenizer.encode`), in a tenth of the memory.
    """
    return Tokenizer(tokenizer_path).encode(text, add_special_tokens=False)


def evaluate_text(
    session: Session,
    body: str,
    name: str = "The text",
    context: int | None = None,
    stride: int | None = None,
    max_tokens: int | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> PerplexityResult:
    """Perplexity of ``session``'s model on ``body`` (what :func:`read_text` read).

    Args:
        session: the model.
        body: the text.
        name: what to call the text in a sentence (its file's name).
        context: window length (default: the model's context length).
        stride: window step (default ``min(512, context)``).
        max_tokens: evaluate only the first N tokens (default: all).
        on_window: progress callback ``(done, total)``.
    """
    if max_tokens is not None and max_tokens < 2:
        raise EdgeError(f"max-tokens must be at least 2, got {max_tokens}.", "max_tokens")
    ids = encode(session.bundle.tokenizer_path, body)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise EdgeError(f"{name} is too short: it has {len(ids)} token(s), perplexity needs 2.")
    return perplexity(session, ids, context=context, stride=stride, on_window=on_window)
