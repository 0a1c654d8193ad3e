"""Sampling settings and samplers: exact filters, validation, reproducibility, distribution, parity.

The pure-numpy tests need no torch; the parity tests against transformers' own logits processors
are marked `export` and skip without the export extra.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from gpt2_edge.runtime.errors import EdgeError
from gpt2_edge.runtime.sampling.filters import (
    _cumsum_search,
    apply_min_p,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    sample_categorical,
)
from gpt2_edge.runtime.sampling.penalties import (
    apply_no_repeat_ngram,
    apply_presence_frequency_penalty,
    apply_repetition_penalty,
    banned_ngram_tokens,
)
from gpt2_edge.runtime.sampling.sampler import Sampler
from gpt2_edge.runtime.settings.sampling import SamplingSettings
from gpt2_edge.runtime.settings.values import DEFAULT_TOP_P

NEG_INF = -np.inf


def logits_of(*probs: float) -> np.ndarray:
    """(1, V) float32 logits whose softmax is `probs`."""
    return np.log(np.array([probs], dtype=np.float64)).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


EMPTY = ids()


# --- Each filter on hand-written logits ----------------------------------------------------------


def test_temperature_divides() -> None:
    x = np.array([[1.0, 2.0, -3.0]], dtype=np.float32)
    np.testing.assert_array_equal(apply_temperature(x, 2.0), [[0.5, 1.0, -1.5]])
    assert apply_temperature(x, 1.0) is x


def test_top_k_keeps_k_largest_and_renormalises() -> None:
    out = apply_top_k(logits_of(0.1, 0.4, 0.2, 0.3), 2)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isfinite(out), [[False, True, False, True]])
    np.testing.assert_allclose(softmax(out), [[0, 0.4 / 0.7, 0, 0.3 / 0.7]], atol=1e-6)


def test_top_k_keeps_ties_with_the_kth_like_transformers() -> None:
    x = np.array([[1.0, 2.0, 2.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(apply_top_k(x, 1), [[NEG_INF, 2.0, 2.0, NEG_INF]])


def test_top_k_off_or_wider_than_vocab_is_identity() -> None:
    x = logits_of(0.5, 0.5)
    assert apply_top_k(x, 0) is x
    assert apply_top_k(x, 2) is x


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [
        (1e-9, [1.0, 0, 0, 0]),  # always at least the top token
        (0.45, [1.0, 0, 0, 0]),
        (0.75, [0.5 / 0.8, 0.3 / 0.8, 0, 0]),  # mass above 0.15 is 0.8 >= 0.75: dropped
        (0.9, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0]),
        (0.99, [0.5, 0.3, 0.15, 0.05]),
    ],
)
def test_top_p_keeps_smallest_set_reaching_p(top_p: float, expected: list[float]) -> None:
    order = [2, 0, 3, 1]  # scattered positions: the filter must not depend on token order
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    x = np.log(probs[order])[None].astype(np.float32)
    out = apply_top_p(x, top_p)
    np.testing.assert_allclose(softmax(out)[0], np.array(expected)[order], atol=1e-6)
    assert np.array_equal(np.isneginf(out[0]), np.array(expected)[order] == 0)


def test_top_p_one_is_identity() -> None:
    x = logits_of(0.5, 0.5)
    assert apply_top_p(x, DEFAULT_TOP_P) is x


def test_top_p_after_top_k_ranks_only_survivors() -> None:
    x = logits_of(0.4, 0.3, 0.2, 0.1)
    out = apply_top_p(apply_top_k(x, 3), 0.7)  # over top-3: 4/9, 3/9, 2/9; 4/9 < .7 <= 7/9
    np.testing.assert_allclose(softmax(out), [[4 / 7, 3 / 7, 0, 0]], atol=1e-6)


def test_top_p_wide_vocab_matches_full_sort() -> None:
    # Both the narrow head (peaked rows) and widening to the whole vocabulary (flat rows).
    rng = np.random.default_rng(0)
    for scale in (0.5, 3.0, 12.0):
        x = (rng.standard_normal((2, 5000)) * scale).astype(np.float32)
        for top_p in (0.3, 0.9):
            probs = softmax(x)[0]
            order = np.argsort(-probs)
            above = np.concatenate([[0.0], np.cumsum(probs[order])[:-1]])
            kept = order[above < top_p]
            out = apply_top_p(x, top_p)
            assert set(np.flatnonzero(np.isfinite(out[0]))) == set(kept)


def test_min_p_drops_tokens_below_fraction_of_top() -> None:
    out = apply_min_p(logits_of(0.05, 0.5, 0.15, 0.3), 0.2)  # threshold 0.1
    np.testing.assert_allclose(softmax(out), [[0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95]], atol=1e-6)
    only_top = apply_min_p(logits_of(0.05, 0.5, 0.15, 0.3), 1.0)
    np.testing.assert_array_equal(np.isfinite(only_top), [[False, True, False, False]])
    x = logits_of(0.5, 0.5)
    assert apply_min_p(x, 0.0) is x


def test_repetition_penalty_divides_positive_multiplies_negative_once() -> None:
    x = np.array([[2.0, -2.0, 1.0, 0.5]], dtype=np.float32)
    out = apply_repetition_penalty(x, [ids(0, 1, 1, 1)], 2.0)
    np.testing.assert_array_equal(out, [[1.0, -4.0, 1.0, 0.5]])
    np.testing.assert_array_equal(x, [[2.0, -2.0, 1.0, 0.5]])  # input untouched


def test_presence_and_frequency_penalties_follow_openai() -> None:
    x = np.zeros((1, 5), dtype=np.float32)
    out = apply_presence_frequency_penalty(x, [ids(1, 1, 3)], presence=0.5, frequency=0.25)
    np.testing.assert_allclose(out, [[0, -1.0, 0, -0.75, 0]])
    negative = apply_presence_frequency_penalty(x, [ids(2)], presence=-1.0, frequency=-2.0)
    np.testing.assert_allclose(negative, [[0, 0, 3.0, 0, 0]])


@pytest.mark.parametrize(
    ("tokens", "size", "banned"),
    [
        ([1, 2, 3, 1, 2], 3, [3]),
        ([1, 2, 3, 1, 2], 2, [3]),
        ([5, 1, 2, 1, 4, 1], 2, [2, 4]),
        ([1, 2, 1, 2], 1, [1, 2]),
        ([1, 2], 3, []),  # no complete trigram yet
        ([], 2, []),
        ([7, 7, 7], 2, [7]),
    ],
)
def test_banned_ngram_tokens(tokens: list[int], size: int, banned: list[int]) -> None:
    assert sorted(set(banned_ngram_tokens(ids(*tokens), size).tolist())) == banned


def test_no_repeat_ngram_sets_banned_to_minus_inf() -> None:
    x = np.zeros((1, 5), dtype=np.float32)
    out = apply_no_repeat_ngram(x, [ids(1, 2, 3, 1, 2)], 3)
    np.testing.assert_array_equal(out, [[0, 0, 0, NEG_INF, 0]])
    assert apply_no_repeat_ngram(x, [ids(1, 1)], 0) is x


def test_cumsum_search_matches_cumsum_across_blocks() -> None:
    rng = np.random.default_rng(1)
    weights = rng.random(3000).astype(np.float32)
    weights[rng.random(3000) < 0.2] = 0.0
    cumulative = np.cumsum(weights, dtype=np.float64)
    targets = np.concatenate([rng.random(200) * cumulative[-1], cumulative[[0, 511, 512, 1500]]])
    for target in targets:
        for side in ("left", "right"):
            want = int(np.searchsorted(cumulative, target, side))
            got = _cumsum_search(weights, float(target), side)
            # Block sums round differently from one running sum: equal up to ties at rounding.
            assert got == want or math.isclose(cumulative[min(got, 2999)], target, rel_tol=1e-9)


# --- The Sampler ---------------------------------------------------------------------------------


def test_greedy_without_penalties_is_bare_argmax() -> None:
    x = np.array([[0.1, 3.0, 2.0], [5.0, -1.0, 4.9]], dtype=np.float32)
    sampler = Sampler(SamplingSettings(temperature=0.0, top_k=1, top_p=0.5))
    assert sampler.bare_argmax  # filters cannot change an argmax: none run
    tokens = sampler(x, [EMPTY, EMPTY], [EMPTY, EMPTY])
    assert tokens.dtype == np.int64 and tokens.tolist() == [1, 0]


def test_greedy_still_applies_penalties() -> None:
    x = np.array([[3.0, 2.0, 1.0]], dtype=np.float32)
    assert Sampler(SamplingSettings(temperature=0))(x, [ids(0)], [EMPTY]).tolist() == [0]
    penalised = Sampler(SamplingSettings(temperature=0, repetition_penalty=2.0))
    assert penalised(x, [ids(0)], [EMPTY]).tolist() == [1]  # 3/2 < 2
    no_repeat = Sampler(SamplingSettings(temperature=0, no_repeat_ngram_size=1))
    assert no_repeat(x, [ids(0)], [ids(1)]).tolist() == [2]


def test_presence_penalty_ignores_prompt_tokens() -> None:
    x = np.array([[1.0, 0.9]], dtype=np.float32)
    sampler = Sampler(SamplingSettings(temperature=0, presence_penalty=0.5))
    assert sampler(x, [ids(0, 0, 0)], [EMPTY]).tolist() == [0]
    assert sampler(x, [EMPTY], [ids(0)]).tolist() == [1]


def test_batch_rows_use_only_their_own_history() -> None:
    x = np.tile(np.array([[3.0, 2.0, 1.0, 0.0]], dtype=np.float32), (3, 1))
    settings = SamplingSettings(
        temperature=0, repetition_penalty=4.0, frequency_penalty=1.0, no_repeat_ngram_size=2
    )
    sampler = Sampler(settings)
    prompts = [ids(0), ids(1), ids(3, 2)]
    generated = [EMPTY, ids(0), ids(3)]  # row 2 saw bigram (3, 2) and ends in 3: 2 is banned
    processed = sampler.process(x, prompts, generated)
    np.testing.assert_allclose(processed[0], [0.75, 2.0, 1.0, 0.0])
    np.testing.assert_allclose(processed[1], [3.0 / 4 - 1.0, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(processed[2], [3.0, 2.0, NEG_INF, -1.0])
    assert sampler(x, prompts, generated).tolist() == [1, 2, 0]


def test_sampler_rejects_mismatched_batch() -> None:
    sampler = Sampler(SamplingSettings(top_k=2))
    with pytest.raises(ValueError, match="B prompts"):
        sampler(np.zeros((2, 4), dtype=np.float32), [EMPTY], [EMPTY])


def test_seeded_sampling_is_reproducible_and_seeds_differ() -> None:
    x = np.zeros((4, 1000), dtype=np.float32)  # uniform: every draw is informative

    def draws(seed: int) -> list[int]:
        sampler = Sampler(SamplingSettings(seed=seed, top_p=0.95))
        return np.concatenate([sampler(x, [EMPTY] * 4, [EMPTY] * 4) for _ in range(10)]).tolist()

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_unseeded_samplers_differ() -> None:
    x = np.zeros((64, 1000), dtype=np.float32)
    a, b = (Sampler(SamplingSettings())(x, [EMPTY] * 64, [EMPTY] * 64) for _ in range(2))
    assert a.tolist() != b.tolist()


# Critical values of the chi-square distribution at p = 0.001, by degrees of freedom.
CHI2_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515}


def draw_counts(settings: SamplingSettings, x: np.ndarray, draws: int) -> np.ndarray:
    sampler = Sampler(settings)
    batch = np.repeat(x, draws, axis=0)  # (draws, V): one call, one draw per row
    tokens = sampler(batch, [EMPTY] * draws, [EMPTY] * draws)
    return np.bincount(tokens, minlength=x.shape[1])


@pytest.mark.parametrize(
    ("settings", "draws", "expected"),
    [
        (SamplingSettings(seed=0), 20_000, [0.4, 0.3, 0.15, 0.1, 0.05]),
        (SamplingSettings(seed=1, top_k=3), 20_000, [4 / 8.5, 3 / 8.5, 1.5 / 8.5, 0, 0]),
        (SamplingSettings(seed=2, top_p=0.8), 10_000, [0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0]),
        (SamplingSettings(seed=3, min_p=0.5), 10_000, [0.4 / 0.7, 0.3 / 0.7, 0, 0, 0]),
        # temperature 0.5 squares the probabilities before renormalising
        (
            SamplingSettings(seed=4, temperature=0.5),
            10_000,
            [16 / 28.5, 9 / 28.5, 2.25 / 28.5, 1 / 28.5, 0.25 / 28.5],
        ),
    ],
)
def test_empirical_distribution_matches(
    settings: SamplingSettings, draws: int, expected: Any
) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    counts = draw_counts(settings, logits_of(0.4, 0.3, 0.15, 0.1, 0.05), draws)
    kept = expected > 0
    assert counts[~kept].sum() == 0  # filtered tokens are never drawn
    want = draws * expected[kept]
    chi2 = float((((counts[kept] - want) ** 2) / want).sum())
    assert chi2 < CHI2_999[int(kept.sum()) - 1], (counts, want)
    # and each frequency within 5 binomial standard deviations
    sigma = np.sqrt(draws * expected[kept] * (1 - expected[kept]))
    assert np.all(np.abs(counts[kept] - want) < 5 * sigma)


def test_sample_categorical_on_wide_vocab_hits_only_allowed_tokens() -> None:
    # Mass spread across several 512-token blocks of the two-level search.
    vocab = 50_257
    x = np.full((1, vocab), NEG_INF, dtype=np.float32)
    allowed = np.array([3, 700, 1400, 30_000, 50_256])
    x[0, allowed] = 0.0
    rng = np.random.default_rng(0)
    tokens = np.concatenate([sample_categorical(x, rng) for _ in range(1000)])
    counts = np.array([(tokens == t).sum() for t in allowed])
    assert counts.sum() == 1000 and counts.min() > 120  # each ~200 of 1000


def test_sample_categorical_all_filtered_row_falls_back_to_argmax() -> None:
    x = np.full((1, 4), NEG_INF, dtype=np.float32)
    assert sample_categorical(x, np.random.default_rng(0)).tolist() == [0]


# --- Settings: validation and precedence ---------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("temperature", -0.1, ">= 0"),
        ("temperature", math.nan, ">= 0"),
        ("temperature", math.inf, ">= 0"),
        ("temperature", "1", ">= 0"),
        ("temperature", True, ">= 0"),
        ("top_k", -1, "integer >= 0"),
        ("top_k", 1.5, "integer >= 0"),
        ("top_k", 50.0, "integer >= 0"),
        ("top_k", True, "integer >= 0"),
        ("top_p", 0.0, "(0, 1]"),
        ("top_p", 1.5, "(0, 1]"),
        ("top_p", math.nan, "(0, 1]"),
        ("min_p", -0.1, "[0, 1]"),
        ("min_p", 1.01, "[0, 1]"),
        ("repetition_penalty", 0.0, "> 0"),
        ("repetition_penalty", -1.0, "> 0"),
        ("repetition_penalty", math.inf, "> 0"),
        ("presence_penalty", 2.5, "[-2, 2]"),
        ("presence_penalty", -2.01, "[-2, 2]"),
        ("frequency_penalty", 3.0, "[-2, 2]"),
        ("frequency_penalty", None, "[-2, 2]"),
        ("no_repeat_ngram_size", -1, "integer >= 0"),
        ("no_repeat_ngram_size", 2.0, "integer >= 0"),
        ("seed", -1, "an integer >= 0 (or not given)"),
        ("seed", 1.0, "an integer >= 0 (or not given)"),
        ("seed", False, "an integer >= 0 (or not given)"),
    ],
)
def test_invalid_settings_name_field_value_and_range(field: str, value: Any, allowed: str) -> None:
    with pytest.raises(EdgeError) as caught:
        SamplingSettings(**{field: value})
    message = str(caught.value)
    assert message.startswith(f"{field} must be ") and allowed in message
    assert repr(value) in message or str(value) in message
    assert message.endswith(".")


def test_top_p_message_reads_as_a_sentence() -> None:
    with pytest.raises(EdgeError, match=r"^top_p must be a number in \(0, 1\].*, got 1\.5\.$"):
        SamplingSettings(top_p=1.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=0, top_k=0, top_p=1, min_p=0, seed=0),
        dict(min_p=1.0, presence_penalty=2, frequency_penalty=-2, repetition_penalty=0.01),
        dict(top_k=np.int64(40), top_p=np.float32(0.5), seed=2**70, no_repeat_ngram_size=3),
    ],
)
def test_boundary_values_are_valid_and_stored_as_plain_types(kwargs: dict[str, Any]) -> None:
    settings = SamplingSettings(**kwargs)
    for name, value in kwargs.items():
        stored = getattr(settings, name)
        assert type(stored) in (int, float) and stored == pytest.approx(float(value))


def test_defaults_and_greedy() -> None:
    settings = SamplingSettings()
    assert (settings.temperature, settings.top_k, settings.top_p, settings.min_p) == (1, 0, 1, 0)
    assert settings.seed is None and not settings.greedy
    assert SamplingSettings(temperature=0).greedy


def test_from_defaults_precedence() -> None:
    bundle = {"temperature": 0.7, "top_k": 40, "top_p": None, "max_new_tokens": 64, "eos": 1}
    settings = SamplingSettings.from_defaults(bundle, top_k=10, top_p=None, seed=None, min_p=0.05)
    assert settings.temperature == 0.7  # bundle
    assert settings.top_k == 10  # override beats bundle
    assert settings.top_p == DEFAULT_TOP_P  # None override and None bundle: built-in constant
    assert settings.min_p == 0.05 and settings.seed is None
    assert SamplingSettings.from_defaults({}) == SamplingSettings()
    assert SamplingSettings.from_defaults(None, temperature=0).greedy


def test_from_defaults_rejects_unknown_override_and_invalid_bundle_value() -> None:
    with pytest.raises(EdgeError, match="Unknown sampling setting 'top_q'"):
        SamplingSettings.from_defaults({}, top_q=0.9)
    with pytest.raises(EdgeError, match="top_k must be"):
        SamplingSettings.from_defaults({"top_k": -5})


# --- Parity with transformers' own processors ----------------------------------------------------


@pytest.fixture(scope="module")
def hf() -> Any:
    pytest.importorskip("transformers")
    import torch
    from transformers.generation import logits_process

    return torch, logits_process


def hf_process(hf: Any, processors: list[Any], x: np.ndarray, input_ids: np.ndarray) -> np.ndarray:
    torch, logits_process = hf
    chain = logits_process.LogitsProcessorList(processors)
    return chain(torch.from_numpy(input_ids), torch.from_numpy(x.copy())).numpy()


def assert_same_filtering(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
    np.testing.assert_allclose(softmax(ours), softmax(theirs), atol=1e-6)
    finite = np.isfinite(ours)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-5, atol=1e-5)


def random_case(seed: int, batch: int = 4, vocab: int = 2000, length: int = 40) -> tuple:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((batch, vocab)) * rng.uniform(0.5, 6.0, (batch, 1))).astype(np.float32)
    # Small id range so that repeats and repeated n-grams actually occur.
    input_ids = rng.integers(0, 30, (batch, length)).astype(np.int64)
    split = length // 2
    prompts = [row[:split] for row in input_ids]
    generated = [row[split:] for row in input_ids]
    return x, input_ids, prompts, generated


def hf_chain(hf: Any, settings: SamplingSettings) -> list[Any]:
    """transformers' processors for `settings`, in `_get_logits_processor`'s order."""
    _, lp = hf
    chain: list[Any] = []
    if settings.repetition_penalty != 1.0:
        chain.append(lp.RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.no_repeat_ngram_size:
        chain.append(lp.NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    if settings.greedy:
        return chain
    if settings.temperature != 1.0:
        chain.append(lp.TemperatureLogitsWarper(settings.temperature))
    if settings.top_k:
        chain.append(lp.TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1.0:
        chain.append(lp.TopPLogitsWarper(settings.top_p))
    if settings.min_p:
        chain.append(lp.MinPLogitsWarper(settings.min_p))
    return chain


PARITY_SETTINGS = [
    SamplingSettings(repetition_penalty=1.3),
    SamplingSettings(repetition_penalty=0.7),
    SamplingSettings(no_repeat_ngram_size=1),
    SamplingSettings(no_repeat_ngram_size=2),
    SamplingSettings(no_repeat_ngram_size=3),
    SamplingSettings(temperature=0.6),
    SamplingSettings(temperature=1.7),
    SamplingSettings(top_k=1),
    SamplingSettings(top_k=50),
    SamplingSettings(top_p=0.1),
    SamplingSettings(top_p=0.9),
    SamplingSettings(min_p=0.05),
    SamplingSettings(min_p=0.5),
    SamplingSettings(temperature=0.8, top_k=50, top_p=0.9),
    SamplingSettings(temperature=1.3, top_p=0.7, min_p=0.1),
    SamplingSettings(
        temperature=0.7, top_k=200, top_p=0.95, min_p=0.02, repetition_penalty=1.2,
        no_repeat_ngram_size=2,
    ),
]  # fmt: skip


@pytest.mark.export
@pytest.mark.parametrize("settings", PARITY_SETTINGS, ids=repr)
def test_processed_logits_match_transformers(hf: Any, settings: SamplingSettings) -> None:
    for seed in range(3):
        x, input_ids, prompts, generated = random_case(seed)
        ours = Sampler(settings).process(x, prompts, generated)
        assert_same_filtering(ours, hf_process(hf, hf_chain(hf, settings), x, input_ids))


@pytest.mark.export
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95])
def test_top_p_on_full_gpt2_vocab_matches_transformers(hf: Any, top_p: float) -> None:
    rng = np.random.default_rng(5)
    scales = np.array([[0.5], [2.0], [5.0], [12.0]])
    x = (rng.standard_normal((4, 50_257)) * scales).astype(np.float32)
    _, lp = hf
    theirs = hf_process(hf, [lp.TopPLogitsWarper(top_p)], x, np.zeros((4, 1), dtype=np.int64))
    assert_same_filtering(apply_top_p(x, top_p), theirs)


@pytest.mark.export
@pytest.mark.parametrize(
    "settings",
    [
        SamplingSettings(temperature=0, repetition_penalty=1.5),
        SamplingSettings(temperature=0, repetition_penalty=0.5, no_repeat_ngram_size=2),
        SamplingSettings(temperature=0, no_repeat_ngram_size=1),
    ],
    ids=repr,
)
def test_greedy_with_penalties_matches_transformers_argmax(
    hf: Any, settings: SamplingSettings
) -> None:
    for seed in range(5):
        x, input_ids, prompts, generated = random_case(seed, vocab=60)
        # Put the largest logits on tokens the history contains, so the penalties decide.
        x[:, :30] += 3.0
        theirs = hf_process(hf, hf_chain(hf, settings), x, input_ids).argmax(axis=-1)
        ours = Sampler(settings)(x, prompts, generated)
        np.testing.assert_array_equal(ours, theirs)
