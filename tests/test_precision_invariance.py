"""A request's greedy tokens never depend on its batch or on the KV cache, for every precision
the exporter ships, tested on the bundles `gpt2-export` writes with its default flags.

The int8 recipe quantizes activations per row (exporter/edits/per_row.py
``per_row_activations``); before
it, ORTQuantizer's per-tensor ``DynamicQuantizeLinear`` changed 3 of these 8 rows in a batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

NEW_TOKENS = 64
PROMPT_LENGTHS = (1, 3, 7, 12, 20, 31, 45, 60)
GREEDY = dict(max_new_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
# flags of gpt2-export for each shipped precision (everything else at its default)
PRECISIONS = {
    "fp32": {},
    "int8": {"quantize": True},
    "int4": {"quantize": True, "bits": 4},
    "fp16": {"dtype": "fp16"},
}


@pytest.fixture(scope="module", params=list(PRECISIONS))
def shipped(request, trained_fixture_dir: Path, tmp_path_factory) -> Path:
    """The trained fixture exported as `gpt2-export` ships it, at one precision."""
    pytest.importorskip("optimum.exporters.onnx")
    from gpt2_edge.exporter import export_bundle

    out = tmp_path_factory.mktemp("shipped") / request.param
    flags = PRECISIONS[request.param]
    return export_bundle(str(trained_fixture_dir), out, verify=False, progress=False, **flags)


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


@pytest.mark.export
def test_alone_equals_in_a_batch_of_eight(shipped: Path, prompts: list[str]) -> None:
    from gpt2_edge.runtime import load

    gen = load(shipped, provider="cpu", threads=1)
    alone = [gen.generate(p, **GREEDY).tokens for p in prompts]
    batch = [r.tokens for r in gen.generate_batch(prompts, **GREEDY)]
    differ = [len(gen.encode(p)) for p, a, b in zip(prompts, alone, batch, strict=True) if a != b]
    assert not differ, f"prompts of these lengths changed in the batch: {differ}"


@pytest.mark.export
def test_one_token_prompt_paired_with_long_ones(shipped: Path, prompts: list[str]) -> None:
    from gpt2_edge.runtime import load

    gen = load(shipped, provider="cpu", threads=1)
    for short in ("Hi", prompts[0]):
        alone = gen.generate(short, **GREEDY).tokens
        for long in prompts[5:]:
            pair = gen.generate_batch([short, long], **GREEDY)
            assert pair[0].tokens == alone, (short, len(gen.encode(long)))
            assert pair[1].tokens == gen.generate(long, **GREEDY).tokens


def _recomputed(session, ids: list[int], n: int) -> list[int]:
    """Greedy without any KV cache: the whole sequence through the graph at every step."""
    from gpt2_edge.runtime.generation.evaluate import window_logits

    seq, out = list(ids), []
    for _ in range(n):
        nxt = int(window_logits(session, np.asarray(seq, np.int64))[-1].argmax())
        out.append(nxt)
        seq.append(nxt)
    return out


@pytest.mark.export
def test_cached_decoding_equals_recomputation(shipped: Path, prompts: list[str]) -> None:
    from gpt2_edge.exporter.checks.quality import greedy_tokens
    from gpt2_edge.runtime.contract.bundle import load_bundle
    from gpt2_edge.runtime.graph.session import Session

    session = Session(load_bundle(shipped), provider="cpu", threads=1)
    for prompt in prompts:
        ids = [int(i) for i in session_ids(shipped, prompt)]
        cached = greedy_tokens(session, ids, NEW_TOKENS)
        assert cached == _recomputed(session, ids, NEW_TOKENS), prompt


def session_ids(bundle: Path, prompt: str) -> list[int]:
    from gpt2_edge.runtime.generation.evaluate import encode

    return encode(bundle / "tokenizer.json", prompt).tolist()
