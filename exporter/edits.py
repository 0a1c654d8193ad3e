"""Graph edits: small rewrites of an ONNX model in place, each one numerically neutral or stated.

The precision recipes (``recipes/``) are built from these:

- :func:`gemm_to_matmul`: Optimum's Conv1D ``Gemm`` nodes become ``MatMul`` + ``Add`` (exact), so
  that onnxruntime's ``MatMulNBitsQuantizer`` sees them;
- :func:`materialize_lm_head`: the tied head ``MatMul(h, Transpose(wte))`` gets a constant weight,
  so a quantizer can quantize it;
- :func:`gather_block_quantized`: the embedding ``Gather`` reads blockwise 8- or 4-bit bytes,
  either the LM head's own (:func:`share_embedding`: the tied weight stored once) or a copy;
- :func:`attention_matmuls`: the MatMuls that multiply two activations (kept float);
- :func:`type_intermediates`: declare the float tensors shape inference cannot type, so
  Optimum's ``ORTQuantizer`` can read the fused graph;
- :func:`per_row_activations`: dynamic activation quantization per row instead of per tensor,
  so a row's result does not depend on the other rows of its batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
LM_HEAD_WEIGHT = "lm_head.weight"
# Ops that only reshape or retype a tensor: a constant stays a constant through them.
_PASS_THROUGH = ("Transpose", "Identity", "Cast", "Reshape")
EXCLUDE_RULE = "MatMul nodes whose two inputs are both activations (attention Q·K^T and P·V)"


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite ``Gemm(A, W, b)`` with a constant ``W`` into ``Add(MatMul(A, W), b)``, in place.

    Only the plain form GPT-2 exports (alpha = beta = 1, no transA) is rewritten; ``transB``
    is folded into a transposed initializer. Returns the number of nodes rewritten.
    """
    inits = initializers(model)
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        plain = (
            node.op_type == "Gemm"
            and node.input[1] in inits
            and attribute(node, "alpha", 1.0) == 1.0
            and attribute(node, "beta", 1.0) == 1.0
            and attribute(node, "transA", 0) == 0
        )
        if not plain:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attribute(node, "transB", 0):
            w = numpy_helper.to_array(inits[weight]).T.copy()
            weight = f"{weight}_transposed"
            model.graph.initializer.append(numpy_helper.from_array(w, weight))
        has_bias = len(node.input) > 2 and node.input[2] != ""
        mm_out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [mm_out], name=node.name))
        if has_bias:
            nodes.append(
                helper.make_node(
                    "Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}_bias"
                )
            )
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    drop_unused_initializers(model)
    return count


