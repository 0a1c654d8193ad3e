"""Decoding features on the default path (the fused graph on its shared KV buffer) without torch:
greedy against a from-scratch forward, a row that stops early, prompt-lookup drafting, several
samples per prompt, logprobs, scoring, max_length and beam search's own arithmetic.

The model is a random 2-layer GPT-2 built with onnx and numpy (``support/fused_bundle.py``).
Agreement with transformers is in ``test_decoding_parity.py``.
"""

from __future__ import annotations

import importlib.util
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpt2_edge.runtime import EdgeError, Generator, load
from gpt2_edge.runtime.decoders.shared import SharedKVDecoder
from gpt2_edge.runtime.generation import steps as steps_module
from gpt2_edge.runtime.generation.draft import accept_greedy, accept_sampled, propose
from gpt2_edge.runtime.generation.steps import TokenSteps
from gpt2_edge.runtime.sampling.filters import log_softmax
from gpt2_edge.runtime.sampling.sampler import Sampler
from gpt2_edge.runtime.settings.sampling import SamplingSettings
from support.fakes import Spy
from support.fused_bundle import build_fused_bundle

REPEATING = ["The cat sat on the mat. The cat sat on the", "a b c d e f g", "one two one two one"]
PROMPTS = ["Hello world", "The quick brown fox jumps over", *REPEATING]
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def gen(gpt2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Generator:
    if importlib.util.find_spec("onnx") is None:
        pytest.skip("building the fused graph needs onnx")
    tokenizer = gpt2_tokenizer_dir / "tokenizer.json"
    folder = build_fused_bundle(tmp_path_factory.mktemp("fused") / "tiny", tokenizer)
    return load(folder, provider="cpu", threads=1)


def forward(gen: Generator, ids: list[int]) -> np.ndarray:
    """Logits (T, V) of ``ids`` from scratch: the reference for everything cached."""
    return gen.session.logits(np.array([ids]))[0]


# --- The default path against a forward from scratch ----------------------------------------------


def test_default_path_greedy_is_the_argmax_of_a_full_forward(gen: Generator) -> None:
    assert gen.session.shared_kv  # the fused graph on its shared buffer
    for prompt in PROMPTS[:3]:
        ids = gen.encode(prompt).tolist()
        result = gen.generate(prompt, max_new_tokens=12, **GREEDY)
        for token in result.tokens:
            assert token == int(forward(gen, ids)[-1].argmax())
            ids.append(token)


def test_a_row_that_stops_early_leaves_the_others_unchanged(gen: Generator) -> None:
    """(Rows alone, in a batch and joining one: test_batch_invariance.py, on the shipped
    bundles.)"""
    alone = gen.generate(PROMPTS[1], max_new_tokens=16, **GREEDY)
    stop = gen.tokenizer.decode(alone.tokens[2:4])  # row 1 stops early and leaves the batch
    settings = {"max_new_tokens": 16, "stop": stop, **GREEDY}
    expected = [gen.generate(p, **settings) for p in PROMPTS]
    batch = gen.generate_batch(PROMPTS, **settings)
    assert [(r.tokens, r.text, r.finish_reason) for r in batch] == [
        (r.tokens, r.text, r.finish_reason) for r in expected
    ]
    assert batch[1].finish_reason == "stop"
    assert sum(r.finish_reason == "length" for r in batch) >= 3  # the others went on


# --- Prompt-lookup drafting ----------------------------------------------------------------------


def test_propose_takes_the_latest_match_of_the_longest_suffix() -> None:
    history = np.array([1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3])
    assert propose(history, 2).tolist() == [7, 5]  # the latest earlier "1 2 3"
    assert propose(np.array([4, 8, 6, 8]), 3).tolist() == [6, 8]  # falls back to one token
    assert propose(np.array([1, 2, 3]), 4).tolist() == []
    assert propose(history, 0).tolist() == []


@pytest.mark.parametrize(
    "settings",
    [{}, {"repetition_penalty": 1.3, "no_repeat_ngram_size": 4}, {"logprobs": 2}],
    ids=["plain", "penalties", "logprobs"],
)
def test_greedy_drafting_changes_nothing_but_speed(
    gen: Generator, settings: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(The growing-past backend: test_decoding_parity.py, on a real Optimum graph.)"""
    g = gen
    common = {"max_new_tokens": 30, **GREEDY, **settings}
    plain = g.generate_batch(REPEATING, **common)
    spy = Spy(monkeypatch, steps_module)
    drafted = g.generate_batch(REPEATING, draft="prompt-lookup", **common)
    assert [(r.tokens, r.text) for r in drafted] == [(r.tokens, r.text) for r in plain]
    for ours, theirs in zip(drafted, plain, strict=True):  # several tokens per call: ~1e-6 apart
        got = [t.logprob for t in ours.logprobs or []]
        assert got == pytest.approx([t.logprob for t in theirs.logprobs or []], abs=1e-4)
    alone = g.generate(REPEATING[0], draft="prompt-lookup", **common)  # batch of one: one call
    assert alone.tokens == plain[0].tokens
    assert spy.accepted > 0 and spy.rejected > 0  # drafting really ran, both ways


def test_accept_rules_on_a_known_distribution() -> None:
    probs = np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.6, 0.3, 0.0], [0.25, 0.25, 0.25, 0.25]])
    with np.errstate(divide="ignore"):
        logits = np.log(probs).astype(np.float32)  # (k + 1, V) with k = 2 proposals
    drafts = np.array([1, 2])
    assert accept_greedy(logits.__getitem__, drafts) == [0]  # position 0's argmax is not 1
    assert accept_greedy(logits[[1, 2, 0]].__getitem__, np.array([1, 0])) == [1, 0, 0]
    rng = np.random.default_rng(0)
    draws = [accept_sampled(logits.__getitem__, drafts, rng) for _ in range(40_000)]
    first = Counter(d[0] for d in draws)
    # Whatever was proposed, the first token follows position 0's distribution ...
    for token, p in enumerate(probs[0]):
        assert abs(first[token] / len(draws) - p) < 0.01, (token, first)
    # ... and after an accepted proposal the next one follows position 1's.
    second = Counter(d[1] for d in draws if d[0] == 1)
    for token, p in enumerate(probs[1]):
        assert abs(second[token] / sum(second.values()) - p) < 0.015, (token, second)
    assert all(len(d) == 3 for d in draws if d[:2] == [1, 2])  # both accepted: one more drawn


# Chi-square at 7 degrees of freedom exceeds this with probability 1e-4 (chi2.isf(1e-4, 7)).
CHI2_7_1E4 = 29.88


def test_sampling_with_drafts_keeps_the_models_distribution(
    gen: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three sampled tokens (top-k 2: 8 outcomes) against exact probabilities, with a drafter
    that always proposes the same token, so acceptance and rejection both happen often. The
    samples are rows of one batch, each with its own generator."""
    sampler = Sampler(SamplingSettings(temperature=3.0, top_k=2))
    prompt = gen.encode(PROMPTS[0])
    empty = np.zeros(0, dtype=np.int64)

    def probabilities(ids: list[int]) -> dict[int, float]:
        x = sampler.process(forward(gen, ids)[-1:], [np.array(ids)], [empty])[0]
        p = np.exp(log_softmax(x[None])[0].astype(np.float64))
        return {int(t): float(p[t]) for t in np.flatnonzero(p > 0)}

    exact = {}
    for a, pa in probabilities(prompt.tolist()).items():
        for b, pb in probabilities([*prompt.tolist(), a]).items():
            for c, pc in probabilities([*prompt.tolist(), a, b]).items():
                exact[(a, b, c)] = pa * pb * pc
    likely = max(exact, key=exact.__getitem__)
    monkeypatch.setattr(steps_module, "propose", lambda history, k: np.array(likely[1:2]))
    spy = Spy(monkeypatch, steps_module)
    draws = 800
    # The device path verifies a batch token by token, in a few calls for all rows.
    decoder = SharedKVDecoder(gen.session, gen.pad_id, 8, shared_buffers=False)
    rngs = [np.random.default_rng(seed) for seed in range(draws)]
    steps = TokenSteps(decoder, sampler, [prompt] * draws, [3] * draws, rngs, draft=True)
    got: dict[int, list[int]] = {row: [] for row in range(draws)}
    for step in steps:
        for row, tokens in zip(steps.rows, step.tokens, strict=True):
            got[row] += tokens
        steps.drop([j for j, row in enumerate(steps.rows) if len(got[row]) >= 3])
    counts = Counter(tuple(tokens[:3]) for tokens in got.values())
    assert set(counts) <= set(exact)
    chi2 = sum((counts[o] - draws * p) ** 2 / (draws * p) for o, p in exact.items())
    assert min(exact.values()) * draws > 5  # enough expected per outcome for the test
    assert chi2 < CHI2_7_1E4, (chi2, counts)
    assert spy.accepted > 0 and spy.rejected > 0


# --- Several samples, logprobs, scoring ----------------------------------------------------------


def test_samples_per_prompt_are_reproducible_and_independent_of_the_batch(gen: Generator) -> None:
    settings = {"temperature": 1.5, "top_k": 40, "max_new_tokens": 8, "seed": 11}
    three = gen.generate_batch(PROMPTS[:2], num_return_sequences=3, **settings)
    assert len(three) == 6
    again = gen.generate_batch(PROMPTS[:2], num_return_sequences=3, **settings)
    assert [r.tokens for r in three] == [r.tokens for r in again]
    assert len({tuple(r.tokens) for r in three[:3]}) > 1  # the samples differ
    # A prompt's samples do not depend on what shares the batch, and the first is generate()'s.
    second_alone = gen.generate_batch(PROMPTS[1:2], num_return_sequences=3, **settings)
    assert [r.tokens for r in three[3:]] == [r.tokens for r in second_alone]
    assert three[0].tokens == gen.generate(PROMPTS[0], **settings).tokens
    other_seed = gen.generate_batch(PROMPTS[:1], num_return_sequences=3, **{**settings, "seed": 12})
    assert [r.tokens for r in other_seed] != [r.tokens for r in three[:3]]


@pytest.mark.parametrize("settings", [GREEDY, {"temperature": 1.7, "top_p": 0.9, "seed": 2}])
def test_logprobs_are_the_raw_log_softmax(gen: Generator, settings: dict) -> None:
    result = gen.generate(PROMPTS[1], max_new_tokens=6, logprobs=3, **settings)
    assert result.logprobs is not None and len(result.logprobs) == len(result.tokens)
    ids = gen.encode(PROMPTS[1]).tolist()
    for entry in result.logprobs:
        expected = log_softmax(forward(gen, ids)[-1:])[0]
        assert entry.token == result.tokens[len(ids) - result.prompt_tokens]
        assert abs(entry.logprob - expected[entry.token]) < 1e-4
        best = np.argsort(-expected)[:3].tolist()
        assert [t.token for t in entry.top] == best
        assert [t.text for t in entry.top] == [gen.tokenizer.decode([t]) for t in best]
        np.testing.assert_allclose([t.logprob for t in entry.top], expected[best], atol=1e-4)
        ids.append(entry.token)
    assert gen.generate(PROMPTS[1], max_new_tokens=2, **settings).logprobs is None


def scored_split(gen: Generator, text: str, context: str, start: bool) -> tuple[list, list]:
    """The documented rule, restated: the start token (when asked) and the context come before
    the text; with nothing before it, the text's first token conditions the rest."""
    before = gen.tokenizer.encode(context).tolist() if context else []
    before = ([gen.bos_id] if start else []) + before
    target = gen.tokenizer.encode(text).tolist()
    return (before, target) if before else (target[:1], target[1:])


@pytest.mark.parametrize("start", [False, True], ids=["as-sent", "after-start-token"])
def test_score_is_the_log_softmax_at_the_scored_positions_only(
    gen: Generator, monkeypatch: pytest.MonkeyPatch, start: bool
) -> None:
    asked: list[np.ndarray] = []
    original = gen.session.logits

    def logits(ids: np.ndarray, lengths: Any = None, positions: Any = None) -> np.ndarray:
        asked.append(positions)
        return original(ids, lengths, positions)

    monkeypatch.setattr(gen.session, "logits", logits)
    texts, contexts = (
        [" sat on the mat", " jumps", " hello world"],
        ["The cat", "The quick fox", ""],
    )
    batch = gen.score_batch(texts, contexts, logprobs=2, start=start)
    assert len(asked) == 1 and asked[0].shape == (3, 4)  # one call; the longest text's 4 tokens
    for text, context, result in zip(texts, contexts, batch, strict=True):
        before, target = scored_split(gen, text, context, start)
        expected = log_softmax(forward(gen, before + target))[len(before) - 1 : -1]
        assert result.tokens == target and result.context_tokens == len(before)
        picked = expected[np.arange(len(target)), target]
        np.testing.assert_allclose([t.logprob for t in result.logprobs], picked, atol=1e-4)
        assert abs(result.logprob - float(picked.sum())) < 1e-3
        assert result.greedy == bool(np.all(expected.argmax(axis=-1) == target))
        assert all(len(t.top) == 2 for t in result.logprobs)
        single = gen.score(text, context or None, start=start)
        assert [t.logprob for t in single.logprobs] == pytest.approx(
            [t.logprob for t in result.logprobs], abs=1e-5
        )


def test_a_lone_token_with_nothing_before_it_has_nothing_to_score(gen: Generator) -> None:
    with pytest.raises(EdgeError, match="Nothing to score: a text of one token") as caught:
        gen.score(" world")
    assert caught.value.field == "text"
    assert len(gen.score(" world", start=True).logprobs) == 1


def test_score_says_greedy_when_the_text_is_the_models_own(gen: Generator) -> None:
    result = gen.generate(PROMPTS[0], max_new_tokens=5, **GREEDY)
    scored = gen.score(result.text, PROMPTS[0])
    if gen.tokenizer.encode(result.text).tolist() == result.tokens:  # re-tokenizes the same
        assert scored.greedy


def test_max_length_counts_prompt_and_new_tokens(gen: Generator) -> None:
    prompt_len = gen.encode(PROMPTS[1]).size
    result = gen.generate(PROMPTS[1], max_length=prompt_len + 5, ignore_eos=True, **GREEDY)
    assert len(result.tokens) == 5 and result.finish_reason == "length"
    batch = gen.generate_batch(PROMPTS[:2], max_length=12, ignore_eos=True, **GREEDY)
    assert [r.prompt_tokens + len(r.tokens) for r in batch] == [12, 12]  # per prompt
    with pytest.raises(EdgeError, match="leaves no room"):
        gen.generate(PROMPTS[1], max_length=prompt_len)
    long = gen.generate(PROMPTS[1], max_length=500, ignore_eos=True, **GREEDY)
    assert long.finish_reason == "context" and prompt_len + len(long.tokens) == 128


# --- Beam search's own arithmetic (transformers' results: test_decoding_parity.py) ---------------


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_scores_are_the_sequences_log_probability(
    gen: Generator, length_penalty: float
) -> None:
    results = gen.generate_batch(
        PROMPTS[:2], num_beams=4, num_return_sequences=3, max_new_tokens=6,
        length_penalty=length_penalty, logprobs=1,
    )  # fmt: skip
    assert len(results) == 6
    for index, result in enumerate(results):
        ids = gen.encode(PROMPTS[index // 3]).tolist()
        steps = log_softmax(forward(gen, ids + result.tokens))[len(ids) - 1 : -1]
        picked = steps[np.arange(len(result.tokens)), result.tokens]
        expected = float(picked.sum()) / len(result.tokens) ** length_penalty
        assert result.score == pytest.approx(expected, abs=1e-3)
        assert result.logprobs is not None
        np.testing.assert_allclose([t.logprob for t in result.logprobs], picked, atol=1e-4)
    for group in (results[:3], results[3:]):
        scores = [r.score for r in group]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(r.tokens) for r in group}) == 3
    best = gen.generate(PROMPTS[0], num_beams=4, max_new_tokens=6, length_penalty=length_penalty)
    assert best.tokens == results[0].tokens


def test_beams_find_at_least_the_greedy_likelihood(gen: Generator) -> None:
    for prompt in PROMPTS[:3]:
        greedy = gen.generate(prompt, max_new_tokens=5, ignore_eos=True, **GREEDY)
        beams = gen.generate(
            prompt, max_new_tokens=5, ignore_eos=True, num_beams=5, early_stopping="never",
            length_penalty=0.0,
        )  # fmt: skip
        assert beams.score is not None
        assert beams.score >= gen.score(greedy.text, prompt).logprob - 1e-3 or (
            gen.tokenizer.encode(greedy.text).tolist() != greedy.tokens
        )
        assert math.isfinite(beams.score)


def test_perplexity_asks_logits_only_for_targets_and_agrees_with_full_windows(
    gen: Generator,
) -> None:
    from gpt2_edge.runtime.generation.evaluate import (
        perplexity,
        plan_windows,
        window_logits,
        window_loss,
    )

    ids = gen.tokenizer.encode(" ".join(PROMPTS * 8))
    result = perplexity(gen.session, ids, context=32, stride=12)
    total = weight_sum = 0.0
    for window in plan_windows(len(ids), 32, 12):
        chunk = ids[window.begin : window.end]
        loss, weight, _ = window_loss(window_logits(gen.session, chunk), chunk, window)
        total, weight_sum = total + loss * weight, weight_sum + weight
    assert result.mean_nll == pytest.approx(total / weight_sum, rel=1e-5)
