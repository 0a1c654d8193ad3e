"""A request's result never depends on what shares its batch, on when it joined the running batch,
or on the KV cache: for both KV-cache decoders (the fused graph's shared buffer, Optimum's growing
past) and every precision ``gpt2-export`` ships, on the bundles it writes with its default flags
(``shipped_bundles``, tests/support/shipped.py).

Greedy tokens must be equal, token for token, and so must text and finish reason. The
log-probability of each token may differ only by the rounding of float sums done in another order;
``LOGPROB_TOLERANCE`` bounds that per precision. A row that changes with its neighbours shows far
beyond it: before the int8 recipe quantized activations per row (exporter/edits/per_row.py),
ORTQuantizer's per-tensor ``DynamicQuantizeLinear`` moved 3 of these 8 rows to other tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gpt2_edge.runtime import GenerationResult, Generator

NEW_TOKENS = 64
PROMPT_LENGTHS = (1, 3, 7, 12, 20, 31, 45, 60)  # a one-token prompt beside long ones
GREEDY = dict(max_new_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True, logprobs=1)
# Where the decoders come from: the default graph, or gpt2-export --graph optimum.
DECODERS = {"shared-buffer": "", "growing-past": "optimum-"}
PRECISIONS = ("fp32", "int8", "int4", "fp16")
# Largest |log-probability| difference allowed for one token between two ways of computing it
# (alone, in a batch, joining one; cached, recomputed), in nats, with the largest seen on the
# trained fixture (Xeon, onnxruntime 1.32) in brackets. The shared-buffer decoder gave equal bits
# in a batch and alone at every precision; what differs is the order of float sums (a growing past
# left-pads the batch; recomputation attends over fresh keys, decoding over cached ones), and what
# that does at each precision. fp32: rounding alone [2.2e-6]. fp16: the same differences rounded to
# 11 bits, a float16 KV cache [1.3e-3]. int8 and int4: a rounding difference in a float part can
# move one activation across an 8-bit rounding boundary, and one step of it moves a logit by
# ~1e-2 [1.5e-2 int8, 2.8e-2 int4]. A row that took another row's cache, position or padding is
# off by whole nats, and its greedy tokens change.
LOGPROB_TOLERANCE = {"fp32": 1e-5, "fp16": 5e-3, "int8": 5e-2, "int4": 5e-2}
# The steps before which the rows left out of the start join the running batch, one each.
JOIN_AT = (1, 4, 11, 31)


@pytest.fixture(scope="module")
def prompts(wikitext_dir: Path, gpt2_tokenizer_dir: Path) -> list[str]:
    """8 WikiText-2 prompts of 1 to 60 tokens, from different places in the text."""
    from tokenizers import Tokenizer

    words = (wikitext_dir / "test.txt").read_text(encoding="utf-8").split()
    tok = Tokenizer.from_file(str(gpt2_tokenizer_dir / "tokenizer.json"))
    out = []
    for i, n in enumerate(PROMPT_LENGTHS):
        start = 500 + 97 * i
        ids = tok.encode(" ".join(words[start : start + 80])).ids[:n]
        out.append(tok.decode(ids))
    return out


def bundle_name(decoder: str, precision: str) -> str:
    return DECODERS[decoder] + precision


def logprobs(result: GenerationResult) -> np.ndarray:
    assert result.logprobs is not None
    return np.array([t.logprob for t in result.logprobs])


def joining(gen: Generator, prompts: list[str]) -> list[GenerationResult]:
    """The prompts through one running batch (the engine the server drives): the even ones
    start it, the odd ones join it one by one after the steps in ``JOIN_AT``."""
    sampling, options = gen.resolve(**GREEDY)
    engine = gen.engine()
    ids = [gen.prompt_ids(p, options) for p in prompts]
    first, late = list(range(0, len(ids), 2)), list(range(1, len(ids), 2))
    assert len(late) == len(JOIN_AT)
    rows = dict(zip(engine.add([ids[i] for i in first], sampling, options), first, strict=True))
    joins = dict(zip(JOIN_AT, late, strict=True))  # step -> the prompt that joins before it
    results: dict[int, GenerationResult] = {}
    step = 0
    while len(engine) or step <= max(JOIN_AT):
        if step in joins:
            [row] = engine.add([ids[joins[step]]], sampling, options)
            rows[row] = joins[step]
        for event in engine.step():
            if event.result is not None:
                results[rows[event.row]] = event.result
        step += 1
    return [results[i] for i in range(len(prompts))]


@pytest.mark.export
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_a_request_alone_in_a_batch_or_joining_one_gives_the_same_tokens(
    shipped_bundles, prompts: list[str], decoder: str, precision: str
) -> None:
    gen = shipped_bundles.load(bundle_name(decoder, precision))
    assert gen.session.shared_kv == (decoder == "shared-buffer")
    alone = [gen.generate(p, **GREEDY) for p in prompts]
    ways = {"in a batch of 8": gen.generate_batch(prompts, **GREEDY)}
    ways["joining a running batch"] = joining(gen, prompts)
    for way, results in ways.items():
        for one, other in zip(alone, results, strict=True):
            where = f"{way}: the prompt of {one.prompt_tokens} tokens"
            assert other.tokens == one.tokens, where
            assert other.text == one.text and other.finish_reason == one.finish_reason, where
            diff = np.abs(logprobs(other) - logprobs(one)).max()
            assert diff <= LOGPROB_TOLERANCE[precision], (where, diff)


@pytest.mark.export
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_cached_decoding_equals_recomputation(
    shipped_bundles, prompts: list[str], decoder: str, precision: str
) -> None:
    """Each greedy token, decoded through the KV cache, is the argmax of a forward over the whole
    sequence from scratch (the session's one forward, no past), and its log-probability that
    forward's."""
    from gpt2_edge.runtime.sampling.filters import log_softmax

    gen = shipped_bundles.load(bundle_name(decoder, precision))
    for prompt in prompts:
        cached = gen.generate(prompt, **GREEDY)
        sequence = gen.encode(prompt).tolist()
        recomputed = []
        for token in cached.tokens:
            last = np.array([[len(sequence) - 1]])
            logits = gen.session.logits(np.array([sequence]), positions=last)[0]  # (1, V)
            recomputed.append(float(log_softmax(logits)[0, token]))
            assert token == int(logits[0].argmax()), (prompt, len(recomputed))
            sequence.append(token)
        diff = np.abs(logprobs(cached) - recomputed).max()
        assert diff <= LOGPROB_TOLERANCE[precision], (prompt, diff)
