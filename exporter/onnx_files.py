"""Place an ONNX model at its bundle path, as one file or as ``model.onnx`` + ``model.onnx.data``.

A bundle's weights go to one external data file next to the graph once they are over
``SPLIT_WEIGHTS_ABOVE`` (32 MiB), so that onnxruntime maps them. Intermediate files of the export
go external only over protobuf's 2 GB limit (``EXTERNAL_DATA_THRESHOLD``). Optimum and the
quantizer name that file differently (``model.onnx_data``, ``model_quantized.onnx.data``);
rewriting it here gives the bundle one fixed layout.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

# Above this many bytes of weights an intermediate model of the export is saved with external
# data. A module constant so a test can lower it to exercise that path on a tiny model.
EXTERNAL_DATA_THRESHOLD = 2_000_000_000  # a little under protobuf's 2 GiB limit, for the graph
# save_model's default: a serialized ModelProto above this many bytes keeps its weights external.
PROTO_LIMIT = 1_900_000_000
DATA_SUFFIX = ".data"
# A bundle keeps its weights in model.onnx.data once they are over this. onnxruntime reads a
# single-file model into memory whole and then copies the weights out of it, while it maps an
# external data file: on GPT-2 124M int8 the session started in 0.26 s instead of 0.51 s and
# gpt2-generate peaked at 278 MiB instead of 316 (same decode speed). Small models stay one file.
SPLIT_WEIGHTS_ABOVE = 32 * 2**20


def data_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + DATA_SUFFIX)


def footprint(model_path: Path) -> int:
    """Bytes of the model file plus every external data file beside it that it references."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    total = model_path.stat().st_size
    model = onnx.load(str(model_path), load_external_data=False)
    locations: set[str] = set()
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            locations.update(e.value for e in tensor.external_data if e.key == "location")
    return total + sum((model_path.parent / loc).stat().st_size for loc in locations)


def needs_external_data(size_bytes: int) -> bool:
    # Read the constant at call time so monkeypatching the module attribute takes effect.
    return size_bytes > EXTERNAL_DATA_THRESHOLD


def save_model(model: onnx.ModelProto, path: Path, external: bool | None = None) -> Path:
    """Save ``model`` at ``path``; with ``external`` the weights go to ``<path>.data`` beside it.

    ``external`` defaults to whether the model is too large for one protobuf (``PROTO_LIMIT``).
    Small constants stay inline (onnx's ``size_threshold`` of 1024 bytes), where onnxruntime
    expects them.
    """
    import onnx

    if external is None:
        external = model.ByteSize() > PROTO_LIMIT
    if external:
        data_path(path).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=data_path(path).name,
        size_threshold=1024,
    )
    if external:  # onnx creates the data file owner-only (0600); give it the graph's mode
        shutil.copymode(path, data_path(path))
    return path


def place_model(source: Path, target: Path) -> list[Path]:
    """Move the model at ``source`` to ``target`` in the bundle layout; return the files written.

    A single-file model of at most ``SPLIT_WEIGHTS_ABOVE`` bytes is just renamed; anything else is
    loaded and saved again so that the weights of a larger one live in ``<target>.data``.
    """
    import onnx

    size = footprint(source)
    external = needs_external_data(size) or size > SPLIT_WEIGHTS_ABOVE
    if not external and size == source.stat().st_size:
        os.replace(source, target)
        return [target]
    save_model(onnx.load(str(source), load_external_data=True), target, external)
    return [target, data_path(target)] if external else [target]
