"""Beam search over a :class:`.decoder.Decoder`, step for step as transformers' ``_beam_search``.

Per prompt, ``num_beams`` rows of the batch run together. Each step takes the log-softmax of every
beam's logits, applies the penalties, adds the beam's running score and keeps the ``2 *
num_beams`` best continuations over all beams. Those ending in end-of-text (or at the budget) are
offered to the prompt's finished set, scored ``sum / length ** length_penalty`` where length
counts generated tokens; the best ``num_beams`` of the others run on, and the cache follows
them (``Decoder.reorder``). A prompt is done by transformers' rules (``early_stopping``) and its
rows leave the batch; scores are float32 and the -1e9 sentinels are transformers', so that fp32
results equal ``generate(num_beams=...)`` token for token.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..decoders.interface import Decoder
from ..sampling.filters import log_softmax
from ..sampling.sampler import Sampler

_NEG = np.float32(-1.0e9)  # transformers' "never" score for beams and candidates


@dataclass(frozen=True)
class Hypothesis:
    """One returned beam: its generated tokens, score, and per token (raw log-softmax row index
    data) what the logprobs report needs."""

    tokens: list[int]
    score: float
    logprobs: list[tuple[float, np.ndarray, np.ndarray]]  # (logprob, top ids, top logprobs)


@dataclass
class _Group:
    """The beams of one prompt; mirrors transformers' per-batch-item tensors."""

    prompt: np.ndarray
    budget: int
    running: list[list[int]]  # (nb,) token lists
    running_lp: list[list[tuple[float, np.ndarray, np.ndarray]]]
    scores: np.ndarray  # (nb,) float32 running scores
    done_tokens: list[list[int]] = field(default_factory=list)
    done_lp: list[list[tuple[float, np.ndarray, np.ndarray]]] = field(default_factory=list)
    done_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    done_finished: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    improvable: bool = True  # transformers' is_early_stop_heuristic_unsatisfied


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first (ties: lower index first)."""
    part = np.argpartition(-values, k - 1)[:k] if k < values.size else np.arange(values.size)
    return part[np.lexsort((part, -values[part]))]


def beam_search(
    decoder: Decoder,
    sampler: Sampler,
    prompts: Sequence[np.ndarray],
    budgets: Sequence[int],
    num_beams: int,
    length_penalty: float,
    early_stopping: bool | str,
    eos_id: int | None,
    logprobs: int | None = None,
) -> tuple[list[list[Hypothesis]], float]:
    """Search ``num_beams`` beams per prompt.

    Returns:
        Each prompt's finished beams, best first, and the ``time.perf_counter()`` at which the
        prefill's logits were out (the search's first step).

    Args:
        decoder: an empty decoder.
        sampler: its penalties apply to the log-probabilities (its filters are not used).
        prompts: (T_i,) int64 prompts.
        budgets: most new tokens per prompt (transformers' ``max_length`` minus the prompt).
        num_beams: beams per prompt (> 1).
        length_penalty: exponent of the length that divides a finished beam's score.
        early_stopping: True, False or "never", as transformers.
        eos_id: the end-of-text id, or None when nothing ends a beam but the budget.
        logprobs: alternatives to keep per token for the logprobs report (None: none).
    """
    nb = num_beams
    groups = []
    for prompt, budget in zip(prompts, budgets, strict=True):
        scores = np.full(nb, _NEG, dtype=np.float32)
        scores[0] = 0.0  # only the first beam's continuations count at the first step
        groups.append(
            _Group(prompt, budget, [[] for _ in range(nb)], [[] for _ in range(nb)], scores)
        )
    live = list(range(len(groups)))
    logits = decoder.prefill([g.prompt for g in groups for _ in range(nb)])  # (G * nb, V)
    first = time.perf_counter()
    step = 0
    while True:
        raw = log_softmax(logits)  # (B, V)
        generated = [np.asarray(beam, dtype=np.int64) for g in live for beam in groups[g].running]
        prompts_ = [groups[g].prompt for g in live for _ in range(nb)]
        scored = sampler.penalize(raw, prompts_, generated)
        sources, tokens = [], []  # of the prompts that go on
        going: list[int] = []  # their slots in ``live``
        for slot, g in enumerate(live):
            rows = slice(slot * nb, (slot + 1) * nb)
            src, tok = _advance(groups[g], raw[rows], scored[rows], step, nb, length_penalty,
                                early_stopping, eos_id, logprobs)  # fmt: skip
            if _is_done(groups[g], step, nb, length_penalty, early_stopping):
                continue
            sources.append(len(going) * nb + src)  # its rows once the finished ones are gone
            tokens.extend(tok)
            going.append(slot)
        step += 1
        if len(going) < len(live):
            decoder.drop([slot * nb + b for slot in range(len(live)) if slot not in going
                          for b in range(nb)])  # fmt: skip
            live = [live[slot] for slot in going]
        if not live:
            break
        decoder.reorder(np.concatenate(sources))
        logits = decoder.decode(np.array(tokens, dtype=np.int64)[:, None])[:, 0]
    return [_results(g) for g in groups], first


def _advance(
    group: _Group,
    raw: np.ndarray,
    scored: np.ndarray,
    step: int,
    nb: int,
    length_penalty: float,
    early_stopping: bool | str,
    eos_id: int | None,
    top: int | None,
) -> tuple[np.ndarray, list[int]]:
    """One step of one prompt: pick candidates, update running and finished beams.

    Returns the source beam (nb,) and token of each next running beam.
    """
    vocab = raw.shape[1]
    total = (scored + group.scores[:, None]).reshape(-1)  # (nb * V,)
    keep = 2 * nb  # transformers' max(2, 1 + number of EOS ids) * num_beams
    cand = _top(total, keep)  # (2nb,)
    values = total[cand]
    beam, token = cand // vocab, cand % vocab
    ends_text = token == eos_id if eos_id is not None else np.zeros(keep, bool)
    hits = ends_text | (step + 1 >= group.budget)
    entries = [_entry(raw[b], t, top) for b, t in zip(beam.tolist(), token.tolist(), strict=True)]
    sequences = [group.running[b] + [t] for b, t in zip(beam.tolist(), token.tolist(), strict=True)]
    lps = [group.running_lp[b] + [e] for b, e in zip(beam.tolist(), entries, strict=True)]
    # Running beams for the next step: the best candidates that did not finish.
    running = values + hits.astype(np.float32) * _NEG
    chosen = _top(running, nb)
    # Finished beams: the top num_beams candidates that finished, by length-penalised score.
    final = values / np.float32((step + 1) ** length_penalty)
    if early_stopping is True and group.done_finished.size and group.done_finished.all():
        final = final + _NEG
    if not group.improvable:
        final = final + _NEG
    offered = hits & (np.arange(keep) < nb)
    final = final + (~offered).astype(np.float32) * _NEG
    _merge_finished(group, final.astype(np.float32), offered, sequences, lps, nb)
    group.running = [sequences[c] for c in chosen]
    group.running_lp = [lps[c] for c in chosen]
    group.scores = running[chosen].astype(np.float32)
    return beam[chosen], token[chosen].tolist()


def _merge_finished(
    group: _Group,
    final: np.ndarray,
    offered: np.ndarray,
    sequences: list[list[int]],
    lps: list[list[tuple[float, np.ndarray, np.ndarray]]],
    nb: int,
) -> None:
    """Keep the best ``nb`` of the finished set and the candidates just offered."""
    if group.done_scores.size == 0:  # transformers starts with nb placeholders at -1e9
        group.done_scores = np.full(nb, _NEG, dtype=np.float32)
        group.done_finished = np.zeros(nb, dtype=bool)
        group.done_tokens = [[] for _ in range(nb)]
        group.done_lp = [[] for _ in range(nb)]
    scores = np.concatenate([group.done_scores, final])
    flags = np.concatenate([group.done_finished, offered])
    tokens = group.done_tokens + sequences
    entries = group.done_lp + lps
    best = _top(scores, nb)
    group.done_scores, group.done_finished = scores[best], flags[best]
    group.done_tokens = [tokens[i] for i in best]
    group.done_lp = [entries[i] for i in best]


def _is_done(
    group: _Group, step: int, nb: int, length_penalty: float, early_stopping: bool | str
) -> bool:
    """transformers' stopping rules for one prompt, after step ``step`` (0-based)."""
    generated = step + 1
    if early_stopping == "never" and length_penalty > 0.0:
        best_length = group.budget
    else:
        best_length = generated
    best = group.scores[0] / np.float32(best_length**length_penalty)
    worst = np.where(group.done_finished, group.done_scores.min(), _NEG)
    group.improvable = group.improvable and bool(np.any(best > worst))
    all_done = bool(group.done_finished.all()) and early_stopping is True
    return not group.improvable or all_done or generated >= group.budget


def _entry(row: np.ndarray, token: int, top: int | None) -> tuple[float, np.ndarray, np.ndarray]:
    """What the logprobs report keeps of one token: its logprob and the ``top`` best."""
    if not top:
        return float(row[token]), np.zeros(0, np.int64), np.zeros(0, np.float32)
    ids = _top(row, top)
    return float(row[token]), ids, row[ids]


def _results(group: _Group) -> list[Hypothesis]:
    return [
        Hypothesis(tokens, float(score), lp)
        for tokens, score, lp in zip(
            group.done_tokens, group.done_scores, group.done_lp, strict=True
        )
    ]
