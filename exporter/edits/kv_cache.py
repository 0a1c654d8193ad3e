"""A float16 KV cache for the fused graph, whatever the precision of its weights.

At a past of ~1,000 tokens GPT-2 124M reads 74 MB of float32 keys and values per generated token,
more than half of its int8 weights, and holds as much in memory. onnxruntime's CPU
``GroupQueryAttention`` also runs in float16 (measured with onnxruntime 1.32 on one layer of 124M
at a past of 1,000, 2 threads: 0.22 ms a call against 0.40 ms in float32; 15.6 against 14.2 ms for
an 880-token prompt), so the edit casts each layer's packed ``[q|k|v]`` to float16, lets the
attention read and append a float16 cache, and casts its output back to float32: the cache and
its traffic halve, every other op keeps its precision.

Used for the quantized recipes, whose weights are approximate already; an fp32 bundle keeps the
exact float32 cache (its greedy tokens equal transformers'), and an fp16 bundle has a float16
cache anyway. The cache's effect on quality is measured by the exporter's gate like any other
part of the recipe, and at long context by ``benchmarks/bench_long_context.py``.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

MS = "com.microsoft"
HALF_SUFFIX = "_f16"


def half_kv_cache(model: onnx.ModelProto) -> int:
    """Rewrite every ``GroupQueryAttention`` of ``model`` to a float16 cache; returns how many.

    The past inputs and present outputs the attention nodes use become float16 in the graph's
    signature; nothing else in the signature changes.
    """
    graph = model.graph
    cache_names: set[str] = set()
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        if node.op_type != "GroupQueryAttention" or node.domain != MS:
            nodes.append(node)
            continue
        count += 1
        packed, out = node.input[0], node.output[0]
        nodes.append(_cast(packed, packed + HALF_SUFFIX, TensorProto.FLOAT16))
        node.input[0] = packed + HALF_SUFFIX
        node.output[0] = out + HALF_SUFFIX
        nodes.append(node)
        nodes.append(_cast(out + HALF_SUFFIX, out, TensorProto.FLOAT))
        cache_names.update(name for name in (*node.input[3:5], *node.output[1:3]) if name)
    del graph.node[:]
    graph.node.extend(nodes)
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name in cache_names:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    return count


def _cast(source: str, target: str, to: int) -> onnx.NodeProto:
    return helper.make_node("Cast", [source], [target], name=f"Cast_{target}", to=to)


def half_kv_cache_file(path: Path) -> int:
    """:func:`half_kv_cache` on the model at ``path``, in place.

    Only the graph is read and written: its external weights (``<path>.data``) stay as they are.
    """
    from ..onnx_files import save_model

    model = onnx.load(str(path), load_external_data=False)
    count = half_kv_cache(model)
    save_model(model, path, external=False)  # the tensors keep their references to <path>.data
    return count
