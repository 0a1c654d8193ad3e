"""The per-row int8 quantizer in its fewer-op form computes exactly what its first form computed.

``per_row.per_row_activations`` writes each quantizer as ``... Div, QuantizeLinear(1, 128)`` (not
``Div, Round, Add 128, Cast``) and each product as one ``MatMulIntegerToFloat`` taking the row
scale (not ``MatMulInteger, Cast, Mul, Mul``). Both are claimed bit for bit: these tests feed the
inputs where a rounding or scaling difference would show (exact halves, rows of zeros, subnormal
rows, a row 10^6 times larger than its neighbours, magnitudes of 1e30) and compare every form
against the first one, bit for bit, and each row alone against the same row in a batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

K, N = 64, 48
FORMS = {  # (quantize_linear, fused_product) of per_row_activations
    "shipped": (True, True),
    "QuantizeLinear only": (True, False),
    "MatMulIntegerToFloat only": (False, True),
}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> bytes:
    """A (B, T, K) x (K, N) MatMul with a bias through onnxruntime's dynamic int8, per tensor."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(7)
    w = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),
            helper.make_node("Add", ["mm", "bias"], ["y"], name="bias"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", N])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("int8_ops")
    onnx.save(model, str(folder / "f.onnx"))
    quantize_dynamic(
        folder / "f.onnx", folder / "q.onnx", weight_type=QuantType.QInt8, per_channel=True
    )
    return (folder / "q.onnx").read_bytes()


def _form(quantized: bytes, quantize_linear: bool, fused_product: bool):
    import onnx
    import onnxruntime as ort
    from gpt2_edge.exporter.edits.per_row import per_row_activations

    model = onnx.load_from_string(quantized)
    assert per_row_activations(model, quantize_linear, fused_product) == 1
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the runtime
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return model, lambda x: session.run(None, {"x": x})[0]


def _hostile_rows() -> dict[str, np.ndarray]:
    """(B, T, K) inputs, each one a way a quantizer's rounding or scaling could differ."""
    rng = np.random.default_rng(3)
    inv127 = np.float32(1 / 127)
    ties = []
    for amax in (127.0, 254.0, 3.0, 0.37):  # exact halves of x / s for several scales
        s = max(np.float32(amax) * inv127, np.finfo(np.float32).tiny)
        k = np.arange(-127, 127, dtype=np.float32) + np.float32(0.5)
        row = (k * s).astype(np.float32)
        row = row[(row / s) == k]  # keep the values whose quotient is an exact half
        row = np.resize(row, K)
        row[0] = np.float32(amax)  # the row's max |x|, so that its scale is s
        ties.append(row)
    mixed = rng.standard_normal((4, 3, K)).astype(np.float32)
    mixed[1, 2] *= 1e6  # one row a million times larger than its neighbours
    mixed[2, 0] = 0.0  # an all-zero row (a padding row can be one)
    mixed[3, 1] = np.finfo(np.float32).tiny * rng.standard_normal(K).astype(np.float32)
    one_hot = np.zeros((1, 2, K), np.float32)
    one_hot[0, 0, 5], one_hot[0, 1, 9] = -2.5, 1e-30  # one value per row, negative max
    huge = np.full((1, 1, K), 1e30, np.float32)  # large, yet its products stay finite
    huge[0, 0, ::2] *= -1
    return {
        "exact halves": np.stack(ties)[:, None, :],
        "mixed magnitudes, zero and subnormal rows": mixed,
        "one value per row": one_hot,
        "1e30 magnitudes": huge,
        "random prompt": rng.standard_normal((2, 7, K)).astype(np.float32) * 3,
    }


def test_exact_halves_are_really_present() -> None:
    """The tie input holds at least 200 quotients x / s that are exactly k + 0.5."""
    x = _hostile_rows()["exact halves"][:, 0, :]
    s = np.maximum(np.abs(x).max(-1, keepdims=True) * np.float32(1 / 127), 1e-38)
    q = (x / s.astype(np.float32)).astype(np.float32)
    assert ((q - np.floor(q)) == 0.5).sum() >= 200


@pytest.mark.parametrize("name", list(FORMS))
@pytest.mark.parametrize("case", list(_hostile_rows()))
def test_fewer_op_forms_are_bit_for_bit_the_first_form(
    quantized: bytes, name: str, case: str
) -> None:
    x = _hostile_rows()[case]
    _, first = _form(quantized, False, False)
    _, form = _form(quantized, *FORMS[name])
    expected, got = first(x), form(x)
    np.testing.assert_array_equal(got, expected)
    finite = np.isfinite(x).all(-1)
    assert np.isfinite(got[finite]).all()
    # each row alone gives the same bits as inside the batch (batch invariance)
    alone = np.stack([form(x[b : b + 1, t : t + 1])[0, 0] for b, t in np.ndindex(x.shape[:2])])
    np.testing.assert_array_equal(alone, got.reshape(-1, N))


def test_quantize_linear_rounds_like_round_add_cast() -> None:
    """The ops alone: QuantizeLinear(y, 1, 128) == Cast(Round(y) + 128) for every y in range."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    y = np.arange(-127.0, 127.0 + 1e-3, 0.25, dtype=np.float32)
    y = np.concatenate([y, np.nextafter(y, np.float32(200)), np.nextafter(y, np.float32(-200))])
    y = y[np.abs(y) <= 127]
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["y", "one", "zp"], ["q"]),
            helper.make_node("Round", ["y"], ["r"]),
            helper.make_node("Add", ["r", "c128"], ["a"]),
            helper.make_node("Cast", ["a"], ["c"], to=TensorProto.UINT8),
        ],
        "g",
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info(o, TensorProto.UINT8, ["n"]) for o in ("q", "c")],
        [
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(128, np.uint8), "zp"),
            numpy_helper.from_array(np.array(128.0, np.float32), "c128"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    q, c = session.run(None, {"y": y})
    np.testing.assert_array_equal(q, c)
    assert q[y == 0.5][0] == 128 and q[y == 1.5][0] == 130 and q[y == -0.5][0] == 128  # to even


def test_shipped_form_has_seven_ops_a_projection(quantized: bytes) -> None:
    """Abs, ReduceMax, Mul, Max, Div, QuantizeLinear, MatMulIntegerToFloat (+ the bias Add)."""
    model, _ = _form(quantized, *FORMS["shipped"])
    ops = sorted(n.op_type for n in model.graph.node)
    assert ops == sorted(
        ["Abs", "ReduceMax", "Mul", "Max", "Div", "QuantizeLinear", "MatMulIntegerToFloat", "Add"]
    )
    fused = next(n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat")
    row_scale = next(n for n in model.graph.node if n.op_type == "Max").output[0]
    assert fused.input[2] == row_scale  # the A scale is the (B, T, 1) row scale
    first, _ = _form(quantized, False, False)
    assert len(first.graph.node) == len(model.graph.node) + 5  # 12 ops + bias before


def test_shared_quantized_tensor_keeps_the_unfused_product(quantized: bytes) -> None:
    """A product whose int32 output has a second reader is left as MatMulInteger, Cast, Muls."""
    import onnx
    from gpt2_edge.exporter.edits.per_row import per_row_activations
    from onnx import TensorProto, helper

    model = onnx.load_from_string(quantized)
    mmi = next(n for n in model.graph.node if n.op_type == "MatMulInteger")
    model.graph.node.append(helper.make_node("Identity", [mmi.output[0]], ["raw"]))
    model.graph.output.append(helper.make_tensor_value_info("raw", TensorProto.INT32, None))
    per_row_activations(model)
    ops = [n.op_type for n in model.graph.node]
    assert "MatMulIntegerToFloat" not in ops and ops.count("MatMulInteger") == 1
    assert "QuantizeLinear" in ops


@pytest.mark.parametrize(
    "form, expected",
    [
        ((False, False), {"activation quantization": 8, "projections": 1, "dequantization": 3}),
        ((True, True), {"activation quantization": 6, "projections": 1}),
    ],
)
def test_profile_groups_each_op_of_a_projection(
    quantized: bytes, form: tuple[bool, bool], expected: dict[str, int]
) -> None:
    """benchmarks/profile_decode.py puts every op of both forms in the category it belongs to."""
    import importlib.util
    from collections import Counter

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "profile_decode.py"
    spec = importlib.util.spec_from_file_location("profile_decode", path)
    assert spec is not None and spec.loader is not None
    profile_decode = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile_decode)
    model, _ = _form(quantized, *form)
    assert Counter(profile_decode.classify(model).values()) == {**expected, "projection bias": 1}
