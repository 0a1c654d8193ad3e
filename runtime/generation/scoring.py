"""Log-probabilities: of generated tokens (``logprobs=K``) and of given text (scoring).

Both report the log-softmax of the raw logits, before penalties and temperature, as OpenAI's API
does, so that they measure the model rather than the sampler. Scoring runs the graph once per
batch of texts from scratch (:meth:`.session.Session.logits`) and asks for logits only at the
scored positions: on a fused graph the LM head (a third of GPT-2 124M's weights) runs for those
positions alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..contract.tokenizer import Tokenizer
from ..decoders.shared import right_pad
from ..errors import EdgeError
from ..graph.session import Session
from ..sampling.filters import log_softmax
from .results import ScoreResult, TokenLogprob, TopLogprob

# Logits one scoring call may hold (rows x scored positions x vocabulary, float32): 256 MiB.
SCORE_LOGITS_BUDGET = 1 << 26
# Rows of logits turned into log-probabilities at a time: 64 x GPT-2's 50,257 (12 MiB) stay in the
# cache through log-softmax's passes. For a 1,023-token echo with logprobs 1 (lm-evaluation-
# harness's longest request) these lines took 1.4 s as one (1022, V) array with a partition per
# row, 0.24 s in blocks with an argmax (2 busy cores; the fixture's graph itself took 0.9 s).
LOGPROB_ROWS = 64


def token_logprobs(
    logits: np.ndarray, tokens: Sequence[int], top: int, tokenizer: Tokenizer
) -> list[TokenLogprob]:
    """Each token's log-probability under its row of raw logits, and the ``top`` likeliest.

    Args:
        logits: (N, V) raw logits, row j predicting ``tokens[j]``.
        tokens: N token ids.
        top: alternatives per token (0 for none).
        tokenizer: for the tokens' text.
    """
    if len(logits) != len(tokens):
        raise ValueError(f"{len(logits)} rows of logits for {len(tokens)} tokens")
    # Ids from the model's own rows: a padded vocabulary may hold more than the tokenizer's.
    text = tokenizer.decode_unchecked
    out = []
    for start in range(0, len(tokens), LOGPROB_ROWS):
        logp = log_softmax(logits[start : start + LOGPROB_ROWS])  # (n, V)
        mine = np.asarray(tokens[start : start + LOGPROB_ROWS], dtype=np.int64)  # (n,)
        picked = logp[np.arange(mine.size), mine]  # (n,)
        best_ids = _likeliest(logp, top)  # (n, top)
        best_logp = np.take_along_axis(logp, best_ids, axis=-1)  # (n, top)
        for token, value, ids, values in zip(mine, picked, best_ids, best_logp, strict=True):
            best = tuple(
                TopLogprob(int(i), text([int(i)]), float(v))
                for i, v in zip(ids, values, strict=True)
            )
            out.append(TokenLogprob(int(token), text([int(token)]), float(value), best))
    return out


def _likeliest(logp: np.ndarray, top: int) -> np.ndarray:
    """(n, top) the ids of each row's ``top`` largest entries, largest first."""
    if top == 0:
        return np.zeros((logp.shape[0], 0), dtype=np.int64)
    if top == 1:  # what lm-evaluation-harness asks for every echoed token: one pass per row
        return logp.argmax(axis=-1)[:, None]
    ids = np.argpartition(logp, logp.shape[-1] - top, axis=-1)[:, -top:]  # (n, top), unordered
    order = np.argsort(-np.take_along_axis(logp, ids, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(ids, order, axis=-1)


def scored_pair(
    before: np.ndarray, target: np.ndarray, start_id: int | None, context: int
) -> tuple[np.ndarray, np.ndarray]:
    """The one rule of what conditions what when given tokens are scored: the (context, target)
    pair for ``target`` after ``before`` (may be empty).

    With ``start_id`` the start token comes first, so every target token is scored (what
    lm-evaluation-harness's hf backend does for a text with no context). Without it, and with
    nothing before, the target's first token conditions the rest and is not scored itself (its
    log-probability is null, as OpenAI's and vLLM's ``echo`` report it).

    Raises:
        EdgeError: nothing is left to score, or the tokens do not fit the model's context.
    """
    if start_id is not None:
        before = np.concatenate([np.array([start_id], dtype=np.int64), before])
    if not before.size:
        before, target = target[:1], target[1:]
    if not target.size:
        raise EdgeError(
            "Nothing to score: a text of one token, with nothing before it, has no token "
            "conditioned on another; give a context or score after the start token.",
            field="text",
        )
    total = before.size + target.size
    if total > context:
        raise EdgeError(
            f"Scoring needs {total} positions (the start token, context and text) but the "
            f"model's context is {context}; score a shorter text.",
            field="text",
        )
    return before, target


def score_ids(
    session: Session,
    rows: Sequence[tuple[np.ndarray, np.ndarray]],
    top: int,
    tokenizer: Tokenizer,
    pad_id: int,
) -> list[ScoreResult]:
    """Score each ``(context, target)`` pair of id arrays: ``log p(target | context)`` per token.

    Args:
        session: the model.
        rows: per text, its context (at least one token) and the tokens to score (at least one);
            together within the model's context.
        top: alternatives per scored token.
        tokenizer: for the tokens' text.
        pad_id: id written into right padding (never attended).
    """
    results: list[ScoreResult] = []
    vocab = session.arch.vocab_size
    start = 0
    while start < len(rows):
        stop = start + 1
        widest = len(rows[start][1])
        while stop < len(rows):
            wider = max(widest, len(rows[stop][1]))
            if (stop + 1 - start) * wider * vocab > SCORE_LOGITS_BUDGET:
                break
            widest, stop = wider, stop + 1
        results.extend(_score_batch(session, rows[start:stop], top, tokenizer, pad_id))
        start = stop
    return results


def _score_batch(
    session: Session,
    rows: Sequence[tuple[np.ndarray, np.ndarray]],
    top: int,
    tokenizer: Tokenizer,
    pad_id: int,
) -> list[ScoreResult]:
    """One call for ``rows``: right-padded, logits only where a target is predicted."""
    full = [np.concatenate([c, t]).astype(np.int64) for c, t in rows]
    ids, lengths = right_pad(full, pad_id)  # (B, T), (B,)
    scored = max(t.size for _, t in rows)
    positions = np.zeros((len(full), scored), dtype=np.int64)  # (B, K)
    for row, (f, (context, _)) in enumerate(zip(full, rows, strict=True)):
        # Position i predicts token i + 1: the targets are predicted from the context's last
        # token on. Short rows repeat their last position (computed, then ignored).
        wanted = np.arange(context.size - 1, f.size - 1)
        positions[row] = np.concatenate([wanted, np.full(scored - wanted.size, wanted[-1])])
    logits = session.logits(ids, lengths, positions)  # (B, K, V)
    results = []
    for row, (context, target) in enumerate(rows):
        mine = logits[row, : target.size]  # (k, V)
        greedy = bool(np.array_equal(np.argmax(mine, axis=-1), target))
        logprobs = token_logprobs(mine, target.tolist(), top, tokenizer)
        results.append(ScoreResult(target.tolist(), logprobs, int(context.size), greedy))
    return results
