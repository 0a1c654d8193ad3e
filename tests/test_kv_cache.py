"""The float16 KV cache of quantized bundles (``exporter/edits/kv_cache.py``), as the exporter
ships it:
the default ``--quantize`` export of the WikiText-2-trained fixture against the same recipe with
``--kv-cache float32``, at long context; and ``--kv-cache`` errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from test_export_errors import assert_nothing_left, assert_one_sentence, run_cli

needs_export = pytest.mark.skipif(
    importlib.util.find_spec("optimum") is None, reason="needs the export extra"
)


@pytest.fixture(scope="module")
def int8_pair(trained_fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The trained fixture exported with the default flags and with a float32 cache."""
    from gpt2_edge.exporter.pipeline import export_bundle
    from gpt2_edge.runtime import load

    root = tmp_path_factory.mktemp("kv")
    shipped = export_bundle(str(trained_fixture_dir), root / "default", quantize=True,
                            progress=False)  # fmt: skip
    wide = export_bundle(str(trained_fixture_dir), root / "kv32", quantize=True,
                         kv_cache="float32", progress=False)  # fmt: skip
    return load(str(shipped), provider="cpu", threads=2), load(str(wide), provider="cpu", threads=2)


def _long_ids(wikitext_dir: Path, tokenizer, count: int, offset: int) -> np.ndarray:
    text = (wikitext_dir / "test.txt").read_text(encoding="utf-8")[: 8 * (offset + count)]
    return tokenizer.encode(text)[offset : offset + count]


@needs_export
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


@needs_export
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


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--kv-cache", "int3", "--quantize"], ["unknown --kv-cache", "auto"]),
        (["--kv-cache", "float16"], ["--quantize", "float32"]),
        (["--kv-cache", "float32", "--dtype", "fp16"], ["fp16", "float16"]),
        (["--kv-cache", "float16", "--quantize", "--graph", "optimum"], ["fused"]),
    ],
    ids=["unknown", "fp32-weights", "fp16-weights", "optimum-graph"],
)
def test_kv_cache_flags_that_cannot_be_honoured(
    tmp_path: Path, flags: list[str], words: list[str]
) -> None:
    out = tmp_path / "out"
    result = run_cli(str(tmp_path / "no-such-checkpoint"), "-o", str(out), *flags)
    assert_one_sentence(result, *words)
    assert_nothing_left(out)
