"""Build the bundle's ``bundle.json`` from the exported graph, the checkpoint config and the steps.

Tensor names are read from the ONNX graph, never assumed, so the runtime reads whatever naming
style the exporter produced.
"""

from __future__ import annotations

import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from gpt2_edge.runtime.bundle import (
    MODEL_FILE,
    TOKENIZER_FILE,
    Manifest,
    file_entry,
    read_json_object,
)
from gpt2_edge.runtime.derive import derive_manifest

from .errors import ExportError
from .genai_config import GENAI_FILES
from .onnx_files import data_path

LIBRARIES = (
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "tokenizers",
)
_LAYER = re.compile(r"\d+")
_ELEM_TYPES = {1: "float32", 10: "float16", 16: "bfloat16"}


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


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


def bundle_files(folder: Path, hashes: bool = True) -> dict[str, dict[str, Any]]:
    """Size and (with ``hashes``) SHA-256 of every bundle file present: the ones the runtime
    needs, external data included, and onnxruntime-genai's two configs."""
    names = [MODEL_FILE, data_path(Path(MODEL_FILE)).name, TOKENIZER_FILE, *GENAI_FILES]
    paths = [folder / name for name in names if (folder / name).is_file()]
    if hashes:
        return {p.name: file_entry(p) for p in paths}
    return {p.name: {"size": p.stat().st_size} for p in paths}


def build_manifest(
    folder: Path,
    name: str,
    config: dict[str, Any],
    checkpoint: Path,
    precision: dict[str, Any],
    source: dict[str, Any],
    hashes: bool = True,
) -> Manifest:
    """The manifest for the bundle in ``folder`` (model and tokenizer already written).

    Architecture, special ids and generation defaults come from the runtime's
    ``derive_manifest``, the one derivation an Optimum folder gets too; the tensor names and the
    KV type are read from the graph. ``config`` is the checkpoint's config.json, already read.
    ``hashes``: record each file's SHA-256 (off when more files are still to be written and
    the list is made again at the end).
    """
    from tokenizers import Tokenizer

    inputs, outputs = graph_io(folder / MODEL_FILE)
    io = io_names(list(inputs), outputs, int(config["n_layer"]))
    endoftext = Tokenizer.from_file(str(folder / TOKENIZER_FILE)).token_to_id("<|endoftext|>")
    manifest = derive_manifest(
        checkpoint,
        name=name,
        source={**source, "libraries": library_versions()},
        io=io,
        kv_dtype=_ELEM_TYPES.get(inputs.get(io["past_key"] % 0, 1), "float32"),
        eos_fallback=endoftext,
        precision=precision,
    )
    manifest.files = bundle_files(folder, hashes)
    return manifest


def graph_manifest(model_path: Path, checkpoint: Path, graph: dict[str, Any]) -> Manifest:
    """A float32 manifest for a graph file that is not (yet) a bundle, to open it with the
    runtime: the checkpoint's config and the graph's own tensor names, no files."""
    inputs, outputs = graph_io(model_path)
    config = read_json_object(checkpoint / "config.json")
    io = io_names(list(inputs), outputs, int(config["n_layer"]))
    manifest = derive_manifest(
        checkpoint,
        name=model_path.parent.name,
        source={"model": str(checkpoint)},
        io=io,
        kv_dtype=_ELEM_TYPES.get(inputs.get(io["past_key"] % 0, 1), "float32"),
    )
    manifest.graph = dict(graph)
    return manifest
