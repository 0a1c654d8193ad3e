"""int4 / weight-only rewrite, fp16, the quality gate, and int8 greedy invariances."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from gpt2_edge.exporter.checks.quality import check_gate
from gpt2_edge.exporter.errors import ExportError

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
    from gpt2_edge.runtime.contract.bundle import load_bundle
    from gpt2_edge.runtime.graph.session import Session

    return Session(load_bundle(folder), provider="cpu", threads=1)


def _full_logits(session, ids: list[int]) -> np.ndarray:
    from gpt2_edge.runtime.generation.evaluate import window_logits

    return window_logits(session, np.asarray(ids, dtype=np.int64)).astype(np.float32)


IDS = [464, 2068, 286, 262, 1748, 373, 257, 1295, 287, 262, 1903, 1160, 400, 4289, 837, 262]


@pytest.mark.export
@pytest.mark.usefixtures("gpt2_vocabulary")  # IDS are GPT-2's
def test_gemm_to_matmul_and_constant_head_are_exact(tiny_optimum_export: Path, tmp_path: Path):
    import onnx
    from gpt2_edge.exporter.edits.rewrites import gemm_to_matmul, materialize_lm_head

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
@pytest.mark.usefixtures("gpt2_vocabulary")  # its embedding's size
def test_int4_quantizes_every_projection_and_shrinks(tiny_optimum_export: Path, tmp_path: Path):
    import onnx
    from gpt2_edge.exporter.recipes.nbits import NBitsSettings, quantize_file

    out = _copy_bundle(tiny_optimum_export, tmp_path / "int4")
    report = quantize_file(
        tiny_optimum_export / "model.onnx", out / "model.onnx", NBitsSettings(block_size=32)
    )
    ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
    assert ops.count("MatMulNBits") == 2 * 4 + 1  # every projection and the LM head
    assert ops.count("GatherBlockQuantized") == 1 and "Gemm" not in ops
    assert report["embedding"].startswith("shares")
    fp32_size = (tiny_optimum_export / "model.onnx").stat().st_size
    assert (out / "model.onnx").stat().st_size <= 0.25 * fp32_size
    ref = _full_logits(_session(tiny_optimum_export), IDS)
    got = _full_logits(_session(out), IDS)
    assert np.isfinite(got).all() and np.abs(got - ref).max() < 1.0  # random weights: rough


@pytest.mark.export
@pytest.mark.usefixtures("gpt2_vocabulary")  # IDS are GPT-2's
def test_fp16_runs_on_cpu_with_fp16_cache(tiny_optimum_export: Path, tmp_path: Path):
    from gpt2_edge.exporter.checks.quality import greedy_tokens
    from gpt2_edge.exporter.recipes.fp16 import convert_file

    out = _copy_bundle(tiny_optimum_export, tmp_path / "fp16")
    settings = convert_file(tiny_optimum_export / "model.onnx", out / "model.onnx")
    assert settings["kv_dtype"] == "float16" and settings["logits_dtype"] == "float32"
    ref, half = _session(tiny_optimum_export), _session(out)
    assert half.kv_dtype == np.float16
    np.testing.assert_allclose(_full_logits(half, IDS), _full_logits(ref, IDS), atol=2e-2)
    assert greedy_tokens(half, IDS[:5], 12) == greedy_tokens(ref, IDS[:5], 12)


def _one_matmul_int8(tmp_path: Path, per_row: bool):
    """A (B, T, 64) x (64, 32) MatMul through onnxruntime's dynamic int8, optionally per row."""
    import onnx
    import onnxruntime as ort
    from gpt2_edge.exporter.edits.per_row import per_row_activations
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    w = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", 32])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    tmp_path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(tmp_path / "f.onnx"))
    quantize_dynamic(tmp_path / "f.onnx", tmp_path / "q.onnx", weight_type=QuantType.QInt8)
    q = onnx.load(str(tmp_path / "q.onnx"))
    if per_row:
        assert per_row_activations(q) == 1
    session = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0], w


@pytest.mark.parametrize("per_row", [False, True])
def test_per_row_activations_make_rows_independent(tmp_path: Path, per_row: bool) -> None:
    run, w = _one_matmul_int8(tmp_path, per_row)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 64)).astype(np.float32)
    x[3] *= 50  # one row with a much larger range, as padding or another user's prompt can be
    together = run(x)
    alone = np.stack([run(x[i : i + 1])[0] for i in range(4)])
    token_by_token = np.concatenate([run(x[:, t : t + 1]) for t in range(5)], axis=1)
    if per_row:  # bit for bit, whatever shares the tensor
        np.testing.assert_array_equal(together, alone)
        np.testing.assert_array_equal(together, token_by_token)
        np.testing.assert_allclose(together, x @ w, rtol=0.05, atol=0.05 * np.abs(x @ w).max())
    else:  # one scale per tensor: the large row coarsens the others (why the edit exists)
        assert not np.array_equal(together[:3], alone[:3])


def test_per_row_activations_handles_zero_rows(tmp_path: Path) -> None:
    run, _ = _one_matmul_int8(tmp_path, per_row=True)
    out = run(np.zeros((2, 3, 64), np.float32))
    assert np.isfinite(out).all() and not out.any()
