"""What a built graph is, read from the graph itself: its tensor names by role (never assumed, so
the runtime reads whatever naming style the exporter produced) and the manifest that describes it,
so the runtime can open a graph before it is a bundle (parity check, quality gate).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpt2_edge.runtime.contract.derive import derive_manifest
from gpt2_edge.runtime.contract.manifest import Manifest

from ..errors import ExportError

_LAYER = re.compile(r"\d+")
_ELEM_TYPES = {1: "float32", 10: "float16", 16: "bfloat16"}


def graph_io(model_path: Path) -> tuple[dict[str, int], list[str]]:
    """Graph input names with their element types, and output names, without loading weights."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    inputs = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    return inputs, [o.name for o in graph.output]


def io_names(inputs: list[str], outputs: list[str], layers: int) -> dict[str, str]:
    """Map the manifest's roles to the graph's tensor names; "%d" stands for the layer index."""
    io: dict[str, str] = {}
    for role in ("input_ids", "attention_mask", "position_ids", "logits_index"):
        if role in inputs:
            io[role] = role
    if "input_ids" not in io:
        raise ExportError(f"The exported graph has no input_ids input (inputs: {inputs}).")
    io["logits"] = "logits" if "logits" in outputs else outputs[0]
    for prefix, names in (("past", inputs), ("present", outputs)):
        for kind in ("key", "value"):
            io[f"{prefix}_{kind}"] = _layer_pattern(names, kind, layers, prefix)
    return io


def _layer_pattern(names: list[str], kind: str, layers: int, prefix: str) -> str:
    """The one name pattern, with "%d" for the layer, that covers every layer's ``kind`` tensor."""
    patterns = set()
    for name in names:
        match = _LAYER.search(name)
        # The kind must follow the layer index: "past_key_values.0.value" is a value, not a key.
        if match and kind in name[match.end() :]:
            patterns.add(name[: match.start()] + "%d" + name[match.end() :])
    for pattern in sorted(patterns):
        if all(pattern % i in names for i in range(layers)):
            return pattern
    raise ExportError(f"The exported graph has no {prefix} {kind} tensors for all {layers} layers.")


def graph_manifest(
    model_path: Path,
    checkpoint: Path,
    graph: dict[str, Any],
    *,
    name: str | None = None,
    source: dict[str, Any] | None = None,
    precision: dict[str, Any] | None = None,
    eos_fallback: int | None = None,
) -> Manifest:
    """The manifest of the graph at ``model_path``: architecture, special ids and generation
    defaults from the runtime's ``derive_manifest`` (the one derivation an Optimum folder gets
    too), tensor names and KV type read from the graph. With the defaults it describes an fp32
    graph that is not (yet) a bundle, so the runtime can open it (parity check, quality gate)."""
    manifest = derive_manifest(
        checkpoint,
        name=name or model_path.parent.name,
        source=source or {"model": str(checkpoint)},
        eos_fallback=eos_fallback,
        precision=precision,
    )
    inputs, outputs = graph_io(model_path)
    manifest.io = io_names(list(inputs), outputs, manifest.architecture.layers)
    kv_dtype = _ELEM_TYPES.get(inputs.get(manifest.io["past_key"] % 0, 1), "float32")
    manifest.architecture = replace(manifest.architecture, kv_dtype=kv_dtype)
    manifest.graph = dict(graph)
    return manifest
