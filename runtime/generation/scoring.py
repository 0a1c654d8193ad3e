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
    logp = log_softmax(logits)  # (N, V)
    # Ids from the model's own rows: a padded vocabulary may hold more than the tokenizer's.
    text = tokenizer.decode_unchecked
    out = []
    for row, token in zip(logp, tokens, strict=True):
        best: tuple[TopLogprob, ...] = ()
        if top:
            ids = np.argpartition(row, row.size - top)[-top:]
            ids = ids[np.argsort(-row[ids], kind="stable")]
            best = tuple(TopLogprob(int(i), text([int(i)]), float(row[i])) for i in ids)
        out.append(TokenLogprob(int(token), text([int(token)]), float(row[token]), best))
    return out


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
