"""int4 / weight-only rewrite, fp16, the quality gate, and int8 greedy invariances."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from gpt2_edge.exporter.errors import ExportError
from gpt2_edge.exporter.quality import check_gate

PROMPTS = ["The history of the city", "In the early 20th century , the", "He was born in"]


def test_gate_passes_below_and_raises_above_with_the_figure() -> None:
    assert check_gate(100.0, 104.0) == pytest.approx(0.04)
    with pytest.raises(ExportError, match=r"6\.00% higher .* \(100\.000 -> 106\.000\)"):
        check_gate(100.0, 106.0)
    with pytest.raises(ExportError, match="more than the allowed 1.00%"):
        check_gate(50.0, 51.0, max_increase=0.01)
    with pytest.raises(ExportError, match=r"^The float16 export has 6\.00% higher .* on wiki\.txt"):
        check_gate(100.0, 106.0, 0.05, "The float16 export", "wiki.txt")


def _copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.onnx*"))
    return dst


def _session(folder: Path):
    from gpt2_edge.runtime.bundle import load_bundle
    from gpt2_edge.runtime.session import Session

    return Session(load_bundle(folder), provider="cpu", threads=1)


def _full_logits(session, ids: list[int]) -> np.ndarray:
    from gpt2_edge.runtime.evaluate import window_logits

    return window_logits(session, np.asarray(ids, dtype=np.int64)).astype(np.float32)


IDS = [464, 2068, 286, 262, 1748, 373, 257, 1295, 287, 262, 1903, 1160, 400, 4289, 837, 262]


@pytest.mark.export
def test_gemm_to_matmul_and_constant_head_are_exact(tiny_optimum_export: Path, tmp_path: Path):
    import onnx
    from gpt2_edge.exporter.int4 import gemm_to_matmul, materialize_lm_head

    model = onnx.load(str(tiny_optimum_export / "model.onnx"))
    assert gemm_to_matmul(model) == 8  # 2 layers x (c_attn, c_proj, c_fc, mlp c_proj)
    assert materialize_lm_head(model) is not None
    assert "Gemm" not in {n.op_type for n in model.graph.node}
    out = _copy_bundle(tiny_optimum_export, tmp_path / "rewritten")
    onnx.save(model, str(out / "model.onnx"))
    ref = _full_logits(_session(tiny_optimum_export), IDS)
    got = _full_logits(_session(out), IDS)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.export
def test_int4_quantizes_every_projection_and_shrinks(tiny_optimum_export: Path, tmp_path: Path):
    import onnx
    from gpt2_edge.exporter.int4 import Int4Settings, quantize_file

    out = _copy_bundle(tiny_optimum_export, tmp_path / "int4")
    report = quantize_file(
        tiny_optimum_export / "model.onnx", out / "model.onnx", Int4Settings(block_size=32)
    )
    ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
    assert ops.count("MatMulNBits") == 2 * 4 + 1  # every projection and the LM head
    assert ops.count("GatherBlockQuantized") == 1 and "Gemm" not in ops
    assert report["embedding_shared"]
    fp32_size = (tiny_optimum_export / "model.onnx").stat().st_size
    assert (out / "model.onnx").stat().st_size <= 0.25 * fp32_size
    ref = _full_logits(_session(tiny_optimum_export), IDS)
    got = _full_logits(_session(out), IDS)
    assert np.isfinite(got).all() and np.abs(got - ref).max() < 1.0  # random weights: rough


@pytest.mark.export
def test_fp16_runs_on_cpu_with_fp16_cache(tiny_optimum_export: Path, tmp_path: Path):
    from gpt2_edge.exporter.fp16 import convert_file
    from gpt2_edge.exporter.quality import greedy_tokens

    out = _copy_bundle(tiny_optimum_export, tmp_path / "fp16")
    settings = convert_file(tiny_optimum_export / "model.onnx", out / "model.onnx")
    assert settings["kv_dtype"] == "float16" and settings["logits_dtype"] == "float32"
    ref, half = _session(tiny_optimum_export), _session(out)
    assert half.kv_dtype == np.float16
    np.testing.assert_allclose(_full_logits(half, IDS), _full_logits(ref, IDS), atol=2e-2)
    assert greedy_tokens(half, IDS[:5], 12) == greedy_tokens(ref, IDS[:5], 12)


@pytest.fixture(scope="module")
def fixture_int8(trained_fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained fixture exported fp32, then 8-bit weight-only with a shared tied weight."""
    pytest.importorskip("optimum.exporters.onnx")
    from gpt2_edge.exporter.int4 import Int4Settings, quantize_file
    from optimum.exporters.onnx import main_export

    work = tmp_path_factory.mktemp("int8")
    main_export(str(trained_fixture_dir), output=work / "fp32", task="text-generation-with-past")
    out = _copy_bundle(work / "fp32", work / "int8")
    quantize_file(work / "fp32" / "model.onnx", out / "model.onnx", Int4Settings(bits=8))
    return out


def _no_cache_greedy(session, ids: list[int], n: int) -> list[int]:
    """Greedy by recomputing the whole sequence every step: no KV cache at all."""
    seq, out = list(ids), []
    for _ in range(n):
        nxt = int(_full_logits(session, seq)[-1].argmax())
        out.append(nxt)
        seq.append(nxt)
    return out


@pytest.mark.export
def test_int8_greedy_with_cache_equals_without(fixture_int8: Path) -> None:
    from gpt2_edge.exporter.quality import greedy_tokens
    from gpt2_edge.runtime.evaluate import encode

    session = _session(fixture_int8)
    for prompt in PROMPTS:
        ids = encode(fixture_int8 / "tokenizer.json", prompt).tolist()
        assert greedy_tokens(session, ids, 16) == _no_cache_greedy(session, ids, 16), prompt


@pytest.mark.export
def test_int8_greedy_alone_equals_in_a_batch(fixture_int8: Path) -> None:
    from gpt2_edge.runtime.api import load

    gen = load(fixture_int8, provider="cpu", threads=1)
    settings = dict(max_new_tokens=16, temperature=0.0, ignore_eos=True)
    batch = gen.generate(PROMPTS, **settings)
    for prompt, in_batch in zip(PROMPTS, batch, strict=True):
        assert gen.generate(prompt, **settings).tokens == in_batch.tokens, prompt
