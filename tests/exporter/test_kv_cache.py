"""The float16 KV cache of quantized bundles (``exporter/edits/kv_cache.py``), as the exporter
ships it: the default ``--quantize`` export of the WikiText-2-trained fixture against the same
recipe with ``--kv-cache float32``, at long context. (``--kv-cache`` errors:
test_export_errors.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def int8_pair(shipped_bundles, trained_fixture_dir: Path, tmp_path_factory):
    """The shipped int8 bundle (gpt2-export --quantize) of the trained fixture, and the same
    recipe with a float32 cache (--kv-cache float32)."""
    from gpt2_edge.exporter.pipeline import export_bundle
    from gpt2_edge.runtime import load

    out = tmp_path_factory.mktemp("kv") / "kv32"
    wide = export_bundle(
        str(trained_fixture_dir), out, quantize=True, kv_cache="float32", verify=False,
        progress=False,
    )  # fmt: skip
    shipped = shipped_bundles["int8"]
    return load(str(shipped), provider="cpu", threads=2), load(str(wide), provider="cpu", threads=2)


def _long_ids(wikitext_dir: Path, tokenizer, count: int, offset: int) -> np.ndarray:
    text = (wikitext_dir / "test.txt").read_text(encoding="utf-8")[: 8 * (offset + count)]
    return tokenizer.encode(text)[offset : offset + count]


@pytest.mark.export
def test_the_default_int8_export_keeps_its_cache_in_float16(int8_pair) -> None:
    shipped, wide = int8_pair
    manifest = shipped.session.bundle.manifest
    assert manifest.architecture.kv_dtype == "float16"
    assert manifest.precision["kv_dtype"] == "float16"
    assert shipped.session.kv_dtype == np.float16 and wide.session.kv_dtype == np.float32
    past = {i.name: i.type for i in shipped.session.ort.get_inputs()}
    assert past["past_key_values.0.key"] == "tensor(float16)"
    assert wide.session.bundle.manifest.architecture.kv_dtype == "float32"


@pytest.mark.export
def test_float16_cache_matches_float32_at_long_context(int8_pair, wikitext_dir: Path) -> None:
    """Perplexity over 1,024-token windows within 0.1 %, and the same greedy tokens after an
    880-token prompt (prefilled in chunks), as the float32 cache gives."""
    from gpt2_edge.runtime.generation.evaluate import perplexity

    shipped, wide = int8_pair
    ids = _long_ids(wikitext_dir, shipped.tokenizer, 3000, 0)
    ppl16 = perplexity(shipped.session, ids, 1024, 512).perplexity
    ppl32 = perplexity(wide.session, ids, 1024, 512).perplexity
    assert abs(ppl16 / ppl32 - 1) < 1e-3, (ppl16, ppl32)
    prompt = shipped.tokenizer.decode(_long_ids(wikitext_dir, shipped.tokenizer, 880, 4000))
    settings = {"max_new_tokens": 24, "temperature": 0, "ignore_eos": True}
    a, b = shipped.generate(prompt, **settings), wide.generate(prompt, **settings)
    assert a.prompt_tokens > 800
    assert list(a.tokens) == list(b.tokens)