def materialize_lm_head(model: onnx.ModelProto) -> tuple[str, str] | None:
    """Make the LM head ``MatMul(h, Transpose(wte))`` use a constant ``lm_head.weight`` (wte.T).

    Returns ``(lm_head_node_name, embedding_initializer_name)``, or None if no such head exists.
    """
    inits = initializers(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        t = producers.get(node.input[1])
        if t is None or t.op_type != "Transpose" or t.input[0] not in inits:
            continue
        table = numpy_helper.to_array(inits[t.input[0]])
        if table.ndim != 2 or list(attribute(t, "perm", [1, 0])) != [1, 0]:
            continue
        model.graph.initializer.append(
            numpy_helper.from_array(np.ascontiguousarray(table.T), LM_HEAD_WEIGHT)
        )
        node.input[1] = LM_HEAD_WEIGHT
        if not any(t.output[0] in n.input for n in model.graph.node):
            model.graph.node.remove(t)
        return node.name, t.input[0]
    return None


def attention_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMuls that multiply two activations (Q·K^T and P·V), in graph order.

    An input counts as constant when it is an initializer, a ``Constant`` output, or one of those
    passed through Transpose/Identity/Cast/Reshape: the LM head multiplies by ``Transpose(wte)``
    and must stay quantizable, whereas the key is an activation however it is transposed.
    """
    constants = {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # graph order is topological, so one pass settles chains
        if node.op_type == "Constant" or (
            node.op_type in _PASS_THROUGH and node.input and node.input[0] in constants
        ):
            constants.update(node.output)
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and not any(i in constants for i in n.input)
    ]


def gather_block_quantized(
    model: onnx.ModelProto,
    table: str,
    packed: str,
    scales: str,
    block_size: int,
    bits: int,
    quantize_axis: int = 1,
    output: str | None = None,
) -> bool:
    """Replace ``Gather(table, ids)`` by ``GatherBlockQuantized(packed, ids, scales)``.

    ``packed`` (V, E * bits / 8) uint8 and ``scales`` (V, E / block_size) float hold the table in
    MatMulNBits' layout: symmetric blocks along the hidden axis, an implied zero point of 128 at
    8 bits and 8 at 4 bits (low nibble first); with ``quantize_axis`` 2 they are MatMulNBits' own
    (V, E / block_size, block_size * bits / 8) and (V, E / block_size, 1). ``output`` renames the
    gathered rows (default: the Gather's output). Returns False when no such Gather exists.
    """
    gather = next(
        (n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == table), None
    )
    if gather is None:
        return False
    node = helper.make_node(
        "GatherBlockQuantized",
        [packed, gather.input[1], scales],
        [output or gather.output[0]],
        name=f"{gather.name}_Q{bits}",
        domain=MS_DOMAIN,
        gather_axis=0,
        quantize_axis=quantize_axis,
        block_size=block_size,
        bits=bits,
    )
    at = list(model.graph.node).index(gather)
    model.graph.node.remove(gather)
    model.graph.node.insert(at, node)
    return True


def share_embedding(
    model: onnx.ModelProto, lm_head: str, table: str, block_size: int, bits: int = 4
) -> bool:
    """Point the embedding ``Gather(table, ids)`` at the LM head's MatMulNBits weight.

    GatherBlockQuantized reads the head's packed weight (N, K / block, block * bits / 8) as it is,
    quantized along its last axis, so the bytes are held once in memory too, mapped from
    ``model.onnx.data``. A Reshape of that weight to 2-D, as before, was constant-folded into a
    copy when the session started: 37 MiB of anonymous memory on GPT-2 124M, the difference
    between passing and being OOM-killed in a 192 MiB memory cgroup (``tests/test_memory.py``).
    Only the scales get a Reshape to (N, K / block, 1) (2.4 MiB on 124M), and the gathered rows
    (..., K / block, block) one to (..., K). Returns False when the head is not a symmetric
    MatMulNBits of that block size.
    """
    mnb = next(
        (n for n in model.graph.node if n.op_type == "MatMulNBits" and n.name.startswith(lm_head)),
        None,
    )
    if mnb is None or len(mnb.input) > 3 and mnb.input[3]:
        return False  # not quantized, or asymmetric (zero points)
    inits = initializers(model)
    vocab, hidden = int(attribute(mnb, "N", 0)), int(attribute(mnb, "K", 0))
    if hidden % block_size or inits[mnb.input[1]].dims[0] != vocab:
        return False
    gather = next(
        (n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == table), None
    )
    if gather is None:
        return False
    ids, rows = gather.input[1], gather.output[0]
    scales3d = f"{mnb.input[2]}_3d"
    constants = {f"{scales3d}_shape": [vocab, hidden // block_size, 1], f"{rows}_width": [hidden]}
    for name, value in constants.items():
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    gather_block_quantized(
        model, table, mnb.input[1], scales3d, block_size, bits, 2, f"{rows}_blocks"
    )
    at = next(i for i, n in enumerate(model.graph.node) if n.op_type == "GatherBlockQuantized")
    after = [  # the rows' shape: the ids' shape, then the width
        helper.make_node("Shape", [ids], [f"{rows}_ids_shape"]),
        helper.make_node(
            "Concat", [f"{rows}_ids_shape", f"{rows}_width"], [f"{rows}_shape"], axis=0
        ),
        helper.make_node("Reshape", [f"{rows}_blocks", f"{rows}_shape"], [rows]),
    ]
    for offset, node in enumerate(after, 1):
        model.graph.node.insert(at + offset, node)
    model.graph.node.insert(
        at, helper.make_node("Reshape", [mnb.input[2], f"{scales3d}_shape"], [scales3d])
    )
    drop_unused_initializers(model)
    return True


def quantize_embedding(
    model: onnx.ModelProto, name: str = "wte", bits: int = 8, block_size: int = 32
) -> bool:
    """Store the embedding table ``name`` as its own blockwise-quantized copy (no head to share).

    Why: after weight-only quantization the float token embedding (50257x768 = 147 MiB) would be
    more than half the file; 8-bit blocks make it 37 MiB.
    """
    inits = initializers(model)
    table = numpy_helper.to_array(inits[name]).astype(np.float32)  # (V, E)
    vocab, width = table.shape
    if width % block_size or bits not in (4, 8):
        return False
    blocks = table.reshape(vocab, width // block_size, block_size)
    qmax = (1 << (bits - 1)) - 1  # 127 or 7
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / qmax
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(blocks / scale), -qmax - 1, qmax).astype(np.int16) + (qmax + 1)
    q = q.reshape(vocab, width).astype(np.uint8)
    if bits == 4:
        q = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)  # low nibble = even element
    packed, scales = f"{name}_q{bits}", f"{name}_scales"
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(q, packed),
            numpy_helper.from_array(scale.reshape(vocab, width // block_size), scales),
        ]
    )
    gather_block_quantized(model, name, packed, scales, block_size, bits)
    drop_unused_initializers(model)
    return True


def type_intermediates(model: onnx.ModelProto) -> int:
    """Declare as float every intermediate tensor that shape inference leaves untyped.

    onnx's shape inference cannot type the outputs of com.microsoft ops (GroupQueryAttention,
    SkipLayerNormalization, FastGelu), and onnxruntime's quantizer, which Optimum's
    ``ORTQuantizer`` drives, then stops with "Unable to find data type for weight_name=...".
    In the fused GPT-2 graph all of them are float. Returns how many were declared.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {
        v.name
        for v in [*inferred.graph.value_info, *model.graph.input, *model.graph.output]
        if v.type.tensor_type.elem_type
    } | {t.name for t in model.graph.initializer}
    declared = [
        helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
        for node in model.graph.node
        for out in node.output
        if out and out not in typed
    ]
    model.graph.value_info.extend(declared)
    return len(declared)


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
    fewest ops that give the same bits (``tests/test_int8_ops.py``; the speed of each form is in
    ``benchmarks/int8_recipes.py``, the kernels per step in ``benchmarks/profile_decode.py``).

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
        mmi = producers.get(cast.input[0]) if cast is not None and cast.op_type == "Cast" else None
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


def fuse_dequantization(model: onnx.ModelProto) -> int:
    """``Mul(Cast(MatMulInteger(q, W, zq, zw)), w_scale)`` -> ``MatMulIntegerToFloat`` (one op).

    onnxruntime's own fusion does not fire once :func:`per_row_activations` has moved the row
    scale out, so it is done here: the activation scale passed is 1 and the weights' per-column
    scale is the op's ``b_scale``; the row scale stays a separate ``Mul`` after it.
    """
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "dequant_one"))
    fused, drop = 0, set()
    for mul in graph.node:
        cast = producers.get(mul.input[0]) if mul.op_type == "Mul" else None
        mmi = producers.get(cast.input[0]) if cast is not None and cast.op_type == "Cast" else None
        if mmi is None or mmi.op_type != "MatMulInteger" or len(mmi.input) < 4:
            continue
        a, b, a_zero, b_zero = mmi.input[:4]
        node = helper.make_node(
            "MatMulIntegerToFloat",
            [a, b, "dequant_one", mul.input[1], a_zero, b_zero],
            [mul.output[0]],
            name=f"{mmi.name}_ToFloat",
            domain=MS_DOMAIN,
        )
        mul.CopyFrom(node)
        drop.update({id(cast), id(mmi)})
        fused += 1
    kept = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    if fused and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return fused
