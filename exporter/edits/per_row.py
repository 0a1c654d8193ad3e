"""Per-row activation quantization: an int8 graph whose rows do not depend on each other.

onnxruntime's dynamic int8 (which Optimum's ``ORTQuantizer`` writes) quantizes each activation
tensor with one scale, so a row's result depends on the rest of its batch;
:func:`per_row_activations` rewrites each quantizer to give every row its own scale. No standard
tool does this, hence the edit.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .rewrites import MS_DOMAIN, attribute


def per_row_activations(
    model: onnx.ModelProto, quantize_linear: bool = True, fused_product: bool = True
) -> int:
    """Quantize each activation row on its own: replaces every ``DynamicQuantizeLinear``.

    ``DynamicQuantizeLinear`` takes one scale and zero point for the whole (B, T, K) tensor, so a
    row's int8 values depend on every other row of the batch (padding and other users' prompts
    included) and on whether a prompt is fed at once or token by token. Here each row gets its own
    symmetric scale ``max|x| / 127`` and the fixed zero point 128 (uint8, what the weights'
    ``MatMulInteger`` kernels take on every CPU), and the row's scale is applied after the
    integer product. The integer product is exact, so each row's output depends on that row only.
    No standard tool quantizes activations per row, hence this edit.

    Each quantizer is ``Abs, ReduceMax, Mul(1/127), Max(tiny), Div`` then the rounding; at batch 1
    decoding every op is mostly per-kernel overhead on a 768-float row, so the default writes the
    fewest ops that give the same bits (``tests/exporter/test_int8_ops.py``; the speed of each form
    is in ``benchmarks/int8_recipes.py``, the kernels per step in ``benchmarks/profile_decode.py``).

    Args:
        model: a graph quantized by ORTQuantizer's dynamic int8, edited in place.
        quantize_linear: round with one ``QuantizeLinear(scale 1, zero point 128)`` (default
            True): half to even plus 128, as ``Round, Add 128, Cast`` (the False form) do, in one
            op instead of three.
        fused_product: one ``MatMulIntegerToFloat(q, W, row scale, column scale)`` per product
            (default True): onnxruntime computes ``float(q·W) * column scale`` in the GEMM, then
            multiplies by the (B, T, 1) row scale, the same float operations as the False form
            ``Mul(Mul(Cast(MatMulInteger), column scale), row scale)``, in one op instead of four.
            The bias stays a separate ``Add``: onnxruntime adds a bias input before a non-scalar
            A scale. (The False form puts the column scale first on purpose: onnxruntime's own
            fusion of ``Cast(i32) * (x_scale * w_scale)`` gave wrong results with a per-row scale,
            logits off by 0.43 on the trained fixture.)

    Returns:
        The number of tensors rewritten.
    """
    graph = model.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(1 / 127, np.float32), "per_row_inv127"),
            numpy_helper.from_array(
                np.array(np.finfo(np.float32).tiny, np.float32), "per_row_tiny"
            ),
        ]
    )
    if quantize_linear:
        graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "per_row_1"))
    else:
        shift = numpy_helper.from_array(np.array(128.0, np.float32), "per_row_128")
        graph.initializer.append(shift)
    rows = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear" and _feeds_a(graph, n)]
    row_scales = {n.output[1] for n in rows}
    # Mul(x_scale, w_scale) -> its output name: (x_scale, w_scale)
    scale_products = {
        n.output[0]: (n.input[0], n.input[1])
        for n in graph.node
        if n.op_type == "Mul" and n.input[0] in row_scales
    }
    fused = _fused_products(graph, scale_products) if fused_product else {}
    dropped = {n.output[0] for mmi, cast, _ in fused.values() for n in (mmi, cast)}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "DynamicQuantizeLinear" and node.output[1] in row_scales:
            nodes.extend(_row_quantize_nodes(model, node, quantize_linear))
        elif node.output[0] in scale_products or node.output[0] in dropped:
            continue  # folded into the rewritten dequantization below
        elif node.output[0] in fused:
            nodes.append(fused[node.output[0]][2])
        elif node.op_type == "Mul" and node.input[1] in scale_products:
            x_scale, w_scale = scale_products[node.input[1]]
            column = f"{node.output[0]}_per_column"
            nodes.append(
                helper.make_node("Mul", [node.input[0], w_scale], [column], name=node.name)
            )
            nodes.append(
                helper.make_node(
                    "Mul", [column, x_scale], [node.output[0]], name=f"{node.name}_per_row"
                )
            )
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale types of the replaced tensors; onnxruntime infers its own
    if fused and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(row_scales)


def _fused_products(
    graph: onnx.GraphProto, scale_products: dict[str, tuple[str, str]]
) -> dict[str, tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto]]:
    """``Mul(Cast(MatMulInteger(q, W, zq, zw)), x_scale * w_scale)`` chains to fuse.

    Keyed by the final ``Mul``'s output name (not ``id(node)``: protobuf's node wrappers are
    transient, their ids reused): (the MatMulInteger, the Cast, the replacing
    ``MatMulIntegerToFloat``). A chain whose intermediate tensors have other readers is left alone.
    """
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    fused = {}
    for mul in graph.node:
        if mul.op_type != "Mul" or mul.input[1] not in scale_products:
            continue
        cast = producers.get(mul.input[0])
        if cast is None or cast.op_type != "Cast":
            continue
        mmi = producers.get(cast.input[0])
        if mmi is None or mmi.op_type != "MatMulInteger" or len(mmi.input) < 4:
            continue
        if attribute(cast, "to", 0) != TensorProto.FLOAT:
            continue
        if readers.get(cast.output[0]) != 1 or readers.get(mmi.output[0]) != 1:
            continue
        x_scale, w_scale = scale_products[mul.input[1]]
        q, weight, q_zero, w_zero = mmi.input[:4]
        node = helper.make_node(
            "MatMulIntegerToFloat",
            [q, weight, x_scale, w_scale, q_zero, w_zero],
            [mul.output[0]],
            name=f"{mmi.name}_ToFloat",
            domain=MS_DOMAIN,
        )
        fused[mul.output[0]] = (mmi, cast, node)
    return fused


def _feeds_a(graph: onnx.GraphProto, dql: onnx.NodeProto) -> bool:
    """Whether the quantized tensor is only ever the left (activation) input of MatMulInteger."""
    uses = [(n, i) for n in graph.node for i, name in enumerate(n.input) if name == dql.output[0]]
    return bool(uses) and all(n.op_type == "MatMulInteger" and i == 0 for n, i in uses)


def _row_quantize_nodes(
    model: onnx.ModelProto, dql: onnx.NodeProto, quantize_linear: bool
) -> list[onnx.NodeProto]:
    """``x -> (q, scale, zero_point)`` per row of the last axis: q = round(x / s) + 128."""
    x, (q, scale, zero_point) = dql.input[0], dql.output
    p = q  # a unique prefix: the quantized tensor's name
    model.graph.initializer.append(numpy_helper.from_array(np.array(128, np.uint8), zero_point))
    make = helper.make_node
    if _opset(model) >= 18:  # ReduceMax's axes became an input in opset 18
        if not any(t.name == "per_row_axes" for t in model.graph.initializer):
            model.graph.initializer.append(
                numpy_helper.from_array(np.array([-1], np.int64), "per_row_axes")
            )
        reduce = make("ReduceMax", [f"{p}_abs", "per_row_axes"], [f"{p}_amax"], keepdims=1)
    else:
        reduce = make("ReduceMax", [f"{p}_abs"], [f"{p}_amax"], axes=[-1], keepdims=1)
    reduce.name = f"{p}_Max"
    scaled = [
        make("Abs", [x], [f"{p}_abs"], name=f"{p}_Abs"),
        reduce,
        make("Mul", [f"{p}_amax", "per_row_inv127"], [f"{p}_s"], name=f"{p}_Scale"),
        # an all-zero row gets the smallest scale instead of a division by zero
        make("Max", [f"{p}_s", "per_row_tiny"], [scale], name=f"{p}_NonZero"),
        make("Div", [x, scale], [f"{p}_scaled"], name=f"{p}_Div"),
    ]
    if quantize_linear:  # x / 1 is exact: only the rounding and the shift remain
        return [
            *scaled,
            make(
                "QuantizeLinear",
                [f"{p}_scaled", "per_row_1", zero_point],
                [q],
                name=f"{p}_Quantize",
            ),
        ]
    return [
        *scaled,
        make("Round", [f"{p}_scaled"], [f"{p}_rounded"], name=f"{p}_Round"),
        make("Add", [f"{p}_rounded", "per_row_128"], [f"{p}_shifted"], name=f"{p}_Shift"),
        make("Cast", [f"{p}_shifted"], [q], to=TensorProto.UINT8, name=f"{p}_Cast"),
    ]


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
