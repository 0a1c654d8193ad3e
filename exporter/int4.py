"""Weight-only 4-bit (or 8-bit) quantization of a GPT-2 ONNX graph through ``MatMulNBits``.

onnxruntime's ``MatMulNBitsQuantizer`` only rewrites ``MatMul`` nodes whose weight is a constant
initializer. Optimum's GPT-2 export has neither where the bytes are: the Conv1D projections are
``Gemm`` nodes, and the LM head multiplies by ``Transpose(wte)``, computed at run time. Left as is,
"4-bit" GPT-2 comes out as large as fp32 (FACTS.md). So before quantizing we

1. rewrite every ``Gemm`` with a constant weight into ``MatMul`` + ``Add`` (numerically the same);
2. replace the LM head's ``Transpose(wte)`` by a constant ``lm_head.weight`` (``wte.T``);
3. quantize the LM head symmetrically and let the embedding ``Gather`` read *the same packed
   bytes* through ``GatherBlockQuantized`` (both ops share MatMulNBits' layout: row ``v`` of the
   tied matrix, blocks along the hidden axis, two nibbles per byte and an implied zero point of 8
   at 4 bits, one byte and 128 at 8 bits), so the tied weight is stored once, quantized, and the
   float ``wte`` table disappears.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ExportError

DEFAULT_BLOCK_SIZE = 32
# 4 = int8 compute: onnxruntime quantizes each block of the input to int8 at run time. GPT-2 124M
# int4 on AVX2 (2 threads, 128+128 greedy): 183 decode tok/s against 62 with level 0 (fp32
# compute dequantizes every weight). CPUs without such kernels fall back to fp32 compute.
DEFAULT_ACCURACY_LEVEL = 4
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
EMBEDDING_MODES = ("shared", "float")
LM_HEAD_WEIGHT = "lm_head.weight"
_MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class Int4Settings:
    """How to quantize; every field is written into bundle.json ``precision``.

    Attributes:
        bits: 4 (default) or 8: MatMulNBits weight bits.
        block_size: weights per scale along the input axis (default 32; a power of two >= 16).
        accuracy_level: MatMulNBits compute type (0 onnxruntime's, 1 fp32, 2 fp16, 3 bf16, 4 int8:
            the default).
        symmetric: symmetric projections (no zero points); the tied LM head is always symmetric.
        embedding: ``shared`` (the Gather reads the LM head's packed weight) or ``float``.
    """

    bits: int = 4
    block_size: int = DEFAULT_BLOCK_SIZE
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL
    symmetric: bool = False
    embedding: str = "shared"

    def validate(self) -> None:
        if self.bits not in (4, 8):
            raise ExportError(f"Weight-only bits must be 4 or 8, got {self.bits}.")
        b = self.block_size
        if b < 16 or b & (b - 1):
            raise ExportError(f"Block size must be a power of two of at least 16, got {b}.")
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise ExportError(
                f"Accuracy level must be one of {ACCURACY_LEVELS}, got {self.accuracy_level}."
            )
        if self.embedding not in EMBEDDING_MODES:
            raise ExportError(f"Embedding mode must be one of {EMBEDDING_MODES}.")

    def to_json(self) -> dict[str, Any]:
        return {
            "dtype": f"int{self.bits}",
            "method": "weight-only",
            "operator": "MatMulNBits",
            "bits": self.bits,
            "block_size": self.block_size,
            "accuracy_level": self.accuracy_level,
            "symmetric": self.symmetric,
            "embedding": self.embedding,
        }


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite ``Gemm(A, W, b)`` with a constant ``W`` into ``Add(MatMul(A, W), b)``, in place.

    Only the plain form GPT-2 exports (alpha = beta = 1, no transA) is rewritten; ``transB``
    is folded into a transposed initializer. Returns the number of nodes rewritten.
    """
    inits = _initializers(model)
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        plain = (
            node.op_type == "Gemm"
            and node.input[1] in inits
            and _attr(node, "alpha", 1.0) == 1.0
            and _attr(node, "beta", 1.0) == 1.0
            and _attr(node, "transA", 0) == 0
        )
        if not plain:
            nodes.append(node)
            continue
        weight = node.input[1]
        if _attr(node, "transB", 0):
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
    _drop_unused_initializers(model)
    return count


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def materialize_lm_head(model: onnx.ModelProto) -> tuple[str, str] | None:
    """Make the LM head ``MatMul(h, Transpose(wte))`` use a constant ``lm_head.weight`` (wte.T).

    Returns ``(lm_head_node_name, embedding_initializer_name)``, or None if no such head exists.
    """
    inits = _initializers(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        t = producers.get(node.input[1])
        if t is None or t.op_type != "Transpose" or t.input[0] not in inits:
            continue
        table = numpy_helper.to_array(inits[t.input[0]])
        if table.ndim != 2 or list(_attr(t, "perm", [1, 0])) != [1, 0]:
            continue
        model.graph.initializer.append(
            numpy_helper.from_array(np.ascontiguousarray(table.T), LM_HEAD_WEIGHT)
        )
        node.input[1] = LM_HEAD_WEIGHT
        if not any(t.output[0] in n.input for n in model.graph.node):
            model.graph.node.remove(t)
        return node.name, t.input[0]
    return None


def _nbits_quantize(
    model: onnx.ModelProto, settings: Int4Settings, symmetric: bool, exclude: list[str]
) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # The quantizer logs every node at INFO through the root logger's basicConfig.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=settings.bits,
        block_size=settings.block_size,
        is_symmetric=symmetric,
        accuracy_level=settings.accuracy_level or None,
        nodes_to_exclude=exclude,
    )
    quantizer.process()
    return quantizer.model.model


def share_embedding(
    model: onnx.ModelProto, lm_head: str, table: str, block_size: int, bits: int = 4
) -> bool:
    """Point the embedding ``Gather(table, ids)`` at the LM head's MatMulNBits weight."""
    mnb = next(
        (n for n in model.graph.node if n.op_type == "MatMulNBits" and n.name.startswith(lm_head)),
        None,
    )
    gather = next(
        (n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == table), None
    )
    if mnb is None or gather is None or len(mnb.input) > 3 and mnb.input[3]:
        return False  # not quantized, no embedding lookup, or asymmetric (zero points)
    inits = _initializers(model)
    vocab, hidden = int(_attr(mnb, "N", 0)), int(_attr(mnb, "K", 0))
    if hidden % block_size or inits[mnb.input[1]].dims[0] != vocab:
        return False
    packed2d, scales2d = f"{mnb.input[1]}_2d", f"{mnb.input[2]}_2d"
    per_byte = 8 // bits
    shape_p = numpy_helper.from_array(
        np.array([vocab, hidden // per_byte], np.int64), f"{packed2d}_shape"
    )
    shape_s = numpy_helper.from_array(
        np.array([vocab, hidden // block_size], np.int64), f"{scales2d}_shape"
    )
    model.graph.initializer.extend([shape_p, shape_s])
    # Reshapes of initializers are constant-folded when the session starts: no bytes on disk.
    new_nodes = [
        helper.make_node("Reshape", [mnb.input[1], shape_p.name], [packed2d]),
        helper.make_node("Reshape", [mnb.input[2], shape_s.name], [scales2d]),
        helper.make_node(
            "GatherBlockQuantized",
            [packed2d, gather.input[1], scales2d],
            [gather.output[0]],
            name=f"{gather.name}_Q4",
            domain=_MS_DOMAIN,
            gather_axis=0,
            quantize_axis=1,
            block_size=block_size,
            bits=bits,
        ),
    ]
    at = list(model.graph.node).index(gather)
    model.graph.node.remove(gather)
    for offset, n in enumerate(new_nodes):
        model.graph.node.insert(at + offset, n)
    _drop_unused_initializers(model)
    return True


def quantize_weight_only(
    model: onnx.ModelProto, settings: Int4Settings | None = None
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Rewrite and quantize ``model``; return the new model and a report for bundle.json."""
    settings = settings or Int4Settings()
    settings.validate()
    rewritten = gemm_to_matmul(model)
    head = materialize_lm_head(model)
    exclude = [head[0]] if head else []
    model = _nbits_quantize(model, settings, settings.symmetric, exclude)
    shared = False
    if head:
        # Second pass: only the LM head is still a constant-weight MatMul (attention MatMuls
        # multiply two activations and are skipped). Symmetric so the Gather can share it.
        model = _nbits_quantize(
            model, settings, settings.symmetric or settings.embedding == "shared", []
        )
        if settings.embedding == "shared":
            shared = share_embedding(model, head[0], head[1], settings.block_size, settings.bits)
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    report = {
        **settings.to_json(),
        "gemm_rewritten": rewritten,
        "lm_head_quantized": bool(head),
        "embedding_shared": shared,
        "matmul_nbits_nodes": counts.get("MatMulNBits", 0),
    }
    return model, report


def quantize_file(src: Path, dst: Path, settings: Int4Settings | None = None) -> dict[str, Any]:
    """Quantize the ONNX file ``src`` into ``dst`` (one file; GPT-2 124M int4 is far below 2 GB)."""
    model = onnx.load(str(src))
    model, report = quantize_weight_only(model, settings)
    onnx.save(model, str(dst))
    report["file_size"] = dst.stat().st_size
    return report
