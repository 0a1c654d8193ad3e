"""The CUDA provider on a real GPU: greedy tokens and perplexity on CUDA against the CPU.

Skipped where onnxruntime has no CUDA provider (CI, most laptops). On a GPU machine either the
shipped bundles are exported from the trained fixture (``shipped_bundles``, with the export
extra), or ``GPT2_EDGE_CUDA_BUNDLES`` names a folder holding ``fixture-fp32``, ``fixture-fp16``,
``fixture-int8`` and ``fixture-optimum`` (exported elsewhere with the default graph, ``--dtype
fp16``, ``--quantize`` and ``--graph optimum``), for GPU machines that only have the light
install.

CPU greedy output equals transformers' (test_parity.py), so CUDA equal to CPU is CUDA equal to
transformers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from gpt2_edge.runtime import load
from gpt2_edge.runtime.decoders.shared import SharedKVDecoder
from gpt2_edge.runtime.generation.evaluate import perplexity
from gpt2_edge.runtime.graph.session import FP32_ATTENTION_ON_CUDA

if "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip("onnxruntime has no CUDA provider here", allow_module_level=True)

PROMPTS = [
    "The history of the city begins",
    "In 1998 the band released",
    "Valkyria Chronicles III is a tactical role @-@ playing game developed by Sega",
]
NEW = 32
# The bundle kinds these tests use -> the shipped bundle of each (tests/support/shipped.py).
SHIPPED_AS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "optimum": "optimum-fp32"}


@pytest.fixture(scope="module")
def bundles(request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """``bundles(kind)``: the folder of that bundle kind."""
    given = os.environ.get("GPT2_EDGE_CUDA_BUNDLES")
    if given:
        return lambda kind: Path(given) / f"fixture-{kind}"
    shipped = request.getfixturevalue("shipped_bundles")
    return lambda kind: shipped[SHIPPED_AS[kind]]


def _greedy(folder: Path, provider: str, prompts: list[str] | str) -> list[list[int]]:
    gen = load(folder, provider=provider)
    prompts = [prompts] if isinstance(prompts, str) else prompts
    results = gen.generate_batch(prompts, max_new_tokens=NEW, temperature=0)
    return [r.tokens for r in results]


@pytest.mark.parametrize("kind", ["fp32", "optimum"])
def test_fp32_greedy_on_cuda_equals_cpu(bundles: Callable[[str], Path], kind: str) -> None:
    folder = bundles(kind)
    for prompt in PROMPTS:
        assert _greedy(folder, "cuda", prompt) == _greedy(folder, "cpu", prompt), prompt
    assert _greedy(folder, "cuda", PROMPTS) == _greedy(folder, "cpu", PROMPTS)


def test_fused_kv_cache_lives_where_attention_runs(bundles: Callable[[str], Path]) -> None:
    fp16 = load(bundles("fp16"), provider="cuda")
    assert fp16.session.provider == "cuda" and fp16.session.shared_kv
    decoder = SharedKVDecoder(fp16.session, pad_id=0, capacity=64)
    logits = decoder.prefill([np.array([464, 3290, 286]), np.array([818])])
    assert decoder._buffers is not None
    assert {b.device_name() for b in decoder._buffers.values} == {"cuda"}
    assert logits.shape == (2, fp16.session.arch.vocab_size) and np.isfinite(logits).all()
    # float32 attention has no CUDA kernel: its buffers stay with the CPU kernel, and it says so
    fp32 = load(bundles("fp32"), provider="cuda")
    assert fp32.session.kv_device == "cpu" and FP32_ATTENTION_ON_CUDA in fp32.notices


def _perplexity(folder: Path, provider: str, text: str) -> float:
    gen = load(folder, provider=provider)
    ids = gen.encode(text)
    return perplexity(gen.session, ids, context=256, stride=128).perplexity


def test_fp16_on_cuda_keeps_quality(bundles: Callable[[str], Path], wikitext_dir: Path) -> None:
    text = (wikitext_dir / "test.txt").read_text(encoding="utf-8")[:20_000]
    fp32 = _perplexity(bundles("fp32"), "cpu", text)
    fp16 = _perplexity(bundles("fp16"), "cuda", text)
    assert abs(fp16 / fp32 - 1) < 0.01
    agree = [
        np.mean(np.array(a[:NEW]) == np.array(b[:NEW]))
        for a, b in zip(
            _greedy(bundles("fp16"), "cuda", PROMPTS),
            _greedy(bundles("fp32"), "cpu", PROMPTS),
            strict=True,
        )
    ]
    assert min(agree) >= 0.9, agree


def test_int8_on_cuda_runs_and_says_it_is_for_cpus(bundles: Callable[[str], Path]) -> None:
    gen = load(bundles("int8"), provider="cuda")
    assert any("int8" in n for n in gen.notices)
    cuda = gen.generate(PROMPTS[0], max_new_tokens=NEW, temperature=0).tokens
    cpu = _greedy(bundles("int8"), "cpu", PROMPTS[0])[0]
    assert np.mean(np.array(cuda) == np.array(cpu)) >= 0.9
