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
  Optimum's ``ORTQuantizer`` can read the fused graph.

Dynamic activation quantization per row, the int8 recipe's one larger edit, is in ``per_row.py``.
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
    between passing and being OOM-killed in a 192 MiB memory cgroup
    (``tests/devices/test_memory.py``).
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
