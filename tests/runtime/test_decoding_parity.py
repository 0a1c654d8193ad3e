"""Decoding against transformers on the trained fixture, on both graphs (the fused default and a
plain Optimum export): beam search token for token, logprobs and scores within 1e-4, max_length,
and greedy drafting on the growing-past backend. Needs the export extra."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpt2_edge.runtime import Generator, load
from support.fakes import Spy

pytestmark = pytest.mark.export

PROMPTS = ["The history of the city", "In 1998, the band released", "Hello"]
BEAM_SETTINGS = [
    {"num_beams": 4},
    {"num_beams": 3, "length_penalty": 2.0, "early_stopping": True},
    {"num_beams": 4, "early_stopping": "never", "length_penalty": 0.5, "num_return_sequences": 2},
    {"num_beams": 2, "no_repeat_ngram_size": 3, "repetition_penalty": 1.3},
    {"num_beams": 5, "num_return_sequences": 3, "length_penalty": -0.5},
]
NEW = 24


@pytest.fixture(scope="module")
def graphs(shipped_bundles, trained_optimum_folder: Path) -> dict:
    """The shipped fp32 bundle (the fused graph) and a plain Optimum export (a growing past)."""
    return {
        "fused": shipped_bundles.load("fp32"),
        "optimum": load(trained_optimum_folder, provider="cpu", threads=1),
    }


@pytest.fixture(scope="module")
def hf(trained_fixture_dir: Path) -> Any:
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(1)  # a tiny model: more threads only fight over shared cores
    return GPT2LMHeadModel.from_pretrained(trained_fixture_dir).eval()


def hf_generate(hf: Any, ids: np.ndarray, **kwargs: Any) -> Any:
    import torch

    tensor = torch.tensor(ids[None])
    with torch.no_grad():
        return hf.generate(
            tensor,
            attention_mask=torch.ones_like(tensor),
            pad_token_id=hf.config.eos_token_id,
            return_dict_in_generate=True,
            **kwargs,
        )


def hf_log_softmax(hf: Any, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, dim=-1).numpy()  # (T, V)


@pytest.mark.parametrize("which", ["fused", "optimum"])
@pytest.mark.parametrize(
    "settings", BEAM_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_beam_search_equals_transformers(graphs: dict, hf: Any, which: str, settings: dict) -> None:
    gen: Generator = graphs[which]
    for prompt in PROMPTS:
        ids = gen.encode(prompt)
        ours = gen.generate_batch([prompt], max_new_tokens=NEW, **settings)
        theirs = hf_generate(
            hf, ids, max_new_tokens=NEW, do_sample=False, output_scores=True, **settings
        )
        n = settings.get("num_return_sequences", 1)
        assert len(ours) == n == theirs.sequences.shape[0]
        for mine, row, score in zip(ours, theirs.sequences, theirs.sequences_scores, strict=True):
            generated = row[ids.size :].tolist()
            pad = hf.config.eos_token_id  # transformers pads shorter beams with it
            assert generated[: len(mine.tokens)] == mine.tokens, prompt
            assert all(t == pad for t in generated[len(mine.tokens) :]), prompt
            # The score sums a log-probability per token, each within 1e-4 of transformers'.
            length = len(mine.tokens)
            tolerance = 1e-4 * length / length ** settings.get("length_penalty", 1.0)
            assert mine.score == pytest.approx(float(score), abs=tolerance)
            expected = "eos" if mine.tokens[-1] == gen.eos_id else "length"
            assert mine.finish_reason == expected


def test_beam_batch_equals_each_prompt_alone(graphs: dict) -> None:
    gen: Generator = graphs["fused"]
    settings = {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 16}
    batch = gen.generate_batch(PROMPTS, **settings)
    alone = [r for p in PROMPTS for r in gen.generate_batch([p], **settings)]
    assert [(r.tokens, r.score) for r in batch] == [(r.tokens, r.score) for r in alone]


@pytest.mark.parametrize("which", ["fused", "optimum"])
def test_logprobs_equal_transformers(graphs: dict, hf: Any, which: str) -> None:
    gen: Generator = graphs[which]
    for prompt in PROMPTS:
        ids = gen.encode(prompt)
        ours = gen.generate(prompt, max_new_tokens=NEW, temperature=0, logprobs=5)
        theirs = hf_generate(hf, ids, max_new_tokens=NEW, do_sample=False, output_logits=True)
        assert ours.logprobs is not None and len(ours.logprobs) == len(theirs.logits)
        for entry, logits in zip(ours.logprobs, theirs.logits, strict=True):
            import torch

            expected = torch.log_softmax(logits[0].float(), dim=-1).numpy()
            assert abs(entry.logprob - expected[entry.token]) < 1e-4
            best = np.sort(expected)[::-1][:5]
            np.testing.assert_allclose([t.logprob for t in entry.top], best, atol=1e-4)
    # Sampled with temperature and a penalty: still the raw model's log-probabilities.
    sampled = gen.generate(
        PROMPTS[0], max_new_tokens=NEW, temperature=0.7, repetition_penalty=1.3, seed=5, logprobs=0
    )
    full = gen.encode(PROMPTS[0]).tolist() + sampled.tokens
    expected = hf_log_softmax(hf, full)[len(full) - len(sampled.tokens) - 1 : -1]
    picked = expected[np.arange(len(sampled.tokens)), sampled.tokens]
    np.testing.assert_allclose([t.logprob for t in sampled.logprobs or []], picked, atol=1e-4)


@pytest.mark.parametrize("start", [False, True], ids=["as-sent", "after-start-token"])
@pytest.mark.parametrize("which", ["fused", "optimum"])
def test_score_equals_transformers(graphs: dict, hf: Any, which: str, start: bool) -> None:
    """Each text's tokens against transformers' log-softmax of the same ids: after its context,
    after the start token too when asked (lm-evaluation-harness's hf rule for no context)."""
    gen: Generator = graphs[which]
    texts = [" was founded in 1850 by settlers", " their second album", " world", "Hello world"]
    contexts = ["The city", "In 1998, the band released", "Hello", None]
    results = gen.score_batch(texts, [c or "" for c in contexts], logprobs=3, start=start)
    for text, context, result in zip(texts, contexts, results, strict=True):
        before = [gen.bos_id] if start else []
        before += gen.tokenizer.encode(context).tolist() if context else []
        target = gen.tokenizer.encode(text).tolist()
        if not before:  # the first token conditions the rest
            before, target = target[:1], target[1:]
        expected = hf_log_softmax(hf, before + target)[len(before) - 1 : -1]
        picked = expected[np.arange(len(target)), target]
        np.testing.assert_allclose([t.logprob for t in result.logprobs], picked, atol=1e-4)
        assert result.logprob == pytest.approx(float(picked.sum()), abs=1e-3)
        assert result.greedy == bool(np.all(expected.argmax(axis=-1) == target))


@pytest.mark.parametrize("which", ["fused", "optimum"])
def test_max_length_equals_transformers(graphs: dict, hf: Any, which: str) -> None:
    gen: Generator = graphs[which]
    for prompt in PROMPTS:
        ids = gen.encode(prompt)
        ours = gen.generate(prompt, max_length=ids.size + 12, temperature=0)
        theirs = hf_generate(hf, ids, max_length=ids.size + 12, do_sample=False)
        assert ours.tokens == theirs.sequences[0, ids.size :].tolist()[: len(ours.tokens)]
        assert len(ours.tokens) == 12 or ours.finish_reason == "eos"


def test_greedy_drafting_on_the_growing_past_equals_transformers(
    graphs: dict, hf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpt2_edge.runtime.generation import steps

    gen: Generator = graphs["optimum"]
    assert not gen.session.shared_kv
    quoted = "The band released the album. The band released the album. The band released"
    prompts = [quoted, *PROMPTS]
    spy = Spy(monkeypatch, steps)
    drafted = gen.generate_batch(prompts, max_new_tokens=NEW, temperature=0, draft="prompt-lookup")
    for prompt, result in zip(prompts, drafted, strict=True):
        ids = gen.encode(prompt)
        expected = hf_generate(hf, ids, max_new_tokens=NEW, do_sample=False).sequences[0]
        assert result.tokens == expected[ids.size :].tolist()
    assert spy.accepted > 0 and spy.rejected > 0
