"""Build the bundle's ``bundle.json`` from the exported graph, the checkpoint config and the steps.

Tensor names are read from the ONNX graph, never assumed, so the runtime reads whatever naming
style the exporter produced.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from gpt2_edge.runtime.contract.files import file_entry
from gpt2_edge.runtime.contract.manifest import MODEL_FILE, TOKENIZER_FILE, Manifest

from ..graphs.describe import graph_manifest
from ..onnx_files import data_path
from .genai_config import GENAI_FILES

LIBRARIES = (
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "tokenizers",
)


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def bundle_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every bundle file present: the ones the runtime needs, external data
    included, and onnxruntime-genai's two configs."""
    names = [MODEL_FILE, data_path(Path(MODEL_FILE)).name, TOKENIZER_FILE, *GENAI_FILES]
    return {n: file_entry(folder / n) for n in names if (folder / n).is_file()}


def build_manifest(
    folder: Path,
    name: str,
    checkpoint: Path,
    precision: dict[str, Any],
    source: dict[str, Any],
    graph: dict[str, Any],
) -> Manifest:
    """The manifest for the bundle in ``folder`` (model and tokenizer already written), without
    ``files``: the pipeline lists and hashes them once, when the last file is written."""
    from tokenizers import Tokenizer

    endoftext = Tokenizer.from_file(str(folder / TOKENIZER_FILE)).token_to_id("<|endoftext|>")
    return graph_manifest(
        folder / MODEL_FILE,
        checkpoint,
        graph,
        name=name,
        source={**source, "libraries": library_versions()},
        precision=precision,
        eos_fallback=endoftext,
    )
